//! The daemon's configuration file (TOML), every field with a default:
//!
//! ```toml
//! listen = "0.0.0.0:7100"          # QUIC endpoint
//! advertise = "203.0.113.5:7100"   # address in the descriptor (default: the bound address)
//! keys = "/var/lib/mixnn/keys"     # from `mixnn-host keygen`
//! stats_file = "stats.json"        # counters, rewritten every second (optional)
//! metrics_file = "mixnn.prom"      # the same in Prometheus' text format (optional)
//! drain_s = 30                     # on SIGTERM, how long open sessions may take to end
//! audit_dir = "audit"              # what every session showed this host (optional)
//! cache_dir = "/var/cache/mixnn"   # compiled components kept on disk (default: none)
//! cache_max_mib = 512              # the oldest go first past this
//!
//! [directory]                      # optional: where to register
//! address = "198.51.100.7:7000"
//! fingerprint = "5f1c…"            # SHA-256 of its certificate, hex
//! heartbeat_s = 30
//! invitation = "…"                 # a directory in invitation mode: `mixnn-host invite`
//! pow_bits = 20                    # the proof of work the directory asks (at most 28),
//!                                  # computed once at start: 20 bits take about 0.2 s
//!
//! [operator]                       # optional: the operator's certificate of this host
//! key = "…"                        # `mixnn-host operator-sign` prints this table
//! certificate = "…"
//!
//! [limits]                         # every size, count and time a stranger controls
//! max_sessions = 64                # at once
//! max_sessions_per_source = 16     # whose previous hop is one source
//! max_frame_bytes_total = 67108864 # the frame lengths of all sessions, summed
//! max_session_bytes = 68719476736  # received by one session over its links
//! max_session_lifetime_s = 90000   # from setup to expiry (25 h)
//! session_idle_s = 300             # a session that receives nothing this long ends
//! setups_per_minute = 60           # per peer certificate
//! setups_per_minute_per_source = 120
//! setups_per_minute_total = 300    # all sources (bounds the replay cache)
//! max_setup_bytes = 67108864
//! max_setups_reading = 16          # op=0 messages being read at once
//! max_setups_reading_per_source = 4
//! max_connections = 512
//! max_connections_per_source = 128
//! source_prefix_v4 = 24            # what "one source" means
//! source_prefix_v6 = 56
//! header_timeout_s = 10            # a stream's header, an op=0 message's head
//! attach_timeout_s = 30
//! inline_cheap_frames = true      # cheap sessions run on the network thread
//!
//! [sandbox]
//! max_memory_mib = 256              # per instance
//! max_total_memory_mib = 4096       # all sessions together
//! call_timeout_ms = 10000
//!
//! [metadata]                       # free-form, published in the descriptor
//! region = "eu-west"               # (keys starting with `mixnn.` are reserved)
//! ```
//!
//! The operator's key and certificate, the invitation and the proof of work ride in the
//! descriptor's signed metadata under reserved keys ([`mixnn_wire::family`]).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use mixnn_sandbox::SandboxConfig;
use mixnn_transport::{Fingerprint, hex_fingerprint};
use mixnn_wire::{
    descriptor::{IDENTITY_LEN, MAX_METADATA, SIGNATURE_LEN},
    family::{self, MAX_POW_BITS},
    setup::MAX_SESSION_LIFETIME_S,
};

use super::guard::{MAX_REPLAY_TAGS, Source};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: toml::de::Error,
    },
    /// The limits contradict each other.
    #[error("{path}: {source}")]
    Limits {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: LimitsError,
    },
    /// The drain is longer than any supervisor should wait.
    #[error("{path}: drain_s {drain_s} exceeds {MAX_DRAIN_S}")]
    Drain {
        /// The file.
        path: PathBuf,
        /// The drain asked for.
        drain_s: u64,
    },
    /// The metadata, the operator, the invitation or the proof of work are unusable.
    #[error("{path}: {what}")]
    Descriptor {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// Limits that contradict each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// The replay cache would fill before the sessions it protects expire.
    #[error(
        "setups_per_minute_total ({per_minute}) times max_session_lifetime_s in minutes \
         ({minutes}) exceeds the replay cache's {max} tags: lower one of them"
    )]
    ReplayCache {
        /// The host's setup rate.
        per_minute: u32,
        /// The longest session, in minutes.
        minutes: u64,
        /// The cache's capacity.
        max: usize,
    },
    /// The longest session exceeds the protocol's.
    #[error("max_session_lifetime_s {0} exceeds the protocol's {MAX_SESSION_LIFETIME_S}")]
    Lifetime(u64),
}

/// The daemon's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Where the QUIC endpoint listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The address published in the descriptor; the bound address if absent.
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// The keys directory (`mixnn-host keygen --dir`).
    pub keys: PathBuf,
    /// A file the counters are written to every second, as JSON.
    #[serde(default)]
    pub stats_file: Option<PathBuf>,
    /// A file the counters and gauges are written to every second, in Prometheus' text
    /// exposition format (for node_exporter's textfile collector, say).
    #[serde(default)]
    pub metrics_file: Option<PathBuf>,
    /// On SIGTERM (or Ctrl-C), how long the host waits for its open sessions to reach the
    /// end of their step (each then tells its designer that the host is leaving) before it
    /// exits anyway. A second signal exits at once.
    #[serde(default = "default_drain_s")]
    pub drain_s: u64,
    /// The directory to register with.
    #[serde(default)]
    pub directory: Option<DirectoryConfig>,
    /// Limits on what peers may ask.
    #[serde(default)]
    pub limits: Limits,
    /// Limits on components.
    #[serde(default)]
    pub sandbox: SandboxLimits,
    /// Where to keep an audit of every session: what this host decrypted and every byte on
    /// its links ([`super::audit`]). Off by default; it costs disk.
    #[serde(default)]
    pub audit_dir: Option<PathBuf>,
    /// Where the host keeps the components it compiled, so that it does not compile them
    /// again after a restart: only its own output is ever loaded from there
    /// (`mixnn_sandbox` says how). Default: none, compiled components live in memory only.
    /// Give it a directory of its own, written by nothing but mixnn hosts of this operator.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Most MiB the cache directory holds; past it the oldest entries are removed.
    #[serde(default = "default_cache_max_mib")]
    pub cache_max_mib: u64,
    /// Free-form facts published in the descriptor (keys starting with `mixnn.` are
    /// reserved).
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
    /// The operator's certificate of this host, published in the descriptor.
    #[serde(default)]
    pub operator: Option<OperatorConfig>,
    /// Misbehaviour on purpose, for tests and chaos drills (see [`Faults`]).
    #[serde(default)]
    pub faults: Faults,
}

/// Misbehaviour on purpose, for tests and chaos drills, never for a host that serves anyone:
/// the host dies at a chosen moment, as a crashed or killed machine would (SIGKILL to itself:
/// no goodbye on any link), or lies about its computation. A host's operator can always do worse; this only makes a
/// designer's recovery testable at moments no outside `kill` can hit.
///
/// ```toml
/// [faults]
/// die_on = "backward"   # setup | forward | backward | test | export
/// die_at = 3            # the third frame of that operation (1-based); setups: the third
/// die_by = "term"       # SIGKILL by default; "term": SIGTERM, the host drains and leaves
/// lie = "skip-update"   # or "perturb-forward": every session lies so...
/// lie_from = 10         # ...from its tenth forward frame on
/// link_delay_ms = 5     # every frame written to a neighbour leaves 5 ms late (benchmarks)
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// The operation whose frame kills the host, after the hop handled it but before it
    /// sends anything on.
    #[serde(default)]
    pub die_on: Option<FaultOp>,
    /// Which of those frames (1-based).
    #[serde(default = "one")]
    pub die_at: u64,
    /// The signal the host sends itself then.
    #[serde(default)]
    pub die_by: FaultSignal,
    /// Every session lies so (see [`crate::hop::Lie`]).
    #[serde(default)]
    pub lie: Option<FaultLie>,
    /// From its this-many-th forward or test frame on (1-based), counted over the host's
    /// sessions.
    #[serde(default = "one")]
    pub lie_from: u64,
    /// A one-way delay on every frame this host writes to a neighbour (host or designer), in
    /// milliseconds: a WAN's latency on loopback, for benchmarks. Each frame leaves this
    /// long after it was queued, in order, without waiting behind the frames before it.
    #[serde(default, rename = "link_delay_ms", deserialize_with = "delay_ms")]
    pub link_delay: Duration,
}

/// The longest link delay taken: a typo must not stall a session for hours.
const MAX_LINK_DELAY: Duration = Duration::from_secs(10);

fn delay_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let ms = f64::deserialize(d)?;
    Duration::try_from_secs_f64(ms / 1e3)
        .ok()
        .filter(|&delay| delay <= MAX_LINK_DELAY)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "link_delay_ms {ms}: not between 0 and {}",
                MAX_LINK_DELAY.as_millis()
            ))
        })
}

#[cfg(test)]
mod link_delay_tests {
    use super::*;

    fn faults(toml: &str) -> Result<Faults, toml::de::Error> {
        toml::from_str(toml)
    }

    #[test]
    fn link_delay_is_read_in_milliseconds_and_bounded() {
        assert_eq!(faults("").map(|f| f.link_delay).ok(), Some(Duration::ZERO));
        let half = faults("link_delay_ms = 0.5").map(|f| f.link_delay).ok();
        assert_eq!(half, Some(Duration::from_micros(500)));
        let five = faults("link_delay_ms = 5").map(|f| f.link_delay).ok();
        assert_eq!(five, Some(Duration::from_millis(5)));
        assert!(faults("link_delay_ms = -1.0").is_err());
        assert!(faults("link_delay_ms = 1e9").is_err());
        assert!(faults("link_delay_ms = nan").is_err());
    }
}

/// How a host dies in a fault drill.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultSignal {
    /// SIGKILL: a crash, no goodbye.
    #[default]
    Kill,
    /// SIGTERM: an operator stopping the host, which drains its sessions first.
    Term,
}

/// How a host lies in a fault drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultLie {
    /// Adds 0.01 to the first value of every forward output.
    PerturbForward,
    /// Keeps its weights as they were after every backward.
    SkipUpdate,
}

fn one() -> u64 {
    1
}

/// An operation a fault waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultOp {
    /// An op=0 setup, as its layers start.
    Setup,
    /// A forward frame.
    Forward,
    /// A backward frame.
    Backward,
    /// A test frame.
    Test,
    /// An export frame.
    Export,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Where the directory is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// Its address.
    pub address: SocketAddr,
    /// Its certificate's fingerprint, hex.
    #[serde(with = "hex_fingerprint")]
    pub fingerprint: Fingerprint,
    /// Seconds between re-publications (the directory's liveness signal).
    #[serde(default = "default_heartbeat")]
    pub heartbeat_s: u64,
    /// The directory's invitation of this host (`mixnn-host invite`), hex.
    #[serde(default)]
    pub invitation: Option<String>,
    /// Bits of proof of work the directory asks (0: none; at most
    /// [`mixnn_wire::family::MAX_POW_BITS`]).
    #[serde(default)]
    pub pow_bits: u32,
}

/// The `[operator]` table: what `mixnn-host operator-sign` prints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// The operator's public key, hex.
    pub key: String,
    /// Its certificate of this host's identity, hex.
    pub certificate: String,
}

impl HostConfig {
    /// Whether the metadata, operator, invitation and proof of work are usable (the
    /// certificate's match with the host's identity is checked once the keys load).
    fn check_descriptor_fields(&self) -> Result<(), String> {
        if let Some(key) = self.metadata.keys().find(|k| family::is_reserved(k)) {
            return Err(format!(
                "metadata key {key:?}: keys starting with \"{}\" are reserved",
                family::RESERVED_PREFIX
            ));
        }
        if let Some(op) = &self.operator {
            if family::parse_hex::<IDENTITY_LEN>(&op.key).is_none() {
                return Err("[operator] key is not 64 hex digits".into());
            }
            if family::parse_hex::<SIGNATURE_LEN>(&op.certificate).is_none() {
                return Err("[operator] certificate is not 128 hex digits".into());
            }
        }
        let mut reserved = if self.operator.is_some() { 2 } else { 0 };
        if let Some(d) = &self.directory {
            if d.invitation
                .as_deref()
                .is_some_and(|i| family::parse_hex::<SIGNATURE_LEN>(i).is_none())
            {
                return Err("[directory] invitation is not 128 hex digits".into());
            }
            if d.pow_bits > MAX_POW_BITS {
                return Err(format!(
                    "[directory] pow_bits {} exceeds {MAX_POW_BITS}",
                    d.pow_bits
                ));
            }
            reserved += usize::from(d.invitation.is_some()) + usize::from(d.pow_bits > 0);
        }
        if self.metadata.len() + reserved > MAX_METADATA {
            return Err(format!(
                "{} metadata entries and {reserved} reserved ones: a descriptor holds {MAX_METADATA}",
                self.metadata.len()
            ));
        }
        Ok(())
    }
}

fn default_heartbeat() -> u64 {
    30
}

/// Limits on what peers may ask of the host: every size, count and time a stranger controls.
/// The worst case of memory they allow is about `max_connections` times 5 MiB (QUIC's buffers
/// per connection), plus `max_setups_reading` times `max_setup_bytes`, plus 12 times
/// `max_frame_bytes_total` (each session's frame queues and copies), plus the sandbox's
/// `max_total_memory_mib`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Sessions at once.
    pub max_sessions: usize,
    /// Sessions at once whose previous hop (a designer, or the host before) is one source: no
    /// stranger holds every slot.
    pub max_sessions_per_source: usize,
    /// The frame lengths of all open sessions, summed: what sizes their queues.
    pub max_frame_bytes_total: usize,
    /// Bytes one session may receive over all its links.
    pub max_session_bytes: u64,
    /// Longest session granted, from setup to expiry, in seconds.
    pub max_session_lifetime_s: u64,
    /// Seconds a session may go without receiving a frame on either link before it ends.
    pub session_idle_s: u64,
    /// op=0 messages one peer (by certificate) may send per minute.
    pub setups_per_minute: u32,
    /// op=0 messages one source (address prefix) may send per minute.
    pub setups_per_minute_per_source: u32,
    /// op=0 messages all sources together may send per minute.
    pub setups_per_minute_total: u32,
    /// Largest op=0 message.
    pub max_setup_bytes: usize,
    /// op=0 messages being read at once.
    pub max_setups_reading: usize,
    /// op=0 messages being read at once from one source.
    pub max_setups_reading_per_source: usize,
    /// QUIC connections at once.
    pub max_connections: usize,
    /// QUIC connections at once from one source.
    pub max_connections_per_source: usize,
    /// Bits of an IPv4 address that name one source.
    pub source_prefix_v4: u8,
    /// Bits of an IPv6 address that name one source.
    pub source_prefix_v6: u8,
    /// Seconds a stream's header, or an op=0 message's head, may take to arrive.
    pub header_timeout_s: u64,
    /// Seconds the last hop waits for the designer to attach, and any hop for its next hop;
    /// also the time an op=0 message may take to arrive.
    pub attach_timeout_s: u64,
    /// Whether a session's frames run on the network thread once they have proven cheap
    /// (each call then within a small CPU budget), saving two thread hand-offs a frame.
    pub inline_cheap_frames: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 64,
            max_sessions_per_source: 16,
            max_frame_bytes_total: 64 << 20,
            max_session_bytes: 64 << 30,
            // A designer's sessions last a day by default; an hour more for its jitter and
            // clocks that disagree.
            max_session_lifetime_s: 25 * 3600,
            session_idle_s: 300,
            setups_per_minute: 60,
            setups_per_minute_per_source: 120,
            setups_per_minute_total: 300,
            max_setup_bytes: 64 << 20,
            max_setups_reading: 16,
            max_setups_reading_per_source: 4,
            max_connections: 512,
            max_connections_per_source: 128,
            source_prefix_v4: 24,
            source_prefix_v6: 56,
            header_timeout_s: 10,
            attach_timeout_s: 30,
            inline_cheap_frames: true,
        }
    }
}

impl Limits {
    /// The attach timeout.
    pub fn attach_timeout(&self) -> Duration {
        Duration::from_secs(self.attach_timeout_s)
    }

    /// The header timeout.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_s.max(1))
    }

    /// The idle timeout of a session.
    pub fn session_idle(&self) -> Duration {
        Duration::from_secs(self.session_idle_s.max(1))
    }

    /// The source `addr` belongs to.
    pub fn source(&self, addr: std::net::IpAddr) -> Source {
        Source::of(addr, self.source_prefix_v4, self.source_prefix_v6)
    }

    /// Checks that the limits do not contradict each other.
    pub fn check(&self) -> Result<(), LimitsError> {
        if self.max_session_lifetime_s > MAX_SESSION_LIFETIME_S {
            return Err(LimitsError::Lifetime(self.max_session_lifetime_s));
        }
        let minutes = self.max_session_lifetime_s.div_ceil(60);
        let tags = u64::from(self.setups_per_minute_total).saturating_mul(minutes);
        if tags > MAX_REPLAY_TAGS as u64 {
            return Err(LimitsError::ReplayCache {
                per_minute: self.setups_per_minute_total,
                minutes,
                max: MAX_REPLAY_TAGS,
            });
        }
        Ok(())
    }
}

/// The sandbox limits a host operator sets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxLimits {
    /// Memory per component instance, MiB.
    pub max_memory_mib: usize,
    /// Memory of all sessions' instances together, MiB.
    pub max_total_memory_mib: usize,
    /// Deadline of one call, milliseconds.
    pub call_timeout_ms: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        let d = SandboxConfig::default();
        SandboxLimits {
            max_memory_mib: d.max_memory_bytes >> 20,
            max_total_memory_mib: d.max_total_memory_bytes >> 20,
            call_timeout_ms: u64::try_from(d.call_timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl SandboxLimits {
    /// The sandbox configuration these limits give.
    pub fn sandbox_config(&self) -> SandboxConfig {
        // A struct literal would not do: the configuration is `non_exhaustive` in its crate.
        let mut config = SandboxConfig::default();
        config.max_memory_bytes = self.max_memory_mib << 20;
        config.max_total_memory_bytes = self.max_total_memory_mib << 20;
        config.call_timeout = Duration::from_millis(self.call_timeout_ms);
        config
    }
}

// The compilation cache.

fn default_drain_s() -> u64 {
    30
}

/// The longest drain taken: a supervisor waits for the host (systemd's `TimeoutStopSec`).
pub const MAX_DRAIN_S: u64 = 3600;

fn default_cache_max_mib() -> u64 {
    mixnn_sandbox::DEFAULT_MAX_DISK_CACHE_BYTES >> 20
}

impl HostConfig {
    /// The sandbox configuration: its limits and its compilation cache.
    pub fn sandbox_config(&self) -> SandboxConfig {
        let mut config = self.sandbox.sandbox_config();
        config.cache_dir = self.cache_dir.clone();
        config.max_disk_cache_bytes = self.cache_max_mib.saturating_mul(1 << 20);
        config
    }

    /// Reads a configuration file; relative paths in it are relative to the file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut config: HostConfig =
            toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.into(),
                source,
            })?;
        config
            .limits
            .check()
            .map_err(|source| ConfigError::Limits {
                path: path.into(),
                source,
            })?;
        if config.drain_s > MAX_DRAIN_S {
            return Err(ConfigError::Drain {
                path: path.into(),
                drain_s: config.drain_s,
            });
        }
        config
            .check_descriptor_fields()
            .map_err(|what| ConfigError::Descriptor {
                path: path.into(),
                what,
            })?;
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        config.keys = base.join(&config.keys);
        config.stats_file = config.stats_file.map(|p| base.join(p));
        config.metrics_file = config.metrics_file.map(|p| base.join(p));
        config.audit_dir = config.audit_dir.map(|p| base.join(p));
        config.cache_dir = config.cache_dir.map(|p| base.join(p));
        Ok(config)
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    #[test]
    fn reserved_metadata_and_malformed_families_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.toml");
        let parse = |text: &str| {
            std::fs::write(&path, format!("keys = \"keys\"\n{text}")).unwrap();
            HostConfig::from_file(&path)
        };
        let key = "ab".repeat(32);
        let sig = "cd".repeat(64);
        assert!(
            parse(&format!(
                "[operator]\nkey = \"{key}\"\ncertificate = \"{sig}\"\n"
            ))
            .is_ok()
        );
        assert!(matches!(
            parse("[metadata]\n\"mixnn.operator\" = \"x\"\n"),
            Err(ConfigError::Descriptor { .. })
        ));
        assert!(
            parse(&format!(
                "[operator]\nkey = \"{key}\"\ncertificate = \"ab\"\n"
            ))
            .is_err()
        );
        let directory = "[directory]\naddress = \"127.0.0.1:1\"\nfingerprint = \"";
        let fp = "00".repeat(32);
        assert!(parse(&format!("{directory}{fp}\"\npow_bits = 29\n")).is_err());
        assert!(
            parse(&format!(
                "{directory}{fp}\"\npow_bits = 20\ninvitation = \"{sig}\"\n"
            ))
            .is_ok()
        );
        assert!(parse(&format!("{directory}{fp}\"\ninvitation = \"zz\"\n")).is_err());
    }

    #[test]
    fn the_cache_dir_is_relative_to_the_file_and_off_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.toml");
        std::fs::write(&path, "keys = \"keys\"\n").unwrap();
        let config = HostConfig::from_file(&path).unwrap();
        assert_eq!(config.sandbox_config().cache_dir, None);

        std::fs::write(
            &path,
            "keys = \"keys\"\ncache_dir = \"cache\"\ncache_max_mib = 64\n[sandbox]\ncall_timeout_ms = 5\n",
        )
        .unwrap();
        let sandbox = HostConfig::from_file(&path).unwrap().sandbox_config();
        assert_eq!(sandbox.cache_dir, Some(dir.path().join("cache")));
        assert_eq!(sandbox.max_disk_cache_bytes, 64 << 20);
        assert_eq!(sandbox.call_timeout, Duration::from_millis(5));
    }
}
