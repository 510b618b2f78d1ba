//! Every derivative rule against central finite differences in f64
//! (`chainrule::gradcheck`, step 1e-6), on seeded random inputs with shapes that
//! include broadcasting, and on random compositions of rules.
//!
//! Inputs of rules with a kink (relu, abs, max, clamp, ...) are pushed at least 0.1
//! away from it: a finite difference across a kink measures neither side.

use chainrule::gradcheck::gradcheck;
use chainrule::{Result, Tape, Tensor, Var};

/// Largest accepted error (see `gradcheck` for its definition). Central differences
/// with h = 1e-6 are accurate to ~1e-9 on these inputs; 1e-6 leaves room without
/// hiding a wrong rule, whose error is of order 1.
const TOLERANCE: f64 = 1e-6;

fn random(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::rand_uniform(shape, -2.0, 2.0, seed).unwrap()
}

/// Random values at least 0.1 away from 0.
fn away_from_zero(shape: &[usize], seed: u64) -> Tensor<f64> {
    random(shape, seed).map(|v| if v >= 0.0 { v + 0.1 } else { v - 0.1 })
}

fn positive(shape: &[usize], seed: u64) -> Tensor<f64> {
    random(shape, seed).map(|v| v.abs() + 0.2)
}

/// Reduces any result to a scalar with fixed random weights, so that every element's
/// gradient matters (a plain sum would hide, e.g., softmax's, whose sum is constant).
fn weighted_sum<'t>(out: Var<'t, f64>) -> Result<Var<'t, f64>> {
    let weights = random(&out.shape(), 99);
    out.mul(out.tape().constant(weights))?.sum(&[], false)
}

#[track_caller]
fn check<Op>(name: &str, inputs: &[Tensor<f64>], op: Op)
where
    Op: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Result<Var<'t, f64>>,
{
    let report = gradcheck(|tape, x| weighted_sum(op(tape, x)?), inputs, None)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        report.worst_error() < TOLERANCE,
        "{name}: backprop and finite differences disagree: {report:?}"
    );
}

#[test]
fn arithmetic_rules_match_finite_differences_with_broadcasting() {
    let shapes: [(&[usize], &[usize]); 5] = [
        (&[3, 4], &[3, 4]),
        (&[4, 3], &[3]),
        (&[4, 1], &[1, 3]),
        (&[2, 3, 4], &[3, 1]),
        (&[], &[2, 2]),
    ];
    for (i, (a, b)) in shapes.into_iter().enumerate() {
        let seed = 10 * i as u64;
        let inputs = [random(a, seed), random(b, seed + 1)];
        check("add", &inputs, |_, x| x[0].add(x[1]));
        check("sub", &inputs, |_, x| x[0].sub(x[1]));
        check("mul", &inputs, |_, x| x[0].mul(x[1]));
        let divisor = [random(a, seed), away_from_zero(b, seed + 1)];
        check("div", &divisor, |_, x| x[0].div(x[1]));
        let apart = [
            away_from_zero(a, seed),
            random(b, seed + 1).map(|v| v * 0.01),
        ];
        check("maximum", &apart, |_, x| x[0].maximum(x[1]));
        check("minimum", &apart, |_, x| x[0].minimum(x[1]));
    }
    check("neg", &[random(&[3, 2], 5)], |_, x| Ok(x[0].neg()));
}

#[test]
fn bias_broadcast_add_matches_finite_differences() {
    // x·Wᵀ + b with b of shape [out]: the layer's bias, broadcast over the batch.
    let inputs = [random(&[5, 3], 1), random(&[4, 3], 2), random(&[4], 3)];
    check("linear with bias", &inputs, |_, x| {
        x[0].matmul(x[1].t()?)?.add(x[2])
    });
}

#[test]
fn fused_linear_rule_matches_finite_differences_and_its_composed_form() {
    let inputs = [random(&[5, 3], 11), random(&[4, 3], 12), random(&[4], 13)];
    check("linear with bias", &inputs, |_, x| {
        x[0].linear(x[1], Some(x[2]))
    });
    check("linear without bias", &inputs[..2], |_, x| {
        x[0].linear(x[1], None)
    });
    // Oracle: the same layer composed from matmul, transpose and a broadcast add.
    let fused = gradcheck(
        |_, x| weighted_sum(x[0].linear(x[1], Some(x[2]))?),
        &inputs,
        None,
    )
    .unwrap();
    let tape = Tape::new();
    let v: Vec<_> = inputs.iter().map(|t| tape.param(t.clone())).collect();
    let a = weighted_sum(v[0].linear(v[1], Some(v[2])).unwrap()).unwrap();
    let b = weighted_sum(v[0].matmul(v[1].t().unwrap()).unwrap().add(v[2]).unwrap()).unwrap();
    assert!((a.item().unwrap() - b.item().unwrap()).abs() < 1e-12);
    let (ga, gb) = (a.backward().unwrap(), b.backward().unwrap());
    for var in &v {
        let (x, y) = (
            ga.wrt(*var).unwrap().to_vec(),
            gb.wrt(*var).unwrap().to_vec(),
        );
        assert!(
            x.iter().zip(&y).all(|(p, q)| (p - q).abs() < 1e-12),
            "{x:?} vs {y:?}"
        );
    }
    assert!(fused.worst_error() < TOLERANCE);
}

#[test]
fn fused_linear_relu_rule_matches_finite_differences_and_the_two_rules() {
    let inputs = [random(&[6, 3], 31), random(&[5, 3], 32), random(&[5], 33)];
    // Finite differences need every pre-activation away from relu's kink.
    let tape = Tape::new();
    let v: Vec<_> = inputs.iter().map(|t| tape.param(t.clone())).collect();
    let z = v[0].linear(v[1], Some(v[2])).unwrap().value().to_vec();
    assert!(
        z.iter().all(|z| z.abs() > 0.05),
        "seeds put a pre-activation at the kink"
    );
    assert!(z.iter().any(|&z| z > 0.0) && z.iter().any(|&z| z < 0.0));
    check("linear+relu", &inputs, |_, x| {
        x[0].linear_relu(x[1], Some(x[2]))
    });
    // Oracle: linear then relu, two nodes; equal bit for bit, with and without bias.
    for bias in [true, false] {
        let b = bias.then(|| v[2]);
        let fused = weighted_sum(v[0].linear_relu(v[1], b).unwrap()).unwrap();
        let plain = weighted_sum(v[0].linear(v[1], b).unwrap().relu()).unwrap();
        assert_eq!(fused.item().unwrap(), plain.item().unwrap());
        let (gf, gp) = (fused.backward().unwrap(), plain.backward().unwrap());
        for var in &v[..if bias { 3 } else { 2 }] {
            assert_eq!(
                gf.wrt(*var).unwrap().to_vec(),
                gp.wrt(*var).unwrap().to_vec()
            );
        }
    }
}

#[test]
fn fused_cross_entropy_rule_matches_finite_differences_and_its_composed_form() {
    use chainrule::loss::{Loss, Target};
    let classes = vec![2, 0, 3, 3, 1];
    let logits = random(&[5, 4], 21);
    check("cross_entropy", std::slice::from_ref(&logits), |_, x| {
        Loss::CrossEntropy.compute(x[0], &Target::Classes(classes.clone()))
    });
    // Oracle: −mean(gather(log_softmax(x))), from the unfused rules.
    let tape = Tape::new();
    let x = tape.param(logits.clone());
    let fused = Loss::CrossEntropy
        .compute(x, &Target::Classes(classes.clone()))
        .unwrap();
    let composed = -x
        .log_softmax(1)
        .unwrap()
        .gather(&classes)
        .unwrap()
        .mean(&[], false)
        .unwrap();
    assert_eq!(fused.item().unwrap(), composed.item().unwrap());
    let (a, b) = (
        fused.backward().unwrap().wrt(x).unwrap().to_vec(),
        composed.backward().unwrap().wrt(x).unwrap().to_vec(),
    );
    assert!(
        a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-15),
        "{a:?} vs {b:?}"
    );
    // A class index out of range is an error, not a panic.
    let tape = Tape::new();
    let x = tape.param(logits);
    assert!(
        Loss::CrossEntropy
            .compute(x, &Target::Classes(vec![0, 1, 2, 3, 4]))
            .is_err()
    );
}

#[test]
fn matmul_rule_matches_finite_differences_in_2d_and_batched() {
    check(
        "matmul 2-D",
        &[random(&[3, 4], 1), random(&[4, 2], 2)],
        |_, x| x[0].matmul(x[1]),
    );
    check(
        "matmul batched",
        &[random(&[2, 3, 4], 3), random(&[2, 4, 5], 4)],
        |_, x| x[0].matmul(x[1]),
    );
    check(
        "matmul batched · shared matrix",
        &[random(&[2, 3, 4], 5), random(&[4, 2], 6)],
        |_, x| x[0].matmul(x[1]),
    );
    check(
        "shared matrix · batched",
        &[random(&[3, 4], 7), random(&[2, 4, 2], 8)],
        |_, x| x[0].matmul(x[1]),
    );
}

#[test]
fn reduction_rules_match_finite_differences_on_every_axis_choice() {
    let x = [random(&[2, 3, 4], 1)];
    let axes: [&[usize]; 5] = [&[], &[0], &[1], &[2], &[0, 2]];
    for axes in axes {
        for keepdim in [false, true] {
            check("sum", &x, |_, x| x[0].sum(axes, keepdim));
            check("mean", &x, |_, x| x[0].mean(axes, keepdim));
            check("max", &x, |_, x| x[0].max(axes, keepdim));
        }
    }
}

#[test]
fn elementwise_function_rules_match_finite_differences() {
    let shape = [3, 4];
    check("exp", &[random(&shape, 1)], |_, x| Ok(x[0].exp()));
    check("log", &[positive(&shape, 2)], |_, x| Ok(x[0].log()));
    check("sqrt", &[positive(&shape, 3)], |_, x| Ok(x[0].sqrt()));
    for p in [2.0, 3.0, -1.0, 0.5] {
        check("powf", &[positive(&shape, 4)], |_, x| Ok(x[0].powf(p)));
    }
    check("powf(2) of negatives", &[random(&shape, 5)], |_, x| {
        Ok(x[0].powf(2.0))
    });
    check("abs", &[away_from_zero(&shape, 6)], |_, x| Ok(x[0].abs()));
    check("relu", &[away_from_zero(&shape, 7)], |_, x| Ok(x[0].relu()));
    check("leaky_relu", &[away_from_zero(&shape, 8)], |_, x| {
        Ok(x[0].leaky_relu(0.1))
    });
    // Values in [-2.1, -0.1] ∪ [0.1, 2.1]; bounds ±0.05 and ±1.05 avoid all of them.
    let clamp_input = away_from_zero(&shape, 9).map(|v| {
        if (v.abs() - 1.05).abs() < 0.01 {
            v * 1.1
        } else {
            v
        }
    });
    check("clamp", &[clamp_input], |_, x| Ok(x[0].clamp(-1.05, 1.05)));
    check("sigmoid", &[random(&shape, 10)], |_, x| Ok(x[0].sigmoid()));
    check("tanh", &[random(&shape, 11)], |_, x| Ok(x[0].tanh()));
}

#[test]
fn softmax_rules_match_finite_differences_on_both_axes() {
    for axis in [0, 1] {
        check("softmax", &[random(&[3, 4], 1)], |_, x| x[0].softmax(axis));
        check("log_softmax", &[random(&[3, 4], 2)], |_, x| {
            x[0].log_softmax(axis)
        });
    }
}

#[test]
fn indexing_and_shape_rules_match_finite_differences() {
    let x = [random(&[4, 3], 1)];
    check("gather", &x, |_, x| x[0].gather(&[2, 0, 1, 2]));
    check("select_rows (repeats)", &x, |_, x| {
        x[0].select_rows(&[3, 1, 3])
    });
    check("narrow", &x, |_, x| x[0].narrow(0, 1, 2));
    check("narrow axis 1", &x, |_, x| x[0].narrow(1, 1, 2));
    check("reshape", &x, |_, x| x[0].reshape(&[2, 6]));
    check("transpose", &x, |_, x| x[0].t());
    check("permute", &[random(&[2, 3, 4], 2)], |_, x| {
        x[0].permute(&[2, 0, 1])
    });
    check(
        "concat",
        &[random(&[2, 3], 3), random(&[1, 3], 4), random(&[3, 3], 5)],
        |_, x| Var::concat(x, 0),
    );
    check(
        "concat axis 1",
        &[random(&[2, 3], 6), random(&[2, 1], 7)],
        |_, x| Var::concat(x, 1),
    );
}

/// A tiny deterministic generator for choosing operations.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Builds a random expression of smooth rules (so no input lands on a kink) over three
/// inputs of broadcast-compatible shapes, chosen by `seed`.
fn random_expression<'t>(x: &[Var<'t, f64>], seed: u64) -> Result<Var<'t, f64>> {
    let mut rng = Lcg(seed);
    let mut pool: Vec<Var<'t, f64>> = x.to_vec();
    for _ in 0..8 {
        let a = pool[rng.next(pool.len() as u64) as usize];
        let b = pool[rng.next(pool.len() as u64) as usize];
        let next = match rng.next(11) {
            0 => a.add(b)?,
            1 => a.sub(b)?,
            2 => a.mul(b)?,
            3 => a.div(b.mul(b)?.add(b.tape().constant_scalar(1.0))?)?,
            4 => a.tanh(),
            5 => a.sigmoid(),
            6 => a
                .exp()
                .clamp(-1e9, 1e9)
                .mul(a.tape().constant_scalar(0.1))?,
            7 => a.mul(a)?.add(a.tape().constant_scalar(1.0))?.log(),
            8 => a.softmax(a.shape().len().saturating_sub(1))?,
            9 => a.log_softmax(a.shape().len().saturating_sub(1))?.mul(b)?,
            _ => a.sum(&[a.shape().len() - 1], true)?.mul(b)?,
        };
        pool.push(next);
    }
    Ok(*pool.last().expect("non-empty"))
}

#[test]
fn random_compositions_of_rules_match_finite_differences() {
    for seed in 0..25 {
        let inputs = [
            random(&[3, 4], seed * 3),
            random(&[4], seed * 3 + 1),
            random(&[3, 1], seed * 3 + 2),
        ];
        check(&format!("composition {seed}"), &inputs, |_, x| {
            random_expression(x, seed)
        });
    }
}
