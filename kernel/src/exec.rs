//! How the kernel runs independent work in parallel without depending on threads itself.
//!
//! Index construction hands an [`Executor`] a batch of pure tasks (each a function of the frozen
//! state and its own index) and consumes their results in index order. Because the tasks cannot
//! see each other and results are used in order, the outcome is identical whatever the executor:
//! [`Sequential`], or [`Threads`] with any number of threads.

use alloc::vec::Vec;

/// Runs `n` independent tasks and returns their results in task order.
pub trait Executor: Sync {
    /// How many tasks may run at once: callers give [`Executor::map`] that many work states.
    fn threads(&self) -> usize;

    /// Computes `f(state, 0), .., f(state, n - 1)`, in any order or concurrently, and returns
    /// the results in task order. Each concurrently running task gets one of `states` (scratch
    /// memory) for itself; `states` holds at least [`Executor::threads`] of them. A task's result
    /// must not depend on its state's previous contents.
    fn map<S: Send, T: Send, F: Fn(&mut S, usize) -> T + Sync>(
        &self,
        n: usize,
        states: &mut [S],
        f: F,
    ) -> Vec<T>;
}

/// Runs tasks one after another on the calling thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sequential;

impl Executor for Sequential {
    fn threads(&self) -> usize {
        1
    }

    fn map<S: Send, T: Send, F: Fn(&mut S, usize) -> T + Sync>(
        &self,
        n: usize,
        states: &mut [S],
        f: F,
    ) -> Vec<T> {
        let state = &mut states[0];
        (0..n).map(|i| f(state, i)).collect()
    }
}

/// Runs tasks on scoped OS threads, each taking a contiguous block of task indexes.
#[cfg(feature = "std")]
#[derive(Clone, Copy, Debug)]
pub struct Threads(pub core::num::NonZeroUsize);

#[cfg(feature = "std")]
impl Threads {
    /// An executor with `n` threads (at least one).
    pub fn new(n: usize) -> Self {
        Threads(core::num::NonZeroUsize::new(n.max(1)).expect("at least one"))
    }
}

#[cfg(feature = "std")]
impl Executor for Threads {
    fn threads(&self) -> usize {
        self.0.get()
    }

    fn map<S: Send, T: Send, F: Fn(&mut S, usize) -> T + Sync>(
        &self,
        n: usize,
        states: &mut [S],
        f: F,
    ) -> Vec<T> {
        let threads = self.0.get().min(n.max(1)).min(states.len());
        if threads == 1 {
            return Sequential.map(n, states, f);
        }
        let block = n.div_ceil(threads);
        let f = &f;
        std::thread::scope(|s| {
            let handles: Vec<_> = states[..threads]
                .iter_mut()
                .enumerate()
                .map(|(t, state)| {
                    let range = (t * block).min(n)..((t + 1) * block).min(n);
                    s.spawn(move || range.map(|i| f(state, i)).collect::<Vec<T>>())
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("index build task panicked"))
                .collect()
        })
    }
}
