#![no_main]
//! Arbitrary bytes as a .npy file: an error or an array, never a panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(array) = chainrule::io::read_npy_bytes(data, "fuzz.npy") {
        let _ = array.to_tensor::<f32>();
    }
});
