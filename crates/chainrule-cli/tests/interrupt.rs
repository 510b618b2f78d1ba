//! A training run killed mid-epoch saves a checkpoint that loads, and resuming it
//! ends with the same parameters, bit for bit, as a run never interrupted; two runs
//! with the same seed, data, config and threads are bit-identical. A second signal
//! exits at once, and a reader that goes away stops the output quietly (the
//! binary's signal handling, the only `unsafe` of the CLI besides its allocator).

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Sends signal `name` (`TERM`, `INT`) to process `pid`, as the shell's `kill` does.
fn signal(pid: u32, name: &str) {
    let sent = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -s {name} {pid}");
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("chainrule-interrupt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Epochs of the runs below: the interrupted runs are signalled once the first epoch
/// has been reported, so that however fast the machine, they are still training.
const EPOCHS: u64 = 8;

fn train(dir: &PathBuf, name: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chainrule"));
    let epochs = EPOCHS.to_string();
    command.current_dir(dir).args([
        "train",
        "--samples",
        "1200",
        "--layers",
        "2,64,3",
        "--batch-size",
        "16",
        "--epochs",
        &epochs,
        "--threads",
        "1",
        "--name",
        name,
    ]);
    command
}

/// Starts a run and returns once it has reported its first epoch (in a pipe it
/// prints one line per epoch on stderr); that output goes on being read, so that it never
/// blocks on a full pipe or dies of a closed one.
fn started(dir: &PathBuf, name: &str) -> std::process::Child {
    use std::io::BufRead;
    let mut child = train(dir, name).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("epoch 1/") => break,
            Some(Ok(_)) => {}
            other => panic!("the run ended before its first epoch: {other:?}"),
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    child
}

#[test]
fn a_run_killed_mid_epoch_resumes_to_the_same_parameters() {
    let dir = scratch("kill");
    let quiet = |name| train(&dir, name).arg("--quiet").status().unwrap().success();
    assert!(quiet("whole"));
    assert!(quiet("again"));
    let whole = std::fs::read(dir.join("runs/whole/checkpoint/params.safetensors")).unwrap();
    assert_eq!(
        whole,
        std::fs::read(dir.join("runs/again/checkpoint/params.safetensors")).unwrap(),
        "reproducible: the same seed gives the same bits"
    );

    // Stop a third run with SIGTERM while it trains, then resume it.
    let mut child = started(&dir, "part");
    signal(child.id(), "TERM");
    assert!(
        child.wait().unwrap().success(),
        "exits cleanly after the current step"
    );
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("runs/part/checkpoint/state.json")).unwrap(),
    )
    .unwrap();
    let (epochs, batches) = (
        state["epochs_done"].as_u64().unwrap(),
        state["batches_done"].as_u64().unwrap(),
    );
    assert!(
        epochs < EPOCHS && (epochs, batches) != (0, 0),
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
        std::fs::read(dir.join("runs/part/checkpoint/params.safetensors")).unwrap(),
        whole,
        "bit-identical to the uninterrupted run"
    );
}

#[test]
fn a_second_signal_exits_at_once_with_the_signals_status() {
    let dir = scratch("twice");
    let mut child = started(&dir, "twice");
    // Two different signals, so that the second cannot merge with a pending first.
    signal(child.id(), "INT");
    signal(child.id(), "TERM");
    let status = child.wait().unwrap();
    assert!(
        matches!(status.code(), Some(130 | 143)),
        "128 + the signal handled second, got {status:?}"
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_output_by_sigpipe() {
    let dir = scratch("pipe");
    let tiny = [
        "train",
        "--samples",
        "60",
        "--layers",
        "2,4,3",
        "--epochs",
        "1",
        "--name",
        "tiny",
        "--quiet",
    ];
    let trained = Command::new(env!("CARGO_BIN_EXE_chainrule"))
        .current_dir(&dir)
        .args(tiny)
        .status()
        .unwrap();
    assert!(trained.success());
    // 20,000 rows of predictions: far more than a pipe holds.
    let rows: String = (0..20_000)
        .map(|i| format!("{},{}\n", i % 7, i % 5))
        .collect();
    std::fs::write(dir.join("x.csv"), format!("a,b\n{rows}")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_chainrule"))
        .current_dir(&dir)
        .args(["predict", "runs/tiny", "--x", "x.csv"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before reading anything
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.signal(),
        Some(13),
        "killed by SIGPIPE, not failing on a broken pipe: {:?}, {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
