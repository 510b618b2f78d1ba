#![no_main]
//! Arbitrary text as a training config JSON file.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = chainrule::train::TrainConfig::from_json(text);
    }
});
