//! The directory (the paper's authority), sans IO: it takes signed descriptors that its
//! admission [`Policy`] accepts, keeps the newest valid one per host identity, tracks when each
//! host was first and last heard from and whether it was last reached at its published
//! address, serves the live pool, and persists it so a restart loses no host.
//!
//! Reachability is the service's to check ([`crate::directory_service`]): [`Directory::admit`]
//! says whether a descriptor needs a probe (a new host, a new address or certificate, or a host
//! whose last probe failed), [`Directory::publish_reached`] stores it with the probe's result,
//! and [`Directory::record_probe`] records re-checks. A host whose last probe failed is kept,
//! marked, but not served. [`Directory::publish`] stores without a probe (hosts never probed
//! are served, as before reachability existed).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use mixnn_wire::{
    descriptor::{self, Descriptor, DescriptorError, IDENTITY_LEN},
    family::{self, FamilyError},
    setup::FINGERPRINT_LEN,
};
use serde::{Deserialize, Serialize};

/// How far in the future a descriptor's `published_at` may be (clock skew), in seconds.
pub const MAX_CLOCK_SKEW_S: u64 = 300;
/// Most hosts a directory keeps.
pub const MAX_HOSTS: usize = 100_000;
/// A host whose probe failed is probed again on its next publication no sooner than this
/// (seconds): its heartbeats must not make the directory send packets to an address at will.
pub const MIN_REPROBE_S: u64 = 60;

/// Who the directory admits, besides a valid signature (a descriptor that names an operator
/// must carry a valid certificate whatever the mode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Admission {
    /// Anyone.
    #[default]
    Open,
    /// Hosts certified by one of `operators`, or whose identity is one of `hosts`.
    AllowList {
        /// Operator public keys.
        operators: BTreeSet<[u8; IDENTITY_LEN]>,
        /// Host identity keys.
        hosts: BTreeSet<[u8; IDENTITY_LEN]>,
    },
    /// Hosts invited by the directory's identity key ([`family::invite`]).
    Invitation {
        /// The directory's identity public key.
        directory: [u8; IDENTITY_LEN],
    },
}

/// The directory's admission policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Who is admitted.
    pub admission: Admission,
    /// Bits of proof of work asked of each identity (0: none; at most
    /// [`family::MAX_POW_BITS`]).
    pub pow_bits: u32,
}

impl Policy {
    /// Whether `descriptor` (verified) is admitted.
    pub fn admits(&self, descriptor: &Descriptor) -> Result<(), DirectoryError> {
        let operator = family::operator_of(descriptor).map_err(DirectoryError::Operator)?;
        match &self.admission {
            Admission::Open => {}
            Admission::AllowList { operators, hosts } => {
                let allowed = hosts.contains(&descriptor.identity)
                    || operator.is_some_and(|o| operators.contains(&o));
                if !allowed {
                    return Err(DirectoryError::NotAllowed);
                }
            }
            Admission::Invitation { directory } => {
                family::check_invitation(descriptor, directory)
                    .map_err(DirectoryError::Invitation)?;
            }
        }
        family::check_pow(descriptor, self.pow_bits).map_err(DirectoryError::ProofOfWork)
    }
}

/// The last probe of a host at its published address and certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reach {
    /// Whether the handshake succeeded.
    pub ok: bool,
    /// When (Unix seconds).
    pub at: u64,
}

/// Whether a descriptor needs a probe before it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// No: its endpoint is the one already reached (or never probed, kept as it was).
    No,
    /// Yes: a new host, a new address or certificate, or a failed host due a new try.
    Yes,
    /// Its last probe failed less than [`MIN_REPROBE_S`] ago: refuse it as unreachable.
    TooSoon,
}

/// What the directory knows of a host, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// When the directory first admitted it (Unix seconds).
    pub first_seen: u64,
    /// When it last published.
    pub last_seen: u64,
    /// Its last probe, if any.
    pub reach: Option<Reach>,
    /// Whether the pool serves it (reachable or never probed; its age aside).
    pub served: bool,
}

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
    /// The descriptor names an operator whose certificate does not verify.
    #[error("operator certificate: {0}")]
    Operator(FamilyError),
    /// Neither the host nor its operator is on the allow-list.
    #[error("not on the allow-list")]
    NotAllowed,
    /// The host carries no valid invitation.
    #[error("invitation: {0}")]
    Invitation(FamilyError),
    /// The host's proof of work is missing or too weak.
    #[error("proof of work: {0}")]
    ProofOfWork(FamilyError),
    /// The host could not be reached at its published address with its published
    /// certificate (or its last probe failed less than [`MIN_REPROBE_S`] ago).
    #[error("unreachable at its published address")]
    Unreachable,
    /// The state could not be saved (the descriptor was taken in memory).
    #[error("the state cannot be saved")]
    Unavailable,
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
    first_seen: u64,
    reach: Option<Reach>,
}

impl Entry {
    fn served(&self) -> bool {
        self.reach.is_none_or(|r| r.ok)
    }

    fn same_endpoint(&self, d: &Descriptor) -> bool {
        self.descriptor.address == d.address && self.descriptor.fingerprint == d.fingerprint
    }
}

/// A descriptor the directory would take, and whether it needs a probe first.
#[derive(Debug)]
pub struct Admitted {
    /// What it says.
    pub descriptor: Descriptor,
    /// Whether to probe it.
    pub probe: Probe,
}

/// A host to probe: its identity, published address and certificate fingerprint.
pub type ProbeTarget = ([u8; IDENTITY_LEN], String, [u8; FINGERPRINT_LEN]);

/// The directory's state.
#[derive(Debug, Default)]
pub struct Directory {
    hosts: BTreeMap<[u8; IDENTITY_LEN], Entry>,
    policy: Policy,
}

/// The on-disk form: the signed descriptors themselves (re-verified at load) and liveness.
#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    hosts: Vec<StoredHost>,
}

/// Fields added since the first version have serde defaults: older files still load.
#[derive(Serialize, Deserialize)]
struct StoredHost {
    signed_hex: String,
    last_seen: u64,
    /// Absent from older files: then the earliest time the file shows.
    #[serde(default)]
    first_seen: Option<u64>,
    /// Absent for hosts never probed.
    #[serde(default)]
    reach: Option<Reach>,
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

    /// An empty directory with an admission policy.
    pub fn with_policy(policy: Policy) -> Self {
        Directory {
            hosts: BTreeMap::new(),
            policy,
        }
    }

    /// Sets the admission policy; hosts it no longer admits are forgotten (their number is
    /// returned).
    pub fn set_policy(&mut self, policy: Policy) -> usize {
        let before = self.hosts.len();
        self.hosts
            .retain(|_, e| policy.admits(&e.descriptor).is_ok());
        self.policy = policy;
        before - self.hosts.len()
    }

    /// Checks a signed descriptor received at `now` as [`Directory::publish`] would, without
    /// storing it, and says whether it needs a probe.
    pub fn admit(&self, signed: &[u8], now: u64) -> Result<Admitted, DirectoryError> {
        let descriptor = descriptor::verify(signed)?;
        if descriptor.published_at > now.saturating_add(MAX_CLOCK_SKEW_S) {
            return Err(DirectoryError::FromTheFuture);
        }
        self.policy.admits(&descriptor)?;
        let probe = if let Some(old) = self.hosts.get(&descriptor.identity) {
            if descriptor.published_at <= old.descriptor.published_at {
                return Err(DirectoryError::Stale {
                    got: descriptor.published_at,
                    have: old.descriptor.published_at,
                });
            }
            match old.reach {
                _ if !old.same_endpoint(&descriptor) => Probe::Yes,
                None | Some(Reach { ok: true, .. }) => Probe::No,
                Some(Reach { ok: false, at }) if now.saturating_sub(at) >= MIN_REPROBE_S => {
                    Probe::Yes
                }
                Some(_) => Probe::TooSoon,
            }
        } else if self.hosts.len() >= MAX_HOSTS {
            return Err(DirectoryError::Full);
        } else {
            Probe::Yes
        };
        Ok(Admitted { descriptor, probe })
    }

    /// Takes a signed descriptor received at `now` (Unix seconds). A newer descriptor of a
    /// known host replaces the old one; an older or equal one is refused. No probe: the host
    /// keeps its last probe's result if its endpoint is unchanged, else it has none (and is
    /// served).
    pub fn publish(&mut self, signed: &[u8], now: u64) -> Result<&Descriptor, DirectoryError> {
        let admitted = self.admit(signed, now)?;
        Ok(self.insert(signed, admitted.descriptor, now, None))
    }

    /// [`Directory::publish`] with the result of a probe of the descriptor's endpoint (made
    /// after [`Directory::admit`] asked for one). A failed probe stores nothing new: a new host
    /// is refused, and a known one keeps its old descriptor, marked unreachable only if that
    /// one's endpoint is the one probed.
    pub fn publish_reached(
        &mut self,
        signed: &[u8],
        now: u64,
        reach: Reach,
    ) -> Result<&Descriptor, DirectoryError> {
        let admitted = self.admit(signed, now)?;
        if !reach.ok {
            let d = &admitted.descriptor;
            self.record_probe(&d.identity, &d.address, &d.fingerprint, reach);
            return Err(DirectoryError::Unreachable);
        }
        Ok(self.insert(signed, admitted.descriptor, now, Some(reach)))
    }

    fn insert(
        &mut self,
        signed: &[u8],
        descriptor: Descriptor,
        now: u64,
        reach: Option<Reach>,
    ) -> &Descriptor {
        let identity = descriptor.identity;
        let (first_seen, kept) = match self.hosts.get(&identity) {
            Some(old) => (
                old.first_seen,
                old.same_endpoint(&descriptor)
                    .then_some(old.reach)
                    .flatten(),
            ),
            None => (now, None),
        };
        let entry = Entry {
            signed: signed.to_vec(),
            descriptor,
            last_seen: now,
            first_seen,
            reach: reach.or(kept),
        };
        &self
            .hosts
            .entry(identity)
            .insert_entry(entry)
            .into_mut()
            .descriptor
    }

    /// Records a probe of `identity` at `address` with `fingerprint`, if that is still its
    /// endpoint; true if whether it is served changed.
    pub fn record_probe(
        &mut self,
        identity: &[u8; IDENTITY_LEN],
        address: &str,
        fingerprint: &[u8; FINGERPRINT_LEN],
        reach: Reach,
    ) -> bool {
        match self.hosts.get_mut(identity) {
            Some(e)
                if e.descriptor.address == address && &e.descriptor.fingerprint == fingerprint =>
            {
                let was = e.served();
                e.reach = Some(reach);
                was != e.served()
            }
            _ => false,
        }
    }

    /// Forgets every probe's result: every host is served again (its age aside).
    pub fn forget_probes(&mut self) {
        for e in self.hosts.values_mut() {
            e.reach = None;
        }
    }

    /// The hosts heard from within `max_age` seconds of `now`, to re-check.
    pub fn probe_targets(&self, now: u64, max_age: u64) -> Vec<ProbeTarget> {
        self.hosts
            .values()
            .filter(|e| now.saturating_sub(e.last_seen) <= max_age)
            .map(|e| {
                let d = &e.descriptor;
                (d.identity, d.address.clone(), d.fingerprint)
            })
            .collect()
    }

    /// What the directory knows of a host.
    pub fn host(&self, identity: &[u8; IDENTITY_LEN]) -> Option<HostInfo> {
        self.hosts.get(identity).map(|e| HostInfo {
            first_seen: e.first_seen,
            last_seen: e.last_seen,
            reach: e.reach,
            served: e.served(),
        })
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

    /// The hosts served: heard from within `max_age` seconds of `now` and not failing their
    /// last probe, as their signed descriptors (designers verify them themselves).
    pub fn live_pool(&self, now: u64, max_age: u64) -> Vec<&[u8]> {
        self.live_entries(now, max_age)
            .into_iter()
            .map(|(signed, _)| signed)
            .collect()
    }

    /// [`Directory::live_pool`], each host with its `first_seen`.
    pub fn live_entries(&self, now: u64, max_age: u64) -> Vec<(&[u8], u64)> {
        self.hosts
            .values()
            .filter(|e| now.saturating_sub(e.last_seen) <= max_age && e.served())
            .map(|e| (e.signed.as_slice(), e.first_seen))
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
                    first_seen: Some(e.first_seen),
                    reach: e.reach,
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
            let first_seen = host
                .first_seen
                .unwrap_or(descriptor.published_at.min(host.last_seen));
            directory.hosts.insert(
                descriptor.identity,
                Entry {
                    signed,
                    descriptor,
                    last_seen: host.last_seen,
                    first_seen,
                    reach: host.reach,
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
        signed_with(key, published_at, port, BTreeMap::new())
    }

    fn signed_with(
        key: &IdentityKey,
        published_at: u64,
        port: u16,
        metadata: BTreeMap<String, String>,
    ) -> Vec<u8> {
        let onion = OnionPrivateKey::generate().unwrap().public_key().unwrap();
        key.sign(Descriptor {
            identity: [0; 32],
            address: format!("127.0.0.1:{port}"),
            onion_key: onion.der().to_vec(),
            fingerprint: [1; 32],
            published_at,
            metadata,
        })
        .unwrap()
    }

    fn certified(operator: &IdentityKey, host: &IdentityKey) -> BTreeMap<String, String> {
        let cert = family::certify(operator, &host.public().unwrap());
        BTreeMap::from([
            (
                family::OPERATOR.to_owned(),
                family::to_hex(&operator.public().unwrap()),
            ),
            (family::OPERATOR_SIG.to_owned(), family::to_hex(&cert)),
        ])
    }

    #[test]
    fn the_policy_admits_allowed_operators_hosts_and_invitations_only() {
        let (operator, stranger, host, listed) = (
            IdentityKey::generate().unwrap(),
            IdentityKey::generate().unwrap(),
            IdentityKey::generate().unwrap(),
            IdentityKey::generate().unwrap(),
        );
        let mut directory = Directory::with_policy(Policy {
            admission: Admission::AllowList {
                operators: BTreeSet::from([operator.public().unwrap()]),
                hosts: BTreeSet::from([listed.public().unwrap()]),
            },
            pow_bits: 0,
        });
        directory
            .publish(&signed_with(&host, 1, 1, certified(&operator, &host)), 1)
            .unwrap();
        directory.publish(&signed(&listed, 1, 2), 1).unwrap();
        assert!(matches!(
            directory.publish(&signed(&stranger, 1, 3), 1),
            Err(DirectoryError::NotAllowed)
        ));
        // A certificate of the stranger's own making, claiming the allowed operator.
        let mut forged = certified(&stranger, &stranger);
        forged.insert(
            family::OPERATOR.to_owned(),
            family::to_hex(&operator.public().unwrap()),
        );
        assert!(matches!(
            directory.publish(&signed_with(&stranger, 1, 3, forged), 1),
            Err(DirectoryError::Operator(FamilyError::BadCertificate))
        ));
        // An open directory refuses a bad certificate too.
        let mut open = Directory::new();
        let mut stolen = certified(&operator, &host);
        stolen.insert(
            family::OPERATOR_SIG.to_owned(),
            family::to_hex(&family::certify(&operator, &listed.public().unwrap())),
        );
        assert!(matches!(
            open.publish(&signed_with(&host, 1, 1, stolen), 1),
            Err(DirectoryError::Operator(_))
        ));

        // Invitations, with a proof of work.
        let dir_key = IdentityKey::generate().unwrap();
        let mut invited = Directory::with_policy(Policy {
            admission: Admission::Invitation {
                directory: dir_key.public().unwrap(),
            },
            pow_bits: 8,
        });
        let id = host.public().unwrap();
        let nonce = family::solve_pow(&id, 8).unwrap();
        let meta = |inviter: &IdentityKey, nonce: u64| {
            BTreeMap::from([
                (
                    family::INVITATION.to_owned(),
                    family::to_hex(&family::invite(inviter, &id)),
                ),
                (family::POW.to_owned(), family::pow_value(nonce)),
            ])
        };
        assert!(matches!(
            invited.publish(&signed_with(&host, 1, 1, meta(&stranger, nonce)), 1),
            Err(DirectoryError::Invitation(FamilyError::BadInvitation))
        ));
        let weak = (0..).find(|&n| family::pow_bits(&id, n) < 8).unwrap();
        assert!(matches!(
            invited.publish(&signed_with(&host, 1, 1, meta(&dir_key, weak)), 1),
            Err(DirectoryError::ProofOfWork(_))
        ));
        invited
            .publish(&signed_with(&host, 1, 1, meta(&dir_key, nonce)), 1)
            .unwrap();

        // Narrowing the policy forgets the hosts it no longer admits.
        let dropped = directory.set_policy(Policy {
            admission: Admission::AllowList {
                operators: BTreeSet::new(),
                hosts: BTreeSet::from([listed.public().unwrap()]),
            },
            pow_bits: 0,
        });
        assert_eq!((dropped, directory.len()), (1, 1));
    }

    #[test]
    fn probes_decide_what_is_served_and_first_seen_persists() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("directory.json");
        let (a, b) = (
            IdentityKey::generate().unwrap(),
            IdentityKey::generate().unwrap(),
        );
        let id = a.public().unwrap();
        let mut directory = Directory::new();
        let first = signed(&a, 100, 1);
        assert_eq!(directory.admit(&first, 100).unwrap().probe, Probe::Yes);
        // A new host that cannot be reached is not stored.
        let down = Reach { ok: false, at: 100 };
        assert!(matches!(
            directory.publish_reached(&first, 100, down),
            Err(DirectoryError::Unreachable)
        ));
        assert!(directory.is_empty());
        directory
            .publish_reached(&first, 100, Reach { ok: true, at: 100 })
            .unwrap();
        // Same endpoint: no probe; a new address: a probe.
        assert_eq!(
            directory.admit(&signed(&a, 101, 1), 101).unwrap().probe,
            Probe::No
        );
        assert_eq!(
            directory.admit(&signed(&a, 101, 2), 101).unwrap().probe,
            Probe::Yes
        );
        directory.publish(&signed(&a, 150, 1), 150).unwrap();
        // A failed re-check: kept, marked, not served; probed again only after a while.
        assert!(directory.record_probe(&id, "127.0.0.1:1", &[1; 32], Reach { ok: false, at: 160 }));
        assert!(!directory.record_probe(&id, "127.0.0.1:9", &[1; 32], Reach { ok: true, at: 160 }));
        assert_eq!(directory.live_pool(160, 100).len(), 0);
        let info = directory.host(&id).unwrap();
        assert_eq!((info.first_seen, info.served), (100, false));
        assert_eq!(
            directory.admit(&signed(&a, 170, 1), 170).unwrap().probe,
            Probe::TooSoon
        );
        assert_eq!(
            directory.admit(&signed(&a, 230, 1), 230).unwrap().probe,
            Probe::Yes
        );
        directory
            .publish_reached(&signed(&a, 230, 1), 230, Reach { ok: true, at: 230 })
            .unwrap();
        directory.publish(&signed(&b, 200, 2), 240).unwrap();
        assert_eq!(directory.live_entries(240, 100).len(), 2);
        assert_eq!(directory.probe_targets(240, 100).len(), 2);

        directory.save(&state).unwrap();
        let restarted = Directory::load(&state).unwrap();
        let info = restarted.host(&id).unwrap();
        assert_eq!(info.first_seen, 100);
        assert_eq!(info.reach, Some(Reach { ok: true, at: 230 }));
        assert_eq!(
            restarted.host(&b.public().unwrap()).unwrap().first_seen,
            240
        );

        // A state file from before first_seen and probes still loads.
        let old = format!(
            "{{\"version\":1,\"hosts\":[{{\"signed_hex\":\"{}\",\"last_seen\":500}}]}}",
            to_hex(&signed(&b, 400, 2))
        );
        fs::write(&state, old).unwrap();
        let old = Directory::load(&state).unwrap();
        let info = old.host(&b.public().unwrap()).unwrap();
        assert_eq!(
            (info.first_seen, info.reach, info.served),
            (400, None, true)
        );
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
