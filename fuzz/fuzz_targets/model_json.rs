#![no_main]
//! Arbitrary text as a model JSON file: checked and counted without allocating
//! (models beyond 2^31 parameters are refused), then initialised when its
//! parameters fit the fuzzer's memory limit (a larger legal model is refused only
//! by the memory available, which is no bug).
use chainrule::nn::{Architecture, Init, Sequential};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(plan) = Architecture::from_json(text)
    {
        let values: usize = plan.parameters.iter().chain(&plan.buffers).sum();
        if values <= 1 << 24 {
            let _ = Sequential::<f32>::from_architecture(plan, Init::PytorchDefault, 0);
        }
    }
});
