#![no_main]
//! Arbitrary text as a model JSON file (models are refused before allocating beyond
//! 2^31 parameters).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = chainrule::nn::Sequential::<f32>::from_json(text, 0);
    }
});
