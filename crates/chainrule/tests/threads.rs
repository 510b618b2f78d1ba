//! The multithreaded path gives the same numbers as the single-threaded one: in a
//! training loop every large product is cut into one block of output per thread
//! (crate::parallel), and each element is still one kernel's sum over the whole inner
//! dimension. (Its own test binary: the thread count is process-wide.)

use chainrule::Tensor;
use chainrule::data::{Dataset, Target};
use chainrule::nn::{Module, Sequential};
use chainrule::tensor::set_num_threads;
use chainrule::train::{TrainConfig, fit};

#[test]
fn a_multithreaded_training_run_is_bitwise_identical_to_a_single_threaded_one() {
    // Layers wide enough that their products are split (2^18 multiply-adds and up):
    // 256 × 512 × 256 = 2^25, cut by columns (forward) and by rows (weight gradients);
    // three threads make uneven blocks.
    let x = Tensor::<f32>::rand_uniform(&[512, 256], -1.0, 1.0, 1).unwrap();
    let data = Dataset::new(x, Target::Classes((0..512).map(|i| i % 10).collect())).unwrap();
    let json = r#"{"layers": [{"type": "linear", "in": 256, "out": 512}, {"type": "relu"}, {"type": "linear", "in": 512, "out": 256}, {"type": "relu"}, {"type": "linear", "in": 256, "out": 10}]}"#;
    // Every optimizer and state buffer: the large parameters are also updated one
    // block per thread.
    for optimizer in [
        r#"{"type": "adam", "amsgrad": true}"#,
        r#"{"type": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": true, "weight_decay": 0.01}"#,
        r#"{"type": "rmsprop", "lr": 0.001, "momentum": 0.5, "centered": true}"#,
        r#"{"type": "adagrad", "lr": 0.01}"#,
    ] {
        let config = TrainConfig::from_json(&format!(
            r#"{{"loss": "cross_entropy", "optimizer": {optimizer}, "batch_size": 256, "epochs": 2}}"#
        ))
        .unwrap();
        let mut trained = Vec::new();
        for threads in [1, 2, 3] {
            set_num_threads(threads);
            let mut model = Sequential::<f32>::from_json(json, 3).unwrap();
            fit(&mut model, &data, None, &config, |_| {}).unwrap();
            trained.push(model.params().to_vec());
        }
        assert_eq!(
            trained[0], trained[1],
            "{optimizer}, 2 threads: bit for bit"
        );
        assert_eq!(
            trained[0], trained[2],
            "{optimizer}, 3 threads: bit for bit"
        );
    }
    set_num_threads(0);
}
