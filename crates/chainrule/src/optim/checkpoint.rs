//! Saving and restoring an optimizer's state, keyed as PyTorch keys it.

use super::Optimizer;
use super::state::{State, StateBuffer};
use crate::error::invalid;
use crate::nn::Param;
use crate::{Float, Result, Tensor};
use std::collections::BTreeMap;

impl<F: Float> Optimizer<F> {
    /// The optimizer's state as named tensors, for checkpoints: for parameter `name`,
    /// `"{name}.step"` (a scalar) and `"{name}.{buffer}"` for each buffer the
    /// optimizer keeps, under `torch.optim`'s names (`momentum_buffer`, `exp_avg`,
    /// `exp_avg_sq`, `max_exp_avg_sq`, `square_avg`, `grad_avg`, `sum`, `acc_delta`; see the
    /// [module table](crate::optim)). Parameters not stepped yet have no entries.
    ///
    /// ```
    /// use chainrule::nn::Param;
    /// use chainrule::optim::{Optimizer, OptimizerConfig};
    /// use chainrule::Tensor;
    /// let mut opt = Optimizer::new(OptimizerConfig::from_json(&serde_json::json!({"type": "adam"}))?);
    /// let mut p = vec![Param::new("w", Tensor::<f64>::zeros(&[2]))];
    /// opt.step(&mut p, &[Some(Tensor::ones(&[2]))])?;
    /// let state = opt.state_dict(&p);
    /// assert_eq!(state.keys().collect::<Vec<_>>(), ["w.exp_avg", "w.exp_avg_sq", "w.step"]);
    /// let mut restored = Optimizer::new(opt.config().clone());
    /// restored.load_state_dict(&p, &state)?;
    /// assert_eq!(restored.state_dict(&p), state);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn state_dict(&self, params: &[Param<F>]) -> BTreeMap<String, Tensor<F>> {
        let mut out = BTreeMap::new();
        for (param, state) in params.iter().zip(&self.states) {
            if state.step == 0 {
                continue;
            }
            out.insert(
                format!("{}.step", param.name),
                Tensor::scalar(F::from_f64(state.step as f64)),
            );
            for buffer in StateBuffer::ALL {
                if let Some(values) = state.buffer(buffer) {
                    let tensor = Tensor::from_vec(values.clone(), param.value.shape())
                        .expect("buffer matches its parameter");
                    out.insert(format!("{}.{}", param.name, buffer.name()), tensor);
                }
            }
        }
        out
    }

    /// Restores a state saved by [`Optimizer::state_dict`] for the same parameters.
    ///
    /// # Errors
    /// [`Error::InvalidValue`](crate::Error::InvalidValue) naming the tensor when a
    /// buffer has the wrong shape, its name is not one of `torch.optim`'s, or it
    /// belongs to no parameter.
    ///
    /// ```
    /// use chainrule::nn::Param;
    /// use chainrule::optim::{Optimizer, OptimizerConfig};
    /// use chainrule::Tensor;
    /// let mut opt = Optimizer::<f64>::new(OptimizerConfig::from_json(&serde_json::json!({"type": "sgd"}))?);
    /// let p = vec![Param::new("w", Tensor::zeros(&[2]))];
    /// let mut bad = std::collections::BTreeMap::new();
    /// bad.insert("v.step".to_string(), Tensor::scalar(1.0));
    /// assert!(opt.load_state_dict(&p, &bad).is_err());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn load_state_dict(
        &mut self,
        params: &[Param<F>],
        state: &BTreeMap<String, Tensor<F>>,
    ) -> Result<()> {
        let not_a_state_name = |key: &str| {
            let names: Vec<&str> = StateBuffer::ALL.iter().map(|b| b.name()).collect();
            invalid(
                key,
                format!(
                    "not an optimizer state name (expected {{parameter}}.step or {{parameter}}.{{{}}})",
                    names.join(",")
                ),
            )
        };
        let mut states = vec![State::default(); params.len()];
        for (key, tensor) in state {
            let (name, suffix) = key.rsplit_once('.').ok_or_else(|| not_a_state_name(key))?;
            let index = params
                .iter()
                .position(|p| p.name == name)
                .ok_or_else(|| invalid(key, "belongs to no parameter of the model"))?;
            let slot = &mut states[index];
            if suffix == "step" {
                slot.step = tensor.item()?.as_f64() as u64;
                continue;
            }
            let buffer = StateBuffer::from_name(suffix).ok_or_else(|| not_a_state_name(key))?;
            if tensor.shape() != params[index].value.shape() {
                return Err(invalid(
                    key,
                    format!(
                        "has shape {:?}, the parameter has {:?}",
                        tensor.shape(),
                        params[index].value.shape()
                    ),
                ));
            }
            slot.set_buffer(buffer, tensor.to_vec());
        }
        self.states = states;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Tensor;
    use crate::nn::Param;
    use crate::optim::{Optimizer, OptimizerConfig};

    /// The keys of a one-parameter optimizer's state after one step.
    fn keys(config: serde_json::Value) -> Vec<String> {
        let config = OptimizerConfig::from_json(&config).unwrap();
        let mut opt = Optimizer::<f64>::new(config);
        let mut p = vec![Param::new("0.weight", Tensor::zeros(&[2]))];
        opt.step(&mut p, &[Some(Tensor::ones(&[2]))]).unwrap();
        opt.state_dict(&p).into_keys().collect()
    }

    #[test]
    fn checkpoint_keys_carry_torch_optims_state_names() {
        use serde_json::json;
        let cases = [
            (json!({"type": "sgd"}), vec!["step"]),
            (
                json!({"type": "sgd", "momentum": 0.9}),
                vec!["momentum_buffer", "step"],
            ),
            (
                json!({"type": "adam"}),
                vec!["exp_avg", "exp_avg_sq", "step"],
            ),
            (
                json!({"type": "adamw", "amsgrad": true}),
                vec!["exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"],
            ),
            (json!({"type": "rmsprop"}), vec!["square_avg", "step"]),
            (
                json!({"type": "rmsprop", "momentum": 0.5, "centered": true}),
                vec!["grad_avg", "momentum_buffer", "square_avg", "step"],
            ),
            (json!({"type": "adagrad"}), vec!["step", "sum"]),
            (
                json!({"type": "adadelta"}),
                vec!["acc_delta", "square_avg", "step"],
            ),
        ];
        for (config, names) in cases {
            let expected: Vec<String> = names.iter().map(|n| format!("0.weight.{n}")).collect();
            assert_eq!(keys(config.clone()), expected, "{config}");
        }
    }

    #[test]
    fn a_checkpoint_with_the_old_buffer_names_is_refused_by_name() {
        let mut opt = Optimizer::<f64>::new(
            OptimizerConfig::from_json(&serde_json::json!({"type": "adam"})).unwrap(),
        );
        let p = vec![Param::new("w", Tensor::zeros(&[2]))];
        let old = [("w.first".to_string(), Tensor::zeros(&[2]))].into();
        let err = opt.load_state_dict(&p, &old).unwrap_err().to_string();
        assert!(
            err.starts_with("w.first: not an optimizer state name") && err.contains("exp_avg_sq"),
            "{err}"
        );
    }

    #[test]
    fn a_restored_state_continues_bit_for_bit() {
        use serde_json::json;
        for config in [
            json!({"type": "rmsprop", "lr": 0.01, "momentum": 0.5, "centered": true}),
            json!({"type": "adadelta", "rho": 0.8, "weight_decay": 0.01}),
        ] {
            let config = OptimizerConfig::from_json(&config).unwrap();
            let grad = |s: u64| Some(Tensor::<f64>::rand_uniform(&[3, 4], -1.0, 1.0, s).unwrap());
            let start = vec![Param::new(
                "w",
                Tensor::<f64>::rand_uniform(&[3, 4], -1.0, 1.0, 9).unwrap(),
            )];
            let (mut whole, mut part) = (start.clone(), start);
            let mut opt = Optimizer::new(config.clone());
            for s in 0..4 {
                opt.step(&mut whole, &[grad(s)]).unwrap();
            }
            let mut first = Optimizer::new(config.clone());
            for s in 0..2 {
                first.step(&mut part, &[grad(s)]).unwrap();
            }
            let mut second = Optimizer::new(config.clone());
            second
                .load_state_dict(&part, &first.state_dict(&part))
                .unwrap();
            for s in 2..4 {
                second.step(&mut part, &[grad(s)]).unwrap();
            }
            assert_eq!(whole, part, "{config:?}");
            assert_eq!(
                opt.state_dict(&whole),
                second.state_dict(&part),
                "{config:?}"
            );
        }
    }
}
