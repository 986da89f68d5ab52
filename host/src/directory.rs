//! The directory (the paper's authority), sans IO: it takes signed descriptors, keeps the
//! newest valid one per host identity, tracks when each host was last heard from, serves the
//! live pool, and persists it so a restart loses no host.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use mixnn_wire::descriptor::{self, Descriptor, DescriptorError, IDENTITY_LEN};
use serde::{Deserialize, Serialize};

/// How far in the future a descriptor's `published_at` may be (clock skew), in seconds.
pub const MAX_CLOCK_SKEW_S: u64 = 300;
/// Most hosts a directory keeps.
pub const MAX_HOSTS: usize = 100_000;

/// Why the directory refused something.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The descriptor is forged or malformed.
    #[error(transparent)]
    Descriptor(#[from] DescriptorError),
    /// The directory already holds a descriptor of this host at least as new (a replay).
    #[error("stale descriptor: published at {got}, the directory has {have}")]
    Stale {
        /// Its `published_at`.
        got: u64,
        /// The stored one's.
        have: u64,
    },
    /// `published_at` is too far in the future.
    #[error("descriptor published in the future")]
    FromTheFuture,
    /// The directory is full.
    #[error("the directory is full")]
    Full,
    /// The state file could not be read or written.
    #[error("{path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: StateError,
    },
}

/// What is wrong with the directory's state file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// It could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// It is not the JSON it should be.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A version this directory does not know.
    #[error("unknown version {0}")]
    Version(u32),
    /// A descriptor is not hex.
    #[error("a descriptor that is not hex")]
    Hex,
    /// A descriptor no longer verifies.
    #[error(transparent)]
    Descriptor(#[from] DescriptorError),
}

#[derive(Debug, Clone)]
struct Entry {
    signed: Vec<u8>,
    descriptor: Descriptor,
    last_seen: u64,
}

/// The directory's state.
#[derive(Debug, Default)]
pub struct Directory {
    hosts: BTreeMap<[u8; IDENTITY_LEN], Entry>,
}

/// The on-disk form: the signed descriptors themselves (re-verified at load) and liveness.
#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    hosts: Vec<StoredHost>,
}

#[derive(Serialize, Deserialize)]
struct StoredHost {
    signed_hex: String,
    last_seen: u64,
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a signed descriptor received at `now` (Unix seconds). A newer descriptor of a
    /// known host replaces the old one; an older or equal one is refused.
    pub fn publish(&mut self, signed: &[u8], now: u64) -> Result<&Descriptor, DirectoryError> {
        let descriptor = descriptor::verify(signed)?;
        if descriptor.published_at > now.saturating_add(MAX_CLOCK_SKEW_S) {
            return Err(DirectoryError::FromTheFuture);
        }
        if let Some(old) = self.hosts.get(&descriptor.identity) {
            if descriptor.published_at <= old.descriptor.published_at {
                return Err(DirectoryError::Stale {
                    got: descriptor.published_at,
                    have: old.descriptor.published_at,
                });
            }
        } else if self.hosts.len() >= MAX_HOSTS {
            return Err(DirectoryError::Full);
        }
        let identity = descriptor.identity;
        let entry = Entry {
            signed: signed.to_vec(),
            descriptor,
            last_seen: now,
        };
        Ok(&self
            .hosts
            .entry(identity)
            .insert_entry(entry)
            .into_mut()
            .descriptor)
    }

    /// Records that the host with `identity` is alive at `now`; false if unknown.
    pub fn heartbeat(&mut self, identity: &[u8; IDENTITY_LEN], now: u64) -> bool {
        match self.hosts.get_mut(identity) {
            Some(entry) => {
                entry.last_seen = entry.last_seen.max(now);
                true
            }
            None => false,
        }
    }

    /// The hosts heard from within `max_age` seconds of `now`, as their signed descriptors
    /// (designers verify them themselves).
    pub fn live_pool(&self, now: u64, max_age: u64) -> Vec<&[u8]> {
        self.hosts
            .values()
            .filter(|e| now.saturating_sub(e.last_seen) <= max_age)
            .map(|e| e.signed.as_slice())
            .collect()
    }

    /// Number of hosts known.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether no host is known.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Writes the state to `path` atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), DirectoryError> {
        let state_error = |e: StateError| DirectoryError::State {
            path: path.into(),
            source: e,
        };
        let state = StateFile {
            version: 1,
            hosts: self
                .hosts
                .values()
                .map(|e| StoredHost {
                    signed_hex: to_hex(&e.signed),
                    last_seen: e.last_seen,
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&state).map_err(|e| state_error(e.into()))?;
        let tmp = path.with_extension("tmp");
        let mut file = fs::File::create(&tmp).map_err(|e| state_error(e.into()))?;
        file.write_all(&json)
            .and_then(|()| file.sync_all())
            .map_err(|e| state_error(e.into()))?;
        fs::rename(&tmp, path).map_err(|e| state_error(e.into()))
    }

    /// Reads a state written by [`Directory::save`]; every descriptor is verified again. A
    /// missing file is an empty directory.
    pub fn load(path: &Path) -> Result<Self, DirectoryError> {
        let state_error = |e: StateError| DirectoryError::State {
            path: path.into(),
            source: e,
        };
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Directory::new()),
            Err(e) => return Err(state_error(e.into())),
        };
        let state: StateFile = serde_json::from_slice(&bytes).map_err(|e| state_error(e.into()))?;
        if state.version != 1 {
            return Err(state_error(StateError::Version(state.version)));
        }
        let mut directory = Directory::new();
        for host in state.hosts {
            let signed = from_hex(&host.signed_hex).ok_or_else(|| state_error(StateError::Hex))?;
            let descriptor = descriptor::verify(&signed).map_err(|e| state_error(e.into()))?;
            directory.hosts.insert(
                descriptor.identity,
                Entry {
                    signed,
                    descriptor,
                    last_seen: host.last_seen,
                },
            );
        }
        Ok(directory)
    }
}

// ok: unwrap/expect below are test code only (never built into the host); a failure is a
// failed test.
#[cfg(test)]
mod tests {
    use mixnn_wire::{crypto::OnionPrivateKey, descriptor::IdentityKey};

    use super::*;

    fn signed(key: &IdentityKey, published_at: u64, port: u16) -> Vec<u8> {
        let onion = OnionPrivateKey::generate().unwrap().public_key().unwrap();
        key.sign(Descriptor {
            identity: [0; 32],
            address: format!("127.0.0.1:{port}"),
            onion_key: onion.der().to_vec(),
            fingerprint: [1; 32],
            published_at,
            metadata: BTreeMap::new(),
        })
        .unwrap()
    }

    #[test]
    fn keeps_the_newest_valid_descriptor_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("directory.json");
        let (a, b) = (
            IdentityKey::generate().unwrap(),
            IdentityKey::generate().unwrap(),
        );
        let mut directory = Directory::load(&state).unwrap();
        assert!(directory.is_empty());
        directory.publish(&signed(&a, 100, 1), 100).unwrap();
        directory.publish(&signed(&b, 100, 2), 100).unwrap();
        // A replayed or older descriptor is refused; a newer one replaces.
        let old = signed(&a, 90, 9);
        assert!(matches!(
            directory.publish(&old, 120),
            Err(DirectoryError::Stale { .. })
        ));
        assert_eq!(
            directory.publish(&signed(&a, 110, 3), 120).unwrap().address,
            "127.0.0.1:3"
        );
        assert!(matches!(
            directory.publish(&signed(&a, 10_000, 4), 120),
            Err(DirectoryError::FromTheFuture)
        ));
        // A forged descriptor is refused.
        let mut forged = signed(&b, 200, 5);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(matches!(
            directory.publish(&forged, 200),
            Err(DirectoryError::Descriptor(_))
        ));
        assert_eq!(directory.len(), 2);

        // Liveness: b goes quiet.
        assert!(directory.heartbeat(&a.public().unwrap(), 500));
        assert_eq!(directory.live_pool(500, 60).len(), 1);
        assert_eq!(directory.live_pool(500, 1000).len(), 2);

        directory.save(&state).unwrap();
        let restarted = Directory::load(&state).unwrap();
        assert_eq!(restarted.len(), 2);
        assert_eq!(restarted.live_pool(500, 60), directory.live_pool(500, 60));

        fs::write(&state, b"{ not json").unwrap();
        assert!(matches!(
            Directory::load(&state),
            Err(DirectoryError::State { .. })
        ));
    }
}
