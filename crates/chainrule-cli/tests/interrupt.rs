//! A training run killed mid-epoch saves a checkpoint that loads, and resuming it
//! ends with the same parameters, bit for bit, as a run never interrupted; two runs
//! with the same seed, data, config and threads are bit-identical.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("chainrule-interrupt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const RUN: [&str; 11] = [
    "train",
    "--samples",
    "9000",
    "--layers",
    "2,128,128,3",
    "--batch-size",
    "16",
    "--epochs",
    "2",
    "--threads",
    "1",
];

fn train(dir: &PathBuf, name: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chainrule"));
    command
        .current_dir(dir)
        .args(RUN)
        .args(["--name", name, "--quiet"]);
    command
}

#[test]
fn a_run_killed_mid_epoch_resumes_to_the_same_parameters() {
    let dir = scratch("kill");
    assert!(train(&dir, "whole").status().unwrap().success());
    assert!(train(&dir, "again").status().unwrap().success());
    let whole = std::fs::read(dir.join("runs/whole/params.safetensors")).unwrap();
    assert_eq!(
        whole,
        std::fs::read(dir.join("runs/again/params.safetensors")).unwrap(),
        "reproducible: the same seed gives the same bits"
    );

    // Kill a third run with SIGTERM while it trains, then resume it.
    let mut child = train(&dir, "part").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(
        child.wait().unwrap().success(),
        "exits cleanly after the current step"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("runs/part/state.json")).unwrap())
            .unwrap();
    let (epochs, batches) = (
        state["epochs_done"].as_u64().unwrap(),
        state["batches_done"].as_u64().unwrap(),
    );
    assert!(
        epochs < 2 && (epochs, batches) != (0, 0),
        "stopped part-way: epoch {epochs}, batch {batches}"
    );
    // The checkpoint written at the interruption loads.
    let summary = Command::new(env!("CARGO_BIN_EXE_chainrule"))
        .current_dir(&dir)
        .args(["summary", "runs/part"])
        .output()
        .unwrap();
    assert!(summary.status.success());

    let resumed = Command::new(env!("CARGO_BIN_EXE_chainrule"))
        .current_dir(&dir)
        .args(["train", "--resume", "runs/part", "--quiet"])
        .status()
        .unwrap();
    assert!(resumed.success());
    assert_eq!(
        std::fs::read(dir.join("runs/part/params.safetensors")).unwrap(),
        whole,
        "bit-identical to the uninterrupted run"
    );
}
