//! `train` on a terminal (issue 15, item 8): a Keras-style bar per epoch whose last
//! drawing holds the epoch's training and validation metrics, and a clean line after
//! Ctrl-C. The binary runs on a pseudo-terminal made by util-linux's `script`, which
//! copies everything the terminal shows to its standard output; Ctrl-C is the byte
//! 0x03 typed into that terminal, which its line discipline turns into SIGINT for the
//! foreground job, as a keyboard would.

mod common;

use common::scratch;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `chainrule ARGS` on a new pseudo-terminal in `dir`; its screen output arrives on
/// the child's stdout, and what is written to its stdin is typed into the terminal.
fn on_terminal(dir: &Path, args: &str) -> Child {
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_chainrule"));
    Command::new("script")
        // -q: no banner; -e: exit with the command's status; -f: flush at once;
        // /dev/null: keep no typescript file.
        .args(["-qef", "-c", &command, "/dev/null"])
        .current_dir(dir)
        // A fixed size, so that the bar's layout does not depend on who runs the test.
        .env("COLUMNS", "120")
        .env("LINES", "40")
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux's `script` (Debian's bsdutils, an essential package)")
}

/// The lines a person reads on the screen: each `\r` returns to the line's start
/// and indicatif's escape sequences clear it, so a line's text is what was drawn after
/// its last clearing; colours and cursor moves are dropped.
fn screen_lines(raw: &str) -> Vec<String> {
    let mut lines = vec![String::new()];
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => lines.push(String::new()),
            '\r' => {
                // "\r\n" is the terminal's new line; a lone "\r" starts the line over.
                if chars.peek() != Some(&'\n') {
                    lines.last_mut().unwrap().clear();
                }
            }
            '\u{1b}' => {
                // CSI: ESC [ parameters final-byte. "K" erases the line (what a
                // redraw does after "\r"); "A" moves up a line to redraw it.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    let mut parameters = String::new();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() || c == '~' {
                            match c {
                                'K' if parameters != "1" => lines.last_mut().unwrap().clear(),
                                'A' => {
                                    let up: usize = parameters.parse().unwrap_or(1);
                                    for _ in 0..up.min(lines.len() - 1) {
                                        lines.pop();
                                    }
                                }
                                _ => {}
                            }
                            break;
                        }
                        parameters.push(c);
                    }
                }
            }
            _ => lines.last_mut().unwrap().push(c),
        }
    }
    lines
}

/// Reads `child`'s screen until it shows `wanted`, returning all read so far.
fn read_until(child: &mut Child, wanted: &str) -> String {
    let stdout = child.stdout.as_mut().unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(wanted) {
        let n = stdout.read(&mut buffer).unwrap();
        assert!(
            n > 0,
            "the terminal closed before showing {wanted:?}: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// A bar's `done/total` batches, the first thing on its line.
#[track_caller]
fn batches(bar: &str) -> (usize, usize) {
    let (done, total) = bar
        .split_whitespace()
        .next()
        .and_then(|count| count.split_once('/'))
        .unwrap_or_else(|| panic!("a bar: {bar:?}"));
    (done.parse().unwrap(), total.parse().unwrap())
}

/// The rows of a run's metrics.csv after its header, as columns of numbers.
fn metrics(run: &Path) -> Vec<Vec<f64>> {
    std::fs::read_to_string(run.join("checkpoint/metrics.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .map(|v| v.parse().unwrap_or(f64::NAN))
                .collect()
        })
        .collect()
}

#[test]
fn each_epoch_ends_as_a_full_bar_with_the_metrics_its_checkpoint_recorded() {
    let dir = scratch("terminal", "bar");
    let mut child = on_terminal(&dir, "train --name r --epochs 3 --threads 1");
    let mut raw = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut raw)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{raw}");
    let lines = screen_lines(&raw);
    let rows = metrics(&dir.join("runs/r"));
    assert_eq!(rows.len(), 3);
    for (epoch, row) in rows.iter().enumerate() {
        let heading = format!("Epoch {}/3", epoch + 1);
        let at = lines
            .iter()
            .position(|l| l.trim() == heading)
            .unwrap_or_else(|| panic!("{heading:?} on a line of its own in {lines:#?}"));
        // The bar's last drawing, on the line after the heading: every batch done,
        // then the epoch's numbers, which must be the ones the checkpoint recorded
        // (metrics.csv: epoch, train_loss, train_accuracy, val_loss, val_accuracy, …).
        let bar = &lines[at + 1];
        let (done, total) = batches(bar);
        assert_eq!(done, total, "a full bar: {bar:?}");
        assert!(bar.contains("[=============================="), "{bar:?}");
        let expected = format!(
            "loss {:.4}  accuracy {:.2}%  val_loss {:.4}  val_accuracy {:.2}%",
            row[1],
            100.0 * row[2],
            row[3],
            100.0 * row[4]
        );
        assert!(bar.contains(&expected), "{expected:?} in {bar:?}");
    }
}

#[test]
fn ctrl_c_leaves_the_bar_where_it_stopped_and_goes_on_on_a_new_line() {
    let dir = scratch("terminal", "interrupted");
    // Epochs enough that the run is still training when the key arrives, however
    // fast the machine: the key is typed once the second epoch has started.
    let mut child = on_terminal(
        &dir,
        "train --name r --epochs 1000 --samples 3000 --batch-size 8 --threads 1",
    );
    let mut raw = read_until(&mut child, "Epoch 2/1000");
    child.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
    child.stdin.as_mut().unwrap().flush().unwrap();
    let mut rest = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut rest)
        .unwrap();
    raw += &rest;
    let status = child.wait().unwrap();
    let lines = screen_lines(&raw);
    let notice = lines
        .iter()
        .position(|l| l.contains("Interrupted before epoch"))
        .unwrap_or_else(|| panic!("the interruption reported in {lines:#?}"));
    // The notice starts its own line, and the line above it is the bar, cut short
    // (fewer batches done than the epoch has).
    assert!(
        lines[notice].starts_with("Interrupted before epoch"),
        "{lines:#?}"
    );
    let bar = lines[..notice]
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap();
    let (done, total) = batches(bar);
    assert!(done < total, "a bar cut short: {bar:?}");
    // The checkpoint holds the interrupted epoch's batches; the run stopped cleanly.
    assert!(status.code().is_some(), "exited, not killed: {status:?}");
    assert!(dir.join("runs/r/checkpoint/state.json").exists());
}
