//! Background work's CPU priority (issue #11, item 1; task h41): the work
//! no writer or reader waits for (the live series' checkpoint builds,
//! ranking and materialised-table batch evaluations, snapshot encoding)
//! runs at a lower OS scheduling priority than the fold thread, the store
//! writer and the HTTP workers, so on a small machine it takes the CPU they
//! leave rather than the other way round.
//!
//! Two ways in:
//! - [`background`] runs a closure on a dedicated rayon pool whose threads
//!   run at [`BACKGROUND_NICE`]; the batch evaluations' parallel loops
//!   inside it stay on that pool. The caller (a tokio blocking thread, the
//!   live thread) waits at its own priority and is never lowered itself,
//!   so no thread is left lowered for a next task it does not own.
//! - [`lower_this_thread`] for a leaf thread that only ever does
//!   background work and starts no thread (the snapshot encoder): a thread
//!   started from a lowered one inherits its value, so a lowered thread
//!   that reaches tokio's blocking pool or a lazily started rayon pool
//!   would leave shared threads lowered for every later task.
//!
//! Must not: lower a thread that holds, or may wait while holding, a lock
//! the fold thread or a writer takes (the state's locks, the fold lock, an
//! allocator arena: a lowered holder descheduled by a busy machine would
//! make the writer wait for it, a priority inversion). So closures passed
//! to [`background`] take no lock of the engine's state, and the fold
//! thread, the store writer, the live thread itself (it holds the write
//! lock in slices) and the freeing thread (`dropper.rs`: it takes the
//! fold thread's allocator arena) keep the normal priority. Priority is
//! timing only: the bits computed are the same on any pool and thread.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

/// The nice value background threads run at (0 is normal, 19 the lowest).
/// On Linux' fair scheduler a nice-10 thread weighs 110 against 1,024 for
/// a normal one: about a tenth of a core while a normal thread wants it,
/// the whole core when none does. Not 19: background work must still
/// progress under a stream (rankings may lag by the staleness only).
pub const BACKGROUND_NICE: i32 = 10;

/// The nice value background threads take from now on (process-wide, as
/// the pool is: `serve --background-nice`, set before the pool starts).
static NICE: AtomicI32 = AtomicI32::new(BACKGROUND_NICE);

/// Sets the nice value background threads take (0: the normal priority,
/// the work still on its own pool; clamped to 0..=19). Call it before any
/// background work: threads already lowered keep their value.
pub fn set_background_nice(nice: i32) {
    NICE.store(nice.clamp(0, 19), Ordering::SeqCst);
}

/// The low-priority pool for batch evaluations; `None` when it could not
/// be built (the work then runs where it is called, at normal priority).
static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();

/// The low-priority pool for the live thread's checkpoint builds alone
/// ([`live_build`]); its threads are `fusion-lbg-N` (not `fusion-live…`:
/// the kernel keeps 15 bytes of a thread's name, and the live thread
/// itself is not lowered).
static LIVE_POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();

/// Runs `work` on the background pool, at [`BACKGROUND_NICE`], and answers
/// its result (the caller waits). `work` must take no lock of the engine's
/// state (module docs). Called from a thread of the pool itself, it runs
/// there.
pub fn background<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    run_on(&POOL, "fusion-bg", work)
}

/// [`background`] on a pool of its own, for the live thread's checkpoint
/// builds: under a stream they run back to back, and on the shared pool a
/// ranking's work waited behind a build's parallel loops (rayon's workers
/// take their own queued tasks before a job injected from outside), so a
/// ranking built after an install took up to a second to rank (lead,
/// session 31). On two pools the two share the CPU the operating system's
/// way, both at the background priority.
pub fn live_build<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    run_on(&LIVE_POOL, "fusion-lbg", work)
}

fn run_on<R: Send>(
    cell: &OnceLock<Option<rayon::ThreadPool>>,
    name: &'static str,
    work: impl FnOnce() -> R + Send,
) -> R {
    let pool = cell.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(move |i| format!("{name}-{i}"))
            .start_handler(|_| {
                if let Err(e) = lower_this_thread() {
                    tracing::warn!(cause = %e, "cannot lower a background thread's priority");
                }
            })
            .build()
            .map_err(|e| tracing::warn!(cause = %e, pool = name, "cannot start a background pool"))
            .ok()
    });
    match pool {
        Some(pool) => pool.install(work),
        None => work(),
    }
}

/// Lowers the calling thread (only it: Linux applies `setpriority` to a
/// thread id alone) to the background nice value ([`BACKGROUND_NICE`]
/// unless [`set_background_nice`] said otherwise). Threads it spawns afterwards
/// inherit the value. Elsewhere than Linux it does nothing.
pub fn lower_this_thread() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority reads only its
        // integer arguments.
        let done = unsafe {
            let tid = libc::gettid();
            let nice = NICE.load(Ordering::SeqCst);
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
        };
        if done != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The calling thread's id (what `/proc/self/task/<tid>` names), for the
/// tests that read a thread's nice value.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn this_tid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// The nice value of thread `tid` of this process, read from
/// `/proc/self/task/<tid>/stat` (field 19), as `ps -L -o nice` shows it.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn nice_of(tid: i32) -> std::io::Result<i32> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))?;
    // The command name (field 2) may hold spaces: count after its ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after
        .split_whitespace()
        .nth(16)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| std::io::Error::other("cannot read the nice value from /proc"))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn background_work_runs_lowered_and_the_caller_is_not() {
        let caller = this_tid();
        let before = nice_of(caller).unwrap();
        let (tid, nice) = background(|| {
            let tid = this_tid();
            (tid, nice_of(tid).unwrap())
        });
        assert_ne!(tid, caller, "the work ran on a pool thread");
        assert_eq!(nice, BACKGROUND_NICE);
        // The live thread's builds have a pool of their own, lowered too.
        let (build_tid, build_nice) = live_build(|| {
            let tid = this_tid();
            (tid, nice_of(tid).unwrap())
        });
        assert!(
            build_tid != caller && build_tid != tid,
            "a thread of its own pool"
        );
        assert_eq!(build_nice, BACKGROUND_NICE);
        assert_eq!(
            nice_of(caller).unwrap(),
            before,
            "the caller keeps its priority"
        );
        // The parallel loops inside stay on the lowered pool.
        let nices: Vec<i32> = background(|| {
            (0..64)
                .into_par_iter()
                .map(|_| nice_of(this_tid()).unwrap())
                .collect()
        });
        assert!(nices.iter().all(|n| *n == BACKGROUND_NICE), "{nices:?}");
    }

    /// Priority is timing only: a batch evaluation (a ranking's, the
    /// live series' build) on the background pool has the bits it has on
    /// the caller's pool, score for score.
    #[test]
    fn a_batch_evaluation_in_the_background_has_the_same_bits() {
        use crate::score::{ScoreState, ScoringModel};
        use std::sync::Arc;

        let model = ScoringModel::default_model();
        let events = crate::generate::small_generated_events(&model);
        // Before the latest event: a batch evaluation, not the live series.
        let at = events.iter().map(|e| e.time).max().unwrap() - chrono::Duration::days(3);
        let model = Arc::new(model);
        let state = ScoreState::build(Arc::clone(&model), Vec::new(), events);
        let here = state.scores_at(at).finish(&model);
        let there = background(|| state.scores_at(at).finish(&model));
        assert!(!here.scores.is_empty());
        assert_eq!(here.scores.len(), there.scores.len());
        for ((key, a), (other, b)) in here.scores.iter().zip(&there.scores) {
            assert_eq!(key, other);
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "{key:?}");
        }
    }
}
