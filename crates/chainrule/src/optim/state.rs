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
    /// RMSprop's and Adadelta's running mean of the squared gradient.
    SquareAvg,
    /// Centred RMSprop's running mean of the gradient.
    GradAvg,
    /// Adagrad's sum of squared gradients.
    Sum,
    /// Adadelta's running mean of the squared updates.
    AccDelta,
}

impl StateBuffer {
    /// Every buffer, in the order checkpoints list them.
    pub(super) const ALL: [StateBuffer; 8] = [
        StateBuffer::MomentumBuffer,
        StateBuffer::ExpAvg,
        StateBuffer::ExpAvgSq,
        StateBuffer::MaxExpAvgSq,
        StateBuffer::SquareAvg,
        StateBuffer::GradAvg,
        StateBuffer::Sum,
        StateBuffer::AccDelta,
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
            StateBuffer::AccDelta => "acc_delta",
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
    /// The buffers the optimizer keeps, each under its name, in the order they were
    /// created or restored: none for plain SGD, at most three for any optimizer (a
    /// restored checkpoint may bring others, which are kept but not used).
    buffers: Vec<(StateBuffer, Vec<F>)>,
}

impl<F: Float> State<F> {
    /// The buffer `b`, if kept.
    pub(super) fn buffer(&self, b: StateBuffer) -> Option<&Vec<F>> {
        self.buffers
            .iter()
            .find_map(|(name, values)| (*name == b).then_some(values))
    }

    /// Keeps `values` as buffer `b`, replacing any it had.
    pub(super) fn set_buffer(&mut self, b: StateBuffer, values: Vec<F>) {
        match self.buffers.iter_mut().find(|(name, _)| *name == b) {
            Some((_, kept)) => *kept = values,
            None => self.buffers.push((b, values)),
        }
    }

    /// Creates buffer `b` of `n` elements, each `start` (at a parameter's first step,
    /// or for a buffer a restored checkpoint lacked); says whether it is the momentum
    /// buffer. Out of line: the steps after the first never come here.
    #[cold]
    fn create(&mut self, b: StateBuffer, start: f64, n: usize) -> bool {
        self.buffers.push((b, vec![F::from_f64(start); n]));
        b == StateBuffer::MomentumBuffer
    }

    /// Counts a step and creates the buffers of `wanted` (each filled with its
    /// starting value) that do not exist yet, for `n` elements; returns the slices
    /// of this step, those of `wanted` only.
    ///
    /// This runs once per parameter per step, so its cost is per-parameter overhead
    /// on small networks (W3 has four parameters of one to four values): it touches
    /// only the buffers kept, which for plain SGD are none.
    #[inline]
    pub(super) fn begin_step(
        &mut self,
        wanted: [Option<(StateBuffer, f64)>; 3],
        n: usize,
    ) -> Slices<'_, F> {
        self.step += 1;
        let mut fresh = false;
        for &slot in &wanted {
            if let Some((b, start)) = slot
                && self.buffer(b).is_none()
            {
                fresh |= self.create(b, start, n);
            }
        }
        // Slot i holds wanted[i]; a kept buffer that is not wanted (restored from a
        // checkpoint of another optimizer) stays out.
        let names = wanted.map(|w| w.map(|(b, _)| b));
        let mut buffers = [None, None, None];
        for (b, values) in &mut self.buffers {
            if let Some(i) = names.iter().position(|&name| name == Some(*b)) {
                buffers[i] = Some(values.as_mut_slice());
            }
        }
        Slices {
            step: self.step,
            fresh,
            names,
            buffers,
        }
    }
}

/// A parameter's state for one step, as slices of a whole parameter or of one block
/// of it: the buffers the optimizer keeps, each with its name.
pub(super) struct Slices<'a, F> {
    /// The step count, 1 at the first step.
    pub(super) step: u64,
    /// The momentum buffer was created for this step (SGD's first step copies the
    /// gradient into it).
    pub(super) fresh: bool,
    /// The name of each slot of `buffers` (`None` for an unused slot).
    names: [Option<StateBuffer>; 3],
    buffers: [Option<&'a mut [F]>; 3],
}

impl<'a, F> Slices<'a, F> {
    /// Takes buffer `b` out, if the optimizer keeps it.
    #[inline]
    pub(super) fn take(&mut self, b: StateBuffer) -> Option<&'a mut [F]> {
        let i = self.names.iter().position(|&name| name == Some(b))?;
        self.buffers[i].take()
    }

    /// The same slices, borrowed from these for a shorter time (to split them while
    /// these stay where they are).
    pub(super) fn reborrow(&mut self) -> Slices<'_, F> {
        Slices {
            step: self.step,
            fresh: self.fresh,
            names: self.names,
            buffers: self.buffers.each_mut().map(|b| b.as_deref_mut()),
        }
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

    /// The same step and names with no buffers.
    fn empty(&self) -> Self {
        Slices {
            step: self.step,
            fresh: self.fresh,
            names: self.names,
            buffers: [None, None, None],
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
                "sum",
                "acc_delta"
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
