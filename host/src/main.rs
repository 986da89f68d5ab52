//! `mixnn-host`: the untrusted host's command line.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use mixnn_host::keys::{HostKeys, ONION_PUBLIC_FILE, TLS_CERT_FILE};

/// A mixnn host: runs designers' layer components in a sandbox and relays onion-routed
/// messages of their training sessions.
#[derive(Debug, Parser)]
#[command(name = "mixnn-host", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the host's keys: an Ed25519 identity key, an RSA-2048 onion key and a QUIC
    /// certificate (PEM files; the private ones readable only by their owner). Never
    /// overwrites existing keys.
    Keygen {
        /// Directory to write the keys into (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Keygen { dir } => {
            let keys = HostKeys::generate()?;
            keys.save(&dir)
                .with_context(|| format!("writing keys to {}", dir.display()))?;
            let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
            let identity = keys.identity.public()?;
            println!("keys written to {}", dir.display());
            println!(
                "onion public key: {}",
                dir.join(ONION_PUBLIC_FILE).display()
            );
            println!("certificate:      {}", dir.join(TLS_CERT_FILE).display());
            println!("identity:         {}", hex(&identity));
            println!("fingerprint:      {}", hex(&keys.tls.fingerprint()));
            Ok(())
        }
    }
}
