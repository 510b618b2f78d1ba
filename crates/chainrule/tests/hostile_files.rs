//! Every file of the malformed corpus (tests/corpus/, made by tools/make_corpus.py)
//! through every reader: each must give an error, never a panic or a huge allocation.

use chainrule::data::{TargetKind, read_csv};
use chainrule::io::{read_idx, read_npy, read_safetensors, safetensors_dtype};
use chainrule::nn::Sequential;
use chainrule::train::TrainConfig;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn corpus(folder: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(folder);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{dir:?}");
    files
}

/// Runs `read` on every file of `folder` and asserts a clean error for each.
fn refuses_all(folder: &str, read: impl Fn(&Path) -> Result<(), String>) -> usize {
    let files = corpus(folder);
    for file in &files {
        match catch_unwind(AssertUnwindSafe(|| read(file))) {
            Ok(Err(message)) => assert!(!message.is_empty(), "{file:?}: an empty message"),
            Ok(Ok(())) => panic!("{file:?} was accepted"),
            Err(_) => panic!("{file:?} made the reader panic"),
        }
    }
    files.len()
}

fn text(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned()
}

#[test]
fn every_reader_refuses_every_malformed_file_cleanly() {
    let mut total = 0;
    total += refuses_all("npy", |p| read_npy(p).map(drop).map_err(|e| e.to_string()));
    total += refuses_all("safetensors", |p| {
        let as_f32 = read_safetensors::<f32>(p)
            .map(drop)
            .map_err(|e| e.to_string());
        let as_f64 = read_safetensors::<f64>(p)
            .map(drop)
            .map_err(|e| e.to_string());
        let dtype = safetensors_dtype(p).map(drop).map_err(|e| e.to_string());
        // Each file is bad for its dtype in at least one of these ways, and none panics.
        match (as_f32, as_f64, dtype) {
            (Ok(()), Ok(()), Ok(())) => Ok(()),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
        }
    });
    total += refuses_all("idx", |p| read_idx(p).map(drop).map_err(|e| e.to_string()));
    total += refuses_all("csv", |p| {
        read_csv::<f32>(p, "label", TargetKind::Classes)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    total += refuses_all("model", |p| {
        Sequential::<f32>::from_json(&text(p), 0)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    total += refuses_all("train_json", |p| {
        TrainConfig::from_json(&text(p))
            .map(drop)
            .map_err(|e| e.to_string())
    });
    assert!(total >= 40, "{total} files");
}

#[test]
fn errors_name_the_file() {
    for file in corpus("npy")
        .iter()
        .chain(&corpus("idx"))
        .chain(&corpus("csv"))
    {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let message = match file
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
        {
            "npy" => read_npy(file).unwrap_err().to_string(),
            "idx" => read_idx(file).unwrap_err().to_string(),
            _ => read_csv::<f32>(file, "label", TargetKind::Classes)
                .unwrap_err()
                .to_string(),
        };
        assert!(message.contains(&name), "{message:?} should name {name}");
    }
}
