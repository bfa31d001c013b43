//! The thread pool the CPU kernels share, and the allocator settings their steps want.

use std::sync::atomic::{AtomicBool, Ordering};

use super::EngineBackend;

/// Runs `work` on a thread of the pool the CPU kernels share (rayon's global pool) when `B`
/// computes on the host, and directly otherwise. A parallel kernel called from outside the
/// pool hands its tasks to the pool and sleeps until they are done: two context switches per
/// operation, hundreds per step (a sixth of a 64x64 training step). Called from inside, the
/// thread takes its share of the tasks itself, and while `work` runs the pool's other threads
/// are kept awake taking its tasks (`keep_warm`) instead of going to sleep between them.
///
/// Callers from outside the pool take turns (`POOL_TURN`); a call from a pool thread runs
/// `work` where it is. Not for work that waits on other threads' work (a peer's all-reduce):
/// the other thread would wait for the turn, and both forever.
pub fn on_kernel_pool<B: EngineBackend, R: Send>(work: impl FnOnce() -> R + Send) -> R {
    if !B::tensors_on_host() || rayon::current_thread_index().is_some() {
        return work();
    }
    // A panic in an earlier turn leaves nothing behind that needs repair.
    let _turn = POOL_TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let done = &AtomicBool::new(false);
    rayon::scope(|scope| {
        let caller = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            scope.spawn(move |_| keep_warm(done, caller));
        }
        let _finished = SetOnDrop(done);
        work()
    })
}

/// Keeps a pool thread awake and taking the caller's tasks until `done`, so that the caller's
/// parallel kernels find it running instead of waking it from its sleep (a futex wake and a
/// context switch per operation, hundreds per step: about a tenth of a 64x64 training step).
/// OpenMP runtimes spin their workers in the same way between parallel regions.
///
/// A keeper that the calling thread itself picks up (while it waits for a stolen task) returns
/// at once: spinning there would wait on the caller's own work below it on its stack.
fn keep_warm(done: &AtomicBool, caller: Option<usize>) {
    /// Idle polls in a row with only a pause between them; after these, each idle poll also
    /// yields the core to the OS (as rayon's own idle loop does), for a thread with other work.
    const PAUSED_POLLS: u32 = 64;
    if rayon::current_thread_index() == caller {
        return;
    }
    let mut idle_polls = 0u32;
    while !done.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => idle_polls = 0,
            _ if idle_polls < PAUSED_POLLS => {
                idle_polls += 1;
                std::hint::spin_loop();
            }
            _ => std::thread::yield_now(),
        }
    }
}

/// Sets its flag when dropped: the keepers stop even when the work panics.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The turn of one outside caller of [`on_kernel_pool`]. A pool thread that waits for its
/// tasks runs whatever job is queued meanwhile; were two callers' jobs in the pool at once (two
/// peers of data-parallel training), a thread inside one peer's backward pass, which holds
/// burn-autodiff's process-wide graph lock, could take up the other peer's backward pass and
/// wait on that lock below itself, forever. burn's graph lock serialises the two passes anyway.
static POOL_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Asks glibc's allocator to keep freed blocks (up to 32 MiB each, 256 MiB in all) for reuse
/// instead of handing them back to the system. The CPU backend allocates a fresh buffer for
/// every tensor of every step, and memory the system hands out again costs a page fault per
/// 4 KiB and zeroing: about a tenth of a step. The top pad keeps the pool threads' arenas too:
/// glibc unmaps a thread arena's 64 MiB heap as soon as it is all free unless the pad says to
/// keep that much, and a step on a pool thread could then fault its 24 MiB concatenations in
/// afresh at every step at 256x256. Process-wide, so the programs call it (`atheria` and the
/// benchmarks), not the library; it does nothing off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_TOP_PAD: i32 = -2;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only sets allocator parameters, which glibc allows at any time.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 256 << 20);
            // Address space only: a heap grows by the pad, but its pages cost nothing untouched.
            mallopt(M_TOP_PAD, 64 << 20);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use burn::backend::NdArray;
    use rayon::prelude::*;

    use super::*;

    /// Runs `body` on its own thread and waits for it at most a minute: a keeper that never
    /// stops would hang `on_kernel_pool`, and a hung test would hold up the whole suite.
    fn within_a_minute<R: Send + 'static>(body: impl FnOnce() -> R + Send + 'static) -> R {
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || sender.send(body()));
        receiver.recv_timeout(Duration::from_secs(60)).expect("on_kernel_pool did not return within a minute")
    }

    #[test]
    fn work_runs_on_a_pool_thread_and_its_parallel_tasks_complete() {
        let (on_pool, sum) = within_a_minute(|| {
            on_kernel_pool::<NdArray, _>(|| {
                let sum: u64 = (0..100_000u64).into_par_iter().map(|i| i * i).sum();
                (rayon::current_thread_index().is_some(), sum)
            })
        });
        assert!(on_pool, "the work ran outside the kernels' pool");
        assert_eq!(sum, (0..100_000u64).map(|i| i * i).sum::<u64>());
    }

    #[test]
    fn a_panicking_step_stops_its_keepers_and_leaves_the_pool_usable() {
        let panicked = within_a_minute(|| {
            std::panic::catch_unwind(|| {
                on_kernel_pool::<NdArray, ()>(|| {
                    let _: u64 = (0..1000u64).into_par_iter().sum();
                    panic!("a step that fails");
                })
            })
            .is_err()
        });
        assert!(panicked, "the step's panic did not reach the caller");
        // The turn's lock was poisoned by the panic and the keepers had to stop: both would
        // keep this call from ever returning.
        let after =
            within_a_minute(|| on_kernel_pool::<NdArray, _>(|| (0..1000u64).into_par_iter().sum::<u64>()));
        assert_eq!(after, 999 * 1000 / 2);
    }
}
