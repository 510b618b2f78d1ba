//! A team of helper threads that wait for work by spinning, for the many small
//! parallel regions of a training loop.
//!
//! A training step of a small MLP takes a few hundred microseconds, with serial work
//! (the optimizer, the next batch) between its parallel parts. Rayon's workers go to
//! sleep in those gaps, and waking a sleeping thread costs a large share of such a
//! part; a helper that spins for a while first takes a job almost at once (the
//! figures: docs/performance.md). Helpers spin for up to [`SPIN`] after their last
//! job, then park until the next one, so an idle team does not burn a core for long.
//!
//! Training runs inside [`Team::scope`]; matrix products find the team with
//! [`with_current`] and give each member one block of their output, and large
//! element-wise passes do the same through [`for_each_block`] and [`all_blocks`].
//! Handing out work allocates nothing.

use smallvec::SmallVec;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(not(target_arch = "wasm32"))]
use std::{
    sync::{
        Mutex,
        atomic::{AtomicU8, AtomicUsize},
    },
    thread::{self, Thread},
    time::{Duration, Instant},
};

#[cfg(not(target_arch = "wasm32"))]
/// How long an idle helper spins before it parks.
pub(crate) const SPIN: Duration = Duration::from_millis(2);

#[cfg(not(target_arch = "wasm32"))]
const IDLE: u8 = 0;
#[cfg(not(target_arch = "wasm32"))]
const POSTED: u8 = 1;
#[cfg(not(target_arch = "wasm32"))]
const TAKEN: u8 = 2;
#[cfg(not(target_arch = "wasm32"))]
const DONE: u8 = 3;
#[cfg(not(target_arch = "wasm32"))]
const QUIT: u8 = 4;

#[cfg(not(target_arch = "wasm32"))]
/// What a helper runs: a task shared by the team, called with the helper's part.
type Task<'a> = &'a (dyn Fn(usize) + Sync);

thread_local! {
    /// The team of the [`Team::scope`] running on this thread, if any. A raw pointer
    /// because the team lives on the scope's stack: matrix products deep inside a
    /// training step find it here instead of having it passed through every call.
    static CURRENT: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
}

/// Calls `f` with the team of the innermost [`Team::scope`] on this thread (`None`
/// outside one, and on a helper).
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Team>) -> R) -> R {
    let team = CURRENT.with(Cell::get);
    // SAFETY: CURRENT points to a team only while a Team::scope body runs on this
    // thread: the scope sets it after creating the team and its `Current` guard
    // puts the previous value back before the team is dropped, also when the body
    // panics. The team does not move meanwhile (it is borrowed by the scope's
    // threads), and `f`'s borrow cannot outlive this call. Tested by
    // `the_current_team_is_forgotten_when_its_scope_ends_even_by_a_panic`.
    f(unsafe { team.as_ref() })
}

/// Makes a team the current one on this thread until dropped, then puts back the
/// one before it.
struct Current(*const Team);

impl Current {
    fn set(team: &Team) -> Current {
        Current(CURRENT.with(|c| c.replace(team)))
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

/// Element-wise passes (and the optimizer's updates) over at least this many values
/// are cut among the current team; below it, handing out the blocks costs more than
/// it saves: the value keeps a pass several times longer than the time a spinning
/// helper takes to start a job (docs/performance.md).
pub(crate) const ELEMENTWISE_SPLIT_MIN: usize = 1 << 15;

/// Calls `f(start, block)` on consecutive blocks of `data` that together cover it,
/// `start` being the block's offset in `data` and every block but the last a whole
/// number of rows of `row` values: [`BLOCKS_PER_MEMBER`] blocks per member of the
/// current team (never more than rows), shared out by [`Team::run`], when
/// `data` holds at least [`ELEMENTWISE_SPLIT_MIN`] values, else all of `data` at once
/// on this thread. Each value is visited exactly once either way, so an element-wise
/// `f` gives the same result, bit for bit, with or without a team.
pub(crate) fn for_each_block<T: Send>(
    data: &mut [T],
    row: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    for_each_block_if(data, row, data.len() >= ELEMENTWISE_SPLIT_MIN, f);
}

/// Blocks per member that passes are cut into when split: more than one, so that on
/// a CPU shared with other processes the members that have a core take the blocks of
/// one that waits for its own ([`Team::run`]), yet few enough that each block is
/// still much longer than claiming it (an atomic increment).
pub(crate) const BLOCKS_PER_MEMBER: usize = 4;

/// Work (in multiply-adds) from which a kernel that computes more than element-wise
/// passes do per value (a convolution) cuts it among the current team, as matrix
/// products are (`SPLIT_MIN_FLOPS` in `tensor/matmul.rs`).
pub(crate) const WORK_SPLIT_MIN: usize = 1 << 18;

/// [`for_each_block`] cutting `data` among the current team when `split` holds
/// (whatever its length), for kernels that decide by their work; still never more
/// blocks than rows.
pub(crate) fn for_each_block_if<T: Send>(
    data: &mut [T],
    row: usize,
    split: bool,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let len = data.len();
    let count = |team: &Team| match split && team.size() > 1 {
        true => (team.size() * BLOCKS_PER_MEMBER)
            .min(len / row.max(1))
            .max(1),
        false => 1,
    };
    with_current(|team| match team.map(|t| (t, count(t))) {
        Some((team, parts)) if parts > 1 => {
            let mut jobs: SmallVec<[_; 16]> = SmallVec::new();
            let (mut rest, mut start) = (data, 0);
            for i in 0..parts {
                let end = block_end(len, row, parts, i);
                let (block, tail) = rest.split_at_mut(end - start);
                let f = &f;
                jobs.push(move || f(start, block));
                (rest, start) = (tail, end);
            }
            team.run(jobs);
        }
        _ => f(0, data),
    });
}

/// [`for_each_block`] over two slices of one length cut alike: `f(start, a, b)` gets
/// the same range of each, for kernels that write two outputs per element (a value
/// and what its backward reads).
///
/// # Panics
/// When the slices' lengths differ (a kernel's own mistake, never the user's).
pub(crate) fn for_each_block_pair<T: Send, U: Send>(
    a: &mut [T],
    b: &mut [U],
    row: usize,
    f: impl Fn(usize, &mut [T], &mut [U]) + Sync,
) {
    assert_eq!(
        a.len(),
        b.len(),
        "for_each_block_pair: slices of one length"
    );
    let len = a.len();
    with_current(|team| match team.map(|t| (t, block_count(t, len, row))) {
        Some((team, parts)) if parts > 1 => {
            let mut jobs: SmallVec<[_; 16]> = SmallVec::new();
            let (mut rest_a, mut rest_b, mut start) = (a, b, 0);
            for i in 0..parts {
                let end = block_end(len, row, parts, i);
                let (block_a, tail_a) = rest_a.split_at_mut(end - start);
                let (block_b, tail_b) = rest_b.split_at_mut(end - start);
                let f = &f;
                jobs.push(move || f(start, block_a, block_b));
                (rest_a, rest_b, start) = (tail_a, tail_b, end);
            }
            team.run(jobs);
        }
        _ => f(0, a, b),
    });
}

/// Whether `test` holds for every block of `data`, blocks as in [`for_each_block`]
/// (read-only).
pub(crate) fn all_blocks<T: Sync>(data: &[T], test: impl Fn(&[T]) -> bool + Sync) -> bool {
    let len = data.len();
    with_current(|team| match team.map(|t| (t, block_count(t, len, 1))) {
        Some((team, parts)) if parts > 1 => {
            let failed = AtomicBool::new(false);
            let jobs: SmallVec<[_; 16]> = (0..parts)
                .map(|i| {
                    let start = if i == 0 {
                        0
                    } else {
                        block_end(len, 1, parts, i - 1)
                    };
                    let block = &data[start..block_end(len, 1, parts, i)];
                    let (test, failed) = (&test, &failed);
                    move || {
                        if !test(block) {
                            failed.store(true, Ordering::Relaxed);
                        }
                    }
                })
                .collect();
            team.run(jobs);
            !failed.into_inner()
        }
        _ => test(data),
    })
}

/// How many blocks [`for_each_block`] cuts `len` values (rows of `row`) into.
fn block_count(team: &Team, len: usize, row: usize) -> usize {
    let rows = len / row.max(1);
    if len < ELEMENTWISE_SPLIT_MIN || team.size() == 1 {
        1
    } else {
        (team.size() * BLOCKS_PER_MEMBER).min(rows).max(1)
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

#[cfg(not(target_arch = "wasm32"))]
/// One helper's mailbox.
struct Slot {
    state: AtomicU8,
    /// The posted task and the part to call it with.
    job: Mutex<Option<(Task<'static>, usize)>>,
    /// The last task panicked (the caller re-raises it).
    panicked: AtomicBool,
    thread: Mutex<Option<Thread>>,
}

#[cfg(not(target_arch = "wasm32"))]
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

/// Denormal numbers (below 2⁻¹²⁶ in f32) take a slow path through the FPU, up to a
/// hundred times slower per operation on x86, and a network's gradients drift into
/// them (weights decaying towards 0, products of small activations). A training
/// team's threads therefore run with flush-to-zero (a denormal result becomes 0) and
/// denormals-are-zero (a denormal input reads as 0), the setting PyTorch's
/// `set_flush_denormal(True)` makes. A divergence from PyTorch's default, which keeps
/// them: values below 2⁻¹²⁶ (f32) or 2⁻¹⁰²² (f64) become 0 during training.
mod denormals {
    /// Sets flush-to-zero and denormals-are-zero on this thread until dropped, then
    /// puts back the thread's previous floating-point control state.
    pub(super) struct Flush {
        #[cfg(target_arch = "x86_64")]
        previous: u32,
    }

    /// The MXCSR bits: flush-to-zero (15) and denormals-are-zero (6).
    #[cfg(target_arch = "x86_64")]
    const FTZ_DAZ: u32 = 1 << 15 | 1 << 6;

    impl Flush {
        pub(super) fn set() -> Flush {
            #[cfg(target_arch = "x86_64")]
            {
                let previous = mxcsr();
                set_mxcsr(previous | FTZ_DAZ);
                Flush { previous }
            }
            // Elsewhere (wasm, aarch64) denormals are left as they are.
            #[cfg(not(target_arch = "x86_64"))]
            Flush {}
        }
    }

    impl Drop for Flush {
        fn drop(&mut self) {
            #[cfg(target_arch = "x86_64")]
            set_mxcsr(self.previous);
        }
    }

    /// This thread's SSE control and status register.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn mxcsr() -> u32 {
        // Deprecated because a changed MXCSR can surprise code compiled for the
        // default one; here changing it is the point (the std intrinsic is kept over
        // inline assembly as the plainer of the two).
        #[allow(deprecated)]
        // SAFETY: reading MXCSR has no precondition (SSE is part of x86_64).
        unsafe {
            std::arch::x86_64::_mm_getcsr()
        }
    }

    /// Sets this thread's MXCSR.
    #[cfg(target_arch = "x86_64")]
    fn set_mxcsr(value: u32) {
        #[allow(deprecated)]
        // SAFETY: `value` is a value read from MXCSR, or one with the FTZ and DAZ
        // bits added, which every x86_64 processor defines (a reserved bit would
        // fault). The effect is on floating-point results only: below 2⁻¹²⁶
        // they become 0, which no memory safety depends on. It lasts while a
        // `Flush` lives, whose drop puts the previous value back (also when
        // unwinding). Tested by `a_team_flushes_denormals_and_its_caller_gets_them_back`.
        unsafe {
            std::arch::x86_64::_mm_setcsr(value)
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Helper threads, alive for one [`Team::scope`].
pub(crate) struct Team {
    slots: Vec<Slot>,
    /// How many of the slots have a thread: all of them, unless the system refused
    /// to start some (then the team is smaller, never stuck on a missing helper).
    live: std::sync::atomic::AtomicUsize,
    /// A [`Team::run`] is in progress: a job that runs parallel work of its own
    /// (on the calling thread) gets it done inline, not posted to busy helpers.
    running: AtomicBool,
}

#[cfg(not(target_arch = "wasm32"))]
impl Team {
    /// Runs `body` with a team of `threads − 1` helpers (the caller is the last
    /// member), then stops them. Helpers the system refuses to start are done
    /// without: the team is smaller, and nothing waits for a thread that does not
    /// exist. (Training asks for at most the machine's cores: `tensor::num_threads`.)
    /// Every member flushes denormals to zero meanwhile ([`denormals`]); the caller
    /// gets its previous setting back at the end.
    pub(crate) fn scope<R>(threads: usize, body: impl FnOnce(&Team) -> R) -> R {
        let _flush = denormals::Flush::set();
        let team = Team {
            slots: (1..threads.max(1))
                .map(|_| Slot {
                    state: AtomicU8::new(IDLE),
                    job: Mutex::new(None),
                    panicked: AtomicBool::new(false),
                    thread: Mutex::new(None),
                })
                .collect(),
            live: std::sync::atomic::AtomicUsize::new(0),
            running: AtomicBool::new(false),
        };
        thread::scope(|s| {
            for slot in &team.slots {
                let started = thread::Builder::new()
                    .name("chainrule-team".into())
                    .spawn_scoped(s, move || {
                        *slot.thread.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(thread::current());
                        let _flush = denormals::Flush::set();
                        serve(slot);
                    });
                if started.is_err() {
                    break;
                }
                team.live.fetch_add(1, Ordering::Relaxed);
            }
            let stop = Stop(&team);
            let current = Current::set(&team);
            let result = body(&team);
            drop(current);
            drop(stop);
            result
        })
    }

    /// The members, helpers and caller.
    pub(crate) fn size(&self) -> usize {
        self.live.load(Ordering::Relaxed) + 1
    }

    /// Runs every job of `jobs` and returns when all have finished. The members (the
    /// helpers and the calling thread) claim the jobs one at a time, in order, until
    /// none is left; a helper that has not started when the caller runs out of jobs
    /// is taken off the work (its post revoked) instead of waited for. So on a CPU
    /// shared with other processes the members that get a core do the work, and a
    /// helper waiting for its core holds up the others by at most the one job it
    /// started: pass more jobs than members to share work evenly there (see
    /// [`BLOCKS_PER_MEMBER`]). Which member runs a job never changes what it computes.
    /// Nothing is allocated for up to sixteen jobs: they wait in a list on the stack,
    /// and the helpers are handed one shared task.
    ///
    /// # Panics
    /// When a job panics (on a helper, once every started job has finished).
    pub(crate) fn run<J: FnOnce() + Send>(&self, jobs: impl IntoIterator<Item = J>) {
        let jobs: SmallVec<[Mutex<Option<J>>; 16]> =
            jobs.into_iter().map(|j| Mutex::new(Some(j))).collect();
        let take = |job: &Mutex<Option<J>>| job.lock().unwrap_or_else(|e| e.into_inner()).take();
        if self.running.swap(true, Ordering::Acquire) {
            // Nested in a job of this team: its helpers are busy.
            jobs.iter().filter_map(take).for_each(|job| job());
            return;
        }
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _done = Done(&self.running);
        // The helpers claim from the front and the caller from the back, so that on
        // a quiet CPU each member runs the same contiguous share of every pass (the
        // helper the first blocks, the caller the last), as a fixed split would: a
        // pass then reads what the same core wrote in the pass before. W1 (the
        // 784-128-10 MLP) took 9% longer with one shared counter, its blocks going
        // to whichever member came first (docs/performance.md). Each job is taken
        // once (its mutex), whichever end reaches it.
        let front = AtomicUsize::new(0);
        let back = AtomicUsize::new(jobs.len());
        let from_front = || {
            loop {
                let i = front.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                if let Some(job) = take(job) {
                    job();
                }
            }
        };
        let from_back = || {
            while let Ok(end) = back.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |end| {
                end.checked_sub(1)
            }) {
                if let Some(job) = take(&jobs[end - 1]) {
                    job();
                }
            }
        };
        let helpers = jobs.len().saturating_sub(1).min(self.size() - 1);
        if helpers == 0 {
            return from_back();
        }
        let task = |_part: usize| from_front();
        let task: Task<'_> = &task;
        {
            // Waits for every helper that took the task even if the caller's own
            // jobs panic, so no helper can outlive what its jobs borrow.
            let wait = Wait {
                slots: &self.slots[..helpers],
            };
            // SAFETY: the helpers are threads of the enclosing Team::scope, which
            // outlive this call, so their mailboxes want a task of any lifetime;
            // handing them a borrowed one without allocating needs this lifetime
            // cast (the team's speed depends on handing out work without
            // allocating: docs/performance.md). The task borrows only what outlives
            // this block, and `wait` (dropped at the end of the block, also when the
            // caller's own job panics) does not return until every helper has either
            // finished with it or had it revoked before starting (and the mailbox
            // emptied). Tested by `the_callers_panic_waits_for_the_helpers`,
            // `a_helpers_panic_reaches_the_caller_after_every_job_has_finished` and
            // `jobs_a_helper_has_not_started_are_done_without_it`.
            let task: Task<'static> = unsafe { std::mem::transmute(task) };
            for (i, slot) in wait.slots.iter().enumerate() {
                slot.panicked.store(false, Ordering::Relaxed);
                *slot.job.lock().unwrap_or_else(|e| e.into_inner()) = Some((task, i));
                slot.state.store(POSTED, Ordering::Release);
                slot.wake();
            }
            from_back();
            drop(wait);
        }
        let panicked = self.slots[..helpers]
            .iter()
            .any(|slot| slot.panicked.swap(false, Ordering::Relaxed));
        assert!(!panicked, "a job of the training team panicked");
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Waits for the helpers of `slots` to finish their task, or revokes it from those
/// that have not started it.
struct Wait<'a> {
    slots: &'a [Slot],
}

#[cfg(not(target_arch = "wasm32"))]
impl Drop for Wait<'_> {
    fn drop(&mut self) {
        for slot in self.slots {
            // Not started yet (its thread waiting for a core, or parked): revoked, and
            // the mailbox emptied of the borrowed task.
            if slot
                .state
                .compare_exchange(POSTED, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                *slot.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
                continue;
            }
            // Spin briefly, then give the core away while waiting: on a shared CPU
            // the helper may be waiting for this very core.
            let mut spins = 0u32;
            while slot.state.load(Ordering::Acquire) != DONE {
                spins = spins.saturating_add(1);
                if spins < WAIT_SPINS {
                    std::hint::spin_loop();
                } else {
                    thread::yield_now();
                }
            }
            slot.state.store(IDLE, Ordering::Release);
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Spins the caller makes waiting for a helper before it yields its core instead.
const WAIT_SPINS: u32 = 1 << 12;

#[cfg(not(target_arch = "wasm32"))]
/// Tells the helpers to quit at the end of the scope.
struct Stop<'a>(&'a Team);

#[cfg(not(target_arch = "wasm32"))]
impl Drop for Stop<'_> {
    fn drop(&mut self) {
        for slot in &self.0.slots {
            slot.state.store(QUIT, Ordering::Release);
            slot.wake();
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// A helper's loop: spin for a job, park after [`SPIN`] without one.
fn serve(slot: &Slot) {
    let mut idle_since = Instant::now();
    let mut spins = 0u32;
    loop {
        match slot.state.load(Ordering::Acquire) {
            POSTED => {
                // Claim the post; the caller may have revoked it meanwhile.
                if slot
                    .state
                    .compare_exchange(POSTED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    continue;
                }
                let job = slot.job.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some((task, part)) = job {
                    // A panicking job is reported by the caller, after the others.
                    let run = std::panic::AssertUnwindSafe(|| task(part));
                    if std::panic::catch_unwind(run).is_err() {
                        slot.panicked.store(true, Ordering::Relaxed);
                    }
                }
                slot.state.store(DONE, Ordering::Release);
                idle_since = Instant::now();
                spins = 0;
            }
            QUIT => return,
            _ => {
                // Spin a little (a job usually follows within microseconds), then
                // yield the core at each turn until SPIN is over (on a shared CPU
                // another process or the caller may want it), then park. The clock
                // is read only once spinning is over: next to a yield it costs
                // nothing, and a helper woken from parking goes straight back.
                spins = spins.saturating_add(1);
                if spins < WAIT_SPINS {
                    std::hint::spin_loop();
                } else if idle_since.elapsed() < SPIN {
                    thread::yield_now();
                } else {
                    thread::park_timeout(Duration::from_millis(10));
                }
            }
        }
    }
}

/// The WebAssembly build's team: the calling thread alone, chosen at compile time
/// (wasm32-unknown-unknown has no threads to start, and no clock for a helper's
/// spinning). Its size is 1, so every pass above runs its one block on the caller;
/// results are those of a native team of one thread.
#[cfg(target_arch = "wasm32")]
pub(crate) struct Team;

#[cfg(target_arch = "wasm32")]
impl Team {
    /// Runs `body` with the one-member team current, as the native scope does, and
    /// the same floating-point setting (denormals are left alone off x86_64).
    pub(crate) fn scope<R>(_threads: usize, body: impl FnOnce(&Team) -> R) -> R {
        let _flush = denormals::Flush::set();
        let team = Team;
        let current = Current::set(&team);
        let result = body(&team);
        drop(current);
        result
    }

    /// The members: the caller alone.
    pub(crate) fn size(&self) -> usize {
        1
    }

    /// Runs every job of `jobs` on the calling thread, in order.
    pub(crate) fn run<J: FnOnce() + Send>(&self, jobs: impl IntoIterator<Item = J>) {
        jobs.into_iter().for_each(|job| job());
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// A product of two normal f32 numbers whose result, 10⁻⁴⁰, is denormal, and a
    /// denormal input times 1; neither folded away by the compiler.
    #[cfg(target_arch = "x86_64")]
    fn denormal_arithmetic() -> [f32; 2] {
        use std::hint::black_box;
        [
            black_box(1e-30f32) * black_box(1e-10f32),
            black_box(f32::from_bits(1)) * black_box(1.0f32),
        ]
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn a_team_flushes_denormals_and_its_caller_gets_them_back() {
        // The control bits of MXCSR (the low six are sticky exception flags, which
        // the arithmetic below sets).
        let control = || denormals::mxcsr() & !0x3f;
        let before = control();
        assert!(denormal_arithmetic().iter().all(|&v| v != 0.0));
        Team::scope(2, |team| {
            assert_eq!(denormal_arithmetic(), [0.0; 2], "on the caller");
            let mut got = [[1.0f32; 2]; 2];
            let [helper, caller] = &mut got;
            team.run([
                Box::new(|| *helper = denormal_arithmetic()) as Box<dyn FnOnce() + Send>,
                Box::new(|| *caller = denormal_arithmetic()),
            ]);
            assert_eq!(got, [[0.0; 2]; 2], "on the helper and the caller");
        });
        assert_eq!(control(), before);
        assert!(denormal_arithmetic().iter().all(|&v| v != 0.0));
        // Also after a panic inside the team.
        let caught = std::panic::catch_unwind(|| Team::scope(2, |_| panic!("inside")));
        assert!(caught.is_err() && control() == before);
    }

    #[test]
    fn every_job_runs_once() {
        for threads in [1, 2, 3] {
            Team::scope(threads, |team| {
                assert_eq!(team.size(), threads);
                // Fewer jobs than members, as many, and more (past the sixteen kept
                // on the stack).
                for round in 0..200 {
                    let count = [1, threads, 4 * threads + 1, 40][round % 4];
                    let mut got = vec![0; count];
                    let jobs = got
                        .iter_mut()
                        .enumerate()
                        .map(|(i, slot)| move || *slot += i * 10 + round);
                    team.run(jobs);
                    assert_eq!(got, (0..count).map(|i| i * 10 + round).collect::<Vec<_>>());
                }
                with_current(|current| assert!(current.is_some_and(|t| std::ptr::eq(t, team))));
            });
            with_current(|current| assert!(current.is_none(), "the scope is over"));
        }
    }

    #[test]
    fn a_helpers_panic_reaches_the_caller_after_every_job_has_finished() {
        Team::scope(2, |team| {
            let finished = AtomicBool::new(false);
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                team.run([
                    Box::new(|| -> () { panic!("helper") }) as Box<dyn FnOnce() + Send>,
                    Box::new(|| {
                        std::thread::sleep(Duration::from_millis(20));
                        finished.store(true, Ordering::Relaxed);
                    }),
                ]);
            }));
            assert!(caught.is_err() && finished.load(Ordering::Relaxed));
            // The team still works.
            let mut ran = [false; 2];
            let [a, b] = &mut ran;
            team.run([
                Box::new(|| *a = true) as Box<dyn FnOnce() + Send>,
                Box::new(|| *b = true),
            ]);
            assert_eq!(ran, [true, true]);
        });
    }

    #[test]
    fn the_callers_panic_waits_for_the_helpers() {
        Team::scope(2, |team| {
            let (started, finished) = (AtomicBool::new(false), AtomicBool::new(false));
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                team.run([
                    // On the helper (which claims from the front): still using its
                    // borrow when the caller panics.
                    Box::new(|| {
                        started.store(true, Ordering::Release);
                        std::thread::sleep(Duration::from_millis(20));
                        finished.store(true, Ordering::Relaxed);
                    }) as Box<dyn FnOnce() + Send>,
                    // On the caller (which claims from the back), once the helper's
                    // job has started (a job not started by then would be revoked).
                    Box::new(|| {
                        while !started.load(Ordering::Acquire) {
                            std::thread::yield_now();
                        }
                        panic!("caller")
                    }),
                ]);
            }));
            // `finished` is still borrowed by the helper's job unless run waited.
            assert!(caught.is_err() && finished.load(Ordering::Relaxed));
        });
    }

    #[test]
    fn the_current_team_is_forgotten_when_its_scope_ends_even_by_a_panic() {
        let caught = std::panic::catch_unwind(|| {
            Team::scope(2, |_| {
                with_current(|team| assert!(team.is_some()));
                panic!("inside the scope");
            })
        });
        assert!(caught.is_err());
        // The team is gone: a dangling current team would be used here.
        with_current(|team| assert!(team.is_none()));
        // Nested scopes put back the outer team.
        Team::scope(2, |outer| {
            Team::scope(3, |inner| {
                with_current(|t| assert!(t.is_some_and(|t| std::ptr::eq(t, inner))));
            });
            with_current(|t| assert!(t.is_some_and(|t| std::ptr::eq(t, outer))));
        });
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
                    let parts = if len >= ELEMENTWISE_SPLIT_MIN && threads > 1 {
                        (threads * BLOCKS_PER_MEMBER).min(len / row)
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
    fn paired_blocks_cover_both_slices_alike() {
        for threads in [1, 2, 3] {
            Team::scope(threads, |_| {
                for (len, row) in [(10, 3), (ELEMENTWISE_SPLIT_MIN + 7, 64)] {
                    let mut a = vec![0u32; len];
                    let mut b = vec![0.0f64; len];
                    for_each_block_pair(&mut a, &mut b, row, |start, a, b| {
                        assert_eq!(a.len(), b.len());
                        assert!(start % row == 0);
                        for (i, (a, b)) in a.iter_mut().zip(b.iter_mut()).enumerate() {
                            *a += (start + i) as u32 + 1;
                            *b += (start + i) as f64 + 1.0;
                        }
                    });
                    assert!(a.iter().enumerate().all(|(i, &v)| v == i as u32 + 1));
                    assert!(b.iter().enumerate().all(|(i, &v)| v == i as f64 + 1.0));
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
    fn a_job_that_splits_work_of_its_own_runs_it_inline() {
        Team::scope(2, |team| {
            let mut outer = [0u32; 2];
            let [a, b] = &mut outer;
            let inner = |slot: &mut u32| {
                let mut parts = [0u32; 2];
                let [x, y] = &mut parts;
                team.run([
                    Box::new(|| *x = 1) as Box<dyn FnOnce() + Send>,
                    Box::new(|| *y = 2),
                ]);
                *slot = parts[0] + parts[1];
            };
            team.run([
                Box::new(|| inner(a)) as Box<dyn FnOnce() + Send>,
                Box::new(|| inner(b)),
            ]);
            assert_eq!(outer, [3, 3]);
        });
    }

    /// A helper that is parked (or waiting for a core) when the caller has finished
    /// every job is revoked, not waited for; whoever ran them, each job ran once, and
    /// the helper still takes the next post. Run many times so that both endings (the
    /// helper in time, the helper revoked) occur.
    #[test]
    fn jobs_a_helper_has_not_started_are_done_without_it() {
        Team::scope(2, |team| {
            for round in 0..300 {
                if round % 50 == 0 {
                    // Long enough for the helper to park.
                    std::thread::sleep(SPIN * 3);
                }
                let mut ran = [None, None, None];
                let jobs = ran
                    .iter_mut()
                    .map(|slot| move || *slot = Some(thread::current().id()));
                team.run(jobs);
                assert!(ran.iter().all(Option::is_some), "round {round}: {ran:?}");
            }
        });
    }

    #[test]
    fn a_helper_that_waits_long_parks_and_still_takes_the_next_job() {
        Team::scope(2, |team| {
            std::thread::sleep(SPIN * 3);
            let mut got = [0, 0];
            let [a, b] = &mut got;
            team.run([
                Box::new(|| *a = 1) as Box<dyn FnOnce() + Send>,
                Box::new(|| *b = 2),
            ]);
            assert_eq!(got, [1, 2]);
        });
    }
}
