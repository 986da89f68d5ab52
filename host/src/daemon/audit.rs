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
//! - `decrypted.bin`: every frame it opened and every payload sealed for it ([`Record`]).

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

use crate::hop::{Decrypted, Observer, Toward};

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
        Some(Box::new(move |seen: Decrypted<'_>| {
            let record = Record::from(seen).encode();
            logged("decrypted.bin", file.write_all(&record));
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

/// One entry of `decrypted.bin`.
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
    /// A payload sealed for this hop that it opened (labels, export slots).
    Sealed(Vec<u8>),
}

impl From<Decrypted<'_>> for Record {
    fn from(seen: Decrypted<'_>) -> Self {
        match seen {
            Decrypted::Frame(from, body) => Record::Frame {
                from_prev: from == Toward::Prev,
                op: body.op.0,
                tensor: body.tensor.clone(),
                blob: body.blob.clone(),
            },
            Decrypted::Sealed(bytes) => Record::Sealed(bytes.to_vec()),
        }
    }
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Record::Frame {
                from_prev,
                op,
                tensor,
                blob,
            } => {
                out.push(if *from_prev { b'p' } else { b'n' });
                out.push(*op);
                let mut t = Vec::new();
                if let Some(tensor) = tensor {
                    // A tensor the hop decoded always re-encodes.
                    let _ = tensor.encode_into(&mut t);
                }
                put_lp32(&mut out, &t);
                put_lp32(&mut out, blob);
            }
            Record::Sealed(bytes) => {
                out.push(b's');
                put_lp32(&mut out, bytes);
            }
        }
        out
    }
}

/// Reads a session's `decrypted.bin`.
pub fn read(path: &Path) -> std::io::Result<Vec<Record>> {
    let bytes = std::fs::read(path)?;
    parse(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn parse(bytes: &[u8]) -> Result<Vec<Record>, ReadError> {
    let mut r = Reader::new(bytes);
    let mut records = Vec::new();
    while r.remaining() > 0 {
        let record = match r.take_u8()? {
            kind @ (b'p' | b'n') => {
                let op = r.take_u8()?;
                let t = r.take_lp32(MAX_RECORD)?;
                let tensor = if t.is_empty() {
                    None
                } else {
                    Some(WireTensor::decode(&mut Reader::new(t))?)
                };
                Record::Frame {
                    from_prev: kind == b'p',
                    op,
                    tensor,
                    blob: r.take_lp32(MAX_RECORD)?.to_vec(),
                }
            }
            b's' => Record::Sealed(r.take_lp32(MAX_RECORD)?.to_vec()),
            _ => return Err(ReadError::Malformed("unknown audit record")),
        };
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    // ok: test code.
    use super::*;

    #[test]
    fn records_round_trip() {
        let records = vec![
            Record::Frame {
                from_prev: true,
                op: 1,
                tensor: Some(WireTensor {
                    shape: vec![2],
                    data: vec![1.5, -2.0],
                }),
                blob: vec![9; 40],
            },
            Record::Frame {
                from_prev: false,
                op: 2,
                tensor: None,
                blob: vec![],
            },
            Record::Sealed(vec![1, 2, 3]),
        ];
        let bytes: Vec<u8> = records.iter().flat_map(Record::encode).collect();
        assert_eq!(parse(&bytes).unwrap(), records);
        assert!(parse(&bytes[..bytes.len() - 1]).is_err());
    }
}
