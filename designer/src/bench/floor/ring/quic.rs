//! The QUIC ring, through `mixnn_transport::Endpoint` (its transport configuration, as the
//! hosts have it): one long-lived stream per link, whole messages read and written.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use mixnn_transport::{Endpoint, Fingerprint, TlsIdentity, hex_fingerprint};

use super::{Announced, Relays, check, loopback, pattern, touch, touched};

/// A QUIC relay on a one-thread runtime, as a host runs: passes messages on until a
/// neighbour goes.
pub(super) fn relay(bytes: usize, announced: Announced) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let endpoint = Endpoint::bind(loopback(), TlsIdentity::generate()?)?;
            announced.relay(
                endpoint.local_addr()?,
                &hex_fingerprint::format(&endpoint.fingerprint()),
            );
            let accepting = tokio::spawn(accept_stream(endpoint.clone()));
            let (next, fp) = announced.next().await?;
            let fp = fp.context("the next relay's fingerprint")?;
            let connection = endpoint.connect(next, fp).await?;
            let (mut send, _back) = connection.open_bi().await?;
            println!("ready");
            let (_prev, _to_prev, mut recv) = accepting.await??;
            // Until a neighbour goes (the bench is over). Read and written as the cascade's
            // links do: taken from the stream's buffer, moved into the next one.
            while let Ok(message) = mixnn_transport::read_frame(&mut recv, bytes).await {
                if send.write_chunk(touched(&message).into()).await.is_err() {
                    break;
                }
            }
            Ok(())
        })
}

/// The first connection to `endpoint`, and the stream its peer opens.
async fn accept_stream(
    endpoint: Endpoint,
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream)> {
    let incoming = endpoint.accept().await.context("the endpoint closed")?;
    let (connection, _) = incoming.handshake().await?;
    let (send, recv) = connection.accept_bi().await?;
    Ok((connection, send, recv))
}

type LapsReply = std::sync::mpsc::Sender<Result<Vec<Duration>>>;

/// This process's node of a QUIC ring, on its own thread with a one-thread runtime (as the
/// designer's network shell runs), so that its connections stay alive between rounds.
pub(crate) struct QuicRing {
    laps: Option<tokio::sync::mpsc::UnboundedSender<(usize, LapsReply)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl QuicRing {
    /// Starts this node, closes the ring of `relays` through it, and connects to the first.
    pub(crate) fn start(relays: &mut Relays, bytes: usize) -> Result<Self> {
        let (bound_tx, bound_rx) = std::sync::mpsc::channel::<Result<(SocketAddr, String)>>();
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<(SocketAddr, Fingerprint)>();
        let (connected_tx, connected_rx) = std::sync::mpsc::channel::<Result<()>>();
        let (laps_tx, laps_rx) = tokio::sync::mpsc::unbounded_channel();
        let links = relays.addrs.len() as u64 + 1;
        let thread = std::thread::Builder::new()
            .name("floor-quic".into())
            .spawn(move || {
                let ring = QuicNode {
                    bytes,
                    links,
                    bound: bound_tx.clone(),
                    first: first_rx,
                    connected: connected_tx,
                    laps: laps_rx,
                };
                if let Err(e) = ring.run() {
                    let _ = bound_tx.send(Err(e));
                }
            })
            .context("starting the QUIC ring's thread")?;
        let ring = QuicRing {
            laps: Some(laps_tx),
            thread: Some(thread),
        };
        let here = bound_rx.recv().context("the QUIC ring's thread ended")??;
        relays.link(here)?;
        let (addr, fp) = relays.addrs.first().context("a ring of no relay")?;
        let fp = hex_fingerprint::parse(fp).context("the first relay's fingerprint")?;
        first_tx
            .send((*addr, fp))
            .map_err(|_| anyhow!("the QUIC ring's thread ended"))?;
        connected_rx
            .recv()
            .context("the QUIC ring's thread ended")??;
        Ok(ring)
    }

    /// Sends the message round `n` times; each lap's time.
    pub(crate) fn laps(&mut self, n: usize) -> Result<Vec<Duration>> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.laps
            .as_ref()
            .and_then(|l| l.send((n, reply)).ok())
            .context("the QUIC ring's thread ended")?;
        answer.recv().context("the QUIC ring's thread ended")?
    }
}

impl Drop for QuicRing {
    fn drop(&mut self) {
        self.laps = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the QUIC ring's thread holds.
struct QuicNode {
    bytes: usize,
    /// Links a lap (nodes in the ring, this one included).
    links: u64,
    bound: std::sync::mpsc::Sender<Result<(SocketAddr, String)>>,
    first: tokio::sync::oneshot::Receiver<(SocketAddr, Fingerprint)>,
    connected: std::sync::mpsc::Sender<Result<()>>,
    laps: tokio::sync::mpsc::UnboundedReceiver<(usize, LapsReply)>,
}

impl QuicNode {
    fn run(mut self) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let endpoint = Endpoint::bind(loopback(), TlsIdentity::generate()?)?;
            let here = (
                endpoint.local_addr()?,
                hex_fingerprint::format(&endpoint.fingerprint()),
            );
            let accepting = tokio::spawn(accept_stream(endpoint.clone()));
            let _ = self.bound.send(Ok(here));
            let Ok((addr, fp)) = (&mut self.first).await else {
                return Ok(());
            };
            let to_first = async {
                let connection = endpoint.connect(addr, fp).await?;
                let (send, back) = connection.open_bi().await?;
                Ok::<_, anyhow::Error>((connection, send, back))
            }
            .await;
            let (_connection, mut send, _back) = match to_first {
                Ok(stream) => {
                    let _ = self.connected.send(Ok(()));
                    stream
                }
                Err(e) => {
                    let _ = self.connected.send(Err(e));
                    return Ok(());
                }
            };
            // The last relay's stream shows itself with the first message.
            let mut accepting = Some(accepting);
            let mut from_last = None;
            let mut out = pattern(self.bytes);
            let mut message = vec![0u8; self.bytes];
            let mut flips = 0u64;
            while let Some((n, reply)) = self.laps.recv().await {
                let result: Result<Vec<Duration>> = async {
                    let mut times = Vec::with_capacity(n);
                    for _ in 0..n {
                        let started = Instant::now();
                        send.write_all(&out).await?;
                        if let Some(accepting) = accepting.take() {
                            let (connection, to_last, recv) = accepting.await??;
                            from_last = Some((connection, to_last, recv));
                        }
                        let (_, _, recv) = from_last.as_mut().context("no stream")?;
                        recv.read_exact(&mut message).await?;
                        touch(&message, &mut out);
                        times.push(started.elapsed());
                        flips += self.links;
                    }
                    check(&out, flips)?;
                    Ok(times)
                }
                .await;
                let _ = reply.send(result);
            }
            endpoint.close();
            Ok(())
        })
    }
}
