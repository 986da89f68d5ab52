//! The network shell around a [`super::session::DesignerSession`]: a one-thread tokio runtime
//! in the background, two QUIC streams (into the first hop, from the last), and tasks that
//! move whole frames of bytes between them and the caller. It seals, opens and decides
//! nothing: the session does.

use std::{net::SocketAddr, time::Duration};

use mixnn_transport::{Endpoint, TlsIdentity, directory_client};
use tokio::sync::mpsc;

use super::{
    End, HostRef, LinkError, PeerFault, PlanError, RemoteError, RemoteOptions,
    error::link_failed,
    session::{Opening, Transmit},
};
use crate::pool::{self, Candidate};

/// Frames queued on a link either way.
const QUEUE: usize = 16;
/// How long closing waits for a link's last frames to be taken.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What woke the caller.
pub(super) enum Event {
    /// A whole frame arrived.
    Frame(End, mixnn_transport::Bytes),
    /// A link broke.
    Broke(End, LinkError),
    /// The time the caller asked to be woken at has come.
    Timer,
}

/// One link: frames go out through a writer task and come in through a reader task.
struct Link {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    rx: mpsc::Receiver<Result<mixnn_transport::Bytes, LinkError>>,
    writer: Option<tokio::task::JoinHandle<()>>,
}

impl Link {
    /// Starts the link's tasks (on the runtime the caller has entered).
    fn start(
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        conn: quinn::Connection,
        frame_len: usize,
        delay: Duration,
    ) -> Result<Self, RemoteError> {
        let (tx, out_rx) = mpsc::channel::<Vec<u8>>(QUEUE);
        let (in_tx, rx) = mpsc::channel(QUEUE);
        // No delay, no timer or thread on the path.
        let mut out_rx = if delay.is_zero() {
            out_rx
        } else {
            mixnn_transport::delay_line(out_rx, delay).map_err(RemoteError::Runtime)?
        };
        let writer = tokio::spawn(async move {
            while let Some(frame) = out_rx.recv().await {
                // Moved, not copied, into the stream's buffer.
                if send.write_chunk(frame.into()).await.is_err() {
                    return;
                }
            }
            if send.finish().is_ok() {
                let _ = tokio::time::timeout(CLOSE_WAIT, send.stopped()).await;
            }
            conn.close(0u32.into(), b"session over");
        });
        tokio::spawn(async move {
            loop {
                let got = mixnn_transport::read_frame(&mut recv, frame_len)
                    .await
                    .map_err(LinkError::Read);
                let stop = got.is_err();
                if in_tx.send(got).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Link {
            tx: Some(tx),
            rx,
            writer: Some(writer),
        })
    }
}

/// The designer's two links to its cascade.
pub(super) struct Net {
    runtime: tokio::runtime::Runtime,
    first: Link,
    last: Link,
}

impl Net {
    /// Connects to the first and the last of `hosts` (the cascade's, first to last) and
    /// writes `opening`'s bytes into each.
    pub(super) fn open(
        hosts: &[HostRef],
        opening: Opening,
        frame_len: usize,
        link_delay: Duration,
    ) -> Result<Self, RemoteError> {
        let (Some(first), Some(last)) = (hosts.first(), hosts.last()) else {
            return Err(PlanError::NoLayerLeft.into());
        };
        let last_hop = hosts.len() - 1;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(RemoteError::Runtime)?;
        let (first, last) = runtime.block_on(async {
            let endpoint = Endpoint::bind(
                SocketAddr::from(([0, 0, 0, 0], 0)),
                TlsIdentity::generate()?,
            )?;
            let first = stream(&endpoint, first, 0, End::First, "setup", &opening.first).await?;
            let last = stream(
                &endpoint,
                last,
                last_hop,
                End::Last,
                "attach",
                &opening.last,
            )
            .await?;
            Ok::<_, RemoteError>((first, last))
        })?;
        let (first, last) = {
            let _guard = runtime.enter();
            (
                Link::start(first.1, first.2, first.0, frame_len, link_delay)?,
                Link::start(last.1, last.2, last.0, frame_len, link_delay)?,
            )
        };
        Ok(Net {
            runtime,
            first,
            last,
        })
    }

    /// Queues a frame on its link (waiting while the queue is full).
    pub(super) fn send(&mut self, transmit: Transmit) -> Result<(), LinkError> {
        let link = match transmit.end {
            End::First => &self.first,
            End::Last => &self.last,
        };
        let tx = link.tx.clone().ok_or(LinkError::Closed)?;
        // A closed queue: its writer stopped, on a write that failed.
        self.runtime
            .block_on(tx.send(transmit.frame))
            .map_err(|_| LinkError::Closed)
    }

    /// Waits for the next frame from either link, or until `wake`.
    pub(super) fn next(&mut self, wake: Option<std::time::Instant>) -> Event {
        let (first, last) = (&mut self.first.rx, &mut self.last.rx);
        self.runtime.block_on(async {
            let timer = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            let (end, got) = tokio::select! {
                f = first.recv() => (End::First, f),
                f = last.recv() => (End::Last, f),
                () = timer => return Event::Timer,
            };
            match got {
                Some(Ok(frame)) => Event::Frame(end, frame),
                Some(Err(e)) => Event::Broke(end, e),
                None => Event::Broke(end, LinkError::Closed),
            }
        })
    }

    /// Closes both links: their writers finish the streams once their queues are empty, and
    /// the hops tear the session down in turn.
    pub(super) fn close(mut self) {
        self.first.tx = None;
        self.last.tx = None;
        let writers: Vec<_> = [self.first.writer.take(), self.last.writer.take()]
            .into_iter()
            .flatten()
            .collect();
        self.runtime.block_on(async {
            for writer in writers {
                let _ = tokio::time::timeout(CLOSE_WAIT, writer).await;
            }
        });
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

/// Connects to `host` (hop `hop`, at the designer's `end`), opens a stream and writes
/// `opening` into it. A host that refuses stops the stream, saying why.
async fn stream(
    endpoint: &Endpoint,
    host: &HostRef,
    hop: usize,
    end: End,
    step: &'static str,
    opening: &[u8],
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), RemoteError> {
    let address = &host.address;
    let addr: SocketAddr = address.parse().map_err(|_| RemoteError::Peer {
        step: "setup",
        fault: PeerFault::BadAddress(address.clone()),
    })?;
    let conn = endpoint
        .connect(addr, host.fingerprint)
        .await
        .map_err(|source| RemoteError::Unreachable {
            hop,
            address: address.clone(),
            source,
        })?;
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| link_failed(hop, "setup", end, e.into()))?;
    send.write_all(opening)
        .await
        .map_err(|e| link_failed(hop, step, end, e.into()))?;
    Ok((conn, send, recv))
}

/// The directory's pool, every descriptor verified (those that do not verify are dropped).
pub fn fetch_pool(options: &RemoteOptions) -> Result<Vec<Candidate>, RemoteError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RemoteError::Runtime)?;
    runtime.block_on(async {
        let endpoint = Endpoint::bind(
            SocketAddr::from(([0, 0, 0, 0], 0)),
            TlsIdentity::generate()?,
        )?;
        let signed = directory_client::fetch_pool(
            &endpoint,
            options.directory,
            options.directory_fingerprint,
            options.max_pool,
        )
        .await?;
        endpoint.close();
        Ok(pool::verify_pool(&signed))
    })
}
