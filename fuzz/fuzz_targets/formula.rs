#![no_main]
//! Arbitrary text as a formula network (examples/notebooks/003/network.formula); when
//! it parses, its forward pass runs, and every parameter's derivation is compared
//! with backprop: the sum over paths and autodiff's gradient are the same sum of the
//! same products taken in a different order, so they may differ only by rounding.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(formula) = chainrule_explain::formula::Formula::parse(text)
    {
        let _ = formula.forward();
        for (name, _) in formula.params() {
            let Ok(d) = formula.explain(&name, 0.1) else {
                continue;
            };
            // Rounding is bounded by the magnitude of the terms summed, not of the
            // result (terms may cancel), and grows with the path length.
            let magnitude: f64 = d
                .paths
                .iter()
                .map(|p| p.factors.iter().map(|f| f.value.abs()).product::<f64>())
                .sum();
            if !(d.gradient.is_finite() && d.autodiff.is_finite() && magnitude.is_finite()) {
                continue;
            }
            let tolerance = 1e-9 * magnitude.max(f64::MIN_POSITIVE);
            assert!(
                (d.gradient - d.autodiff).abs() <= tolerance,
                "{name}: the paths' sum {} differs from autodiff's {} (terms' magnitude {magnitude})",
                d.gradient,
                d.autodiff
            );
        }
    }
});
