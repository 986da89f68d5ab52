//! The plain UDP ring: a message in datagrams of at most 65,507 bytes, each with a header
//! that names its message and its part.

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{Announced, Relays, check, loopback, pattern, touch};

/// The largest UDP payload over IPv4.
pub(crate) const MAX_DATAGRAM: usize = 65_507;
/// Each datagram's header: the message's sequence number (u32), the chunk and the chunks
/// (u16 each), little-endian.
const HEADER: usize = 8;
/// Message bytes per datagram.
const CHUNK: usize = MAX_DATAGRAM - HEADER;
/// How long this process waits for a UDP message to come round before it counts it lost.
const UDP_TIMEOUT: Duration = Duration::from_secs(1);
/// Lost UDP messages tolerated in one call of [`UdpRing::laps`].
const MAX_LOST: usize = 10;

/// Datagrams a message of `bytes` takes over plain UDP.
pub(crate) fn datagrams_for(bytes: usize) -> usize {
    bytes.div_ceil(CHUNK).max(1)
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

/// A UDP relay: passes messages on until the process exits.
pub(super) fn relay(bytes: usize, announced: Announced) -> Result<()> {
    let socket = UdpSocket::bind(loopback())?;
    announced.relay(socket.local_addr()?, "-");
    let (next, _) = announced.next_blocking()?;
    let mut node = UdpNode::new(socket, next, bytes)?;
    println!("ready");
    loop {
        if let Some(seq) = node.receive()? {
            node.send(seq)?;
        }
    }
}
