//! A large parameter's update, cut among the threads of the training loop.

use super::state::Slices;
use crate::Float;
use crate::parallel::{BLOCKS_PER_MEMBER, ELEMENTWISE_SPLIT_MIN, with_current};
use smallvec::SmallVec;

/// Runs `update` on parameter `p` with gradient `g` and state `state`: in one call
/// on this thread, or, when `p` holds at least [`ELEMENTWISE_SPLIT_MIN`] values
/// inside a training loop, in several calls per member of the loop's team, each on its
/// own consecutive block of `p`, `g` and every state buffer. An update is
/// element-wise (the same arithmetic on every element, whatever the block), so the
/// result is the same, bit for bit, with any number of threads. The update is
/// memory-bound, like the other element-wise passes the team splits.
#[inline]
pub(super) fn update_in_blocks<F: Float>(
    p: &mut [F],
    g: &[F],
    state: &mut Slices<'_, F>,
    update: impl Fn(&mut Slices<'_, F>, &mut [F], &[F]) + Sync,
) {
    let parts = if p.len() >= ELEMENTWISE_SPLIT_MIN {
        with_current(|team| match team {
            Some(team) if team.size() > 1 => team.size() * BLOCKS_PER_MEMBER,
            _ => 1,
        })
    } else {
        1
    };
    if parts <= 1 {
        return update(state, p, g);
    }
    let n = p.len();
    let update = &update;
    let mut jobs: SmallVec<[_; 16]> = SmallVec::new();
    let (mut p_rest, mut state_rest, mut start) = (p, state.reborrow(), 0);
    for i in 1..=parts {
        let end = n * i / parts;
        let (p_block, p_tail) = p_rest.split_at_mut(end - start);
        let (mut state_block, state_tail) = state_rest.split_at(end - start);
        let g_block = &g[start..end];
        jobs.push(move || update(&mut state_block, p_block, g_block));
        (p_rest, state_rest, start) = (p_tail, state_tail, end);
    }
    with_current(|team| team.expect("a team, as `parts` > 1").run(jobs));
}
