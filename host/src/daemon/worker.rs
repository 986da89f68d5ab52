//! Where a session's frames run. A hop's layers are a stranger's code, so a session starts on
//! a worker thread of its own, which may take up to the call timeout without holding up the
//! host's network thread and its other sessions. But every frame then crosses two thread
//! hand-offs, about a sixth of a training batch on the paper's model. So once a session's
//! frames have proven cheap, they run where they arrive, on the network thread, each frame
//! within a [`CallBudget`]: CPU time for all its calls together, and a kernel size. A frame
//! over it ends its session (as a deadline does) and closes the [`InlineGate`] for the whole
//! host for a while: a stranger whose layer turns slow stalls the network thread once, for
//! at most the budget (and a tick of the epoch), and then gets nothing more from it. A frame
//! under the budget but costly (over 2 ms) sends its session back to its worker, to prove
//! itself cheap again over more frames each time ([`Cheapness`]), and is charged to a
//! host-wide bucket that closes the gate too once costly frames have taken more than about 1%
//! of the thread: strangers opening sessions to spend one costly frame each get no more.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use mixnn_sandbox::{CallBudget, Sandbox};

/// Cheap frames a session runs on its worker before its frames may run inline; doubled for
/// each strike the session has (a costly frame), up to [`MAX_STRIKES`] doublings.
const INLINE_AFTER_FRAMES: u32 = 4;
/// CPU time above which a frame (with the update it owed) is costly: a strike for its session,
/// which goes back to its worker, and a charge on the host's [`InlineGate`] if it ran inline
/// (the paper's largest hop takes about 0.6 ms).
const INLINE_MAX_FRAME: Duration = Duration::from_millis(2);
/// Strikes that count; a session loses one after [`FORGIVE_AFTER`] cheap frames in a row.
/// A thread is also charged for the interrupts it happens to serve (loopback deliveries to
/// other processes among them), so an honest session's cheap frame now and then measures
/// several times its cost: a strike is not for good.
const MAX_STRIKES: u32 = 6;
const FORGIVE_AFTER: u32 = 1024;
/// What costly frames run inline may take of the network thread, host-wide: a bucket of
/// [`STALL_BUCKET`] that drains at [`STALL_DRAIN_PER_S`] a second; past it the gate closes.
const STALL_BUCKET: Duration = Duration::from_millis(100);
const STALL_DRAIN_PER_S: Duration = Duration::from_millis(10);
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

/// Whether a session's frames have proven cheap: enough cheap frames in a row since its
/// last costly one, more after each strike.
#[derive(Debug, Default)]
pub(super) struct Cheapness {
    /// Cheap frames in a row.
    cheap: u32,
    strikes: u32,
}

impl Cheapness {
    /// Counts a frame that took `cpu`; true if it was costly.
    pub(super) fn record(&mut self, cpu: Duration) -> bool {
        if cpu > INLINE_MAX_FRAME {
            self.cheap = 0;
            self.strikes = self.strikes.saturating_add(1);
            return true;
        }
        self.cheap = self.cheap.saturating_add(1);
        if self.cheap >= FORGIVE_AFTER && self.strikes > 0 {
            self.strikes -= 1;
            self.cheap = self.needed();
        }
        false
    }

    fn needed(&self) -> u32 {
        INLINE_AFTER_FRAMES << self.strikes.min(MAX_STRIKES)
    }

    pub(super) fn proven(&self) -> bool {
        self.cheap >= self.needed()
    }
}

/// Whether sessions' frames may run inline on the host: closed for [`INLINE_PAUSE`] after a
/// frame run inline went over its budget, or after costly frames run inline took more of the
/// network thread than the stall bucket holds. Whatever strangers do, the thread is stalled
/// at most about 1% of the time plus one budget a minute.
#[derive(Debug)]
pub(crate) struct InlineGate {
    started: Instant,
    /// Milliseconds after `started` until which it is closed.
    closed_until_ms: AtomicU64,
    /// The stall bucket: its level, and when it was last drained.
    stalls: Mutex<(Duration, Instant)>,
}

impl Default for InlineGate {
    fn default() -> Self {
        let now = Instant::now();
        InlineGate {
            started: now,
            closed_until_ms: AtomicU64::new(0),
            stalls: Mutex::new((Duration::ZERO, now)),
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

    /// Charges a costly frame that ran inline for `cpu`; closes the gate if the stall bucket
    /// overflows (and empties it). True if it closed.
    pub(super) fn charge(&self, cpu: Duration) -> bool {
        let mut stalls = self.stalls.lock().unwrap_or_else(PoisonError::into_inner);
        let (level, drained) = &mut *stalls;
        let now = Instant::now();
        *level = level.saturating_sub(
            STALL_DRAIN_PER_S.mul_f64(now.saturating_duration_since(*drained).as_secs_f64()),
        );
        *drained = now;
        *level += cpu;
        if *level > STALL_BUCKET {
            *level = Duration::ZERO;
            self.close();
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_runs_inline_after_enough_cheap_frames_and_a_costly_one_sends_it_back() {
        let cheap = Duration::from_micros(300);
        let mut c = Cheapness::default();
        for _ in 1..INLINE_AFTER_FRAMES {
            assert!(!c.record(cheap));
            assert!(!c.proven());
        }
        assert!(!c.record(INLINE_MAX_FRAME));
        assert!(c.proven());
        // Each strike doubles the cheap frames it takes to come back.
        for strike in 1..=MAX_STRIKES + 2 {
            assert!(c.record(INLINE_MAX_FRAME + Duration::from_micros(1)));
            let needed = INLINE_AFTER_FRAMES << strike.min(MAX_STRIKES);
            for _ in 1..needed {
                c.record(cheap);
                assert!(!c.proven(), "strike {strike}");
            }
            c.record(cheap);
            assert!(c.proven(), "strike {strike}");
        }
        // Strikes are forgiven one by one after long runs of cheap frames.
        for _ in 0..FORGIVE_AFTER * (MAX_STRIKES + 2) {
            c.record(cheap);
        }
        assert_eq!(c.strikes, 0);
        c.record(Duration::from_millis(5));
        for _ in 0..2 * INLINE_AFTER_FRAMES {
            c.record(cheap);
        }
        assert!(c.proven());
    }

    #[test]
    fn costly_frames_run_inline_close_the_gate_past_the_stall_bucket() {
        let gate = InlineGate::default();
        let frame = Duration::from_millis(15);
        let mut closed_after = None;
        for i in 1..=10 {
            if gate.charge(frame) {
                closed_after = Some(i);
                break;
            }
            assert!(gate.is_open());
        }
        // 100 ms of bucket: the seventh 15 ms frame (at most a few ms drained meanwhile).
        assert_eq!(closed_after, Some(7));
        assert!(!gate.is_open());
        // Draining: a bucket charged long ago is empty again.
        let gate = InlineGate::default();
        gate.charge(Duration::from_millis(90));
        gate.stalls.lock().unwrap().1 -= Duration::from_secs(9);
        assert!(!gate.charge(Duration::from_millis(90)));
        assert!(gate.is_open());
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
