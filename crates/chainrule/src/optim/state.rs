//! The state an optimizer keeps per parameter, under `torch.optim`'s names.

use crate::Float;

/// A buffer of per-element state, named as `torch.optim`'s `state_dict()` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StateBuffer {
    /// SGD's and RMSprop's momentum.
    MomentumBuffer,
    /// Adam's first moment (the running mean of the gradient).
    ExpAvg,
    /// Adam's second moment (the running mean of the squared gradient).
    ExpAvgSq,
    /// AMSGrad's running maximum of `exp_avg_sq`.
    MaxExpAvgSq,
    /// RMSprop's running mean of the squared gradient.
    SquareAvg,
    /// Centred RMSprop's running mean of the gradient.
    GradAvg,
    /// Adagrad's sum of squared gradients.
    Sum,
}

impl StateBuffer {
    /// Every buffer, in the order of [`State`]'s slots.
    pub(super) const ALL: [StateBuffer; 7] = [
        StateBuffer::MomentumBuffer,
        StateBuffer::ExpAvg,
        StateBuffer::ExpAvgSq,
        StateBuffer::MaxExpAvgSq,
        StateBuffer::SquareAvg,
        StateBuffer::GradAvg,
        StateBuffer::Sum,
    ];

    /// PyTorch's name.
    pub(super) fn name(self) -> &'static str {
        match self {
            StateBuffer::MomentumBuffer => "momentum_buffer",
            StateBuffer::ExpAvg => "exp_avg",
            StateBuffer::ExpAvgSq => "exp_avg_sq",
            StateBuffer::MaxExpAvgSq => "max_exp_avg_sq",
            StateBuffer::SquareAvg => "square_avg",
            StateBuffer::GradAvg => "grad_avg",
            StateBuffer::Sum => "sum",
        }
    }

    /// The buffer PyTorch calls `name`.
    pub(super) fn from_name(name: &str) -> Option<StateBuffer> {
        StateBuffer::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// One parameter's state between steps.
#[derive(Debug, Clone, Default)]
pub(super) struct State<F> {
    /// Steps taken (PyTorch's `step`), 1 after the first.
    pub(super) step: u64,
    /// The buffers the optimizer keeps, one slot per [`StateBuffer`] (in [`StateBuffer::ALL`]'s
    /// order), `None` where it keeps none.
    pub(super) buffers: [Option<Vec<F>>; 7],
}

impl<F: Float> State<F> {
    /// The buffer `b`, if kept.
    pub(super) fn buffer(&self, b: StateBuffer) -> Option<&Vec<F>> {
        self.buffers[b as usize].as_ref()
    }

    /// Counts a step and creates the buffers of `wanted` (each filled with its
    /// starting value) that do not exist yet, for `n` elements; returns the slices
    /// of this step.
    #[inline]
    pub(super) fn begin_step(
        &mut self,
        wanted: [Option<(StateBuffer, f64)>; 3],
        n: usize,
    ) -> Slices<'_, F> {
        self.step += 1;
        let mut fresh = false;
        for (b, start) in wanted.into_iter().flatten() {
            let slot = &mut self.buffers[b as usize];
            if slot.is_none() {
                fresh |= b == StateBuffer::MomentumBuffer;
                *slot = Some(vec![F::from_f64(start); n]);
            }
        }
        let mut buffers: [Option<&mut [F]>; 7] = Default::default();
        for (slot, kept) in buffers.iter_mut().zip(&mut self.buffers) {
            *slot = kept.as_deref_mut();
        }
        Slices {
            step: self.step,
            fresh,
            buffers,
        }
    }
}

/// A parameter's state for one step, as slices of a whole parameter or of one block
/// of it.
pub(super) struct Slices<'a, F> {
    /// The step count, 1 at the first step.
    pub(super) step: u64,
    /// The momentum buffer was created for this step (SGD's first step copies the
    /// gradient into it).
    pub(super) fresh: bool,
    buffers: [Option<&'a mut [F]>; 7],
}

impl<'a, F> Slices<'a, F> {
    /// Takes buffer `b` out, if the optimizer keeps it.
    #[inline]
    pub(super) fn take(&mut self, b: StateBuffer) -> Option<&'a mut [F]> {
        self.buffers[b as usize].take()
    }

    /// The slices of elements `..mid` and `mid..`.
    pub(super) fn split_at(self, mid: usize) -> (Self, Self) {
        let (mut head, mut tail) = (self.empty(), self.empty());
        for (i, buffer) in self.buffers.into_iter().enumerate() {
            if let Some(buffer) = buffer {
                let (h, t) = buffer.split_at_mut(mid);
                (head.buffers[i], tail.buffers[i]) = (Some(h), Some(t));
            }
        }
        (head, tail)
    }

    /// The same step with no buffers.
    fn empty(&self) -> Self {
        Slices {
            step: self.step,
            fresh: self.fresh,
            buffers: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_names_are_torch_optims_and_read_back() {
        let names: Vec<&str> = StateBuffer::ALL.iter().map(|b| b.name()).collect();
        assert_eq!(
            names,
            [
                "momentum_buffer",
                "exp_avg",
                "exp_avg_sq",
                "max_exp_avg_sq",
                "square_avg",
                "grad_avg",
                "sum"
            ]
        );
        for (i, b) in StateBuffer::ALL.into_iter().enumerate() {
            assert_eq!(b as usize, i, "slots follow StateBuffer::ALL");
            assert_eq!(StateBuffer::from_name(b.name()), Some(b));
        }
        assert_eq!(StateBuffer::from_name("first"), None);
    }

    #[test]
    fn split_slices_cover_each_buffer_once() {
        let mut state = State::<f32>::default();
        let wanted = [
            Some((StateBuffer::ExpAvg, 1.0)),
            None,
            Some((StateBuffer::Sum, 2.0)),
        ];
        let slices = state.begin_step(wanted, 5);
        assert!(!slices.fresh);
        let (mut head, mut tail) = slices.split_at(2);
        assert_eq!(head.take(StateBuffer::ExpAvg).map(|b| b.len()), Some(2));
        assert_eq!(tail.take(StateBuffer::Sum).map(|b| b.len()), Some(3));
        assert!(head.take(StateBuffer::ExpAvgSq).is_none());
        assert_eq!(state.step, 1);
        assert_eq!(state.buffer(StateBuffer::Sum), Some(&vec![2.0; 5]));
    }
}
