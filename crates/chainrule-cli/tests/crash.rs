//! A run folder is one crash-consistent checkpoint: a `chainrule train` killed at any
//! moment, inside a save or between saves, leaves a folder that either resumes to
//! exactly the parameters of a run never killed (the same bytes of
//! params.safetensors) or is refused with one line saying why.
//!
//! Kill points are chosen deterministically, not by timing: the test build of the
//! binary aborts itself at the k-th file operation of its saves when
//! `CHAINRULE_TEST_ABORT_AT=k` (see chainrule::io::CheckpointDir), and every k is
//! tried, from the first save's first operation to past the last save's last one.
//! Runs are also killed with SIGKILL once they report their n-th epoch (wherever
//! the kill lands next, the outcome must be one of the two above), and stopped
//! with SIGTERM in a run with early stopping, whose record must survive a resume.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chainrule-crash-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small run: XOR, 160 training rows in batches of 16 (10 steps an epoch), one
/// thread so that every run of it is bit-identical.
const PLAIN: &[&str] = &[
    "--data",
    "builtin:xor",
    "--samples",
    "200",
    "--layers",
    "2,8,2",
    "--batch-size",
    "16",
    "--epochs",
    "3",
    "--threads",
    "1",
];

/// The same with early stopping: SGD with a learning rate large enough that the
/// validation loss stops improving and patience ends the run before its last epoch
/// (checked below), saving every second epoch.
const PATIENCE: &[&str] = &[
    "--data",
    "builtin:xor",
    "--samples",
    "200",
    "--layers",
    "2,8,2",
    "--batch-size",
    "16",
    "--epochs",
    "12",
    "--threads",
    "1",
    "--optimizer",
    "sgd",
    "--lr",
    "2",
    "--patience",
    "2",
    "--checkpoint-every",
    "2",
];

fn chainrule(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chainrule"));
    command
        .current_dir(dir)
        .env_remove("CHAINRULE_TEST_ABORT_AT");
    command
}

/// `chainrule train ARGS --name NAME --quiet` in `dir`.
fn train(dir: &Path, args: &[&str], name: &str) -> Command {
    let mut command = chainrule(dir);
    command
        .arg("train")
        .args(args)
        .args(["--name", name, "--quiet"]);
    command
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What a run ends with: the bytes of its parameters, and its metrics.csv rows
/// without the seconds (a resumed epoch's metrics must cover all its batches).
#[derive(PartialEq)]
struct Outcome {
    params: Vec<u8>,
    metrics: Vec<String>,
}

/// What run `name`'s checkpoint holds.
fn outcome(dir: &Path, name: &str) -> Outcome {
    let saved = dir.join("runs").join(name).join("checkpoint");
    let metrics = std::fs::read_to_string(saved.join("metrics.csv")).unwrap();
    Outcome {
        params: std::fs::read(saved.join("params.safetensors")).unwrap(),
        metrics: metrics
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect(),
    }
}

/// Trains `args` without interruption under `name` and returns what it ends with.
fn reference(dir: &Path, args: &[&str], name: &str) -> Outcome {
    let out = train(dir, args, name).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    outcome(dir, name)
}

/// After run `name` was killed: resumes it, or when that is refused, checks that the
/// refusal is one line with a reason and acts on it; in every case the run must end
/// with exactly `expected` parameters. `what` says where the kill was.
fn recover(dir: &Path, args: &[&str], name: &str, expected: &Outcome, what: &str) {
    let run = format!("runs/{name}");
    let out = chainrule(dir)
        .args(["train", "--resume", &run, "--quiet"])
        .output()
        .unwrap();
    if !out.status.success() {
        let message = stderr(&out);
        assert_eq!(
            message.lines().count(),
            1,
            "{what}: a refusal is one line: {message}"
        );
        if message.contains("no complete checkpoint yet") {
            // Killed before its first save: the folder does not block the name.
            assert!(
                message.contains(&format!("start it again with --name {name}")),
                "{what}: {message}"
            );
            let again = train(dir, args, name).output().unwrap();
            assert!(again.status.success(), "{what}: {}", stderr(&again));
        } else {
            // Killed after its last save was complete: nothing is left to do.
            assert!(
                message.contains("the run already has")
                    || message.contains("early stopping ended this run"),
                "{what}: unexpected refusal: {message}"
            );
        }
    }
    let recovered = outcome(dir, name);
    assert!(
        recovered.params == expected.params,
        "{what}: the recovered run must end with the uninterrupted run's parameters"
    );
    assert_eq!(recovered.metrics, expected.metrics, "{what}: metrics.csv");
    // What was saved reads back, checked: eval and summary accept it.
    let summary = chainrule(dir).args(["summary", &run]).output().unwrap();
    assert!(summary.status.success(), "{what}: {}", stderr(&summary));
}

/// Aborts a run of `args` at every file operation of its saves in turn, and
/// recovers each; returns how many kill points there were.
fn abort_at_every_save_step(dir: &Path, args: &[&str], expected: &Outcome) -> usize {
    for k in 1.. {
        let name = format!("k{k}");
        let out = train(dir, args, &name)
            .env("CHAINRULE_TEST_ABORT_AT", k.to_string())
            .output()
            .unwrap();
        if out.status.success() {
            // k is past the last operation of the last save: the run is whole.
            assert!(outcome(dir, &name) == *expected, "a run not aborted");
            return k - 1;
        }
        assert_eq!(
            out.status.signal(),
            Some(libc_sigabrt()),
            "k = {k}: aborted by the fault point, not failed: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(&format!("CHAINRULE_TEST_ABORT_AT={k}: aborting before:")),
            "{}",
            stderr(&out)
        );
        let what = format!("aborted {}", stderr(&out).trim());
        recover(dir, args, &name, expected, &what);
        std::fs::remove_dir_all(dir.join("runs").join(&name)).unwrap();
    }
    unreachable!()
}

/// SIGABRT's number (6 on every Unix that chainrule runs on).
fn libc_sigabrt() -> i32 {
    6
}

/// Starts a run of `args` that reports each epoch on stderr, and returns once it has
/// reported epoch `n`; its output goes on being read so that it never blocks.
fn after_epoch(dir: &Path, args: &[&str], name: &str, n: usize) -> std::process::Child {
    use std::io::BufRead;
    let mut child = chainrule(dir)
        .arg("train")
        .args(args)
        .args(["--name", name])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let prefix = format!("epoch {n}/");
    loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with(&prefix) => break,
            Some(Ok(_)) => {}
            other => panic!("the run ended before epoch {n}: {other:?}"),
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    child
}

#[test]
fn a_run_aborted_at_any_step_of_any_save_resumes_to_the_same_parameters() {
    let dir = scratch("plain");
    let expected = reference(&dir, PLAIN, "whole");
    let points = abort_at_every_save_step(&dir, PLAIN, &expected);
    // Three saves (after epochs 1 and 2, and at the end) of about 18 file
    // operations each: 53 when this was written.
    assert!(points >= 45, "only {points} kill points");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_with_early_stopping_aborted_at_any_save_step_stops_where_it_would_have() {
    let dir = scratch("patience");
    let expected = reference(&dir, PATIENCE, "whole");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("runs/whole/checkpoint/state.json")).unwrap(),
    )
    .unwrap();
    let epochs = state["epochs_done"].as_u64().unwrap();
    assert!(
        state["stopped_early"] == true && epochs == 7,
        "the settings must make patience end the run part-way, after a save: {state}"
    );
    let points = abort_at_every_save_step(&dir, PATIENCE, &expected);
    // Four saves (after epochs 2, 4 and 6, and at the end, each with
    // best.safetensors): 79 when this was written.
    assert!(points >= 60, "only {points} kill points");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_killed_after_any_epoch_resumes_to_the_same_parameters() {
    let dir = scratch("sigkill");
    for (args, label) in [(PLAIN, "plain"), (PATIENCE, "patience")] {
        let expected = reference(&dir, args, &format!("whole-{label}"));
        // The early-stopping run stops after its 7th epoch (with its best at the 5th).
        let epochs = if label == "plain" { 3 } else { 7 };
        for n in 1..=epochs {
            let name = format!("{label}-{n}");
            let mut child = after_epoch(&dir, args, &name, n);
            child.kill().unwrap(); // SIGKILL, wherever the run is by now
            let status = child.wait().unwrap();
            let what = format!("{label}: SIGKILL after epoch {n} ({status:?})");
            recover(&dir, args, &name, &expected, &what);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn early_stopping_resumed_after_a_signal_stops_at_the_same_epoch_with_the_same_parameters() {
    // Before: early stopping's count started again on resume, and a stop requested at
    // an epoch's end skipped that epoch's count, so a resumed run could stop at
    // another epoch (1 in 12 trials ended with other parameters).
    let dir = scratch("sigterm");
    let expected = reference(&dir, PATIENCE, "whole");
    for n in 1..=7 {
        let name = format!("term-{n}");
        let mut child = after_epoch(&dir, PATIENCE, &name, n);
        let sent = Command::new("kill")
            .args(["-s", "TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = child.wait().unwrap();
        assert!(status.success(), "a stop request ends cleanly: {status:?}");
        recover(
            &dir,
            PATIENCE,
            &name,
            &expected,
            &format!("SIGTERM after epoch {n}"),
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torn_checkpoint_is_refused_naming_the_file() {
    let dir = scratch("torn");
    reference(&dir, PLAIN, "r");
    let saved = dir.join("runs/r/checkpoint");
    // An older params.safetensors beside a newer state.json: what a run folder saved
    // file by file could hold after a crash between the two.
    let params = saved.join("params.safetensors");
    let mut bytes = std::fs::read(&params).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&params, &bytes).unwrap();
    for args in [
        &["train", "--resume", "runs/r", "--epochs", "5"][..],
        &["eval", "runs/r"],
        &["predict", "runs/r", "--x", "x.csv"],
        &["summary", "runs/r"],
    ] {
        let out = chainrule(&dir).args(args).output().unwrap();
        let message = stderr(&out);
        assert!(!out.status.success(), "{args:?} must refuse it");
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(
            message.contains("params.safetensors: its SHA-256 differs from manifest.json's"),
            "{args:?}: {message}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_folder_killed_before_its_first_save_is_refused_then_reused_by_its_name() {
    // Before: a run killed in its first epoch left an empty folder that made both
    // `--resume` (no state.json) and `--name` (already exists) fail.
    let dir = scratch("empty");
    std::fs::create_dir_all(dir.join("runs/r")).unwrap();
    let out = chainrule(&dir)
        .args(["train", "--resume", "runs/r"])
        .output()
        .unwrap();
    assert_eq!(
        stderr(&out).trim(),
        "chainrule: runs/r: no complete checkpoint yet (training stopped before its first save); start it again with --name r"
    );
    let expected = reference(&dir, PLAIN, "whole");
    assert!(reference(&dir, PLAIN, "r") == expected);
    // With a complete checkpoint, the name is taken.
    let out = train(&dir, PLAIN, "r").output().unwrap();
    assert!(
        stderr(&out).contains("runs/r already exists (use --resume"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_folder_in_use_is_neither_resumed_nor_taken_by_its_name() {
    let dir = scratch("locked");
    reference(&dir, PLAIN, "r");
    std::fs::create_dir_all(dir.join("runs/empty")).unwrap();
    // This process holds the locks, as a training run holds its folder's.
    let lock = |run: &str| chainrule::io::CheckpointDir::try_lock(&dir.join(run)).unwrap();
    let (_r, _empty) = (lock("runs/r").unwrap(), lock("runs/empty").unwrap());
    let out = chainrule(&dir)
        .args(["train", "--resume", "runs/r", "--epochs", "5"])
        .output()
        .unwrap();
    assert_eq!(
        stderr(&out).trim(),
        "chainrule: runs/r: another chainrule train is writing to this run folder"
    );
    let out = train(&dir, PLAIN, "empty").output().unwrap();
    assert_eq!(
        stderr(&out).trim(),
        "chainrule: name: runs/empty already exists (another chainrule train is writing to it)"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_folder_of_an_earlier_chainrule_is_read_but_not_resumed() {
    // Saved file by file, with nothing to check them against: it may be torn.
    let dir = scratch("legacy");
    reference(&dir, PLAIN, "r");
    let legacy = dir.join("runs/old");
    std::fs::create_dir_all(&legacy).unwrap();
    for file in [
        "model.json",
        "params.safetensors",
        "optimizer.safetensors",
        "config.toml",
        "state.json",
        "metrics.csv",
    ] {
        std::fs::copy(dir.join("runs/r/checkpoint").join(file), legacy.join(file)).unwrap();
    }
    let summary = chainrule(&dir)
        .args(["summary", "runs/old"])
        .output()
        .unwrap();
    assert!(summary.status.success(), "{}", stderr(&summary));
    let out = chainrule(&dir)
        .args(["train", "--resume", "runs/old", "--epochs", "5"])
        .output()
        .unwrap();
    assert!(
        stderr(&out).trim().starts_with(
            "chainrule: runs/old: saved file by file by an earlier chainrule (no checkpoint/), so it may be torn: it cannot be resumed"
        ),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
