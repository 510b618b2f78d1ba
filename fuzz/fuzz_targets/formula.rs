#![no_main]
//! Arbitrary text as a formula network (examples/notebooks/003/network.formula); when
//! it parses, its forward pass and the first parameter's derivation run too.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(formula) = chainrule_explain::formula::Formula::parse(text)
    {
        let _ = formula.forward();
        if let Some((name, _)) = formula.params().first() {
            let _ = formula.explain(name, 0.1);
        }
    }
});
