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

/// Runs tasks on a persistent pool of OS threads. Tasks are handed out dynamically (a thread
/// that finishes early takes more), and each running task gets the work state of the pool thread
/// it runs on; results are returned in task order.
#[cfg(feature = "std")]
#[derive(Debug)]
pub struct Threads {
    threads: usize,
    /// `None` with one thread, or if the operating system refused to start the threads: tasks
    /// then run on the calling thread, with the same results.
    pool: Option<rayon::ThreadPool>,
}

#[cfg(feature = "std")]
impl Threads {
    /// An executor with `n` threads (at least one). The threads live as long as the executor.
    pub fn new(n: usize) -> Self {
        Self::with_start(n, || {})
    }

    /// [`Threads::new`], running `start` first on each pool thread (a server lowers their
    /// scheduling priority with it). Nothing a thread does before its tasks changes a result.
    pub fn with_start(n: usize, start: impl Fn() + Send + Sync + 'static) -> Self {
        let threads = n.max(1);
        let pool = (threads > 1)
            .then(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| std::format!("valori-index-{i}"))
                    .start_handler(move |_| start())
                    .build()
                    .ok()
            })
            .flatten();
        let threads = if pool.is_some() { threads } else { 1 };
        Threads { threads, pool }
    }
}

#[cfg(feature = "std")]
impl Executor for Threads {
    fn threads(&self) -> usize {
        self.threads
    }

    fn map<S: Send, T: Send, F: Fn(&mut S, usize) -> T + Sync>(
        &self,
        n: usize,
        states: &mut [S],
        f: F,
    ) -> Vec<T> {
        use rayon::prelude::*;
        use std::sync::Mutex;

        let Some(pool) = &self.pool else {
            return Sequential.map(n, states, f);
        };
        if n <= 1 || states.len() < self.threads {
            return Sequential.map(n, states, f);
        }
        // One state per pool thread; a thread runs one task at a time, so its lock is never
        // contended.
        let slots: Vec<Mutex<&mut S>> = states.iter_mut().map(Mutex::new).collect();
        pool.install(|| {
            (0..n)
                .into_par_iter()
                .map(|i| {
                    let t = rayon::current_thread_index().unwrap_or(0);
                    let mut state = slots[t].lock().unwrap_or_else(|e| e.into_inner());
                    f(&mut state, i)
                })
                .collect()
        })
    }
}
