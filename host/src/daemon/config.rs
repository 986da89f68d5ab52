//! The daemon's configuration file (TOML), every field with a default:
//!
//! ```toml
//! listen = "0.0.0.0:7100"          # QUIC endpoint
//! advertise = "203.0.113.5:7100"   # address in the descriptor (default: the bound address)
//! keys = "/var/lib/mixnn/keys"     # from `mixnn-host keygen`
//! stats_file = "stats.json"        # counters, rewritten every second (optional)
//! audit_dir = "audit"              # what every session showed this host (optional)
//!
//! [directory]                      # optional: where to register
//! address = "198.51.100.7:7000"
//! fingerprint = "5f1c…"            # SHA-256 of its certificate, hex
//! heartbeat_s = 30
//!
//! [limits]
//! max_sessions = 64
//! max_session_bytes = 68719476736
//! setups_per_minute = 60           # per peer (certificate)
//! max_setup_bytes = 67108864
//! attach_timeout_s = 30
//!
//! [sandbox]
//! max_memory_mib = 256
//! call_timeout_ms = 10000
//!
//! [metadata]                       # free-form, published in the descriptor
//! region = "eu-west"
//! ```

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::{SandboxConfig, transport::Fingerprint};

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
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
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
    /// Free-form facts published in the descriptor.
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
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
}

fn default_heartbeat() -> u64 {
    30
}

/// Limits on what peers may ask of the host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Sessions at once.
    pub max_sessions: usize,
    /// Bytes one session may receive over all its links.
    pub max_session_bytes: u64,
    /// op=0 messages one peer (by certificate) may send per minute.
    pub setups_per_minute: u32,
    /// Largest op=0 message.
    pub max_setup_bytes: usize,
    /// Seconds the last hop waits for the designer to attach, and any hop for its next hop.
    pub attach_timeout_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 64,
            max_session_bytes: 64 << 30,
            setups_per_minute: 60,
            max_setup_bytes: 64 << 20,
            attach_timeout_s: 30,
        }
    }
}

impl Limits {
    /// The attach timeout.
    pub fn attach_timeout(&self) -> Duration {
        Duration::from_secs(self.attach_timeout_s)
    }
}

/// The sandbox limits a host operator sets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxLimits {
    /// Memory per component instance, MiB.
    pub max_memory_mib: usize,
    /// Deadline of one call, milliseconds.
    pub call_timeout_ms: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        let d = SandboxConfig::default();
        SandboxLimits {
            max_memory_mib: d.max_memory_bytes >> 20,
            call_timeout_ms: u64::try_from(d.call_timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl SandboxLimits {
    /// The sandbox configuration these limits give.
    pub fn sandbox_config(&self) -> SandboxConfig {
        SandboxConfig {
            max_memory_bytes: self.max_memory_mib << 20,
            call_timeout: Duration::from_millis(self.call_timeout_ms),
            ..SandboxConfig::default()
        }
    }
}

impl HostConfig {
    /// Reads a configuration file; relative paths in it are relative to the file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut config: HostConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        config.keys = base.join(&config.keys);
        config.stats_file = config.stats_file.map(|p| base.join(p));
        config.audit_dir = config.audit_dir.map(|p| base.join(p));
        Ok(config)
    }
}

/// Hex encoding of fingerprints in config files.
pub mod hex_fingerprint {
    use serde::{Deserialize, Deserializer, de::Error};

    use crate::transport::Fingerprint;

    /// Parses 64 hex digits.
    pub fn parse(text: &str) -> Option<Fingerprint> {
        let text = text.trim();
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(out)
    }

    /// Formats as hex digits (64 for a fingerprint).
    pub fn format(fingerprint: &[u8]) -> String {
        fingerprint.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Fingerprint, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| D::Error::custom("a fingerprint is 64 hex digits"))
    }
}
