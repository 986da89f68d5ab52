//! What each host of a session kept: its audit (`audit_dir`, see `mixnn_host::daemon::audit`),
//! read back and put in cascade order. Everything an attack may use comes from here.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use mixnn_host::daemon::audit::{self, Entry, Record};
use mixnn_wire::frame::{Op, WireTensor};
use serde_json::Value;

use crate::local_cluster::LocalCluster;

/// Why the audits could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// A file of an audit could not be read or parsed.
    #[error("{path}: {source}")]
    Read {
        /// Which.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An audit's `setup.json` is not what a host writes.
    #[error("{0}: a setup that does not parse")]
    Setup(PathBuf),
    /// The audited sessions do not form chains of neighbours from the designer back to it
    /// (or, where one was expected, more than one).
    #[error("the audited sessions do not form the cascades expected")]
    NotOneCascade,
}

/// One host's audit of one session.
#[derive(Debug, Clone)]
pub struct HostView {
    /// Which host of the cluster (for the harness's bookkeeping, not the attack's).
    pub host: usize,
    /// The decrypted setup (neighbours, circuit ids, role, sizes, the layers' configs).
    pub setup: Value,
    /// The components it was given, in order.
    pub components: Vec<Vec<u8>>,
    /// The op=0 message as received and as forwarded.
    pub onion_in: Vec<u8>,
    /// See `onion_in`.
    pub onion_out: Vec<u8>,
    /// Every byte read from and written to its two links (`prev.in`, ...).
    pub prev_in: Vec<u8>,
    /// See `prev_in`.
    pub prev_out: Vec<u8>,
    /// See `prev_in`.
    pub next_in: Vec<u8>,
    /// See `prev_in`.
    pub next_out: Vec<u8>,
    /// Everything it saw in the clear, in order, with times.
    pub entries: Vec<Entry>,
    /// `decrypted.bin` as stored.
    pub decrypted: Vec<u8>,
}

impl HostView {
    /// Reads the audit of one session in `dir`, kept by host `host`.
    pub fn read(host: usize, dir: &Path) -> Result<Self, ViewError> {
        let read = |name: &str| -> Result<Vec<u8>, ViewError> {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => Ok(bytes),
                // A link never opened leaves no file.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(source) => Err(ViewError::Read { path, source }),
            }
        };
        let setup: Value = serde_json::from_slice(&read("setup.json")?)
            .map_err(|_| ViewError::Setup(dir.join("setup.json")))?;
        let layers = setup["layers"]
            .as_array()
            .ok_or_else(|| ViewError::Setup(dir.join("setup.json")))?
            .len();
        let path = dir.join("decrypted.bin");
        let entries = audit::read(&path).map_err(|source| ViewError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(HostView {
            host,
            components: (0..layers)
                .map(|k| read(&format!("layer-{k}.wasm")))
                .collect::<Result<_, _>>()?,
            setup,
            onion_in: read("onion.in")?,
            onion_out: read("onion.out")?,
            prev_in: read("prev.in")?,
            prev_out: read("prev.out")?,
            next_in: read("next.in")?,
            next_out: read("next.out")?,
            entries,
            decrypted: read("decrypted.bin")?,
        })
    }

    /// Whether it was a dummy (its one layer the identity).
    pub fn is_dummy(&self) -> bool {
        self.components == [mixnn_components::IDENTITY]
    }

    /// What it saw, without the times.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.entries.iter().map(|e| &e.record)
    }

    /// The frames it received from one side (`from_prev`): op, tensor shape, blob length.
    pub fn frames(&self, from_prev: bool) -> Vec<(u8, Option<Vec<u32>>, usize)> {
        self.records()
            .filter_map(|r| match r {
                Record::Frame {
                    from_prev: p,
                    op,
                    tensor,
                    blob,
                } if *p == from_prev => {
                    Some((*op, tensor.as_ref().map(|t| t.shape.clone()), blob.len()))
                }
                _ => None,
            })
            .collect()
    }

    /// The tensors of the frames of `op` it received from one side, in order.
    pub fn received(&self, op: Op, from_prev: bool) -> Vec<&WireTensor> {
        self.records()
            .filter_map(|r| match r {
                Record::Frame {
                    from_prev: p,
                    op: o,
                    tensor: Some(t),
                    ..
                } if *p == from_prev && *o == op.0 => Some(t),
                _ => None,
            })
            .collect()
    }

    /// The tensors of the frames of `op` it sent to one side, in order.
    pub fn sent(&self, op: Op, to_prev: bool) -> Vec<&WireTensor> {
        self.records()
            .filter_map(|r| match r {
                Record::Sent {
                    to_prev: p,
                    op: o,
                    tensor: Some(t),
                } if *p == to_prev && *o == op.0 => Some(t),
                _ => None,
            })
            .collect()
    }

    /// The payloads sealed for it that it opened (labels, export slots).
    pub fn sealed(&self) -> Vec<&[u8]> {
        self.records()
            .filter_map(|r| match r {
                Record::Sealed(b) => Some(b.as_slice()),
                _ => None,
            })
            .collect()
    }

    /// The last state it exported: every layer's safetensors bytes.
    pub fn last_state(&self) -> Option<Vec<Vec<u8>>> {
        let bytes = self
            .records()
            .filter_map(|r| match r {
                Record::State(b) => Some(b.as_slice()),
                _ => None,
            })
            .last()?;
        let mut r = mixnn_wire::reader::Reader::new(bytes);
        let mut layers = Vec::new();
        while r.remaining() > 0 {
            layers.push(r.take_lp32(bytes.len()).ok()?.to_vec());
        }
        Some(layers)
    }
}

/// Waits until the cluster's audits stop growing (the hosts finish their last frames after
/// the designer has closed), reads every session's, removes them, and returns the one
/// session they hold in cascade order, from the hop after the designer.
pub fn collect(cluster: &LocalCluster) -> Result<Vec<HostView>, ViewError> {
    let mut sessions = collect_all(cluster)?;
    match (sessions.pop(), sessions.is_empty()) {
        (Some(one), true) => Ok(one),
        _ => Err(ViewError::NotOneCascade),
    }
}

/// As [`collect`], for any number of sessions: each in cascade order, chained by the circuit
/// ids the two ends of every link share (the harness's bookkeeping: no host knows more than
/// its own two).
pub fn collect_all(cluster: &LocalCluster) -> Result<Vec<Vec<HostView>>, ViewError> {
    let audited = || -> u64 {
        (0..cluster.host_addrs.len())
            .filter_map(|host| cluster.host_audit(host))
            .flat_map(|dir| sizes(&dir))
            .sum()
    };
    let mut last = audited();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(300));
        let now = audited();
        if now == last {
            break;
        }
        last = now;
    }
    let mut views = Vec::new();
    for host in 0..cluster.host_addrs.len() {
        let Some(dir) = cluster.host_audit(host) else {
            continue;
        };
        let entries = std::fs::read_dir(&dir).map_err(|source| ViewError::Read {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ViewError::Read {
                path: dir.clone(),
                source,
            })?;
            views.push(HostView::read(host, &entry.path())?);
        }
        std::fs::remove_dir_all(&dir).map_err(|source| ViewError::Read { path: dir, source })?;
    }
    let mut sessions = Vec::new();
    while let Some(start) = views
        .iter()
        .position(|v| v.setup["prev"]["designer"] == true)
    {
        let mut chain = vec![views.remove(start)];
        while let Some(last) = chain.last().filter(|v| v.setup["next"]["designer"] != true) {
            let out = last.setup["circuit_out"].clone();
            let next = views
                .iter()
                .position(|v| v.setup["circuit_in"] == out)
                .ok_or(ViewError::NotOneCascade)?;
            chain.push(views.remove(next));
        }
        sessions.push(chain);
    }
    if !views.is_empty() {
        return Err(ViewError::NotOneCascade);
    }
    Ok(sessions)
}

/// The sizes of the files under `dir`.
fn sizes(dir: &Path) -> Vec<u64> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => sizes(&e.path()),
            Ok(m) => vec![m.len()],
            Err(_) => vec![],
        })
        .collect()
}
