//! Memory bounded before allocating, for every input (issue 13, item 3). Each
//! hostile file is given to the binary with its address space limited to 1 GiB
//! (`ulimit -v`): a size taken from a file and reserved before it is checked makes
//! the allocator abort there, while a checked one gives a clean one-line error.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
use common::{case, corpus, refused, scratch};

/// The address space the binary gets: far above what any of these inputs needs
/// once checked, far below what each asked for before.
const LIMIT: u64 = 1 << 30;

/// `chainrule args` in `dir` with its address space limited to `limit` bytes.
fn limited(dir: &Path, args: &[&str], limit: u64) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chainrule"));
    command.current_dir(dir).args(args);
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // setrlimit, which is async-signal-safe; it touches no memory of the parent's
    // other threads.
    unsafe {
        command.pre_exec(move || {
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &rlimit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.output().unwrap()
}

#[test]
fn the_binary_runs_within_the_limit() {
    // The control: a small training run fits in the limit the other tests set.
    let dir = scratch("memory", "control");
    let out = limited(
        &dir,
        &["train", "--epochs", "1", "--samples", "100", "--quiet"],
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_idx_file_is_checked_against_its_bytes_before_reserving() {
    // Before: 18 bytes reserved 8 GiB of f32; a gzip stream declaring 2.7 M
    // images reserved the same at its first bytes.
    for (file, name) in [
        ("idx/header_of_18_bytes-ubyte", "train-images-idx3-ubyte"),
        (
            "idx/more_images_than_data-ubyte.gz",
            "train-images-idx3-ubyte.gz",
        ),
    ] {
        let dir = scratch("memory", "idx");
        std::fs::copy(corpus(file), dir.join(name)).unwrap();
        let out = limited(&dir, &["train", "--data", "mnist:.", "--quiet"], LIMIT);
        // Plain: its length is compared with the header first; gzip: the declared
        // size is compared with the memory available (here the limit).
        refused(&out, &[name, "shape [2700000, 28, 28] needs"]);
    }
}

#[test]
fn a_huge_class_label_is_refused_where_it_is_read() {
    // Before: a label of 30,000,000 gave the model 30,000,000 outputs (7.7 GB).
    let dir = scratch("memory", "labels");
    let out = limited(
        &dir,
        &[
            "train",
            "--data",
            &format!("csv:{}", corpus("csv/huge_class.csv")),
            "--quiet",
        ],
        LIMIT,
    );
    refused(
        &out,
        &[
            "huge_class.csv",
            "line 3, column \"label\": class 30000000 is not below 65536",
        ],
    );
    // The same label in a .npy file of class indices.
    let x = chainrule::Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    std::fs::write(dir.join("x.npy"), chainrule::io::npy_bytes(&x)).unwrap();
    let out = limited(
        &dir,
        &[
            "train",
            "--data",
            &format!("npy:x.npy,{}", corpus("labels_npy/huge_class.npy")),
            "--quiet",
        ],
        LIMIT,
    );
    refused(
        &out,
        &["huge_class.npy", "row 2: class 30000000 is not below 65536"],
    );
}

/// 1,234,567 → "1,234,567", as `summary` writes counts.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn summary_counts_46340_squared_weights_without_allocating_them() {
    // Before: `summary` initialised 8.6 GB of weights to count them.
    let dir = scratch("memory", "summary");
    let out = limited(
        &dir,
        &["summary", &corpus("model_memory/46340_squared.json")],
        LIMIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total = 46340u64 * 46340 + 46340; // weight and bias
    assert!(
        stdout.contains(&format!("total parameters: {}", grouped(total))),
        "{stdout}"
    );
}

#[test]
fn grad_checks_the_parameters_file_size_before_initialising_the_model() {
    // Before: `grad` initialised the 46340² weights, then found the parameters file short.
    let dir = scratch("memory", "grad");
    let model = corpus("model_memory/46340_squared.json");
    let (params, x, y) = (case("params.safetensors"), case("x.npy"), case("y.npy"));
    let out = limited(
        &dir,
        &[
            "grad",
            "--model",
            &model,
            "--params",
            &params,
            "--x",
            &x,
            "--y",
            &y,
            "--loss",
            "mse",
            "--out",
            "g.safetensors",
        ],
        LIMIT,
    );
    refused(
        &out,
        &[
            "params.safetensors",
            "cannot hold the 2147441940 parameters of",
            "46340_squared.json",
        ],
    );
    assert!(!dir.join("g.safetensors").exists());
}

/// A sparse file of `len` bytes that starts with `head`: a file larger than any
/// memory that takes no room on the disk.
fn sparse(path: &Path, head: &[u8], len: u64) {
    std::fs::write(path, head).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn model_config_and_data_files_larger_than_memory_are_refused_unread() {
    let dir = scratch("memory", "sparse");
    let huge = 1u64 << 40;
    sparse(&dir.join("model.json"), b"{\"layers\": [", huge);
    sparse(&dir.join("config.toml"), b"epochs = 1\n", huge);
    sparse(&dir.join("data.csv"), b"a,b,label\n", huge);
    let too_big = "bytes do not fit in the";
    for (args, file) in [
        (
            vec!["train", "--model", "model.json", "--quiet"],
            "model.json",
        ),
        (
            vec!["train", "--config", "config.toml", "--quiet"],
            "config.toml",
        ),
        // Without --target the header is read for the last column's name, and
        // only the header.
        (
            vec!["train", "--data", "csv:data.csv", "--quiet"],
            "data.csv",
        ),
        (
            vec![
                "train",
                "--data",
                "csv:data.csv",
                "--target",
                "label",
                "--quiet",
            ],
            "data.csv",
        ),
        (vec!["summary", "model.json"], "model.json"),
    ] {
        refused(&limited(&dir, &args, LIMIT), &[file, too_big]);
    }
}

#[test]
fn predict_streams_a_csv_instead_of_holding_it() {
    // Before: `predict` held the text, its values, their scaled copy and the
    // output text whole: 6.8 times the file at its peak. Now its peak grows by
    // far less than the file's size between a small file and a large one.
    let dir = scratch("memory", "predict");
    let trained = limited(
        &dir,
        &[
            "train",
            "--epochs",
            "1",
            "--samples",
            "100",
            "--name",
            "r",
            "--quiet",
        ],
        LIMIT,
    );
    assert!(trained.status.success());
    let write_inputs = |name: &str, rows: usize| -> u64 {
        use std::io::Write;
        let path = dir.join(name);
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        writeln!(w, "x,y").unwrap();
        for i in 0..rows {
            writeln!(w, "{:.6},{:.6}", (i % 1000) as f64 / 500.0 - 1.0, 0.25).unwrap();
        }
        w.flush().unwrap();
        std::fs::metadata(&path).unwrap().len()
    };
    write_inputs("small.csv", 10);
    let big = write_inputs("big.csv", 1_000_000);
    let peak = |file: &str| -> u64 {
        // Reaped by wait4 below, which std's wait cannot replace: it gives the
        // child's own peak memory.
        #[allow(clippy::zombie_processes)]
        let child = Command::new(env!("CARGO_BIN_EXE_chainrule"))
            .current_dir(&dir)
            .args(["predict", "runs/r", "--x", file, "--out", "p.csv"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // wait4 gives this child's own peak resident size (ru_maxrss, KiB).
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value of the plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child, once, with valid pointers.
        let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
        assert_eq!(pid, child.id() as i32);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        usage.ru_maxrss as u64 * 1024
    };
    let (small_peak, big_peak) = (peak("small.csv"), peak("big.csv"));
    let rows = std::fs::read_to_string(dir.join("p.csv"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(rows, 1_000_000 + 1, "every row predicted, and the header");
    assert!(
        big_peak < small_peak + big / 2,
        "peak {big_peak} bytes on a {big}-byte file, {small_peak} on a small one"
    );
}
