//! A team of helper threads that wait for work by spinning, for the many small
//! parallel regions of a training loop.
//!
//! A training step of a small MLP takes a few hundred microseconds, with serial work
//! (the optimizer, the next batch) between its parallel parts. Rayon's workers go to
//! sleep in those gaps, and waking them costs about 100 µs on this machine's virtual
//! CPUs (measured); a helper that spins for a while first takes a job in about a
//! microsecond. Helpers spin for up to [`SPIN`] after their last job, then park until
//! the next one, so an idle team does not burn a core for long.
//!
//! Training runs inside [`Team::scope`]; matrix products find the team with
//! [`with_current`] and give each member one block of their output.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long an idle helper spins before it parks.
pub(crate) const SPIN: Duration = Duration::from_millis(2);

const IDLE: u8 = 0;
const POSTED: u8 = 1;
const DONE: u8 = 2;
const QUIT: u8 = 3;

type Job<'a> = Box<dyn FnOnce() + Send + 'a>;

thread_local! {
    /// The team of the [`Team::scope`] running on this thread, if any.
    static CURRENT: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
}

/// Calls `f` with the team of the innermost [`Team::scope`] on this thread (`None`
/// outside one, and on a helper).
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Team>) -> R) -> R {
    let team = CURRENT.with(Cell::get);
    // SAFETY: CURRENT is set only for the duration of a Team::scope body on this
    // thread, during which the team is alive and not moved.
    f(unsafe { team.as_ref() })
}

/// Element-wise passes over at least this many values are cut among the current
/// team; below it, handing out the blocks costs more than it saves (a pass over 2¹⁵
/// `f32` takes about 10 µs here, and a spinning helper takes a job in about 1 µs).
pub(crate) const ELEMENTWISE_SPLIT_MIN: usize = 1 << 15;

/// Calls `f(start, block)` on consecutive blocks of `data` that together cover it,
/// `start` being the block's offset in `data` and every block but the last a whole
/// number of rows of `row` values: one block per member of the current team when
/// `data` holds at least [`ELEMENTWISE_SPLIT_MIN`] values, else all of `data` at once
/// on this thread. Each value is visited exactly once either way, so an element-wise
/// `f` gives the same result, bit for bit, with or without a team.
pub(crate) fn for_each_block<T: Send>(
    data: &mut [T],
    row: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let len = data.len();
    with_current(|team| match team.map_or(1, |t| block_count(t, len, row)) {
        parts if parts > 1 => {
            let f = &f;
            let mut jobs: Vec<Box<dyn FnOnce() + Send + '_>> = Vec::with_capacity(parts);
            let (mut rest, mut start) = (data, 0);
            for i in 0..parts {
                let end = block_end(len, row, parts, i);
                let (block, tail) = rest.split_at_mut(end - start);
                jobs.push(Box::new(move || f(start, block)));
                (rest, start) = (tail, end);
            }
            team.expect("a team").run(jobs);
        }
        _ => f(0, data),
    });
}

/// Whether `test` holds for every block of `data`, blocks as in [`for_each_block`]
/// (read-only).
pub(crate) fn all_blocks<T: Sync>(data: &[T], test: impl Fn(&[T]) -> bool + Sync) -> bool {
    let len = data.len();
    with_current(|team| match team.map_or(1, |t| block_count(t, len, 1)) {
        parts if parts > 1 => {
            let test = &test;
            let jobs: Vec<Box<dyn FnOnce() -> bool + Send + '_>> = (0..parts)
                .map(|i| {
                    let block = &data[if i == 0 {
                        0
                    } else {
                        block_end(len, 1, parts, i - 1)
                    }..block_end(len, 1, parts, i)];
                    Box::new(move || test(block)) as Box<dyn FnOnce() -> bool + Send + '_>
                })
                .collect();
            team.expect("a team").run(jobs).into_iter().all(|ok| ok)
        }
        _ => test(data),
    })
}

/// How many blocks [`for_each_block`] cuts `len` values (rows of `row`) into.
fn block_count(team: &Team, len: usize, row: usize) -> usize {
    let rows = len / row.max(1);
    if len < ELEMENTWISE_SPLIT_MIN {
        1
    } else {
        team.size().min(rows).max(1)
    }
}

/// Where block `i` of `parts` ends: on a row boundary, the last at `len`.
fn block_end(len: usize, row: usize, parts: usize, i: usize) -> usize {
    if i + 1 == parts {
        len
    } else {
        len / row.max(1) * (i + 1) / parts * row.max(1)
    }
}

/// One helper's mailbox.
struct Slot {
    state: AtomicU8,
    job: Mutex<Option<Job<'static>>>,
    thread: Mutex<Option<Thread>>,
}

impl Slot {
    /// Unparks the helper, in case it has parked.
    fn wake(&self) {
        if let Some(t) = self
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            t.unpark();
        }
    }
}

/// Helper threads, alive for one [`Team::scope`].
pub(crate) struct Team {
    slots: Vec<Slot>,
}

impl Team {
    /// Runs `body` with a team of `threads − 1` helpers (the caller is the last
    /// member), then stops them.
    pub(crate) fn scope<R>(threads: usize, body: impl FnOnce(&Team) -> R) -> R {
        let team = Team {
            slots: (1..threads.max(1))
                .map(|_| Slot {
                    state: AtomicU8::new(IDLE),
                    job: Mutex::new(None),
                    thread: Mutex::new(None),
                })
                .collect(),
        };
        thread::scope(|s| {
            for slot in &team.slots {
                s.spawn(move || {
                    *slot.thread.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(thread::current());
                    serve(slot);
                });
            }
            let stop = Stop(&team);
            let before = CURRENT.with(|c| c.replace(&team as *const Team));
            let result = body(&team);
            CURRENT.with(|c| c.set(before));
            drop(stop);
            result
        })
    }

    /// The members, helpers and caller.
    pub(crate) fn size(&self) -> usize {
        self.slots.len() + 1
    }

    /// Runs `jobs[i]` for every i, the last on the calling thread and the others on
    /// helpers, and returns their results in order.
    pub(crate) fn run<T: Send>(&self, jobs: Vec<Box<dyn FnOnce() -> T + Send + '_>>) -> Vec<T> {
        assert!(jobs.len() <= self.size(), "one job per member");
        let results: Vec<Mutex<Option<T>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
        let mut jobs = jobs;
        let own = jobs.pop();
        {
            // Waits for every posted job even if the caller's own job panics, so no
            // helper can outlive what its job borrows.
            let wait = Wait {
                slots: &self.slots[..jobs.len()],
            };
            for ((slot, job), result) in self.slots.iter().zip(jobs).zip(&results) {
                let boxed: Job<'_> = Box::new(move || {
                    let value = job();
                    *result.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
                });
                // SAFETY: the job borrows only what outlives this block, and `wait`
                // (dropped at the end of the block, also on unwinding) does not return
                // until the helper has finished it.
                let boxed: Job<'static> = unsafe { std::mem::transmute(boxed) };
                *slot.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(boxed);
                slot.state.store(POSTED, Ordering::Release);
                slot.wake();
            }
            if let Some(own) = own {
                let value = own();
                *results
                    .last()
                    .expect("a slot per job")
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(value);
            }
            drop(wait);
        }
        results
            .into_iter()
            .map(|r| {
                r.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .expect("every job ran (a helper's panic propagates)")
            })
            .collect()
    }
}

/// Waits for the posted jobs of `slots`.
struct Wait<'a> {
    slots: &'a [Slot],
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        for slot in self.slots {
            while slot.state.load(Ordering::Acquire) == POSTED {
                std::hint::spin_loop();
            }
            slot.state.store(IDLE, Ordering::Release);
        }
    }
}

/// Tells the helpers to quit at the end of the scope.
struct Stop<'a>(&'a Team);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        for slot in &self.0.slots {
            slot.state.store(QUIT, Ordering::Release);
            slot.wake();
        }
    }
}

/// A helper's loop: spin for a job, park after [`SPIN`] without one.
fn serve(slot: &Slot) {
    let mut idle_since = Instant::now();
    let mut spins = 0u32;
    loop {
        match slot.state.load(Ordering::Acquire) {
            POSTED => {
                let job = slot.job.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(job) = job {
                    // A panicking job leaves its result empty; the caller reports it.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
                slot.state.store(DONE, Ordering::Release);
                idle_since = Instant::now();
            }
            QUIT => return,
            _ => {
                // Reading the clock costs more than a spin: look every 1024 spins.
                spins = spins.wrapping_add(1);
                if !spins.is_multiple_of(1024) || idle_since.elapsed() < SPIN {
                    std::hint::spin_loop();
                } else {
                    thread::park_timeout(Duration::from_millis(10));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_runs_once_and_results_come_back_in_order() {
        for threads in [1, 2, 3] {
            Team::scope(threads, |team| {
                assert_eq!(team.size(), threads);
                for round in 0..200 {
                    let data: Vec<usize> = (0..team.size()).map(|i| i * 10 + round).collect();
                    let jobs: Vec<Box<dyn FnOnce() -> usize + Send + '_>> = data
                        .iter()
                        .map(|v| Box::new(move || v + 1) as Box<dyn FnOnce() -> usize + Send + '_>)
                        .collect();
                    let got = team.run(jobs);
                    assert_eq!(got, data.iter().map(|v| v + 1).collect::<Vec<_>>());
                }
                with_current(|current| assert!(current.is_some_and(|t| std::ptr::eq(t, team))));
            });
            with_current(|current| assert!(current.is_none(), "the scope is over"));
        }
    }

    #[test]
    fn blocks_cover_every_value_once_on_row_boundaries() {
        for threads in [1, 2, 3] {
            Team::scope(threads, |_| {
                for (len, row) in [
                    (10, 3),
                    (ELEMENTWISE_SPLIT_MIN + 7, 64),
                    (3 * ELEMENTWISE_SPLIT_MIN, 1),
                ] {
                    let mut data = vec![0u32; len];
                    let starts = Mutex::new(Vec::new());
                    for_each_block(&mut data, row, |start, block| {
                        starts.lock().unwrap().push((start, block.len()));
                        block
                            .iter_mut()
                            .enumerate()
                            .for_each(|(i, v)| *v += (start + i) as u32 + 1);
                    });
                    assert!(data.iter().enumerate().all(|(i, &v)| v == i as u32 + 1));
                    let mut starts = starts.into_inner().unwrap();
                    starts.sort_unstable();
                    let parts = if len >= ELEMENTWISE_SPLIT_MIN {
                        threads
                    } else {
                        1
                    };
                    assert_eq!(starts.len(), parts, "{len} values, {threads} threads");
                    assert!(
                        starts[..parts - 1]
                            .iter()
                            .all(|&(s, n)| s % row == 0 && n % row == 0)
                    );
                }
            });
        }
    }

    #[test]
    fn all_blocks_sees_every_value() {
        for threads in [1, 2, 3] {
            Team::scope(threads, |_| {
                let len = 3 * ELEMENTWISE_SPLIT_MIN + 5;
                for bad in [None, Some(0), Some(ELEMENTWISE_SPLIT_MIN), Some(len - 1)] {
                    let mut data = vec![1.0f32; len];
                    if let Some(i) = bad {
                        data[i] = f32::NAN;
                    }
                    let finite = all_blocks(&data, |b| b.iter().all(|v| v.is_finite()));
                    assert_eq!(finite, bad.is_none(), "{bad:?}, {threads} threads");
                }
            });
        }
    }

    #[test]
    fn a_helper_that_waits_long_parks_and_still_takes_the_next_job() {
        Team::scope(2, |team| {
            std::thread::sleep(SPIN * 3);
            let jobs: Vec<Box<dyn FnOnce() -> u32 + Send>> = vec![Box::new(|| 1), Box::new(|| 2)];
            assert_eq!(team.run(jobs), [1, 2]);
        });
    }
}
