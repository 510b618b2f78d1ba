//! Messages that name the real culprit (issue 13, item 6): bad data is reported in
//! its file, at its row and column, before training; a folder that cannot be
//! written is found before it matters.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{chainrule, corpus, refused, scratch};

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_npy(path: &Path, values: Vec<f32>, shape: &[usize]) {
    let t = chainrule::Tensor::<f32>::from_vec(values, shape).unwrap();
    std::fs::write(path, chainrule::io::npy_bytes(&t)).unwrap();
}

#[test]
fn non_finite_data_is_reported_in_its_file_at_its_row_before_training() {
    // Before: training started, and stopped on "the output of linear … is
    // non-finite" with a finite loss.
    let dir = scratch("input-messages", "nonfinite");
    write_npy(
        &dir.join("x.npy"),
        vec![1.0, 2.0, 3.0, 4.0, 5.0, f32::INFINITY],
        &[3, 2],
    );
    write_npy(&dir.join("y.npy"), vec![0.5, 1.0, 1.5], &[3]);
    write_npy(&dir.join("y_nan.npy"), vec![0.5, f32::NAN, 1.5], &[3]);
    let train = |x: &str, y: &str| {
        chainrule(
            &dir,
            &[
                "train",
                "--data",
                &format!("npy:{x},{y}"),
                "--task",
                "regression",
                "--epochs",
                "1",
                "--quiet",
            ],
        )
    };
    refused(
        &train("x.npy", "y.npy"),
        &["x.npy: row 3, column 2: inf is not a finite number"],
    );
    write_npy(&dir.join("x_ok.npy"), vec![1.0; 6], &[3, 2]);
    refused(
        &train("x_ok.npy", "y_nan.npy"),
        &["y_nan.npy: row 2, column 1: NaN is not a finite number"],
    );
    // Nothing was trained: no run folder holds a checkpoint.
    let runs = dir.join("runs");
    assert!(
        !runs.exists()
            || std::fs::read_dir(&runs).unwrap().all(|e| !e
                .unwrap()
                .path()
                .join("checkpoint")
                .exists())
    );
}

#[test]
fn a_bad_csv_label_or_a_csv_without_features_names_file_and_column() {
    // Before: both became "layers[4]: in and out must be at least 1".
    let dir = scratch("input-messages", "csv");
    for (file, what) in [
        (
            "csv/class_u64_max.csv",
            "line 3, column \"label\": class 18446744073709551615 is not below 65536",
        ),
        (
            "csv/no_features.csv",
            "no feature columns: \"label\" is the only column",
        ),
    ] {
        let data = format!("csv:{}", corpus(file));
        refused(
            &chainrule(&dir, &["train", "--data", &data, "--quiet"]),
            &[Path::new(file).file_name().unwrap().to_str().unwrap(), what],
        );
    }
}

/// An IDX file of unsigned bytes of `shape`, all zero.
fn idx(path: &Path, shape: &[u32]) {
    let mut bytes = vec![0, 0, 8, shape.len() as u8];
    for d in shape {
        bytes.extend(d.to_be_bytes());
    }
    bytes.resize(bytes.len() + shape.iter().product::<u32>() as usize, 0);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn an_idx_error_names_the_file_not_x() {
    // Before: test images of another size than the training images gave
    // "x: expected [N, 4] features, got [2, 9]".
    let dir = scratch("input-messages", "idx");
    idx(&dir.join("train-images-idx3-ubyte"), &[4, 2, 2]);
    idx(&dir.join("train-labels-idx1-ubyte"), &[4]);
    idx(&dir.join("t10k-images-idx3-ubyte"), &[2, 3, 3]);
    idx(&dir.join("t10k-labels-idx1-ubyte"), &[2]);
    let train = || chainrule(&dir, &["train", "--data", "mnist:.", "--quiet"]);
    refused(
        &train(),
        &["the t10k images have 9 pixels each, the train images 4"],
    );
    // Fewer labels than images: the labels file is named.
    idx(&dir.join("t10k-images-idx3-ubyte"), &[2, 2, 2]);
    idx(&dir.join("train-labels-idx1-ubyte"), &[3]);
    refused(
        &train(),
        &["train-labels-idx1-ubyte: labels of shape [3] for the 4 images of"],
    );
}

/// `chainrule args` in `dir` as a user who cannot write where root made folders: as
/// root (whom permissions do not stop) the child becomes `nobody` first; as anyone
/// else, `read_only` is made read-only.
fn unprivileged(dir: &Path, read_only: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chainrule"));
    command.current_dir(dir).args(args);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // SAFETY: between fork and exec the closure calls only setgroups, setgid and
        // setuid, which are async-signal-safe, and touches no shared memory.
        unsafe {
            command.pre_exec(|| {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(65534) != 0
                    || libc::setuid(65534) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(read_only, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    command.output().unwrap()
}

/// Lets anyone create files in `dir` (for the `nobody` of [`unprivileged`]).
fn open_to_all(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
}

#[test]
fn eval_works_on_a_read_only_run_and_draws_into_the_folder_named() {
    // Before: eval wrote its heat map into the run folder, and failed on a
    // read-only one.
    let dir = scratch("input-messages", "eval");
    ok(&chainrule(
        &dir,
        &[
            "train",
            "--epochs",
            "1",
            "--samples",
            "90",
            "--name",
            "r",
            "--quiet",
        ],
    ));
    let run = dir.join("runs/r");
    let out = unprivileged(&dir, &run, &["eval", "runs/r", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    // eval scores what the run held out: the default 20% of the 90 samples.
    assert_eq!(report["rows"], 18);
    assert!(!run.join("confusion_matrix.png").exists());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out-dir"));

    let pictures = dir.join("pictures");
    std::fs::create_dir(&pictures).unwrap();
    open_to_all(&pictures);
    ok(&unprivileged(
        &dir,
        &run,
        &["eval", "runs/r", "--out-dir", "pictures"],
    ));
    assert!(pictures.join("confusion_matrix.png").is_file());
    assert!(pictures.join("confusion_matrix.svg").is_file());
}

#[test]
fn resume_checks_that_the_run_folder_is_writable_before_training() {
    // Before: the resumed run trained, then could not save what it had trained.
    let dir = scratch("input-messages", "resume");
    ok(&chainrule(
        &dir,
        &[
            "train",
            "--epochs",
            "1",
            "--samples",
            "90",
            "--name",
            "r",
            "--quiet",
        ],
    ));
    let run = dir.join("runs/r");
    let metrics = std::fs::read_to_string(run.join("checkpoint/metrics.csv")).unwrap();
    let out = unprivileged(
        &dir,
        &run,
        &["train", "--resume", "runs/r", "--epochs", "3", "--quiet"],
    );
    refused(
        &out,
        &[
            "runs/r: not writable",
            "--resume saves its checkpoints there",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(run.join("checkpoint/metrics.csv")).unwrap(),
        metrics
    );
}
