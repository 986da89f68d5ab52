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
    net::SocketAddr,
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use mixnn_transport::{Fingerprint, hex_fingerprint};

mod quic;
mod udp;

pub(crate) use quic::QuicRing;
pub(crate) use udp::{UdpRing, datagrams_for};

/// What every node XORs every byte with.
const KEY: u8 = 0xA5;

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

/// The message the ring starts from.
pub(super) fn pattern(bytes: usize) -> Vec<u8> {
    (0..bytes)
        .map(|i| i.wrapping_mul(31).wrapping_add(7).to_le_bytes()[0])
        .collect()
}

/// `from` touched into a new message (as a hop makes a new frame of every one it takes).
pub(super) fn touched(from: &[u8]) -> Vec<u8> {
    from.iter().map(|f| f ^ KEY).collect()
}

/// Every byte of `from`, XORed, into `to`: the relay's work on a message.
pub(super) fn touch(from: &[u8], to: &mut [u8]) {
    for (t, f) in to.iter_mut().zip(from) {
        *t = f ^ KEY;
    }
}

/// Checks that `message` is the pattern XORed `flips` times: that every node touched it once
/// a lap and nothing else changed it.
pub(super) fn check(message: &[u8], flips: u64) -> Result<()> {
    let key = if flips % 2 == 1 { KEY } else { 0 };
    let expected = pattern(message.len());
    if message.iter().zip(&expected).any(|(m, e)| *m != e ^ key) {
        bail!("the message came back altered");
    }
    Ok(())
}

pub(super) fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
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
    let announced = Announced {
        bound: bound_tx,
        next: next_rx,
    };
    match transport {
        Transport::Udp => udp::relay(bytes, announced),
        Transport::Quic => quic::relay(bytes, announced),
    }
}

/// A relay's half of the talk with its parent: it says where it listens, then hears where to
/// send.
pub(super) struct Announced {
    bound: std::sync::mpsc::Sender<()>,
    next: tokio::sync::oneshot::Receiver<String>,
}

impl Announced {
    /// Prints `relay ADDR FINGERPRINT` and lets stdin be read.
    pub(super) fn relay(&self, addr: SocketAddr, fingerprint: &str) {
        println!("relay {addr} {fingerprint}");
        let _ = self.bound.send(());
    }

    /// Where to send: the `next ADDR FINGERPRINT` line (a fingerprint `-` is none).
    pub(super) async fn next(self) -> Result<(SocketAddr, Option<Fingerprint>)> {
        parse_next(&self.next.await.context("stdin closed before `next`")?)
    }

    /// As [`Announced::next`], outside a runtime.
    pub(super) fn next_blocking(self) -> Result<(SocketAddr, Option<Fingerprint>)> {
        parse_next(
            &self
                .next
                .blocking_recv()
                .context("stdin closed before `next`")?,
        )
    }
}

fn parse_next(line: &str) -> Result<(SocketAddr, Option<Fingerprint>)> {
    let mut words = line.split_whitespace();
    let (Some("next"), Some(addr), Some(fp)) = (words.next(), words.next(), words.next()) else {
        bail!("expected `next ADDR FINGERPRINT`, got {line:?}");
    };
    Ok((addr.parse()?, hex_fingerprint::parse(fp)))
}
