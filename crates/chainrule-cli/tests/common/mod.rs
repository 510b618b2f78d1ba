//! Helpers the CLI's integration tests share: a scratch folder, the binary run in
//! it, and the checks of its outcome. Each test binary uses some of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// An empty folder for one test, `chainrule-{prefix}-{pid}-{name}` in the temp dir.
pub fn scratch(prefix: &str, name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("chainrule-{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A file of the library's malformed-file corpus.
pub fn corpus(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../chainrule/tests/corpus")
        .join(path)
        .display()
        .to_string()
}

/// A file of the PyTorch reference case `f64_loss_mse`.
pub fn case(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../chainrule/tests/reference/f64_loss_mse")
        .join(name)
        .display()
        .to_string()
}

/// `chainrule args`, run in `dir`.
pub fn chainrule(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chainrule"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

/// A clean one-line refusal (exit 1, not an abort) that names each of `what`.
#[track_caller]
pub fn refused(out: &Output, what: &[&str]) {
    use std::os::unix::process::ExitStatusExt;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a clean failure, not {:?} (signal {:?}): {stderr}",
        out.status,
        out.status.signal()
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    for w in what {
        assert!(stderr.contains(w), "{w:?} in {stderr}");
    }
}
