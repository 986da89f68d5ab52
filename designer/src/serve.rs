//! The hidden `serve-host` and `serve-directory` modes: the same daemons as `mixnn-host run`
//! and `mixnn-host directory`, so `mixnn demo` can start them from this one binary.

use std::{net::SocketAddr, path::Path, path::PathBuf};

use anyhow::{Context, Result};
use mixnn_host::{
    daemon::{Daemon, HostConfig, hex_fingerprint, stopped},
    directory_service::DirectoryServer,
    keys::HostKeys,
};

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Runs a host until stopped.
pub(crate) fn host(config: &Path, stop_on_stdin_eof: bool) -> Result<()> {
    let config = HostConfig::from_file(config)?;
    runtime()?.block_on(async {
        let daemon = Daemon::bind(config).context("starting the host")?;
        println!(
            "listening on {} fingerprint {}",
            daemon.local_addr()?,
            hex_fingerprint::format(&daemon.fingerprint())
        );
        daemon.serve(stopped(stop_on_stdin_eof)).await?;
        Ok(())
    })
}

/// Runs a directory until stopped.
pub(crate) fn directory(
    listen: SocketAddr,
    state: PathBuf,
    keys: &Path,
    max_age_s: u64,
    stop_on_stdin_eof: bool,
) -> Result<()> {
    let keys = HostKeys::load(keys)?;
    runtime()?.block_on(async {
        let server = DirectoryServer::bind(listen, keys.tls, state, max_age_s)
            .context("starting the directory")?;
        println!(
            "listening on {} fingerprint {}",
            server.local_addr()?,
            hex_fingerprint::format(&server.fingerprint())
        );
        server.serve(stopped(stop_on_stdin_eof)).await;
        Ok(())
    })
}
