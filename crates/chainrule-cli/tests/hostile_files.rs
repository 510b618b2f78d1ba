//! Every file of the malformed corpus through the `chainrule` binary, in the place it
//! would be read: a non-zero exit, one line on stderr naming the problem, no panic,
//! no output and no temporary file left behind.

use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus(folder: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../chainrule/tests/corpus")
        .join(folder);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn good(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../chainrule/tests/reference/f64_loss_mse")
        .join(name)
        .display()
        .to_string()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chainrule-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[track_caller]
fn refused(args: &[String], cwd: &Path, file: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_chainrule"))
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{file:?} was accepted: {args:?}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{file:?}: a clean failure, not a crash ({:?}): {stderr}",
        out.status
    );
    assert_eq!(stderr.lines().count(), 1, "{file:?}: one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{file:?}: {stderr}");
    let left: Vec<_> = std::fs::read_dir(cwd)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.iter()
            .all(|n| n != "out.safetensors" && !n.to_string_lossy().contains(".tmp")),
        "{file:?}: left {left:?}"
    );
}

fn contract(cwd: &Path, slot: &str, file: &Path, command: &str) -> Vec<String> {
    let mut files = [
        ("--model", good("model.json")),
        ("--params", good("params.safetensors")),
        ("--x", good("x.npy")),
        ("--y", good("y.npy")),
    ];
    for (flag, value) in files.iter_mut() {
        if *flag == slot {
            *value = file.display().to_string();
        }
    }
    let mut args = vec![command.to_string()];
    for (flag, value) in files {
        args.push(flag.into());
        args.push(value);
    }
    if command == "grad" {
        args.extend(["--loss".into(), "mse".into()]);
    } else {
        let config = if slot == "--config" {
            file.display().to_string()
        } else {
            good("config.json")
        };
        args.extend(["--config".into(), config]);
    }
    args.extend([
        "--out".into(),
        cwd.join("out.safetensors").display().to_string(),
    ]);
    args
}

#[test]
fn the_cli_refuses_every_malformed_file_cleanly() {
    let cwd = scratch("all");
    let mut count = 0;
    for file in corpus("npy") {
        refused(&contract(&cwd, "--x", &file, "grad"), &cwd, &file);
        refused(&contract(&cwd, "--y", &file, "train"), &cwd, &file);
        count += 1;
    }
    for file in corpus("safetensors") {
        refused(&contract(&cwd, "--params", &file, "grad"), &cwd, &file);
        count += 1;
    }
    for file in corpus("model") {
        refused(&contract(&cwd, "--model", &file, "grad"), &cwd, &file);
        count += 1;
    }
    for file in corpus("train_json") {
        refused(&contract(&cwd, "--config", &file, "train"), &cwd, &file);
        count += 1;
    }
    for file in corpus("config_toml") {
        refused(
            &[
                "train".into(),
                "--config".into(),
                file.display().to_string(),
                "--quiet".into(),
            ],
            &cwd,
            &file,
        );
        count += 1;
    }
    for file in corpus("csv") {
        refused(
            &[
                "train".into(),
                "--data".into(),
                format!("csv:{}", file.display()),
                "--target".into(),
                "label".into(),
                "--quiet".into(),
            ],
            &cwd,
            &file,
        );
        count += 1;
    }
    for file in corpus("idx") {
        // An MNIST folder whose training images are the malformed file.
        let dir = scratch(&format!(
            "idx-{}",
            file.file_name().unwrap().to_string_lossy()
        ));
        let images = if file.extension().is_some_and(|e| e == "gz") {
            "train-images-idx3-ubyte.gz"
        } else {
            "train-images-idx3-ubyte"
        };
        std::fs::copy(&file, dir.join(images)).unwrap();
        refused(
            &[
                "train".into(),
                "--data".into(),
                format!("mnist:{}", dir.display()),
                "--quiet".into(),
            ],
            &cwd,
            &file,
        );
        count += 1;
    }
    assert!(count >= 40, "{count} files");
    assert!(
        !cwd.join("runs").exists()
            || std::fs::read_dir(cwd.join("runs")).unwrap().all(|e| {
                // A run folder may have been created before the data failed to load; it holds nothing.
                std::fs::read_dir(e.unwrap().path())
                    .unwrap()
                    .next()
                    .is_none()
            })
    );
}
