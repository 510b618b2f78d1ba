//! The native time of one training step of notebook 000's 2-2-1 network through the
//! playground's API (`Session::train`), to compare with the same call in
//! WebAssembly (web/tests/measure.py prints that one). Run in release:
//!
//! ```sh
//! cargo run --release -p chainrule-web --example step_time
//! ```

use chainrule_web::session::Session;
use std::time::Instant;

fn file(name: &str) -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/notebooks/000");
    std::fs::read(dir.join(name)).expect("examples/notebooks/000")
}

fn main() -> chainrule::Result<()> {
    let model = String::from_utf8(file("model.json")).expect("UTF-8");
    // As the page's notebook preset: SSE, full-batch SGD at the notebook's η.
    let settings = format!(
        r#"{{"model": {model}, "loss": "sse", "optimizer": {{"type": "sgd", "lr": 0.01}},
            "batch_size": 1000000, "data": {{"validation": 0}}}}"#
    );
    let mut s = Session::with_data(&settings, &file("x.npy"), &file("y.npy"))?;
    s.load_parameters(&file("params.safetensors"))?;
    s.train(1000)?;
    let steps = 20_000;
    let start = Instant::now();
    s.train(steps)?;
    let per_step = start.elapsed().as_secs_f64() / steps as f64;
    println!(
        "notebook 000 (2-2-1) step, native: {:.2} µs",
        per_step * 1e6
    );
    Ok(())
}
