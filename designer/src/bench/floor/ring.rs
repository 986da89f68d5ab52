//! The relay rings of `mixnn bench floor`: relay processes (this binary's hidden
//! `floor-relay`) that each receive a message, touch every byte (an XOR copy into a second
//! buffer, as a hop's open and seal make a new buffer of every byte) and send it on, and this
//! process closing the ring, timing each lap.
//!
//! A relay and its parent talk over stdin and stdout, as the local cluster's hosts do: the
//! relay prints `relay ADDR FINGERPRINT` (`-` for UDP), reads `next ADDR FINGERPRINT`, prints
//! `ready` once it can send on, and exits when its stdin closes (so it never outlives the
//! bench, even one that is killed).

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, UdpSocket},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use mixnn_transport::{Endpoint, Fingerprint, TlsIdentity, hex_fingerprint};

/// The largest UDP payload over IPv4.
pub(crate) const MAX_DATAGRAM: usize = 65_507;
/// Each datagram's header: the message's sequence number (u32), the chunk and the chunks
/// (u16 each), little-endian.
const HEADER: usize = 8;
/// Message bytes per datagram.
const CHUNK: usize = MAX_DATAGRAM - HEADER;
/// What every node XORs every byte with.
const KEY: u8 = 0xA5;
/// How long this process waits for a UDP message to come round before it counts it lost.
const UDP_TIMEOUT: Duration = Duration::from_secs(1);
/// Lost UDP messages tolerated in one call of [`UdpRing::laps`].
const MAX_LOST: usize = 10;

/// How the relays pass the message on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Transport {
    /// Plain UDP datagrams (a message larger than one datagram is split).
    Udp,
    /// QUIC through `mixnn_transport::Endpoint`, one long-lived stream per link.
    Quic,
}

impl Transport {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Quic => "quic",
        }
    }
}

/// Datagrams a message of `bytes` takes over plain UDP.
pub(crate) fn datagrams_for(bytes: usize) -> usize {
    bytes.div_ceil(CHUNK).max(1)
}

/// The message the ring starts from.
fn pattern(bytes: usize) -> Vec<u8> {
    (0..bytes)
        .map(|i| i.wrapping_mul(31).wrapping_add(7).to_le_bytes()[0])
        .collect()
}

/// Every byte of `from`, XORed, into `to`: the relay's work on a message.
fn touch(from: &[u8], to: &mut [u8]) {
    for (t, f) in to.iter_mut().zip(from) {
        *t = f ^ KEY;
    }
}

/// Checks that `message` is the pattern XORed `flips` times: that every node touched it once
/// a lap and nothing else changed it.
fn check(message: &[u8], flips: u64) -> Result<()> {
    let key = if flips % 2 == 1 { KEY } else { 0 };
    let expected = pattern(message.len());
    if message.iter().zip(&expected).any(|(m, e)| *m != e ^ key) {
        bail!("the message came back altered");
    }
    Ok(())
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// One node of a UDP ring: its socket, the next node, and the message as datagrams (headers
/// in place), which a received message is touched into.
struct UdpNode {
    socket: UdpSocket,
    next: SocketAddr,
    out: Vec<Vec<u8>>,
    have: Vec<bool>,
    got: usize,
    seq: u32,
    buf: Vec<u8>,
}

impl UdpNode {
    fn new(socket: UdpSocket, next: SocketAddr, bytes: usize) -> Result<Self> {
        let chunks = datagrams_for(bytes);
        let count = u16::try_from(chunks).context("a message of over 65535 datagrams")?;
        let out = (0..chunks)
            .map(|k| {
                let len = CHUNK.min(bytes - k * CHUNK);
                let mut d = vec![0; HEADER + len];
                d[4..6].copy_from_slice(&u16::try_from(k).unwrap_or(u16::MAX).to_le_bytes());
                d[6..8].copy_from_slice(&count.to_le_bytes());
                d
            })
            .collect();
        Ok(UdpNode {
            socket,
            next,
            out,
            have: vec![false; chunks],
            got: 0,
            seq: 0,
            buf: vec![0; MAX_DATAGRAM],
        })
    }

    fn load(&mut self, message: &[u8]) {
        for (d, part) in self.out.iter_mut().zip(message.chunks(CHUNK)) {
            d[HEADER..].copy_from_slice(part);
        }
    }

    fn message(&self) -> Vec<u8> {
        self.out
            .iter()
            .flat_map(|d| &d[HEADER..])
            .copied()
            .collect()
    }

    fn send(&mut self, seq: u32) -> Result<()> {
        for d in &mut self.out {
            d[..4].copy_from_slice(&seq.to_le_bytes());
            self.socket
                .send_to(d, self.next)
                .context("sending a datagram")?;
        }
        Ok(())
    }

    /// Receives datagrams until a whole message is in (touched into the outgoing datagrams);
    /// its sequence number, or `None` if the socket's read timeout passed first.
    fn receive(&mut self) -> Result<Option<u32>> {
        loop {
            let n = match self.socket.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e).context("receiving a datagram"),
            };
            let field = |at: usize| u16::from_le_bytes([self.buf[at], self.buf[at + 1]]);
            if n < HEADER {
                continue;
            }
            let seq = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
            let (k, chunks) = (usize::from(field(4)), usize::from(field(6)));
            if chunks != self.out.len() || k >= chunks || self.out[k].len() != n {
                continue;
            }
            // A datagram of a newer message: the partial one was lost.
            if seq != self.seq {
                self.seq = seq;
                self.have.fill(false);
                self.got = 0;
            }
            if self.have[k] {
                continue;
            }
            touch(&self.buf[HEADER..n], &mut self.out[k][HEADER..]);
            self.have[k] = true;
            self.got += 1;
            if self.got == chunks {
                self.have.fill(false);
                self.got = 0;
                return Ok(Some(seq));
            }
        }
    }
}

/// The relay processes of one ring.
pub(crate) struct Relays {
    children: Vec<(Child, Option<ChildStdin>, BufReader<ChildStdout>)>,
    /// Each relay's address and fingerprint (hex, `-` for UDP), as it announced them.
    pub(crate) addrs: Vec<(SocketAddr, String)>,
}

impl Relays {
    /// Starts `n` relays of `transport` for messages of `bytes` (`exe floor-relay ...`) and
    /// reads where each listens.
    pub(crate) fn start(exe: &Path, transport: Transport, n: usize, bytes: usize) -> Result<Self> {
        let mut relays = Relays {
            children: Vec::new(),
            addrs: Vec::new(),
        };
        for i in 0..n {
            let mut child = Command::new(exe)
                .args(["floor-relay", "--transport", transport.name()])
                .args(["--frame-bytes", &bytes.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("starting {} relay {i}", transport.name()))?;
            let stdin = child.stdin.take();
            let stdout = child.stdout.take();
            let Some(stdout) = stdout else {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} relay {i}: no stdout", transport.name());
            };
            relays.children.push((child, stdin, BufReader::new(stdout)));
            let line = relays.line(i)?;
            let parsed = line
                .strip_prefix("relay ")
                .and_then(|rest| rest.split_once(' '))
                .and_then(|(addr, fp)| Some((addr.parse().ok()?, fp.to_owned())));
            let addr = parsed.ok_or_else(|| anyhow!("relay {i} said {line:?}"))?;
            relays.addrs.push(addr);
        }
        Ok(relays)
    }

    /// Relay `i`'s next line.
    fn line(&mut self, i: usize) -> Result<String> {
        let (_, _, stdout) = self
            .children
            .get_mut(i)
            .ok_or_else(|| anyhow!("no relay {i}"))?;
        let mut line = String::new();
        let n = stdout
            .read_line(&mut line)
            .with_context(|| format!("reading relay {i}"))?;
        if n == 0 {
            bail!("relay {i} exited");
        }
        Ok(line.trim().to_owned())
    }

    /// Closes the ring: relay `i` sends to relay `i + 1`, the last to `last_next` (this
    /// process); waits until every relay is ready.
    pub(crate) fn link(&mut self, last_next: (SocketAddr, String)) -> Result<()> {
        let n = self.children.len();
        for i in 0..n {
            let (addr, fp) = self.addrs.get(i + 1).cloned().unwrap_or(last_next.clone());
            let stdin = self.children[i]
                .1
                .as_mut()
                .context("relay's stdin closed")?;
            writeln!(stdin, "next {addr} {fp}")
                .and_then(|()| stdin.flush())
                .with_context(|| format!("telling relay {i} where to send"))?;
        }
        for i in 0..n {
            let line = self.line(i)?;
            if line != "ready" {
                bail!("relay {i} said {line:?} instead of ready");
            }
        }
        Ok(())
    }
}

impl Drop for Relays {
    /// Closes every relay's stdin (they exit on it), waits a moment, and kills what is left.
    fn drop(&mut self) {
        for (_, stdin, _) in &mut self.children {
            *stdin = None;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for (child, _, _) in &mut self.children {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    _ => {
                        tracing::warn!(pid = child.id(), "a relay did not stop; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

/// This process's node of a UDP ring.
pub(crate) struct UdpRing {
    node: UdpNode,
    /// Links a lap (nodes in the ring, this one included).
    links: u64,
    flips: u64,
    seq: u32,
    /// Messages lost so far (and sent again).
    pub(crate) lost: usize,
}

impl UdpRing {
    /// Binds this node's socket; `next` comes with [`UdpRing::close`].
    pub(crate) fn bind() -> Result<(UdpSocket, SocketAddr)> {
        let socket = UdpSocket::bind(loopback()).context("binding a UDP socket")?;
        let addr = socket.local_addr()?;
        Ok((socket, addr))
    }

    /// Closes the ring of `relays` through `socket`: it sends to the first relay.
    pub(crate) fn close(socket: UdpSocket, relays: &mut Relays, bytes: usize) -> Result<Self> {
        let addr = socket.local_addr()?;
        socket.set_read_timeout(Some(UDP_TIMEOUT))?;
        let first = relays.addrs.first().context("a ring of no relay")?.0;
        relays.link((addr, "-".into()))?;
        let mut node = UdpNode::new(socket, first, bytes)?;
        node.load(&pattern(bytes));
        Ok(UdpRing {
            node,
            links: relays.addrs.len() as u64 + 1,
            flips: 0,
            seq: 0,
            lost: 0,
        })
    }

    /// Sends the message round `n` times; each lap's time. A lost message is sent again
    /// (from the pattern), and its lap not timed.
    pub(crate) fn laps(&mut self, n: usize) -> Result<Vec<Duration>> {
        let mut times = Vec::with_capacity(n);
        let mut lost = 0;
        while times.len() < n {
            self.seq = self.seq.wrapping_add(1);
            let started = Instant::now();
            self.node.send(self.seq)?;
            loop {
                match self.node.receive()? {
                    Some(seq) if seq == self.seq => {
                        times.push(started.elapsed());
                        self.flips += self.links;
                        break;
                    }
                    // A late part of a message given up for lost.
                    Some(_) => {}
                    None => {
                        lost += 1;
                        self.lost += 1;
                        tracing::warn!(lost = self.lost, "a UDP message was lost; resending");
                        if lost > MAX_LOST {
                            bail!("{lost} UDP messages lost in a round");
                        }
                        self.node.load(&pattern(self.node.message().len()));
                        self.flips = 0;
                        break;
                    }
                }
            }
        }
        check(&self.node.message(), self.flips)?;
        Ok(times)
    }
}

/// A hidden `floor-relay` process: a node of a ring until its stdin closes.
pub(crate) fn relay(transport: Transport, bytes: usize) -> Result<()> {
    if bytes == 0 {
        bail!("--frame-bytes must be at least 1");
    }
    // The first line says where to send; then stdin's end is the end.
    let (next_tx, next_rx) = tokio::sync::oneshot::channel::<String>();
    let (bound_tx, bound_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        // Read nothing before this relay announced itself.
        let _ = bound_rx.recv();
        let mut stdin = std::io::stdin().lock();
        let mut line = String::new();
        if stdin.read_line(&mut line).is_ok() && !line.is_empty() {
            let _ = next_tx.send(std::mem::take(&mut line));
            while stdin.read_line(&mut line).is_ok_and(|n| n > 0) {
                line.clear();
            }
        }
        std::process::exit(0);
    });
    let parse_next = |line: String| -> Result<(SocketAddr, Option<Fingerprint>)> {
        let mut words = line.split_whitespace();
        let (Some("next"), Some(addr), Some(fp)) = (words.next(), words.next(), words.next())
        else {
            bail!("expected `next ADDR FINGERPRINT`, got {line:?}");
        };
        Ok((addr.parse()?, hex_fingerprint::parse(fp)))
    };
    match transport {
        Transport::Udp => {
            let socket = UdpSocket::bind(loopback())?;
            println!("relay {} -", socket.local_addr()?);
            let _ = bound_tx.send(());
            let (next, _) = parse_next(next_rx.blocking_recv()?)?;
            let mut node = UdpNode::new(socket, next, bytes)?;
            println!("ready");
            loop {
                if let Some(seq) = node.receive()? {
                    node.send(seq)?;
                }
            }
        }
        Transport::Quic => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let endpoint = Endpoint::bind(loopback(), TlsIdentity::generate()?)?;
                println!(
                    "relay {} {}",
                    endpoint.local_addr()?,
                    hex_fingerprint::format(&endpoint.fingerprint())
                );
                let _ = bound_tx.send(());
                let accepting = tokio::spawn(accept_stream(endpoint.clone()));
                let (next, fp) = parse_next(next_rx.await?)?;
                let fp = fp.context("the next relay's fingerprint")?;
                let connection = endpoint.connect(next, fp).await?;
                let (mut send, _back) = connection.open_bi().await?;
                println!("ready");
                let (_prev, _to_prev, mut recv) = accepting.await??;
                let (mut message, mut out) = (vec![0u8; bytes], vec![0u8; bytes]);
                // Until a neighbour goes (the bench is over).
                while recv.read_exact(&mut message).await.is_ok() {
                    touch(&message, &mut out);
                    if send.write_all(&out).await.is_err() {
                        break;
                    }
                }
                Ok(())
            }),
    }
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
