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
    let config = TrainConfig::from_json(r#"{"loss": "cross_entropy", "optimizer": {"type": "adam"}, "batch_size": 256, "epochs": 2}"#).unwrap();
    let json = r#"{"layers": [{"type": "linear", "in": 256, "out": 512}, {"type": "relu"}, {"type": "linear", "in": 512, "out": 256}, {"type": "relu"}, {"type": "linear", "in": 256, "out": 10}]}"#;
    let mut trained = Vec::new();
    for threads in [1, 2, 3] {
        set_num_threads(threads);
        let mut model = Sequential::<f32>::from_json(json, 3).unwrap();
        fit(&mut model, &data, None, &config, |_| {}).unwrap();
        trained.push(model.params().to_vec());
    }
    set_num_threads(0);
    assert_eq!(
        trained[0], trained[1],
        "2 threads: the same parameters, bit for bit"
    );
    assert_eq!(
        trained[0], trained[2],
        "3 threads: the same parameters, bit for bit"
    );
}
