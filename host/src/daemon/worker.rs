//! Where a session's frames run. A hop's layers are a stranger's code, so a session starts on
//! a worker thread of its own, which may take up to the call timeout without holding up the
//! host's network thread and its other sessions. But every frame then crosses two thread
//! hand-offs, about a sixth of a training batch on the paper's model. So once a session's
//! frames have proven cheap, they run where they arrive, on the network thread, each frame
//! within a [`CallBudget`]: CPU time for all its calls together, and a kernel size. A frame
//! over it ends its session (as a deadline does) and closes the [`InlineGate`] for the whole
//! host for a while: a stranger whose layer turns slow stalls the network thread once, for
//! at most the budget (and a tick of the epoch), and then gets nothing more from it.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use mixnn_sandbox::{CallBudget, Sandbox};

/// Frames a session runs on its worker before its frames may run inline.
const INLINE_AFTER_FRAMES: u32 = 4;
/// CPU time a frame may have taken, every frame of the session so far, for the session's
/// frames to run inline (the paper's largest hop takes about 0.6 ms).
const INLINE_MAX_FRAME: Duration = Duration::from_millis(2);
/// CPU time a frame run inline may use, all its calls together.
const INLINE_CPU: Duration = Duration::from_millis(50);
/// Multiply-adds of one kernel call in a frame run inline: about 10 ms of gemm (the paper's
/// largest is 6.4 M).
const INLINE_KERNEL_MACS: u64 = 1 << 25;

/// The budget of a frame run inline from now.
pub(super) fn inline_budget() -> CallBudget {
    CallBudget::from_now(INLINE_CPU, INLINE_KERNEL_MACS)
}
/// How long no frame runs inline on the host after one went over its budget.
const INLINE_PAUSE: Duration = Duration::from_secs(60);

/// A job for a worker.
type Job = Box<dyn FnOnce() + Send>;

/// A session's worker thread, running what it is given in order.
pub(super) struct Worker {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Worker {
    /// Starts the thread (with the stack the sandbox needs); it ends when the worker is
    /// dropped.
    pub(super) fn start(sandbox: &Sandbox) -> std::io::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        sandbox.spawn_worker("session", move || {
            while let Ok(job) = queue.recv() {
                job();
            }
        })?;
        Ok(Worker { jobs })
    }

    /// Runs `f` on the thread and waits for it; None if the thread is gone (it panicked).
    pub(super) async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(f());
        });
        self.jobs.send(job).ok()?;
        result.await.ok()
    }
}

/// Whether a session's frames have proven cheap: enough of them, none over
/// [`INLINE_MAX_FRAME`] of CPU time. One frame over it keeps the session on its worker.
#[derive(Debug, Default)]
pub(super) struct Cheapness {
    frames: u32,
    costly: bool,
}

impl Cheapness {
    /// Counts a frame that took `cpu`.
    pub(super) fn record(&mut self, cpu: Duration) {
        self.frames = self.frames.saturating_add(1);
        self.costly |= cpu > INLINE_MAX_FRAME;
    }

    pub(super) fn proven(&self) -> bool {
        !self.costly && self.frames >= INLINE_AFTER_FRAMES
    }
}

/// Closed for [`INLINE_PAUSE`] after a frame run inline went over its budget, for every
/// session of the host.
#[derive(Debug)]
pub(crate) struct InlineGate {
    started: Instant,
    /// Milliseconds after `started` until which it is closed.
    closed_until_ms: AtomicU64,
}

impl Default for InlineGate {
    fn default() -> Self {
        InlineGate {
            started: Instant::now(),
            closed_until_ms: AtomicU64::new(0),
        }
    }
}

impl InlineGate {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn is_open(&self) -> bool {
        self.now_ms() >= self.closed_until_ms.load(Ordering::Relaxed)
    }

    /// Closes it for [`INLINE_PAUSE`] from now.
    pub(super) fn close(&self) {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(INLINE_PAUSE.as_millis()).unwrap_or(u64::MAX));
        self.closed_until_ms.fetch_max(until, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_runs_inline_only_after_enough_cheap_frames_and_never_after_a_costly_one() {
        let mut c = Cheapness::default();
        for _ in 1..INLINE_AFTER_FRAMES {
            c.record(Duration::from_micros(300));
            assert!(!c.proven());
        }
        c.record(INLINE_MAX_FRAME);
        assert!(c.proven());
        c.record(INLINE_MAX_FRAME + Duration::from_micros(1));
        for _ in 0..100 {
            c.record(Duration::ZERO);
        }
        assert!(!c.proven());
    }

    #[test]
    fn the_gate_closes_for_the_pause() {
        let gate = InlineGate::default();
        assert!(gate.is_open());
        gate.close();
        assert!(!gate.is_open());
        gate.closed_until_ms.store(0, Ordering::Relaxed);
        assert!(gate.is_open());
    }
}
