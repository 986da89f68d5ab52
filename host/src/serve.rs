//! Running the host daemon and the directory until stopped: what `mixnn-host run`,
//! `mixnn-host directory` and the demo's processes (`mixnn serve-host`, `mixnn
//! serve-directory`) all do. Each prints `listening on ADDR fingerprint HEX` on standard output
//! once ready (the address a supervisor reads, since the port may be chosen by the system),
//! then serves on one network thread until Ctrl-C, SIGTERM or, if asked, the end of standard
//! input.

use std::{net::SocketAddr, path::Path, path::PathBuf};

use mixnn_transport::{Fingerprint, TransportError, hex_fingerprint};

use crate::{
    daemon::{ConfigError, Daemon, DaemonError, HostConfig, stopped},
    directory_config::{DirectoryConfig, DirectoryConfigError},
    directory_service::{DirectoryOptions, DirectoryServer, DirectoryServerError},
    keys::{HostKeys, KeyError},
};

/// Why a daemon could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The keys could not be loaded.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The host could not start.
    #[error("starting the host: {0}")]
    Host(#[from] DaemonError),
    /// The directory could not start.
    #[error("starting the directory: {0}")]
    Directory(#[from] DirectoryServerError),
    /// The directory's configuration is unusable.
    #[error(transparent)]
    DirectoryConfig(#[from] DirectoryConfigError),
    /// The endpoint has no address.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The runtime could not start.
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// One thread for the network: sessions' compute runs on their own worker threads, or on it
/// once cheap (see `daemon::worker`).
fn runtime() -> Result<tokio::runtime::Runtime, ServeError> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn announce(addr: SocketAddr, fingerprint: &Fingerprint) {
    println!(
        "listening on {addr} fingerprint {}",
        hex_fingerprint::format(fingerprint)
    );
}

/// Runs a host with the configuration file at `config`.
pub fn host(config: &Path, stop_on_stdin_eof: bool) -> Result<(), ServeError> {
    let config = HostConfig::from_file(config)?;
    // Cheap sessions' layers run on the network thread: it needs a worker's stack, whatever
    // the main thread was given.
    let stack = config.sandbox_config().thread_stack_bytes();
    let network = std::thread::Builder::new()
        .name("mixnn-host".into())
        .stack_size(stack)
        .spawn(move || {
            runtime()?.block_on(async {
                let daemon = Daemon::bind(config)?;
                announce(daemon.local_addr()?, &daemon.fingerprint());
                daemon.serve(stopped(stop_on_stdin_eof)).await?;
                Ok(())
            })
        })?;
    network
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Runs a directory on `listen` with its state in `state` and its certificate from `keys`:
/// open admission, reachability probes on (the defaults of
/// [`crate::directory_config::DirectoryConfig`]).
pub fn directory(
    listen: SocketAddr,
    state: PathBuf,
    keys: &Path,
    max_age_s: u64,
    stop_on_stdin_eof: bool,
) -> Result<(), ServeError> {
    directory_with(listen, state, keys, max_age_s, None, stop_on_stdin_eof)
}

/// [`directory`] with a configuration file (admission, reachability, stats). Invitations are
/// checked against the identity key in `keys`.
pub fn directory_with(
    listen: SocketAddr,
    state: PathBuf,
    keys: &Path,
    max_age_s: u64,
    config: Option<&Path>,
    stop_on_stdin_eof: bool,
) -> Result<(), ServeError> {
    let config = match config {
        Some(path) => DirectoryConfig::from_file(path)?,
        None => DirectoryConfig::default(),
    };
    let keys = HostKeys::load(keys)?;
    let policy = config
        .policy(keys.identity.public().map_err(KeyError::Identity)?)
        .map_err(|what| DirectoryConfigError::Invalid {
            path: PathBuf::from("--config"),
            what,
        })?;
    tracing::info!(
        admission = ?config.admission.mode,
        pow_bits = policy.pow_bits,
        reachability = config.reachability.enabled,
        "directory policy"
    );
    let options = DirectoryOptions {
        policy,
        reachability: config.reachability,
        stats_file: config.stats_file,
    };
    runtime()?.block_on(async {
        let server = DirectoryServer::bind_with(listen, keys.tls, state, max_age_s, options)?;
        announce(server.local_addr()?, &server.fingerprint());
        server.serve(stopped(stop_on_stdin_eof)).await;
        Ok(())
    })
}
