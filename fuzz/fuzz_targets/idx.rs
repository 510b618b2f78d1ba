#![no_main]
//! Arbitrary bytes as an IDX file (plain, or gzip when they start like one).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = chainrule::io::read_idx_bytes(data, "fuzz-ubyte");
});
