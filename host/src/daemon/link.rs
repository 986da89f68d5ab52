//! One session on a running host: the hop's worker thread (the sans-IO [`Hop`] and its
//! sandboxed layers) and the tasks that move frames between it and its two QUIC streams.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use mixnn_wire::{
    crypto::SystemEntropy,
    setup::{HopSetup, Peer},
};
use tokio::sync::mpsc;

use super::{Inner, guard::bump};
use crate::{
    hop::{Hop, HopError, Outgoing, Toward},
    transport::stream_kind,
};

/// Frames queued between the network and a session's worker, each way.
const QUEUE: usize = 64;

/// A link's stream, and the connection it lives on if this end opened it (kept open until
/// the stream is done).
pub(super) struct Streams {
    pub(super) send: quinn::SendStream,
    pub(super) recv: quinn::RecvStream,
    pub(super) connection: Option<quinn::Connection>,
}

enum Event {
    Frame(Toward, Vec<u8>),
    /// A link ended: cleanly (finished) or not.
    Closed(Toward, bool),
    NextUnreachable(String),
    Expired,
    OverBudget,
}

/// Runs a session whose setup was peeled from `prev`, forwarding `onion` to the next hop.
pub(super) async fn run(inner: Arc<Inner>, setup: HopSetup, onion: Vec<u8>, prev: Streams) {
    let frame_len = setup.frame_len as usize;
    let (inbox_tx, inbox_rx) = mpsc::channel(QUEUE);
    let (prev_tx, prev_rx) = mpsc::channel(QUEUE);
    let (next_tx, next_rx) = mpsc::channel(QUEUE);
    let budget = Arc::new(AtomicU64::new(0));

    tokio::spawn(read_frames(
        prev.recv,
        Toward::Prev,
        frame_len,
        inbox_tx.clone(),
        Arc::clone(&budget),
        inner.limits.max_session_bytes,
    ));
    tokio::spawn(write_frames(prev.send, prev_rx, prev.connection));

    let expires_in = setup.expires_at.saturating_sub(super::unix_now());
    let expiry = inbox_tx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(expires_in)).await;
        let _ = expiry.send(Event::Expired).await;
    });

    let next = setup.next.clone();
    let circuit_out = setup.circuit_out;
    let worker = {
        let worker_inner = Arc::clone(&inner);
        inner.sandbox.spawn_worker("session", move || {
            work(&worker_inner, setup, inbox_rx, &prev_tx, &next_tx);
            worker_inner.session_ended();
        })
    };
    if let Err(e) = worker {
        tracing::error!(error = %e, "cannot start a session worker");
        inner.session_ended();
        return;
    }

    let next = match next {
        Peer::Host {
            address,
            fingerprint,
        } => connect_next(&inner, &address, fingerprint, &onion).await,
        Peer::Designer => inner
            .wait_for_designer(circuit_out)
            .await
            .ok_or_else(|| "the designer did not attach".to_owned()),
    };
    match next {
        Ok(next) => {
            tokio::spawn(read_frames(
                next.recv,
                Toward::Next,
                frame_len,
                inbox_tx,
                budget,
                inner.limits.max_session_bytes,
            ));
            tokio::spawn(write_frames(next.send, next_rx, next.connection));
        }
        Err(message) => {
            let _ = inbox_tx.send(Event::NextUnreachable(message)).await;
        }
    }
}

async fn connect_next(
    inner: &Inner,
    address: &str,
    fingerprint: [u8; 32],
    onion: &[u8],
) -> Result<Streams, String> {
    let timeout = inner.limits.attach_timeout();
    let attempt = async {
        let addr = tokio::net::lookup_host(address)
            .await
            .map_err(|e| format!("next hop {address}: {e}"))?
            .next()
            .ok_or_else(|| format!("next hop {address}: no address"))?;
        let connection = inner
            .endpoint
            .connect(addr, fingerprint)
            .await
            .map_err(|e| format!("next hop: {e}"))?;
        let (mut send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| format!("next hop: {e}"))?;
        let len = u32::try_from(onion.len()).map_err(|_| "onion too large".to_owned())?;
        let mut head = vec![stream_kind::SETUP];
        head.extend(len.to_be_bytes());
        send.write_all(&head)
            .await
            .map_err(|e| format!("next hop: {e}"))?;
        send.write_all(onion)
            .await
            .map_err(|e| format!("next hop: {e}"))?;
        Ok(Streams {
            send,
            recv,
            connection: Some(connection),
        })
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| "next hop: timed out".to_owned())?
}

async fn read_frames(
    mut recv: quinn::RecvStream,
    from: Toward,
    frame_len: usize,
    inbox: mpsc::Sender<Event>,
    budget: Arc<AtomicU64>,
    max_bytes: u64,
) {
    let len = frame_len as u64;
    loop {
        let mut frame = vec![0u8; frame_len];
        let event = match recv.read_exact(&mut frame).await {
            Ok(()) if budget.fetch_add(len, Ordering::Relaxed) + len > max_bytes => {
                Event::OverBudget
            }
            Ok(()) => Event::Frame(from, frame),
            Err(quinn::ReadExactError::FinishedEarly(0)) => Event::Closed(from, true),
            Err(_) => Event::Closed(from, false),
        };
        let last = !matches!(event, Event::Frame(..));
        if inbox.send(event).await.is_err() || last {
            return;
        }
    }
}

async fn write_frames(
    mut send: quinn::SendStream,
    mut frames: mpsc::Receiver<Vec<u8>>,
    connection: Option<quinn::Connection>,
) {
    while let Some(frame) = frames.recv().await {
        if send.write_all(&frame).await.is_err() {
            return;
        }
    }
    // Let the peer receive everything before the connection (if ours) goes away.
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
    }
    if let Some(connection) = connection {
        connection.close(0u32.into(), b"session over");
    }
}

/// The session's worker thread: every frame through the hop, in order.
fn work(
    inner: &Inner,
    setup: HopSetup,
    mut inbox: mpsc::Receiver<Event>,
    prev: &mpsc::Sender<Vec<u8>>,
    next: &mpsc::Sender<Vec<u8>>,
) {
    let counters = &inner.counters;
    let send = |out: Vec<Outgoing>| {
        for o in out {
            let link = match o.to {
                Toward::Prev => prev,
                Toward::Next => next,
            };
            // A link that is gone ends the session through its reader.
            let _ = link.blocking_send(o.frame);
        }
    };
    let mut hop = match Hop::start(setup, &inner.sandbox, SystemEntropy) {
        Ok((hop, out)) => {
            send(out);
            hop
        }
        Err(e) => {
            tracing::warn!(error = %e, "session refused");
            bump(&counters.sessions_failed);
            return;
        }
    };
    while !hop.has_failed() {
        let Some(event) = inbox.blocking_recv() else {
            break;
        };
        match event {
            Event::Frame(from, frame) => match hop.on_frame(from, &frame) {
                Ok(out) => {
                    bump(&counters.frames_processed);
                    send(out);
                }
                Err(HopError::Rejected { error, report }) => {
                    bump(&counters.frames_rejected);
                    tracing::warn!(%error, ?from, "frame rejected");
                    send(report.into_iter().collect());
                }
                Err(HopError::Failed) => bump(&counters.frames_after_failure),
                Err(e) => {
                    tracing::warn!(error = %e, "session ended");
                    break;
                }
            },
            Event::Closed(_, true) | Event::Expired => break,
            Event::Closed(from, false) => {
                let (broken, to) = match from {
                    Toward::Prev => ("previous", Toward::Next),
                    Toward::Next => ("next", Toward::Prev),
                };
                send(hop.fail_with(to, &format!("the link with the {broken} hop broke")));
            }
            Event::NextUnreachable(message) => send(hop.fail_with(Toward::Prev, &message)),
            Event::OverBudget => {
                bump(&counters.sessions_over_budget);
                send(hop.fail_with(Toward::Prev, "the session exceeded its byte budget"));
            }
        }
    }
    if hop.has_failed() {
        bump(&counters.sessions_failed);
    }
}
