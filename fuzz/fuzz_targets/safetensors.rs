#![no_main]
//! Arbitrary bytes as a safetensors file, read as f32 and as f64.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = chainrule::io::safetensors_from_bytes::<f32>(data, "fuzz.safetensors");
    let _ = chainrule::io::safetensors_from_bytes::<f64>(data, "fuzz.safetensors");
});
