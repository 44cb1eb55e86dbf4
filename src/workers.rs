//! Dedicated low-priority worker threads for CPU-heavy work that must not stretch the latency of
//! the requests around it: argon2id hashing (`auth::password`, issue 12 P5) and screenshot
//! masking and PNG encoding (`service::screenshots`, issue 25 P8).
//!
//! The threads run at [`LOW_PRIORITY_NICE`] (Linux `setpriority`, per thread), so their work
//! yields the CPU to the HTTP workers and the store's blocking tasks (nice 0) whenever those
//! have something to do, while idle cores still go to it. Dedicated threads, because a thread's
//! nice value cannot be lowered again without privilege: lowering it on tokio's shared blocking
//! pool would slow every later store task on that thread. Only pure CPU work belongs here —
//! never a job that holds a store connection or another lock a request waits for (it would
//! make that request wait behind a low-priority thread).
//!
//! Imports no other module of the crate.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// Nice value of the worker threads: CFS gives a nice-0 thread ~9× the CPU share of a nice-10
/// one when both are runnable.
pub const LOW_PRIORITY_NICE: i32 = 10;

/// A unit of work for the pool.
pub type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of low-priority threads fed through a bounded channel. Cloning shares the pool;
/// the threads end when the last clone is dropped.
#[derive(Clone)]
pub struct LowPriority {
    tx: SyncSender<Job>,
}

impl LowPriority {
    /// Starts `n` threads named `<name>-<i>` at [`LOW_PRIORITY_NICE`] (a thread that cannot
    /// lower its priority keeps the default and logs it at debug level), each running `init`
    /// first, behind a channel holding `capacity` queued jobs. A panicking job does not take
    /// its thread with it.
    ///
    /// Errors: the OS refused to start a thread.
    pub fn start(name: &str, n: usize, capacity: usize, init: fn()) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Job>(capacity);
        let rx: Arc<Mutex<Receiver<Job>>> = Arc::new(Mutex::new(rx));
        for i in 0..n.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    if let Err(e) = rustix::process::setpriority_process(None, LOW_PRIORITY_NICE) {
                        tracing::debug!(error = %e, "worker thread keeps the default priority");
                    }
                    init();
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Self { tx })
    }

    /// Queues `job` without waiting; gives it back when the channel is full or the pool is
    /// gone (callers bound the jobs in flight themselves, e.g. with a semaphore of `capacity`
    /// permits, so this does not happen in practice).
    pub fn try_send(&self, job: Job) -> Result<(), Job> {
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(j) | TrySendError::Disconnected(j) => j,
        })
    }

    /// Runs `f` on a worker and waits for its result (blocking: call it from a blocking thread,
    /// never from async code). Queues behind at most `capacity` jobs. `None` when the pool is
    /// gone or `f` panicked.
    pub fn run_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let (done, result) = sync_channel::<R>(1);
        self.tx
            .send(Box::new(move || {
                let _ = done.send(f());
            }))
            .ok()?;
        result.recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nothing() {}

    #[test]
    fn jobs_run_at_low_priority_and_a_panic_does_not_stop_the_pool() {
        let pool = LowPriority::start("t-low", 2, 2, nothing).unwrap();
        // The job sees its own thread's nice value (10 when the OS allowed it; never 0 unless
        // lowering it was refused, which an unprivileged process is always allowed).
        let nice = pool
            .run_blocking(|| rustix::process::getpriority_process(None).unwrap())
            .unwrap();
        assert_eq!(nice, LOW_PRIORITY_NICE);
        let name = pool
            .run_blocking(|| std::thread::current().name().unwrap_or("").to_string())
            .unwrap();
        assert!(name.starts_with("t-low-"), "{name}");
        assert_eq!(pool.run_blocking(|| -> u32 { panic!("job") }), None);
        assert_eq!(pool.run_blocking(|| 6 * 7), Some(42));
        // try_send gives the job back when the channel is full.
        let gate = Arc::new(std::sync::Barrier::new(3));
        for _ in 0..2 {
            let g = gate.clone();
            pool.try_send(Box::new(move || {
                g.wait();
            }))
            .map_err(|_| ())
            .unwrap();
        }
        // Both workers blocked in the gate; fill the channel, then one more is refused.
        let mut queued = 0;
        while pool.try_send(Box::new(|| {})).is_ok() {
            queued += 1;
            assert!(queued <= 4, "the channel is bounded");
        }
        gate.wait();
    }
}
