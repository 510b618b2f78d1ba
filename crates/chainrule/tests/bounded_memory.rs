//! Sizes read from a file are checked against the bytes present before anything is
//! reserved (issue 13, item 3). Each reader runs under an allocator that records
//! the largest single request of the calling thread, so that a reservation made
//! from a hostile header shows here even when the system would grant it.

use chainrule::data::{TargetKind, read_csv, read_mnist};
use chainrule::io::read_idx;
use chainrule::nn::Architecture;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

/// The system allocator, noting the largest request of each thread.
struct Largest;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: a thread being torn down has no slot any more.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is passed on to `System` unchanged; only a size is noted.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

/// `f`'s result and the largest single allocation it made on this thread.
fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|l| l.set(0));
    let result = f();
    (result, LARGEST.with(Cell::get))
}

fn corpus(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(path)
}

const MIB: usize = 1 << 20;

#[test]
fn an_idx_header_of_18_bytes_is_refused_before_reserving_what_it_declares() {
    // Before: 2.7 M images of 28×28 declared, 2 data bytes present, 2.1 GB reserved.
    let file = corpus("idx/header_of_18_bytes-ubyte");
    let (result, largest) = largest_allocation(|| read_idx(&file));
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("header_of_18_bytes-ubyte")
            && message.contains("needs 2116800000 data bytes, the file has 2"),
        "{message}"
    );
    assert!(largest < MIB, "{largest} bytes at once");
}

#[test]
fn a_gzip_idx_declaring_more_images_than_it_holds_reserves_only_what_arrives() {
    // Before: the declared 2.7 M images were reserved as f32 (8.5 GB) at the first
    // bytes. The stream holds 1 MiB of pixels; a few times that is the bound.
    let file = corpus("idx/more_images_than_data-ubyte.gz");
    let (result, largest) = largest_allocation(|| read_idx(&file));
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("more_images_than_data-ubyte.gz")
            && message.contains(&format!("the file has {}", MIB)),
        "{message}"
    );
    assert!(largest <= 4 * MIB, "{largest} bytes at once (u8)");

    // The same through read_mnist, which converts to f32 as it decompresses.
    let dir = std::env::temp_dir().join(format!("chainrule-bounded-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&file, dir.join("train-images-idx3-ubyte.gz")).unwrap();
    let (result, largest) = largest_allocation(|| read_mnist(&dir, "train"));
    let message = result.unwrap_err().to_string();
    assert!(message.contains("train-images-idx3-ubyte.gz"), "{message}");
    assert!(largest <= 4 * 4 * MIB, "{largest} bytes at once (f32)");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_model_of_46340_squared_weights_is_counted_without_allocating_them() {
    // Before: `summary` initialised the 8.6 GB of weights to count them.
    let text = std::fs::read_to_string(corpus("model_memory/46340_squared.json")).unwrap();
    let (plan, largest) = largest_allocation(|| Architecture::from_json(&text));
    let plan = plan.unwrap();
    assert_eq!(plan.parameters, vec![46340 * 46340 + 46340]);
    assert!(largest < MIB, "{largest} bytes at once");
}

#[test]
fn class_labels_that_would_size_the_model_are_refused_naming_file_line_and_column() {
    // Before: a label of 30,000,000 in a 2 KB CSV gave a model of 30,000,000
    // outputs, and 2⁶⁴ − 1 overflowed the class count into
    // "layers[4]: in and out must be at least 1".
    for (name, line, class) in [
        ("huge_class.csv", 3, "30000000"),
        ("class_u64_max.csv", 3, "18446744073709551615"),
    ] {
        let file = corpus(&format!("csv/{name}"));
        let message = read_csv::<f32>(&file, "label", TargetKind::Classes)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(name)
                && message.contains(&format!("line {line}, column \"label\": class {class}")),
            "{message}"
        );
    }
}

#[test]
fn a_csv_with_no_feature_column_is_refused_naming_file_and_column() {
    let file = corpus("csv/no_features.csv");
    let message = read_csv::<f32>(&file, "label", TargetKind::Classes)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("no_features.csv")
            && message.contains("no feature columns: \"label\" is the only column"),
        "{message}"
    );
}
