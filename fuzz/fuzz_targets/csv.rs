#![no_main]
//! Arbitrary bytes as a CSV file, with a class and a regression target.
use chainrule::data::{TargetKind, read_csv_bytes};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = read_csv_bytes::<f32>(data, "fuzz.csv", "label", TargetKind::Classes);
    let _ = read_csv_bytes::<f64>(data, "fuzz.csv", "y", TargetKind::Values);
});
