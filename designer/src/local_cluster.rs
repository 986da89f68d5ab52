//! A directory and a pool of hosts as separate processes on loopback, each with its own keys
//! in a temporary directory: what `mixnn demo` and the end-to-end tests run against. The
//! processes are this crate's `mixnn` binary in its hidden `serve-directory` and `serve-host`
//! modes (the same daemon code as `mixnn-host`), so the demo needs nothing but itself. They
//! stop when their standard input closes; [`LocalCluster::shutdown`] (or dropping the
//! cluster) closes it, waits, and removes the temporary files.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use mixnn_host::{
    daemon::DaemonStats,
    keys::{HostKeys, KeyError},
};
use mixnn_transport::{
    Endpoint, Fingerprint, TlsIdentity, TransportError, directory_client, hex_fingerprint,
};

/// Why the cluster could not start or stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Keys could not be made or written.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The cluster's own endpoint could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A process gave no standard output.
    #[error("{name}: no stdout")]
    NoStdout {
        /// The process.
        name: String,
    },
    /// A process did not announce where it listens.
    #[error("{name} did not start (it said {said:?})")]
    NotStarted {
        /// The process.
        name: String,
        /// Its first line.
        said: String,
    },
    /// Not every host registered in time.
    #[error("only {have} of {want} hosts registered within {timeout:?}")]
    Registration {
        /// Hosts in the pool.
        have: usize,
        /// Hosts started.
        want: usize,
        /// How long the cluster waited.
        timeout: Duration,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

struct Process {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Process {
    /// Starts `exe args` and reads its `listening on ADDR fingerprint HEX` line.
    fn start(
        name: String,
        exe: &Path,
        args: &[&str],
    ) -> Result<(Self, SocketAddr, Fingerprint), ClusterError> {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .spawn()
            .map_err(io(format!("starting {name}")))?;
        let stdin = child.stdin.take();
        let mut process = Process {
            name: name.clone(),
            child,
            stdin,
        };
        let Some(stdout) = process.child.stdout.take() else {
            return Err(ClusterError::NoStdout { name });
        };
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(io(format!("reading {name}'s address")))?;
        let parsed = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.trim().split_once(" fingerprint "))
            .and_then(|(addr, fp)| Some((addr.parse().ok()?, hex_fingerprint::parse(fp)?)));
        match parsed {
            Some((addr, fp)) => Ok((process, addr, fp)),
            None => {
                process.stop(Duration::from_secs(1));
                Err(ClusterError::NotStarted {
                    name,
                    said: line.trim().to_owned(),
                })
            }
        }
    }

    /// Closes its stdin and waits; kills it after `grace`. True if it stopped by itself.
    fn stop(&mut self, grace: Duration) -> bool {
        self.stdin = None;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(process = %self.name, "did not stop in time; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

/// A directory and hosts running as processes on loopback. The hosts share one compilation
/// cache on disk (one operator's machine): a component one of them compiled, the others
/// load in a few milliseconds.
pub struct LocalCluster {
    directory: Process,
    hosts: Vec<Process>,
    /// The directory's address.
    pub directory_addr: SocketAddr,
    /// Its certificate's fingerprint.
    pub directory_fingerprint: Fingerprint,
    /// Each host's address.
    pub host_addrs: Vec<SocketAddr>,
    host_dirs: Vec<PathBuf>,
    temp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("directory", &self.directory_addr)
            .field("hosts", &self.host_addrs)
            .finish_non_exhaustive()
    }
}

impl LocalCluster {
    /// Starts a directory and `hosts` hosts, running `exe` (the `mixnn` binary), and waits
    /// until every host is in the directory's pool.
    pub fn start(exe: &Path, hosts: usize) -> Result<Self, ClusterError> {
        Self::start_configured(exe, hosts, "")
    }

    /// As [`LocalCluster::start`], with every host keeping an audit of its sessions (see
    /// [`LocalCluster::host_audit`]).
    pub fn start_audited(exe: &Path, hosts: usize) -> Result<Self, ClusterError> {
        Self::start_configured(exe, hosts, "audit_dir = \"audit\"\n")
    }

    /// As [`LocalCluster::start`], with `config` (TOML: top-level keys, then tables such as
    /// `[limits]` or `[sandbox]`; see `mixnn_host::daemon`) added to every host's
    /// configuration.
    pub fn start_configured(exe: &Path, hosts: usize, extra: &str) -> Result<Self, ClusterError> {
        Self::start_each(exe, hosts, |_| extra.to_owned())
    }

    /// As [`LocalCluster::start_configured`], host `i`'s configuration given `config(i)` (a
    /// host that fails on purpose, say: `[faults]`).
    pub fn start_each(
        exe: &Path,
        hosts: usize,
        config_of: impl Fn(usize) -> String,
    ) -> Result<Self, ClusterError> {
        let temp = tempfile::Builder::new()
            .prefix("mixnn-demo-")
            .tempdir()
            .map_err(io("creating a temporary directory"))?;
        let root = temp.path().to_path_buf();
        let keygen =
            |dir: &Path| -> Result<(), ClusterError> { Ok(HostKeys::generate()?.save(dir)?) };
        let dir_keys = root.join("directory-keys");
        keygen(&dir_keys)?;
        let state = root.join("directory-state.json");
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let (directory, directory_addr, directory_fingerprint) = Process::start(
            "the directory".into(),
            exe,
            &[
                "serve-directory",
                "--listen",
                "127.0.0.1:0",
                "--state",
                &path(&state),
                "--keys",
                &path(&dir_keys),
                "--stop-on-stdin-eof",
            ],
        )?;
        let mut cluster = LocalCluster {
            directory,
            hosts: Vec::new(),
            directory_addr,
            directory_fingerprint,
            host_addrs: Vec::new(),
            host_dirs: Vec::new(),
            temp: Some(temp),
        };
        for i in 0..hosts {
            let dir = root.join(format!("host-{i}"));
            keygen(&dir.join("keys"))?;
            let config = dir.join("host.toml");
            let extra = config_of(i);
            std::fs::write(
                &config,
                format!(
                    "listen = \"127.0.0.1:0\"\nkeys = \"keys\"\nstats_file = \"stats.json\"\n\
                     cache_dir = \"../compiled\"\n{extra}\n\
                     [directory]\naddress = \"{directory_addr}\"\nfingerprint = \"{}\"\n\
                     heartbeat_s = 10\n\n[metadata]\nregion = \"loopback\"\n",
                    hex_fingerprint::format(&directory_fingerprint)
                ),
            )
            .map_err(io("writing a host config"))?;
            let (process, addr, _) = Process::start(
                format!("host {i}"),
                exe,
                &[
                    "serve-host",
                    "--config",
                    &path(&config),
                    "--stop-on-stdin-eof",
                ],
            )?;
            cluster.hosts.push(process);
            cluster.host_addrs.push(addr);
            cluster.host_dirs.push(dir);
        }
        cluster.wait_for_pool(hosts, Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// As [`LocalCluster::start`], every host holding each frame it writes to a neighbour
    /// `delay` (one way; a WAN's latency on loopback, for benchmarks). The designer's own
    /// links take theirs from [`crate::remote::RemoteOptions::link_delay`].
    pub fn start_with_link_delay(
        exe: &Path,
        hosts: usize,
        delay: Duration,
    ) -> Result<Self, ClusterError> {
        if delay.is_zero() {
            return Self::start(exe, hosts);
        }
        let ms = delay.as_secs_f64() * 1e3;
        Self::start_configured(exe, hosts, &format!("[faults]\nlink_delay_ms = {ms:?}\n"))
    }

    /// Waits until the directory serves at least `n` hosts.
    pub fn wait_for_pool(&self, n: usize, timeout: Duration) -> Result<(), ClusterError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("starting a runtime"))?;
        let (addr, fp) = (self.directory_addr, self.directory_fingerprint);
        runtime.block_on(async {
            let identity = TlsIdentity::generate()?;
            let endpoint = Endpoint::bind(SocketAddr::from(([127, 0, 0, 1], 0)), identity)?;
            let deadline = Instant::now() + timeout;
            loop {
                let have = directory_client::fetch_pool(
                    &endpoint,
                    addr,
                    fp,
                    directory_client::DEFAULT_MAX_POOL,
                )
                .await
                .map_or(0, |pool| pool.len());
                if have >= n {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(ClusterError::Registration {
                        have,
                        want: n,
                        timeout,
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    /// Options for sessions over this cluster's directory (defaults for the rest).
    pub fn remote_options(&self) -> crate::remote::RemoteOptions {
        crate::remote::RemoteOptions::new(self.directory_addr, self.directory_fingerprint)
    }

    /// The counters host `i` last wrote.
    pub fn host_stats(&self, i: usize) -> Option<DaemonStats> {
        let bytes = std::fs::read(self.host_dirs.get(i)?.join("stats.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The audit directory of host `i`, if the cluster was started audited
    /// (`mixnn_host::daemon::audit` says what it holds).
    pub fn host_audit(&self, i: usize) -> Option<PathBuf> {
        let dir = self.host_dirs.get(i)?.join("audit");
        dir.is_dir().then_some(dir)
    }

    /// Host `i`'s process id (to read its resident memory, say).
    pub fn host_pid(&self, i: usize) -> Option<u32> {
        self.hosts.get(i).map(|h| h.child.id())
    }

    /// How host `i` exited, if it has.
    pub fn host_exit(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.hosts.get_mut(i)?.child.try_wait().ok().flatten()
    }

    /// Where host `i` keeps its files.
    pub fn host_dir(&self, i: usize) -> Option<&Path> {
        self.host_dirs.get(i).map(PathBuf::as_path)
    }

    /// Stops every process (hosts first) and removes the temporary files. Returns how many
    /// had to be killed.
    pub fn shutdown(mut self) -> Result<usize, ClusterError> {
        let killed = self.stop_all();
        if let Some(temp) = self.temp.take() {
            temp.close()
                .map_err(io("removing the temporary directory"))?;
        }
        Ok(killed)
    }

    fn stop_all(&mut self) -> usize {
        let grace = Duration::from_secs(5);
        // Close every host's stdin at once, then wait for each.
        for host in &mut self.hosts {
            host.stdin = None;
        }
        let mut killed = self
            .hosts
            .iter_mut()
            .map(|h| h.stop(grace))
            .filter(|&stopped| !stopped)
            .count();
        self.hosts.clear();
        if !self.directory.stop(grace) {
            killed += 1;
        }
        killed
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if self.temp.is_some() {
            self.stop_all();
        }
    }
}
