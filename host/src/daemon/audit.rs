//! An audit of what a host sees (`audit_dir` in its config): for every session, everything it
//! decrypted and every byte that crossed its links. A curious host can keep the same record,
//! so keeping it costs the designer nothing; it is how an operator, or a test, checks what a
//! host learns (P1-P6). It costs disk: every frame is written twice.
//!
//! `audit_dir/session-N/` holds, for the N-th session the host accepted:
//! - `setup.json`: the decrypted setup (neighbours, circuit ids, role, sizes, expiry, each
//!   layer's config) but not its keys; `layer-K.wasm`: the K-th component it was given;
//! - `onion.in`, `onion.out`: the op=0 message as received and as forwarded;
//! - `prev.in`, `prev.out`, `next.in`, `next.out`: the bytes of every frame received from and
//!   sent to each neighbour, as read from and written to the QUIC stream;
//! - `decrypted.bin`: everything it saw in the clear, each with the time it saw it
//!   ([`Entry`]): every frame it opened and every one it sealed, every payload sealed for
//!   it, and its layers' state whenever it exported it.

use std::{
    fs::File,
    io::Write,
    path::{Path, PathBuf},
};

use mixnn_transport::hex_fingerprint;
use mixnn_wire::{
    frame::WireTensor,
    reader::{ReadError, Reader, put_lp32},
    setup::{HopSetup, Peer},
};

use crate::hop::{Observer, Seen, Toward};

/// Largest record [`read`] accepts.
const MAX_RECORD: usize = 1 << 30;

/// One session's audit directory.
#[derive(Debug, Clone)]
pub(super) struct SessionAudit {
    dir: PathBuf,
}

fn logged<T>(what: &str, result: std::io::Result<T>) -> Option<T> {
    result
        .map_err(|e| tracing::warn!(error = %e, what, "audit write failed"))
        .ok()
}

impl SessionAudit {
    /// The audit of session `n` under `root`.
    pub(super) fn create(root: &Path, n: u64) -> Option<Self> {
        let dir = root.join(format!("session-{n}"));
        logged("session directory", std::fs::create_dir_all(&dir))?;
        Some(SessionAudit { dir })
    }

    /// Records the setup and the op=0 message in and out.
    pub(super) fn setup(&self, setup: &HopSetup, onion_in: &[u8], onion_out: &[u8]) {
        let peer = |p: &Peer| match p {
            Peer::Designer => serde_json::json!({ "designer": true }),
            Peer::Host {
                address,
                fingerprint,
            } => serde_json::json!({
                "address": address,
                "fingerprint": hex_fingerprint::format(fingerprint),
            }),
        };
        let json = serde_json::json!({
            "prev": peer(&setup.prev),
            "next": peer(&setup.next),
            "circuit_in": hex_fingerprint::format(&setup.circuit_in),
            "circuit_out": hex_fingerprint::format(&setup.circuit_out),
            "flags": setup.flags,
            "frame_len": setup.frame_len,
            "blob_len": setup.blob_len,
            "expires_at": setup.expires_at,
            "layers": setup.layers.iter().map(|l| String::from_utf8_lossy(&l.config)).collect::<Vec<_>>(),
        });
        for (k, layer) in setup.layers.iter().enumerate() {
            self.write(&format!("layer-{k}.wasm"), &layer.component);
        }
        self.write("setup.json", json.to_string().as_bytes());
        self.write("onion.in", onion_in);
        self.write("onion.out", onion_out);
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        logged(name, std::fs::write(self.dir.join(name), bytes));
    }

    /// A file that records a link's bytes in one direction (`prev.in`, ...).
    pub(super) fn stream(&self, from: Toward, inbound: bool) -> Option<StreamTap> {
        let name = format!(
            "{}.{}",
            match from {
                Toward::Prev => "prev",
                Toward::Next => "next",
            },
            if inbound { "in" } else { "out" }
        );
        logged(&name, File::create(self.dir.join(&name))).map(StreamTap)
    }

    /// An observer for the hop that records what it decrypts.
    pub(super) fn observer(&self) -> Option<Observer> {
        let mut file = logged(
            "decrypted.bin",
            File::create(self.dir.join("decrypted.bin")),
        )?;
        Some(Box::new(move |seen: Seen<'_>| {
            let entry = Entry {
                at_us: unix_us(),
                record: Record::from(seen),
            };
            logged("decrypted.bin", file.write_all(&entry.encode()));
        }))
    }
}

/// Where a link's bytes are recorded.
#[derive(Debug)]
pub(super) struct StreamTap(File);

impl StreamTap {
    /// Appends what crossed the stream.
    pub(super) fn record(&mut self, bytes: &[u8]) {
        logged("stream", self.0.write_all(bytes));
    }
}

/// Microseconds since the Unix epoch: a clock that colluding hosts can share.
fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// One entry of `decrypted.bin`: what the hop saw, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// When, in microseconds since the Unix epoch (the host's clock).
    pub at_us: u64,
    /// What.
    pub record: Record,
}

/// What a hop saw in the clear.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A frame opened from a neighbour: its op, tensor and blob (as received, before the
    /// hop's blob layer).
    Frame {
        /// From the previous hop (else the next).
        from_prev: bool,
        /// Its op.
        op: u8,
        /// Its tensor.
        tensor: Option<WireTensor>,
        /// Its blob.
        blob: Vec<u8>,
    },
    /// A frame the hop sealed for a neighbour: its op and tensor (its blob is the hop's
    /// re-layering of one it received, or sealed for the designer).
    Sent {
        /// To the previous hop (else the next).
        to_prev: bool,
        /// Its op.
        op: u8,
        /// Its tensor.
        tensor: Option<WireTensor>,
    },
    /// A payload sealed for this hop that it opened (labels, export slots).
    Sealed(Vec<u8>),
    /// Its layers' state as it exported it: every layer's safetensors, length-prefixed.
    State(Vec<u8>),
}

impl From<Seen<'_>> for Record {
    fn from(seen: Seen<'_>) -> Self {
        match seen {
            Seen::Frame(from, body) => Record::Frame {
                from_prev: from == Toward::Prev,
                op: body.op.0,
                tensor: body.tensor.clone(),
                blob: body.blob.clone(),
            },
            Seen::Sent(to, body) => Record::Sent {
                to_prev: to == Toward::Prev,
                op: body.op.0,
                tensor: body.tensor.clone(),
            },
            Seen::Sealed(bytes) => Record::Sealed(bytes.to_vec()),
            Seen::State(bytes) => Record::State(bytes.to_vec()),
        }
    }
}

fn put_tensor(out: &mut Vec<u8>, tensor: Option<&WireTensor>) {
    let mut t = Vec::new();
    if let Some(tensor) = tensor {
        // A tensor the hop decoded or built always encodes.
        let _ = tensor.encode_into(&mut t);
    }
    put_lp32(out, &t);
}

fn take_tensor(r: &mut Reader<'_>) -> Result<Option<WireTensor>, ReadError> {
    let t = r.take_lp32(MAX_RECORD)?;
    if t.is_empty() {
        return Ok(None);
    }
    Ok(Some(WireTensor::decode(&mut Reader::new(t))?))
}

impl Entry {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match &self.record {
            Record::Frame {
                from_prev,
                op,
                tensor,
                blob,
            } => {
                out.push(if *from_prev { b'p' } else { b'n' });
                out.extend(self.at_us.to_be_bytes());
                out.push(*op);
                put_tensor(&mut out, tensor.as_ref());
                put_lp32(&mut out, blob);
            }
            Record::Sent {
                to_prev,
                op,
                tensor,
            } => {
                out.push(if *to_prev { b'P' } else { b'N' });
                out.extend(self.at_us.to_be_bytes());
                out.push(*op);
                put_tensor(&mut out, tensor.as_ref());
            }
            Record::Sealed(bytes) => {
                out.push(b's');
                out.extend(self.at_us.to_be_bytes());
                put_lp32(&mut out, bytes);
            }
            Record::State(bytes) => {
                out.push(b'S');
                out.extend(self.at_us.to_be_bytes());
                put_lp32(&mut out, bytes);
            }
        }
        out
    }
}

/// Reads a session's `decrypted.bin`.
pub fn read(path: &Path) -> std::io::Result<Vec<Entry>> {
    let bytes = std::fs::read(path)?;
    parse(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn parse(bytes: &[u8]) -> Result<Vec<Entry>, ReadError> {
    let mut r = Reader::new(bytes);
    let mut entries = Vec::new();
    while r.remaining() > 0 {
        let kind = r.take_u8()?;
        let at_us = r.take_u64()?;
        let record = match kind {
            b'p' | b'n' => Record::Frame {
                from_prev: kind == b'p',
                op: r.take_u8()?,
                tensor: take_tensor(&mut r)?,
                blob: r.take_lp32(MAX_RECORD)?.to_vec(),
            },
            b'P' | b'N' => Record::Sent {
                to_prev: kind == b'P',
                op: r.take_u8()?,
                tensor: take_tensor(&mut r)?,
            },
            b's' => Record::Sealed(r.take_lp32(MAX_RECORD)?.to_vec()),
            b'S' => Record::State(r.take_lp32(MAX_RECORD)?.to_vec()),
            _ => return Err(ReadError::Malformed("unknown audit record")),
        };
        entries.push(Entry { at_us, record });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    // ok: test code.
    use super::*;

    #[test]
    fn records_round_trip() {
        let tensor = WireTensor {
            shape: vec![2],
            data: vec![1.5, -2.0],
        };
        let records = vec![
            Record::Frame {
                from_prev: true,
                op: 1,
                tensor: Some(tensor.clone()),
                blob: vec![9; 40],
            },
            Record::Frame {
                from_prev: false,
                op: 2,
                tensor: None,
                blob: vec![],
            },
            Record::Sent {
                to_prev: false,
                op: 1,
                tensor: Some(tensor),
            },
            Record::Sent {
                to_prev: true,
                op: 2,
                tensor: None,
            },
            Record::Sealed(vec![1, 2, 3]),
            Record::State(vec![4; 9]),
        ];
        let entries: Vec<Entry> = records
            .into_iter()
            .enumerate()
            .map(|(i, record)| Entry {
                at_us: 1_700_000_000_000_000 + i as u64,
                record,
            })
            .collect();
        let bytes: Vec<u8> = entries.iter().flat_map(Entry::encode).collect();
        assert_eq!(parse(&bytes).unwrap(), entries);
        assert!(parse(&bytes[..bytes.len() - 1]).is_err());
    }
}
