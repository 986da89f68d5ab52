//! `mixnn-host check --config FILE`: what an operator learns before starting a host. The
//! configuration must parse and its limits agree, the keys must load, the listening address
//! must be free, the files the host writes must be writable; what would work but is likely a
//! mistake (an address nobody else can reach published, no directory, faults on) is a
//! warning.

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
};

use mixnn_transport::hex_fingerprint;

use crate::{
    daemon::HostConfig,
    keys::{HostKeys, IDENTITY_KEY_FILE, ONION_KEY_FILE, TLS_KEY_FILE},
};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// As it should be.
    Ok,
    /// Works, but probably not as meant.
    Warning,
    /// The host would not start, or not work.
    Error,
}

/// One thing checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// What was found, in a sentence.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = match self.severity {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{mark:>7}: {}", self.message)
    }
}

/// Everything `check` found, in order.
#[derive(Debug, Default)]
pub struct Findings(pub Vec<Finding>);

impl Findings {
    fn push(&mut self, severity: Severity, message: impl Into<String>) {
        self.0.push(Finding {
            severity,
            message: message.into(),
        });
    }

    /// The worst severity found.
    pub fn worst(&self) -> Severity {
        self.0
            .iter()
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Ok)
    }
}

/// Checks the configuration at `path` and what it names, without starting anything.
pub fn check(path: &Path) -> Findings {
    let mut found = Findings::default();
    let config = match HostConfig::from_file(path) {
        Ok(config) => config,
        Err(e) => {
            found.push(Severity::Error, e.to_string());
            return found;
        }
    };
    found.push(
        Severity::Ok,
        format!("{}: parses, and its limits agree", path.display()),
    );
    keys(&config, &mut found);
    addresses(&config, &mut found);
    files(&config, &mut found);
    let sandbox = &config.sandbox;
    if sandbox.max_memory_mib > sandbox.max_total_memory_mib {
        found.push(
            Severity::Warning,
            format!(
                "sandbox: an instance may take {} MiB but all of them together {} MiB: one \
                 session could take all",
                sandbox.max_memory_mib, sandbox.max_total_memory_mib
            ),
        );
    }
    if config.faults.die_on.is_some()
        || config.faults.lie.is_some()
        || !config.faults.link_delay.is_zero()
    {
        found.push(
            Severity::Warning,
            "[faults] is set: this host crashes, lies or lags on purpose (for drills only)",
        );
    }
    found
}

fn keys(config: &HostConfig, found: &mut Findings) {
    match HostKeys::load(&config.keys) {
        Ok(keys) => {
            let identity = keys
                .identity
                .public()
                .map(|k| hex_fingerprint::format(&k))
                .unwrap_or_else(|e| format!("unusable ({e})"));
            found.push(
                Severity::Ok,
                format!(
                    "keys in {} load: identity {identity}, certificate fingerprint {}",
                    config.keys.display(),
                    hex_fingerprint::format(&keys.tls.fingerprint())
                ),
            );
        }
        Err(e) => {
            let mut message = format!("keys in {}: {e}", config.keys.display());
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            found.push(Severity::Error, message);
            return;
        }
    }
    #[cfg(unix)]
    for name in [IDENTITY_KEY_FILE, ONION_KEY_FILE, TLS_KEY_FILE] {
        use std::os::unix::fs::PermissionsExt;
        let path = config.keys.join(name);
        if let Ok(meta) = std::fs::metadata(&path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                found.push(
                    Severity::Warning,
                    format!(
                        "{}: a private key others may read (mode {mode:o}; chmod 600)",
                        path.display()
                    ),
                );
            }
        }
    }
}

fn addresses(config: &HostConfig, found: &mut Findings) {
    match UdpSocket::bind(config.listen) {
        Ok(_) => found.push(Severity::Ok, format!("listen {}: free", config.listen)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => found.push(
            Severity::Warning,
            format!(
                "listen {}: in use (a host already running with this configuration?)",
                config.listen
            ),
        ),
        Err(e) => found.push(
            Severity::Error,
            format!("listen {}: cannot bind: {e}", config.listen),
        ),
    }
    // Without `advertise`, the bound address is published: port 0 is the one the system picks.
    let published: SocketAddr = config.advertise.unwrap_or(config.listen);
    let port_unknown = config.advertise.is_some() && published.port() == 0;
    if published.ip().is_unspecified() || port_unknown {
        found.push(
            Severity::Error,
            format!(
                "the descriptor would publish {published}, which no designer can reach: set \
                 `advertise` to the address others reach this host at"
            ),
        );
    } else if published.ip().is_loopback() {
        found.push(
            Severity::Warning,
            format!("the descriptor publishes {published}: reachable from this machine only"),
        );
    } else {
        found.push(Severity::Ok, format!("publishes {published}"));
    }
    match &config.directory {
        Some(d) => found.push(
            Severity::Ok,
            format!(
                "registers with the directory at {} (fingerprint {}) every {} s",
                d.address,
                hex_fingerprint::format(&d.fingerprint),
                d.heartbeat_s
            ),
        ),
        None => found.push(
            Severity::Warning,
            "no [directory]: the host registers nowhere, and designers must be given its \
             address by hand",
        ),
    }
}

fn files(config: &HostConfig, found: &mut Findings) {
    let outputs = [
        ("stats_file", config.stats_file.as_deref()),
        ("metrics_file", config.metrics_file.as_deref()),
    ];
    for (what, path) in outputs {
        let Some(path) = path else { continue };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        writable(what, dir, found);
    }
    let dirs = [
        ("audit_dir", config.audit_dir.as_deref()),
        ("cache_dir", config.cache_dir.as_deref()),
    ];
    for (what, dir) in dirs {
        let Some(dir) = dir else { continue };
        // The host creates them: their closest existing ancestor must take it.
        let existing = dir
            .ancestors()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .find(|p| p.exists())
            .unwrap_or(dir);
        writable(what, existing, found);
    }
}

/// Whether the host can create files in `dir` (tried: permissions alone do not tell, on a
/// read-only mount say).
fn writable(what: &str, dir: &Path, found: &mut Findings) {
    match tempfile::tempfile_in(dir) {
        Ok(_) => found.push(
            Severity::Ok,
            format!("{what}: {} is writable", dir.display()),
        ),
        Err(e) => found.push(
            Severity::Error,
            format!("{what}: cannot write in {}: {e}", dir.display()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn severities(found: &Findings) -> Vec<(Severity, &str)> {
        found
            .0
            .iter()
            .map(|f| (f.severity, f.message.as_str()))
            .collect()
    }

    #[test]
    fn a_good_configuration_passes_and_each_mistake_is_named() {
        let dir = tempfile::tempdir().unwrap();
        HostKeys::generate()
            .unwrap()
            .save(&dir.path().join("keys"))
            .unwrap();
        let config = dir.path().join("host.toml");
        let good = "listen = \"127.0.0.1:0\"\nadvertise = \"192.0.2.7:7100\"\nkeys = \"keys\"\n\
                    stats_file = \"stats.json\"\ncache_dir = \"cache/compiled\"\n\
                    [directory]\naddress = \"192.0.2.1:7000\"\nfingerprint = \"";
        let good = format!("{good}{}\"\n", "ab".repeat(32));
        std::fs::write(&config, &good).unwrap();
        let found = check(&config);
        assert_eq!(found.worst(), Severity::Ok, "{:?}", severities(&found));

        // A typo in a key's name.
        std::fs::write(&config, good.replace("stats_file", "stats_flie")).unwrap();
        let found = check(&config);
        assert_eq!(found.worst(), Severity::Error);
        assert!(found.0[0].message.contains("stats_flie"), "{}", found.0[0]);

        // Keys missing; an unreachable published address.
        std::fs::write(
            &config,
            good.replace("keys = \"keys\"", "keys = \"nokeys\"")
                .replace("advertise = \"192.0.2.7:7100\"\n", "")
                .replace("127.0.0.1:0", "0.0.0.0:0"),
        )
        .unwrap();
        let found = check(&config);
        let errors: Vec<&str> = found
            .0
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.message.as_str())
            .collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("nokeys"), "{errors:?}");
        assert!(errors[1].contains("advertise"), "{errors:?}");

        // A port in use, no directory, faults on: warnings only.
        let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let text = good.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
        let text = text.split("[directory]").next().unwrap().to_owned();
        std::fs::write(&config, text + "[faults]\ndie_on = \"forward\"\n").unwrap();
        let found = check(&config);
        assert_eq!(found.worst(), Severity::Warning, "{:?}", severities(&found));
        let warnings = found
            .0
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count();
        assert_eq!(warnings, 3, "{:?}", severities(&found));
    }

    #[cfg(unix)]
    #[test]
    fn a_private_key_others_can_read_is_a_warning_and_a_read_only_place_an_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        HostKeys::generate().unwrap().save(&keys).unwrap();
        let onion = keys.join(ONION_KEY_FILE);
        std::fs::set_permissions(&onion, std::fs::Permissions::from_mode(0o644)).unwrap();
        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
        let config = dir.path().join("host.toml");
        std::fs::write(
            &config,
            "listen = \"127.0.0.1:0\"\nadvertise = \"192.0.2.7:7100\"\nkeys = \"keys\"\n\
             metrics_file = \"locked/host.prom\"\n",
        )
        .unwrap();
        let found = check(&config);
        let onion_warning = found
            .0
            .iter()
            .any(|f| f.severity == Severity::Warning && f.message.contains("onion-key.pem"));
        assert!(onion_warning, "{:?}", severities(&found));
        // Root writes anywhere: the read-only case only holds for other users.
        if !rustix::process::geteuid().is_root() {
            let locked_error = found
                .0
                .iter()
                .any(|f| f.severity == Severity::Error && f.message.contains("metrics_file"));
            assert!(locked_error, "{:?}", severities(&found));
        }
    }
}
