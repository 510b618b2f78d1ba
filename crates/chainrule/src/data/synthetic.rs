//! Small synthetic data sets, generated from a seed: the classic 2-D classification
//! toys and notebook 004's regression.

use super::{Dataset, Target};
use crate::error::invalid;
use crate::{Float, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::f64::consts::PI;

/// The built-in data sets by name.
pub const NAMES: [&str; 5] = ["spiral", "moons", "circles", "xor", "quadratic"];

/// Generates the built-in data set `name` with about `samples` rows (rounded down to a
/// multiple of the class count) and Gaussian `noise`, from `seed`.
///
/// - `spiral`: three interleaved spiral arms (the CS231n set), 3 classes.
/// - `moons`: two interleaving half circles (scikit-learn's `make_moons`), 2 classes.
/// - `circles`: a circle inside another, radius ratio 0.5 (`make_circles`), 2 classes.
/// - `xor`: points in the square [-1, 1]², class = (x > 0) xor (y > 0), 2 classes.
/// - `quadratic`: notebook 004's regression, y = x² + 3 for x in [-2, 2], 1 feature.
///
/// # Errors
/// [`crate::Error::InvalidValue`] for an unknown name or a negative noise.
///
/// ```
/// use chainrule::data::{synthetic, Target};
/// let data = synthetic::generate::<f32>("spiral", 300, 0.2, 0)?;
/// assert_eq!(data.x.shape(), &[300, 2]);
/// let Target::Classes(c) = &data.target else { unreachable!() };
/// assert_eq!(c.iter().filter(|&&k| k == 2).count(), 100);
/// assert_eq!(data, synthetic::generate::<f32>("spiral", 300, 0.2, 0)?);
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn generate<F: Float>(name: &str, samples: usize, noise: f64, seed: u64) -> Result<Dataset<F>> {
    let normal = Normal::new(0.0, noise)
        .map_err(|_| invalid("noise", format!("must be ≥ 0, got {noise}")))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut points: Vec<[f64; 2]> = Vec::with_capacity(samples);
    let mut classes: Vec<usize> = Vec::with_capacity(samples);
    match name {
        "spiral" => {
            let per_class = samples / 3;
            for class in 0..3 {
                for i in 0..per_class {
                    let r = i as f64 / (per_class.max(2) - 1) as f64;
                    let t = class as f64 * 4.0 + 4.0 * r + normal.sample(&mut rng);
                    points.push([r * t.sin(), r * t.cos()]);
                    classes.push(class);
                }
            }
        }
        "moons" => {
            let per_class = samples / 2;
            for i in 0..per_class {
                let t = PI * i as f64 / (per_class.max(2) - 1) as f64;
                points.push([
                    t.cos() + normal.sample(&mut rng),
                    t.sin() + normal.sample(&mut rng),
                ]);
                classes.push(0);
                points.push([
                    1.0 - t.cos() + normal.sample(&mut rng),
                    0.5 - t.sin() + normal.sample(&mut rng),
                ]);
                classes.push(1);
            }
        }
        "circles" => {
            let per_class = samples / 2;
            for i in 0..per_class {
                let t = 2.0 * PI * i as f64 / per_class as f64;
                for (class, radius) in [(0, 1.0), (1, 0.5)] {
                    points.push([
                        radius * t.cos() + normal.sample(&mut rng),
                        radius * t.sin() + normal.sample(&mut rng),
                    ]);
                    classes.push(class);
                }
            }
        }
        "xor" => {
            for _ in 0..samples {
                let (x, y) = (rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0));
                points.push([x + normal.sample(&mut rng), y + normal.sample(&mut rng)]);
                classes.push(usize::from((x > 0.0) != (y > 0.0)));
            }
        }
        "quadratic" => {
            let x: Vec<F> = (0..samples)
                .map(|_| F::from_f64(rng.random_range(-2.0..2.0)))
                .collect();
            let y: Vec<F> = x
                .iter()
                .map(|&v| {
                    let v = v.as_f64();
                    F::from_f64(v * v + 3.0 + normal.sample(&mut rng))
                })
                .collect();
            return Dataset::new(
                Tensor::from_vec(x, &[samples, 1])?,
                Target::Values(Tensor::from_vec(y, &[samples, 1])?),
            );
        }
        other => {
            return Err(invalid(
                "data",
                format!(
                    "unknown built-in data set {other:?} (expected one of {})",
                    NAMES.join(", ")
                ),
            ));
        }
    }
    let rows = points.len();
    let x = Tensor::from_vec(
        points.iter().flatten().map(|&v| F::from_f64(v)).collect(),
        &[rows, 2],
    )?;
    Dataset::new(x, Target::Classes(classes))
}

/// The default noise of each built-in data set (0 for unknown names).
///
/// ```
/// assert_eq!(chainrule::data::synthetic::default_noise("spiral"), 0.2);
/// ```
pub fn default_noise(name: &str) -> f64 {
    match name {
        "spiral" => 0.2,
        "moons" => 0.1,
        "circles" => 0.05,
        "xor" => 0.0,
        "quadratic" => 0.0,
        _ => 0.0,
    }
}
