//! Hostile paths and requests (issue 13, items 2 and 4): outputs never replace what
//! is not a regular file, inputs that never end are refused, a run name cannot leave
//! the runs folder, two runs started with one name never share its folder, and a
//! thread count beyond the machine's cores is capped.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{case, chainrule, refused, scratch};

fn grad_to(dir: &Path, out: &str) -> Output {
    let (model, params, x, y) = (
        case("model.json"),
        case("params.safetensors"),
        case("x.npy"),
        case("y.npy"),
    );
    chainrule(
        dir,
        &[
            "grad", "--model", &model, "--params", &params, "--x", &x, "--y", &y, "--loss", "mse",
            "--out", out,
        ],
    )
}

#[test]
fn an_output_that_is_a_link_or_a_fifo_is_refused_and_left_as_it_was() {
    let dir = scratch("paths", "out");
    // A link to a file elsewhere: replacing it would follow it out of the folder.
    std::fs::write(dir.join("elsewhere"), b"keep").unwrap();
    symlink(dir.join("elsewhere"), dir.join("link.safetensors")).unwrap();
    refused(
        &grad_to(&dir, "link.safetensors"),
        &["link.safetensors", "not a regular file"],
    );
    assert!(
        std::fs::symlink_metadata(dir.join("link.safetensors"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(dir.join("elsewhere")).unwrap(), b"keep");
    // A FIFO stands in for a device node (mknod needs root).
    let made = Command::new("mkfifo")
        .arg(dir.join("fifo.safetensors"))
        .status()
        .unwrap();
    assert!(made.success());
    refused(
        &grad_to(&dir, "fifo.safetensors"),
        &["fifo.safetensors", "not a regular file"],
    );
    let kind = std::fs::symlink_metadata(dir.join("fifo.safetensors"))
        .unwrap()
        .file_type();
    assert!(!kind.is_file(), "still the FIFO");
    // A regular file is replaced, as before.
    std::fs::write(dir.join("old.safetensors"), b"old").unwrap();
    assert!(grad_to(&dir, "old.safetensors").status.success());
    assert_ne!(std::fs::read(dir.join("old.safetensors")).unwrap(), b"old");
}

#[test]
fn inputs_that_never_end_are_refused_instead_of_read_forever() {
    let dir = scratch("paths", "in");
    refused(
        &chainrule(&dir, &["train", "--config", "/dev/zero"]),
        &["/dev/zero", "not a regular file"],
    );
    let made = Command::new("mkfifo")
        .arg(dir.join("config.toml"))
        .status()
        .unwrap();
    assert!(made.success());
    // Nobody writes to the FIFO: reading it would wait forever.
    refused(
        &chainrule(&dir, &["train", "--config", "config.toml"]),
        &["config.toml", "not a regular file"],
    );
}

#[test]
fn a_run_name_cannot_leave_the_runs_folder() {
    let dir = scratch("paths", "names");
    for name in ["../escaped", "/tmp/absolute", "a/b", ".."] {
        refused(
            &chainrule(
                &dir,
                &["train", "--epochs", "1", "--samples", "60", "--name", name],
            ),
            &["name", "plain folder name"],
        );
    }
    assert!(!dir.join("escaped").exists());
    assert!(!Path::new("/tmp/absolute").join("model.json").exists());
}

#[test]
fn two_runs_started_with_one_name_never_share_its_folder() {
    let dir = scratch("paths", "race");
    // Two runs of `args`, started at the same time.
    let at_once = |args: &[&str]| {
        let start = || chainrule(&dir, args);
        std::thread::scope(|s| {
            let a = s.spawn(start);
            let b = s.spawn(start);
            [a.join().unwrap(), b.join().unwrap()]
        })
    };
    let named = [
        "train",
        "--epochs",
        "2",
        "--samples",
        "200",
        "--name",
        "same",
        "--quiet",
    ];
    let [a, b] = at_once(&named);
    let wins = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert_eq!(wins, 1, "exactly one run takes the name");
    let loser = if a.status.success() { &b } else { &a };
    refused(loser, &["same", "already exists"]);
    // Automatic names are claimed the same way: two runs, two folders.
    let both = at_once(&["train", "--epochs", "1", "--samples", "200", "--quiet"]);
    assert!(both.iter().all(|o| o.status.success()));
    let folders = std::fs::read_dir(dir.join("runs")).unwrap().count();
    assert_eq!(folders, 3, "same, and two numbered runs");
}

#[test]
fn a_hundred_thousand_threads_are_capped_at_the_machines_cores() {
    // Before: 100,000 spinning threads made the machine unusable.
    let dir = scratch("paths", "threads");
    let out = chainrule(
        &dir,
        &[
            "train",
            "--epochs",
            "1",
            "--samples",
            "200",
            "--threads",
            "100000",
            "--name",
            "t",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(
        stderr.contains(&format!(
            "threads: 100000 asked, this machine has {cores}; using {cores}"
        )),
        "{stderr}"
    );
}

#[test]
fn a_helper_thread_the_system_refuses_to_start_leaves_a_smaller_team() {
    // Before: a failed spawn panicked, and the team then waited forever for the
    // missing helper. A minimum stack of 2⁶⁰ bytes makes every spawn fail.
    let dir = scratch("paths", "spawn");
    let out = Command::new(env!("CARGO_BIN_EXE_chainrule"))
        .current_dir(&dir)
        .env("RUST_MIN_STACK", (1u64 << 60).to_string())
        .args([
            "train",
            "--epochs",
            "1",
            "--samples",
            "200",
            "--threads",
            "2",
            "--name",
            "s",
            "--quiet",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(dir.join("runs/s/checkpoint/params.safetensors").is_file());
}

#[test]
fn an_absurd_number_of_epochs_is_refused_before_training() {
    let dir = scratch("paths", "epochs");
    let out = chainrule(
        &dir,
        &["train", "--epochs", "999999999999", "--samples", "60"],
    );
    refused(&out, &["epochs", "is more than 1000000"]);
    assert!(
        !dir.join("runs").exists() || std::fs::read_dir(dir.join("runs")).unwrap().count() == 0
    );
}

#[test]
fn a_hostile_class_count_in_state_json_is_refused_not_allocated() {
    // Before: classes = 2⁶⁴ − 1 overflowed the confusion matrix's allocation (exit 101).
    let dir = scratch("paths", "classes");
    let trained = chainrule(
        &dir,
        &[
            "train",
            "--epochs",
            "1",
            "--samples",
            "60",
            "--name",
            "r",
            "--quiet",
        ],
    );
    assert!(trained.status.success());
    let path = dir.join("runs/r/checkpoint/state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    state["classes"] = serde_json::json!(u64::MAX);
    std::fs::write(&path, state.to_string()).unwrap();
    // A hostile file comes with a manifest that agrees with it.
    reseal(&dir.join("runs/r/checkpoint"));
    for command in ["eval", "predict"] {
        let mut args = vec![command, "runs/r"];
        if command == "predict" {
            args.extend(["--x", "none.csv"]);
        }
        refused(&chainrule(&dir, &args), &["state.json", "classes"]);
    }
}

#[test]
fn an_infinite_learning_rate_in_toml_is_called_inf_not_null() {
    // Before: `optimizer.lr: expected a number, got null` (JSON has no inf).
    let dir = scratch("paths", "inf");
    let sgd = "[optimizer]\ntype = \"sgd\"\nlr = inf\n";
    std::fs::write(dir.join("c.toml"), sgd).unwrap();
    refused(
        &chainrule(&dir, &["train", "--config", "c.toml", "--samples", "60"]),
        &["c.toml", "optimizer.lr: inf is not a finite number"],
    );
    let adam = "[optimizer]\ntype = \"adam\"\nbetas = [0.9, nan]\n";
    std::fs::write(dir.join("d.toml"), adam).unwrap();
    refused(
        &chainrule(&dir, &["train", "--config", "d.toml", "--samples", "60"]),
        &["d.toml", "optimizer.betas[1]: NaN is not a finite number"],
    );
}

/// Rewrites the manifest of checkpoint folder `dir` to list its files as they are
/// now: what someone who edits a checkpoint on purpose would do.
fn reseal(dir: &Path) {
    use sha2::Digest;
    let path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for entry in manifest["files"].as_array_mut().unwrap() {
        let bytes = std::fs::read(dir.join(entry["name"].as_str().unwrap())).unwrap();
        let sha: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        entry["bytes"] = bytes.len().into();
        entry["sha256"] = sha.into();
    }
    std::fs::write(&path, manifest.to_string()).unwrap();
}
