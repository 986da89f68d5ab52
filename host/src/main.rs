//! `mixnn-host`: the untrusted host's command line.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use mixnn_host::{
    check,
    keys::{self, HostKeys, ONION_PUBLIC_FILE, OPERATOR_KEY_FILE, TLS_CERT_FILE},
    serve,
};
use mixnn_transport::hex_fingerprint;
use mixnn_wire::family;

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
    /// Run the host daemon: register with the directory and serve sessions until stopped
    /// (Ctrl-C or SIGTERM). Prints `listening on ADDR fingerprint HEX` once ready.
    Run {
        /// The configuration file (TOML; see the crate docs of `mixnn_host::daemon`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Also stop when standard input closes (for supervisors such as `mixnn demo`).
        #[arg(long)]
        stop_on_stdin_eof: bool,
    },
    /// Check a configuration without starting anything: it parses and its limits agree,
    /// the keys load, the address is free and reachable by others, the files the host writes
    /// are writable. Prints one line per finding; exits with 1 if any is an error.
    Check {
        /// The configuration file to check.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run the directory: verifies and stores host descriptors, serves the live pool.
    /// Prints `listening on ADDR fingerprint HEX` once ready.
    Directory {
        /// Address to listen on.
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// State file (JSON, written atomically after every change; loaded at start).
        #[arg(long, value_name = "FILE")]
        state: PathBuf,
        /// Keys directory (`mixnn-host keygen`); its QUIC certificate is the one to pin.
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
        /// Hosts not heard from for this many seconds leave the served pool.
        #[arg(long, default_value_t = 120, value_name = "SECONDS")]
        max_age_s: u64,
        /// Admission, reachability and stats (TOML; see `mixnn_host::directory_config`).
        /// Default: open admission, reachability probes on.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Also stop when standard input closes.
        #[arg(long)]
        stop_on_stdin_eof: bool,
    },
    /// Create an operator's Ed25519 key (`operator-key.pem`, readable only by its owner), which
    /// certifies the operator's hosts. Prints its public key, for directories' allow-lists and
    /// hosts' `[operator]` tables. Never overwrites an existing key.
    OperatorKeygen {
        /// Directory to write the key into (created if missing); keep it off the hosts.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Certify a host as the operator's: prints the `[operator]` table for its config.
    OperatorSign {
        /// The operator's key directory (`operator-keygen`).
        #[arg(long, value_name = "DIR")]
        operator: PathBuf,
        /// The host's identity (what `keygen` printed), hex.
        #[arg(long, value_name = "HEX")]
        host_identity: String,
    },
    /// Invite a host to a directory in `invitation` mode: prints the invitation for its
    /// config's `[directory]` table.
    Invite {
        /// The directory's keys (`keygen`); its identity key signs.
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
        /// The host's identity (what `keygen` printed), hex.
        #[arg(long, value_name = "HEX")]
        host_identity: String,
    },
}

#[global_allocator]
static GLOBAL: mixnn_alloc::Allocator = mixnn_alloc::Allocator;

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Keygen { dir } => keygen(&dir),
        Command::Run {
            config,
            stop_on_stdin_eof,
        } => {
            mixnn_alloc::for_many_sessions();
            Ok(serve::host(&config, stop_on_stdin_eof)?)
        }
        Command::Check { config } => {
            let found = check::check(&config);
            for finding in &found.0 {
                println!("{finding}");
            }
            match found.worst() {
                check::Severity::Error => {
                    println!("{}: not ready", config.display());
                    std::process::exit(1)
                }
                check::Severity::Warning => {
                    println!("{}: ready, with warnings", config.display())
                }
                check::Severity::Ok => println!("{}: ready", config.display()),
            }
            Ok(())
        }
        Command::Directory {
            listen,
            state,
            keys,
            max_age_s,
            config,
            stop_on_stdin_eof,
        } => Ok(serve::directory_with(
            listen,
            state,
            &keys,
            max_age_s,
            config.as_deref(),
            stop_on_stdin_eof,
        )?),
        Command::OperatorKeygen { dir } => {
            let key = keys::generate_operator_key(&dir)
                .with_context(|| format!("writing the operator key to {}", dir.display()))?;
            println!(
                "operator key written to {}",
                dir.join(OPERATOR_KEY_FILE).display()
            );
            println!("operator: {}", family::to_hex(&key.public()?));
            Ok(())
        }
        Command::OperatorSign {
            operator,
            host_identity,
        } => {
            let key = keys::load_operator_key(&operator)?;
            let host = parse_identity(&host_identity)?;
            println!("[operator]");
            println!("key = \"{}\"", family::to_hex(&key.public()?));
            println!(
                "certificate = \"{}\"",
                family::to_hex(&family::certify(&key, &host))
            );
            Ok(())
        }
        Command::Invite {
            keys,
            host_identity,
        } => {
            let directory = HostKeys::load(&keys)?;
            let host = parse_identity(&host_identity)?;
            println!(
                "invitation = \"{}\"",
                family::to_hex(&family::invite(&directory.identity, &host))
            );
            Ok(())
        }
    }
}

fn parse_identity(hex: &str) -> Result<[u8; 32]> {
    family::parse_hex(hex).context("a host identity is 64 hex digits")
}

fn keygen(dir: &std::path::Path) -> Result<()> {
    let keys = HostKeys::generate()?;
    keys.save(dir)
        .with_context(|| format!("writing keys to {}", dir.display()))?;
    let identity = keys.identity.public()?;
    println!("keys written to {}", dir.display());
    println!(
        "onion public key: {}",
        dir.join(ONION_PUBLIC_FILE).display()
    );
    println!("certificate:      {}", dir.join(TLS_CERT_FILE).display());
    println!("identity:         {}", hex_fingerprint::format(&identity));
    println!(
        "fingerprint:      {}",
        hex_fingerprint::format(&keys.tls.fingerprint())
    );
    Ok(())
}
