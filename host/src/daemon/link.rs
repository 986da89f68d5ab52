//! One session on a running host: its hop (the sans-IO [`Hop`] and its sandboxed layers, run
//! on its worker or, once cheap, where frames arrive: see [`super::worker`]) and the tasks
//! that move frames between it and its two QUIC streams.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use mixnn_transport::{Bytes, TransportError};
use mixnn_wire::{
    crypto::SystemEntropy,
    frame::Op,
    setup::{HopSetup, Peer},
    stream::{StreamHeader, StreamRefusal},
};
use tokio::sync::mpsc;

use super::worker::{Cheapness, Worker, inline_budget};
use super::{
    FaultLie, FaultOp, Inner, SessionSlot,
    audit::{SessionAudit, StreamTap},
    guard::bump,
};
use crate::hop::{Hop, HopError, Lie, Observer, Outgoing, Toward};

/// Bytes of frames queued between the network and a session's worker, each way: a flooding
/// peer fills a queue, not the host's memory.
const QUEUE_BYTES: usize = 1 << 20;
/// Frames queued each way, at most and at least (training keeps one or two in flight; an
/// export sends a burst).
const QUEUE_FRAMES: (usize, usize) = (2, 64);

/// How many frames of `frame_len` bytes a session queues each way.
fn queue_depth(frame_len: usize) -> usize {
    (QUEUE_BYTES / frame_len.max(1)).clamp(QUEUE_FRAMES.0, QUEUE_FRAMES.1)
}

/// A link's stream, and the connection it lives on if this end opened it (kept open until
/// the stream is done).
pub(super) struct Streams {
    pub(super) send: quinn::SendStream,
    pub(super) recv: quinn::RecvStream,
    pub(super) connection: Option<quinn::Connection>,
}

enum Event {
    /// A whole frame, and when it arrived (its hand-off to the worker is counted from then).
    Frame(Toward, Bytes, Instant),
    /// A link ended.
    Closed(Toward, Ending),
    NextUnreachable(Unreachable),
    Expired,
    OverBudget,
    /// No frame arrived on either link for the idle timeout.
    Idle,
}

/// How a link ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The neighbour finished its stream: the session is over, in order.
    Finished,
    /// The stream or its connection broke.
    Broke,
    /// The neighbour refused it, saying why.
    Refused(StreamRefusal),
}

/// Why the next hop could not be reached, as the designer is told.
#[derive(Debug, thiserror::Error)]
enum Unreachable {
    #[error("the next hop's address is not ip:port")]
    Address,
    #[error("the next hop: {0}")]
    Connect(#[from] TransportError),
    #[error("the next hop: {0}")]
    Stream(#[from] quinn::ConnectionError),
    #[error("the next hop refused the setup: {0}")]
    Refused(StreamRefusal),
    #[error("the next hop: {0}")]
    Write(quinn::WriteError),
    #[error("the next hop did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("the designer did not attach within {0:?}")]
    NoDesigner(Duration),
}

impl From<quinn::WriteError> for Unreachable {
    fn from(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::Stopped(code) => {
                Unreachable::Refused(StreamRefusal(u32::try_from(code.into_inner()).unwrap_or(0)))
            }
            e => Unreachable::Write(e),
        }
    }
}

/// Runs a session whose setup was peeled from `prev`, forwarding `onion` to the next hop;
/// with `audit`, records what crosses its links and what its hop decrypts.
pub(super) async fn run(
    inner: Arc<Inner>,
    slot: SessionSlot,
    setup: HopSetup,
    onion: Vec<u8>,
    prev: Streams,
    audit: Option<SessionAudit>,
) {
    let tap = |from, inbound| audit.as_ref().and_then(|a| a.stream(from, inbound));
    let frame_len = setup.frame_len as usize;
    let depth = queue_depth(frame_len);
    let (inbox_tx, inbox_rx) = mpsc::channel(2 * depth);
    let (prev_tx, prev_rx) = mpsc::channel(depth);
    let (next_tx, next_rx) = mpsc::channel(depth);
    let traffic = Arc::new(Traffic::default());

    tokio::spawn(serve_link(
        prev,
        Toward::Prev,
        frame_len,
        inbox_tx.clone(),
        prev_rx,
        Arc::clone(&traffic),
        inner.limits.max_session_bytes,
        (tap(Toward::Prev, true), tap(Toward::Prev, false)),
        inner.faults.link_delay,
        Arc::clone(&inner),
    ));
    tokio::spawn(watch_idle(
        inbox_tx.clone(),
        Arc::clone(&traffic),
        inner.limits.session_idle(),
    ));

    let expires_in = setup.expires_at.saturating_sub(super::unix_now());
    let expiry = inbox_tx.clone();
    tokio::spawn(async move {
        // Gone with the session, not with its expiry a day later.
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(expires_in)) => {
                let _ = expiry.send(Event::Expired).await;
            }
            () = expiry.closed() => {}
        }
    });

    let next = setup.next.clone();
    let circuit_out = setup.circuit_out;
    let observer = audit.as_ref().and_then(SessionAudit::observer);
    let worker = match Worker::start(&inner.sandbox) {
        Ok(worker) => worker,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a session worker");
            return;
        }
    };
    tokio::spawn({
        let inner = Arc::clone(&inner);
        let traffic = Arc::clone(&traffic);
        async move {
            let links = Links {
                prev: Some(prev_tx),
                next: Some(next_tx),
            };
            work(inner, setup, observer, traffic, inbox_rx, links, worker).await;
            // The host's place for the session is free once its hop is done.
            drop(slot);
        }
    });

    let started = std::time::Instant::now();
    let next = match next {
        Peer::Host {
            address,
            fingerprint,
        } => connect_next(&inner, &address, fingerprint, &onion).await,
        Peer::Designer => inner
            .wait_for_designer(circuit_out)
            .await
            .ok_or(Unreachable::NoDesigner(inner.limits.attach_timeout())),
    };
    tracing::info!(
        ms = started.elapsed().as_secs_f64() * 1e3,
        ok = next.is_ok(),
        "next link open (onion forwarded, or the designer attached)"
    );
    match next {
        Ok(next) => {
            tokio::spawn(serve_link(
                next,
                Toward::Next,
                frame_len,
                inbox_tx,
                next_rx,
                traffic,
                inner.limits.max_session_bytes,
                (tap(Toward::Next, true), tap(Toward::Next, false)),
                inner.faults.link_delay,
                Arc::clone(&inner),
            ));
        }
        Err(why) => {
            let _ = inbox_tx.send(Event::NextUnreachable(why)).await;
        }
    }
}

async fn connect_next(
    inner: &Inner,
    address: &str,
    fingerprint: [u8; 32],
    onion: &[u8],
) -> Result<Streams, Unreachable> {
    let timeout = inner.limits.attach_timeout();
    let attempt = async {
        // A literal address (the setup's check): no name is resolved for a stranger.
        let addr: SocketAddr = address.parse().map_err(|_| Unreachable::Address)?;
        let connection = inner.endpoint.connect(addr, fingerprint).await?;
        let (mut send, recv) = connection.open_bi().await?;
        // At most MAX_SETUP_LEN, which a u32 holds.
        let len = u32::try_from(onion.len()).unwrap_or(u32::MAX);
        send.write_all(&StreamHeader::Setup { len }.encode())
            .await?;
        send.write_all(onion).await?;
        Ok(Streams {
            send,
            recv,
            connection: Some(connection),
        })
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| Unreachable::TimedOut(timeout))?
}

/// Moves one link's frames both ways until both are done, then closes its connection if
/// this end opened it.
#[allow(clippy::too_many_arguments)]
async fn serve_link(
    streams: Streams,
    from: Toward,
    frame_len: usize,
    inbox: mpsc::Sender<Event>,
    outbox: mpsc::Receiver<Queued>,
    traffic: Arc<Traffic>,
    max_bytes: u64,
    taps: (Option<StreamTap>, Option<StreamTap>),
    delay: Duration,
    inner: Arc<Inner>,
) {
    tokio::join!(
        read_frames(
            streams.recv,
            from,
            frame_len,
            inbox,
            traffic,
            max_bytes,
            taps.0
        ),
        write_frames(
            streams.send,
            outbox,
            taps.1,
            delay,
            &inner.counters.handoff_us
        ),
    );
    if let Some(connection) = streams.connection {
        connection.close(0u32.into(), b"session over");
    }
}

/// What a session's links have received (bytes in all: its budget), and since when its
/// worker has had nothing to do (its idleness: loading layers and running them is work, not
/// idleness, however long it takes).
#[derive(Debug)]
struct Traffic {
    bytes: AtomicU64,
    started: Instant,
    /// Milliseconds after `started` since which the worker has waited, or [`Traffic::BUSY`].
    idle_since_ms: AtomicU64,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            bytes: AtomicU64::new(0),
            started: Instant::now(),
            // The worker starts by loading the layers.
            idle_since_ms: AtomicU64::new(Traffic::BUSY),
        }
    }
}

impl Traffic {
    const BUSY: u64 = u64::MAX;

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Counts a frame of `len` bytes; false once the session is over its budget.
    fn received(&self, len: u64, max_bytes: u64) -> bool {
        self.bytes.fetch_add(len, Ordering::Relaxed) + len <= max_bytes
    }

    /// The worker has taken something to do.
    fn busy(&self) {
        self.idle_since_ms.store(Self::BUSY, Ordering::Relaxed);
    }

    /// The worker has done it, and waits.
    fn waiting(&self) {
        self.idle_since_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        match self.idle_since_ms.load(Ordering::Relaxed) {
            Self::BUSY => Duration::ZERO,
            since => Duration::from_millis(self.now_ms().saturating_sub(since)),
        }
    }
}

/// Ends the session once its worker has waited `idle` for anything to do: a stranger's
/// session that sends nothing does not hold its slot until it expires.
async fn watch_idle(inbox: mpsc::Sender<Event>, traffic: Arc<Traffic>, idle: Duration) {
    loop {
        let left = idle.saturating_sub(traffic.idle_for());
        if left.is_zero() {
            let _ = inbox.send(Event::Idle).await;
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(left) => {}
            () = inbox.closed() => return,
        }
    }
}

async fn read_frames(
    mut recv: quinn::RecvStream,
    from: Toward,
    frame_len: usize,
    inbox: mpsc::Sender<Event>,
    traffic: Arc<Traffic>,
    max_bytes: u64,
    mut tap: Option<StreamTap>,
) {
    let len = frame_len as u64;
    loop {
        let read = mixnn_transport::read_frame(&mut recv, frame_len).await;
        if let (Some(tap), Ok(frame)) = (&mut tap, &read) {
            tap.record(frame);
        }
        let event = match read {
            Ok(_) if !traffic.received(len, max_bytes) => Event::OverBudget,
            Ok(frame) => Event::Frame(from, frame, Instant::now()),
            Err(quinn::ReadExactError::FinishedEarly(0)) => Event::Closed(from, Ending::Finished),
            Err(quinn::ReadExactError::ReadError(quinn::ReadError::Reset(code))) => {
                let code = u32::try_from(code.into_inner()).unwrap_or(0);
                Event::Closed(from, Ending::Refused(StreamRefusal(code)))
            }
            Err(_) => Event::Closed(from, Ending::Broke),
        };
        let last = !matches!(event, Event::Frame(..));
        if inbox.send(event).await.is_err() || last {
            return;
        }
    }
}

/// Writes the frames a session's worker queues for a link, each `delay` after it was queued
/// (a fault for benchmarks: see [`super::Faults`]).
async fn write_frames(
    mut send: quinn::SendStream,
    frames: mpsc::Receiver<Queued>,
    mut tap: Option<StreamTap>,
    delay: Duration,
    handoff_us: &AtomicU64,
) {
    // No delay, no timer or thread on the path.
    let mut frames = if delay.is_zero() {
        frames
    } else {
        match mixnn_transport::delay_line(frames, delay) {
            Ok(delayed) => delayed,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a link's delay line");
                return;
            }
        }
    };
    while let Some(Queued { frame, at }) = frames.recv().await {
        if delay.is_zero() {
            add_us(handoff_us, at.elapsed());
        }
        // Moved, not copied, into the stream's buffer.
        let frame = Bytes::from(frame);
        if send.write_chunk(frame.clone()).await.is_err() {
            return;
        }
        if let Some(tap) = &mut tap {
            tap.record(&frame);
        }
    }
    // Let the peer receive everything before the connection (if ours) goes away.
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
    }
}

/// A frame the worker queued for a link, and when (its hand-off to the link is counted
/// from then).
struct Queued {
    frame: Vec<u8>,
    at: Instant,
}

/// Adds `elapsed` to a counter of microseconds.
fn add_us(counter: &AtomicU64, elapsed: Duration) {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    counter.fetch_add(us, Ordering::Relaxed);
}

/// Runs `work` on a frame, adding its time, and the part of it in components, to the
/// counters (where a batch's time goes); also says how much CPU time it took.
fn timed<R>(inner: &Inner, work: impl FnOnce() -> R) -> (R, Duration) {
    let in_layers = inner.sandbox.stats().call_us;
    let started = Instant::now();
    let cpu = mixnn_sandbox::thread_cpu();
    let result = work();
    let cpu = mixnn_sandbox::thread_cpu().saturating_sub(cpu);
    let counters = &inner.counters;
    add_us(&counters.frame_us, started.elapsed());
    let layer_us = inner.sandbox.stats().call_us.saturating_sub(in_layers);
    counters.layer_us.fetch_add(layer_us, Ordering::Relaxed);
    (result, cpu)
}

/// The operation a fault may wait for.
fn fault_op(op: Op) -> Option<FaultOp> {
    Some(match op {
        Op::FORWARD => FaultOp::Forward,
        Op::BACKWARD => FaultOp::Backward,
        Op::TEST => FaultOp::Test,
        Op::EXPORT => FaultOp::Export,
        _ => return None,
    })
}

/// The senders of a session's two links, while they are open.
struct Links {
    prev: Option<mpsc::Sender<Queued>>,
    next: Option<mpsc::Sender<Queued>>,
}

impl Links {
    async fn send(&self, out: Vec<Outgoing>) {
        for o in out {
            let link = match o.to {
                Toward::Prev => &self.prev,
                Toward::Next => &self.next,
            };
            // A link that is gone ends the session through its reader.
            if let Some(link) = link {
                let queued = Queued {
                    frame: o.frame,
                    at: Instant::now(),
                };
                let _ = link.send(queued).await;
            }
        }
    }
}

/// A session's hop, boxed: it moves to the worker and back with each frame it runs there.
type SessionHop = Box<Hop<SystemEntropy>>;

/// Runs `f` on the hop where the session's frames run: `inline` on this thread within a
/// budget (see [`super::worker`]), else on its worker. Counts the hand-offs from `waiting`
/// (when the frame arrived; None for work that is not on the critical path). Returns the hop,
/// what `f` gave and the CPU time it took; None if the worker is gone (it panicked).
async fn run_hop<R: Send + 'static>(
    inner: &Arc<Inner>,
    worker: &Worker,
    inline: bool,
    mut hop: SessionHop,
    waiting: Option<Instant>,
    f: impl FnOnce(&mut Hop<SystemEntropy>) -> R + Send + 'static,
) -> Option<(SessionHop, R, Duration)> {
    let counters = &inner.counters;
    if inline {
        if let Some(arrived) = waiting {
            add_us(&counters.handoff_us, arrived.elapsed());
        }
        let over_before = inner.sandbox.stats().over_budget;
        hop.set_budget(Some(inline_budget()));
        let (result, cpu) = timed(inner, || f(&mut hop));
        hop.set_budget(None);
        // Budgeted calls run on this thread only, so the count is this call's.
        if inner.sandbox.stats().over_budget > over_before {
            bump(&counters.inline_over_budget);
            inner.inline_gate.close();
            tracing::debug!("work run inline went over its budget");
        }
        return Some((hop, result, cpu));
    }
    let job = {
        let inner = Arc::clone(inner);
        move || {
            if let Some(arrived) = waiting {
                add_us(&inner.counters.handoff_us, arrived.elapsed());
            }
            let (result, cpu) = timed(&inner, || f(&mut hop));
            (hop, result, cpu, Instant::now())
        }
    };
    let (hop, result, cpu, done) = worker.run(job).await?;
    if waiting.is_some() {
        add_us(&counters.handoff_us, done.elapsed());
    }
    Some((hop, result, cpu))
}

/// The session: every frame through the hop, in order, on its worker or inline (see
/// [`super::worker`]).
async fn work(
    inner: Arc<Inner>,
    setup: HopSetup,
    observer: Option<Observer>,
    traffic: Arc<Traffic>,
    mut inbox: mpsc::Receiver<Event>,
    // A link's sender is dropped (its stream finished) once the other side has finished:
    // the end of a session travels down the cascade one way and up the other, and every
    // hop handles all the frames sent before it.
    mut links: Links,
    worker: Worker,
) {
    let counters = &inner.counters;
    let mut open_in = (true, true);
    let started = Instant::now();
    let layers = setup.layers.len();
    inner.maybe_die(FaultOp::Setup);
    // Loading layers may compile them: on the worker.
    let started_hop = {
        let inner = Arc::clone(&inner);
        worker
            .run(move || {
                Hop::start(setup, &inner.sandbox, SystemEntropy)
                    .map(|(hop, out)| (SessionHop::new(hop), out))
            })
            .await
    };
    tracing::info!(
        layers,
        ms = started.elapsed().as_secs_f64() * 1e3,
        "layers loaded"
    );
    traffic.waiting();
    let mut hop = match started_hop {
        Some(Ok((mut hop, out))) => {
            hop.set_route_key(Arc::clone(&inner.onion_key));
            if let Some(lie) = inner.faults.lie {
                let lie = match lie {
                    FaultLie::PerturbForward => Lie::PerturbForward,
                    FaultLie::SkipUpdate => Lie::SkipUpdate,
                };
                hop.lie(lie, inner.faults.lie_from, Arc::clone(&inner.lie_frames));
            }
            links.send(out).await;
            if let Some(observer) = observer {
                hop.observe(observer);
            }
            hop
        }
        Some(Err(e)) => {
            // The setup was checked: its link ends and first report must work.
            tracing::error!(error = %e, "a checked setup did not start (a bug)");
            bump(&counters.sessions_failed);
            return;
        }
        None => {
            tracing::error!("a session worker died loading its layers (a bug)");
            bump(&counters.sessions_failed);
            return;
        }
    };
    let mut cheapness = Cheapness::default();
    let mut draining = inner.draining.subscribe();
    let mut leaving = false;
    while !hop.has_failed() {
        if leaving && hop.between_steps() {
            bump(&counters.sessions_drained);
            tracing::info!("session drained: the host is shutting down");
            let why = "the host is shutting down (its operator stopped it)";
            links.send(hop.fail_with(Toward::Prev, why)).await;
            linger(&inner, &mut inbox, links, open_in).await;
            // Not a failure of the session's: it ended as its designer was told.
            return;
        }
        traffic.waiting();
        let event = tokio::select! {
            event = inbox.recv() => event,
            _ = draining.wait_for(|&d| d), if !leaving => {
                leaving = true;
                continue;
            }
        };
        let Some(event) = event else {
            break;
        };
        traffic.busy();
        match event {
            Event::Frame(from, frame, arrived) => {
                let inline = inner.limits.inline_cheap_frames
                    && cheapness.proven()
                    && inner.inline_gate.is_open();
                if inline {
                    bump(&counters.frames_inline);
                }
                let ran = run_hop(&inner, &worker, inline, hop, Some(arrived), move |hop| {
                    hop.on_frame(from, &frame)
                })
                .await;
                let Some((back, result, cpu)) = ran else {
                    tracing::error!("a session worker died on a frame (a bug)");
                    bump(&counters.sessions_failed);
                    return;
                };
                hop = back;
                // A frame's cost, with its update: both run where the frames run.
                let mut cpu = cpu;
                match result {
                    Ok(out) => {
                        if let Some(op) = hop.last_op().and_then(fault_op) {
                            inner.maybe_die(op);
                        }
                        bump(&counters.frames_processed);
                        links.send(out).await;
                        if hop.owes_update() {
                            // Let the frames leave (their link's task, then QUIC's) first.
                            tokio::task::yield_now().await;
                            let ran =
                                run_hop(&inner, &worker, inline, hop, None, |hop| hop.update())
                                    .await;
                            let Some((back, out, update_cpu)) = ran else {
                                tracing::error!("a session worker died on an update (a bug)");
                                bump(&counters.sessions_failed);
                                return;
                            };
                            hop = back;
                            cpu += update_cpu;
                            links.send(out).await;
                        }
                    }
                    Err(HopError::Rejected { error, report }) => {
                        bump(&counters.frames_rejected);
                        // Peer input: counted, logged quietly (a hostile peer must not flood the log).
                        tracing::debug!(%error, ?from, "frame rejected");
                        links.send(report.into_iter().collect()).await;
                    }
                    Err(HopError::Failed) => bump(&counters.frames_after_failure),
                }
                if cheapness.record(cpu) && inline {
                    bump(&counters.inline_costly);
                    if inner.inline_gate.charge(cpu) {
                        bump(&counters.inline_stalls_closed);
                        tracing::debug!("costly frames run inline stalled the network thread");
                    }
                }
            }
            Event::Expired => break,
            Event::Closed(Toward::Prev, Ending::Finished) => {
                open_in.0 = false;
                links.next = None;
            }
            Event::Closed(Toward::Next, Ending::Finished) => {
                open_in.1 = false;
                links.prev = None;
            }
            Event::Closed(from, Ending::Refused(code)) => {
                let (broken, to) = match from {
                    Toward::Prev => ("previous", Toward::Next),
                    Toward::Next => ("next", Toward::Prev),
                };
                let why = format!("the {broken} hop refused the link: {code}");
                links.send(hop.fail_with(to, &why)).await;
            }
            Event::Closed(from, _) => links.send(hop.lost(from)).await,
            Event::NextUnreachable(why @ (Unreachable::Address | Unreachable::NoDesigner(_))) => {
                links
                    .send(hop.fail_with(Toward::Prev, &why.to_string()))
                    .await;
            }
            // A refusal too: the designer is to replace the host that refused (full, busy,
            // leaving, or unable to peel its layer), not this one.
            Event::NextUnreachable(why) => {
                tracing::debug!(error = %why, "the next hop is unreachable");
                links.send(hop.lost(Toward::Next)).await;
            }
            Event::OverBudget => {
                bump(&counters.sessions_over_budget);
                links
                    .send(hop.fail_with(Toward::Prev, "the session exceeded its byte budget"))
                    .await;
            }
            Event::Idle => {
                bump(&counters.sessions_idle);
                let idle = inner.limits.session_idle().as_secs();
                links
                    .send(hop.fail_with(
                        Toward::Next,
                        &format!("no frame for {idle} s: the session ended"),
                    ))
                    .await;
                break;
            }
        }
        if open_in == (false, false) {
            break;
        }
    }
    if hop.has_failed() {
        bump(&counters.sessions_failed);
    }
}

/// How long a drained session keeps its links open for its designer to end it.
const LINGER: Duration = Duration::from_secs(5);

/// Keeps a drained session's links open until its designer ends the session (both links
/// finish), for at most [`LINGER`]: were this hop to finish its streams at once, its
/// neighbours would pass the end on, and the designer could see a link of the cascade end
/// before the report that says why, and blame another hop.
async fn linger(
    inner: &Inner,
    inbox: &mut mpsc::Receiver<Event>,
    mut links: Links,
    mut open_in: (bool, bool),
) {
    let deadline = tokio::time::sleep(LINGER);
    tokio::pin!(deadline);
    while open_in != (false, false) {
        let event = tokio::select! {
            event = inbox.recv() => event,
            () = &mut deadline => return,
        };
        match event {
            None | Some(Event::Expired | Event::Idle) => return,
            Some(Event::Closed(Toward::Prev, _)) => {
                open_in.0 = false;
                links.next = None;
            }
            Some(Event::Closed(Toward::Next, _)) => {
                open_in.1 = false;
                links.prev = None;
            }
            Some(Event::Frame(..)) => bump(&inner.counters.frames_after_failure),
            Some(_) => {}
        }
    }
}
