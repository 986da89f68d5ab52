//! The directory's configuration file (`mixnn-host directory --config FILE`, TOML), every
//! field optional:
//!
//! ```toml
//! stats_file = "directory-stats.json" # counters (refusals by reason, probes), every 5 s
//!
//! [admission]
//! mode = "allow-list"              # "open" (default) | "allow-list" | "invitation"
//! operators = ["<hex>", ...]       # allow-list: operator public keys (`operator-keygen`)
//! hosts = ["<hex>", ...]           # allow-list: host identity keys
//! pow_bits = 20                    # proof of work per identity (any mode; 0: none; at most 28)
//!
//! [reachability]
//! enabled = true                   # probe a host before serving it
//! interval_s = 600                 # re-check every host this often (+-20% jitter)
//! timeout_s = 5                    # a probe's handshake
//! concurrency = 8                  # probes at once
//! ```
//!
//! `invitation` admits a host carrying the directory's signature of its identity (`mixnn-host
//! invite --keys DIRECTORY_KEYS --host-identity HEX`): the directory's own identity key signs.
//! A proof of work of N bits costs a host about 2^N SHA-256 hashes, once per identity at start
//! (the daemon keeps the nonce in memory): at about 10 million hashes a second on one core,
//! measured N = 16 a few ms, N = 20 0.2 s, N = 24 1.5 s, and the cap, 28, about 25 s. It
//! slows the minting of many identities at once, not a patient operator.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use mixnn_wire::{
    descriptor::IDENTITY_LEN,
    family::{MAX_POW_BITS, parse_hex},
};
use serde::Deserialize;

use crate::directory::{Admission, Policy};

/// Most keys an allow-list holds (each list).
pub const MAX_ALLOWED: usize = 100_000;
/// The longest re-check interval: hosts that go away must leave the pool within a day.
pub const MAX_INTERVAL_S: u64 = 86_400;
/// The longest probe timeout.
pub const MAX_PROBE_TIMEOUT_S: u64 = 60;
/// Most probes at once.
pub const MAX_PROBE_CONCURRENCY: usize = 256;

/// Why the directory's configuration is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryConfigError {
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
    /// A value is out of its bounds or malformed.
    #[error("{path}: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// How the directory admits hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Anyone with a valid descriptor.
    #[default]
    Open,
    /// Listed operators' hosts, and listed hosts.
    AllowList,
    /// Hosts invited by the directory's key.
    Invitation,
}

/// The `[admission]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// The mode.
    pub mode: Mode,
    /// Allowed operator public keys, hex.
    pub operators: Vec<String>,
    /// Allowed host identity keys, hex.
    pub hosts: Vec<String>,
    /// Bits of proof of work per identity.
    pub pow_bits: u32,
}

/// The `[reachability]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReachabilityConfig {
    /// Whether hosts are probed at all.
    pub enabled: bool,
    /// Seconds between re-checks of every host (each round jittered by up to 20%).
    pub interval_s: u64,
    /// Seconds a probe's handshake may take.
    pub timeout_s: u64,
    /// Probes at once.
    pub concurrency: usize,
}

impl Default for ReachabilityConfig {
    fn default() -> Self {
        ReachabilityConfig {
            enabled: true,
            interval_s: 600,
            timeout_s: 5,
            concurrency: 8,
        }
    }
}

impl ReachabilityConfig {
    /// No probes (hosts are served as they publish, as before reachability existed).
    pub fn disabled() -> Self {
        ReachabilityConfig {
            enabled: false,
            ..Self::default()
        }
    }

    /// The re-check interval.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_s)
    }

    /// A probe's timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s)
    }
}

/// The directory's configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// A file the counters are written to, as JSON.
    #[serde(default)]
    pub stats_file: Option<PathBuf>,
    /// Who is admitted.
    #[serde(default)]
    pub admission: AdmissionConfig,
    /// Probes of hosts' published addresses.
    #[serde(default)]
    pub reachability: ReachabilityConfig,
}

impl DirectoryConfig {
    /// Reads and checks a configuration file; relative paths in it are relative to the file.
    pub fn from_file(path: &Path) -> Result<Self, DirectoryConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut config: DirectoryConfig =
            toml::from_str(&text).map_err(|source| DirectoryConfigError::Parse {
                path: path.into(),
                source,
            })?;
        config
            .check()
            .map_err(|what| DirectoryConfigError::Invalid {
                path: path.into(),
                what,
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.stats_file = config.stats_file.map(|p| base.join(p));
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let a = &self.admission;
        if a.pow_bits > MAX_POW_BITS {
            return Err(format!("pow_bits {} exceeds {MAX_POW_BITS}", a.pow_bits));
        }
        if a.operators.len() > MAX_ALLOWED || a.hosts.len() > MAX_ALLOWED {
            return Err(format!("an allow-list holds at most {MAX_ALLOWED} keys"));
        }
        if a.mode != Mode::AllowList && !(a.operators.is_empty() && a.hosts.is_empty()) {
            return Err("operators and hosts are for mode = \"allow-list\"".into());
        }
        if a.mode == Mode::AllowList && a.operators.is_empty() && a.hosts.is_empty() {
            return Err("mode = \"allow-list\" with an empty list admits no one".into());
        }
        keys(&a.operators)?;
        keys(&a.hosts)?;
        let r = &self.reachability;
        if !(1..=MAX_INTERVAL_S).contains(&r.interval_s) {
            return Err(format!("interval_s not between 1 and {MAX_INTERVAL_S}"));
        }
        if !(1..=MAX_PROBE_TIMEOUT_S).contains(&r.timeout_s) {
            return Err(format!("timeout_s not between 1 and {MAX_PROBE_TIMEOUT_S}"));
        }
        if !(1..=MAX_PROBE_CONCURRENCY).contains(&r.concurrency) {
            return Err(format!(
                "concurrency not between 1 and {MAX_PROBE_CONCURRENCY}"
            ));
        }
        Ok(())
    }

    /// The admission policy; `directory` is the directory's identity public key (what
    /// invitations are checked against).
    pub fn policy(&self, directory: [u8; IDENTITY_LEN]) -> Result<Policy, String> {
        let a = &self.admission;
        let admission = match a.mode {
            Mode::Open => Admission::Open,
            Mode::AllowList => Admission::AllowList {
                operators: keys(&a.operators)?,
                hosts: keys(&a.hosts)?,
            },
            Mode::Invitation => Admission::Invitation { directory },
        };
        Ok(Policy {
            admission,
            pow_bits: a.pow_bits,
        })
    }
}

fn keys(hex: &[String]) -> Result<BTreeSet<[u8; IDENTITY_LEN]>, String> {
    hex.iter()
        .map(|k| parse_hex(k).ok_or_else(|| format!("{k:?} is not a key (64 hex digits)")))
        .collect()
}

// ok: unwrap/expect below are test code only (never built into the host); a failure is a
// failed test.
#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DirectoryConfig, String> {
        let config: DirectoryConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check().map(|()| config)
    }

    #[test]
    fn admission_is_open_by_default_and_checked() {
        let config = parse("").unwrap();
        assert_eq!(config.policy([0; 32]).unwrap(), Policy::default());
        assert!(config.reachability.enabled);
        let key = "ab".repeat(32);
        let config = parse(&format!(
            "[admission]\nmode = \"allow-list\"\noperators = [\"{key}\"]\npow_bits = 16\n"
        ))
        .unwrap();
        let policy = config.policy([0; 32]).unwrap();
        assert_eq!(policy.pow_bits, 16);
        assert!(
            matches!(policy.admission, Admission::AllowList { operators, .. } if operators.contains(&[0xab; 32]))
        );
        assert!(parse("[admission]\nmode = \"allow-list\"\n").is_err());
        assert!(parse("[admission]\nmode = \"allow-list\"\nhosts = [\"ab\"]\n").is_err());
        assert!(parse("[admission]\npow_bits = 40\n").is_err());
        assert!(parse("[admission]\nmode = \"closed\"\n").is_err());
        assert!(parse(&format!("[admission]\nhosts = [\"{key}\"]\n")).is_err());
        assert!(parse("[reachability]\ninterval_s = 0\n").is_err());
        assert!(parse("[reachability]\nconcurency = 3\n").is_err());
        let invitation = parse("[admission]\nmode = \"invitation\"\n").unwrap();
        assert_eq!(
            invitation.policy([7; 32]).unwrap().admission,
            Admission::Invitation { directory: [7; 32] }
        );
    }
}
