//! The host daemon (`mixnn-host run`): a QUIC endpoint that takes op=0 onions from strangers,
//! runs each session's hop on its own worker thread, relays frames between its two
//! neighbours, and keeps itself registered with the directory.
//!
//! Every stream starts with a kind byte ([`stream_kind`]). A `SETUP` stream carries an onion
//! and then the link's frames; an `ATTACH` stream is the designer joining the last hop of a
//! session by the circuit id of their link. A host accepts a session's frames only from the
//! neighbour its setup names (pinned certificate), and counts everything it refuses.

pub mod audit;
mod config;
mod guard;
mod link;

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

pub use config::{
    ConfigError, DirectoryConfig, HostConfig, Limits, SandboxLimits, hex_fingerprint,
};
use guard::bump;
pub use guard::{Counters, DaemonStats, RateLimiter, ReplayCache};
use mixnn_wire::{
    crypto::{OnionPrivateKey, SystemEntropy},
    descriptor::{Descriptor, IdentityKey},
    frame::{MAX_FRAME_LEN, MIN_FRAME_LEN},
    setup::{self, CIRCUIT_ID_LEN, CircuitId, Peer},
};
use tokio::sync::oneshot;

use crate::{
    Sandbox, SandboxError, directory_service,
    keys::{HostKeys, KeyError},
    transport::{Endpoint, Fingerprint, TransportError, stream_kind},
};
use link::Streams;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The keys could not be loaded.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The sandbox could not be set up.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The endpoint could not be bound.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Completes on Ctrl-C, SIGTERM, or (if asked) the end of standard input.
pub async fn stopped(stop_on_stdin_eof: bool) {
    let stdin_closed = async {
        if stop_on_stdin_eof {
            // A blocking read on a detached thread (the runtime must not wait for it at exit).
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
                let _ = tx.send(());
            });
            let _ = rx.await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
        () = stdin_closed => {}
    }
}

/// Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The designer's stream, or the session waiting for it: whichever comes first waits.
enum Slot {
    Session(oneshot::Sender<Streams>),
    Designer(Streams),
}

/// Designer streams waiting for their session at once, at most.
const MAX_WAITING_ATTACHES: usize = 1024;

struct Admission {
    limiter: RateLimiter,
    replay: ReplayCache,
    active: usize,
}

pub(crate) struct Inner {
    endpoint: Endpoint,
    onion_key: Arc<OnionPrivateKey>,
    sandbox: Sandbox,
    limits: Limits,
    counters: Counters,
    admission: Mutex<Admission>,
    rendezvous: Mutex<HashMap<CircuitId, Slot>>,
    audit_dir: Option<std::path::PathBuf>,
    /// Sessions accepted so far (names their audits).
    sessions_accepted: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind: keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    fn session_ended(&self) {
        let mut a = lock(&self.admission);
        a.active = a.active.saturating_sub(1);
    }

    /// The last hop waits for its designer to attach.
    async fn wait_for_designer(&self, circuit: CircuitId) -> Option<Streams> {
        let rx = {
            let mut slots = lock(&self.rendezvous);
            match slots.remove(&circuit) {
                Some(Slot::Designer(streams)) => return Some(streams),
                _ => {
                    let (tx, rx) = oneshot::channel();
                    slots.insert(circuit, Slot::Session(tx));
                    rx
                }
            }
        };
        let got = tokio::time::timeout(self.limits.attach_timeout(), rx).await;
        lock(&self.rendezvous).remove(&circuit);
        got.ok().and_then(Result::ok)
    }
}

/// A running host.
pub struct Daemon {
    inner: Arc<Inner>,
    config: HostConfig,
    keys: HostKeys,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("listen", &self.config.listen)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Loads the keys and binds the endpoint. Call inside a tokio runtime.
    pub fn bind(config: HostConfig) -> Result<Self, DaemonError> {
        let keys = HostKeys::load(&config.keys)?;
        let sandbox = Sandbox::new(config.sandbox.sandbox_config())?;
        let endpoint = Endpoint::bind(config.listen, keys.tls.clone())?;
        let onion_key = OnionPrivateKey::from_pkcs8(keys.onion.to_pkcs8_der())
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let inner = Arc::new(Inner {
            endpoint,
            onion_key: Arc::new(onion_key),
            sandbox,
            limits: config.limits.clone(),
            counters: Counters::default(),
            admission: Mutex::new(Admission {
                limiter: RateLimiter::new(config.limits.setups_per_minute),
                replay: ReplayCache::default(),
                active: 0,
            }),
            rendezvous: Mutex::new(HashMap::new()),
            audit_dir: config.audit_dir.clone(),
            sessions_accepted: std::sync::atomic::AtomicU64::new(0),
        });
        Ok(Daemon {
            inner,
            config,
            keys,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, DaemonError> {
        Ok(self.inner.endpoint.local_addr()?)
    }

    /// The certificate fingerprint peers pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.inner.endpoint.fingerprint()
    }

    /// The counters so far.
    pub fn stats(&self) -> DaemonStats {
        self.inner.counters.snapshot()
    }

    /// This host's signed descriptor, dated now.
    pub fn descriptor(&self) -> Result<Vec<u8>, DaemonError> {
        sign(&self.keys.identity, self.unsigned_descriptor()?)
    }

    /// What the descriptor says, dated now; signed by [`Daemon::descriptor`].
    fn unsigned_descriptor(&self) -> Result<Descriptor, DaemonError> {
        let address = match self.config.advertise {
            Some(a) => a,
            None => self.local_addr()?,
        };
        Ok(Descriptor {
            identity: [0; 32],
            address: address.to_string(),
            onion_key: self.keys.onion_public()?.der().to_vec(),
            fingerprint: self.fingerprint(),
            published_at: unix_now(),
            metadata: self.config.metadata.clone(),
        })
    }

    /// Serves until `shutdown` completes, then closes every connection.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
        let template = self.unsigned_descriptor()?;
        let accept = tokio::spawn(accept_loop(Arc::clone(&self.inner)));
        let Daemon {
            inner,
            config,
            keys,
        } = self;
        let register = config.directory.clone().map(|d| {
            tokio::spawn(register_loop(
                inner.endpoint.clone(),
                keys.identity,
                template,
                d,
            ))
        });
        let stats = config.stats_file.clone().map(|path| {
            let inner = Arc::clone(&inner);
            tokio::spawn(async move {
                loop {
                    write_stats(&path, &inner.counters.snapshot());
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        });
        shutdown.await;
        let last = inner.counters.snapshot();
        tracing::info!(stats = ?last, "shutting down");
        if let Some(path) = &config.stats_file {
            write_stats(path, &last);
        }
        for task in [Some(accept), register, stats].into_iter().flatten() {
            task.abort();
        }
        inner.endpoint.close();
        Ok(())
    }
}

async fn register_loop(
    endpoint: Endpoint,
    identity: IdentityKey,
    template: Descriptor,
    directory: DirectoryConfig,
) {
    let mut last_published = 0;
    loop {
        // A descriptor must be newer than the last one the directory holds.
        let now = unix_now().max(last_published + 1);
        let mut descriptor = template.clone();
        descriptor.published_at = now;
        match sign(&identity, descriptor) {
            Ok(signed) => match directory_service::publish(
                &endpoint,
                directory.address,
                directory.fingerprint,
                &signed,
            )
            .await
            {
                Ok(()) => {
                    last_published = now;
                    tracing::debug!("registered with the directory");
                }
                Err(e) => tracing::warn!(error = %e, "registration failed; retrying"),
            },
            Err(e) => tracing::error!(error = %e, "cannot sign a descriptor"),
        }
        let wait = if last_published == now {
            directory.heartbeat_s.max(1)
        } else {
            1
        };
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

fn sign(identity: &IdentityKey, descriptor: Descriptor) -> Result<Vec<u8>, DaemonError> {
    identity
        .sign(descriptor)
        .map_err(|e| DaemonError::Keys(KeyError::Generate(e.to_string())))
}

fn write_stats(path: &std::path::Path, stats: &DaemonStats) {
    let tmp = path.with_extension("tmp");
    let written = serde_json::to_vec_pretty(stats)
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(&tmp, json))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::warn!(error = %e, path = %path.display(), "cannot write the stats file");
    }
}

async fn accept_loop(inner: Arc<Inner>) {
    while let Some(incoming) = inner.endpoint.accept().await {
        let inner = Arc::clone(&inner);
        tokio::spawn(async move {
            let (connection, peer) = match incoming.handshake().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "handshake failed");
                    return;
                }
            };
            while let Ok((send, recv)) = connection.accept_bi().await {
                tokio::spawn(serve_stream(Arc::clone(&inner), peer, send, recv));
            }
        });
    }
}

async fn serve_stream(
    inner: Arc<Inner>,
    peer: Fingerprint,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let mut kind = [0u8; 1];
    if recv.read_exact(&mut kind).await.is_err() {
        bump(&inner.counters.bad_streams);
        return;
    }
    let streams = Streams {
        send,
        recv,
        connection: None,
    };
    match kind[0] {
        stream_kind::SETUP => accept_setup(inner, peer, streams).await,
        stream_kind::ATTACH => accept_attach(&inner, streams).await,
        _ => {
            bump(&inner.counters.bad_streams);
            refuse(streams, "unknown stream kind");
        }
    }
}

fn refuse(mut streams: Streams, why: &str) {
    tracing::debug!(why, "stream refused");
    let _ = streams.send.reset(1u32.into());
    let _ = streams.recv.stop(1u32.into());
}

async fn accept_setup(inner: Arc<Inner>, peer: Fingerprint, mut streams: Streams) {
    let counters = &inner.counters;
    {
        let mut a = lock(&inner.admission);
        if !a.limiter.allow(peer, Instant::now()) {
            bump(&counters.setups_rate_limited);
            return refuse(streams, "rate limited");
        }
        if a.active >= inner.limits.max_sessions {
            bump(&counters.sessions_refused_full);
            return refuse(streams, "too many sessions");
        }
    }
    let mut len = [0u8; 4];
    if streams.recv.read_exact(&mut len).await.is_err() {
        bump(&counters.bad_streams);
        return refuse(streams, "no length");
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > inner.limits.max_setup_bytes {
        bump(&counters.setups_refused);
        return refuse(streams, "setup too large");
    }
    let mut onion = vec![0u8; len];
    let started = Instant::now();
    let read = tokio::time::timeout(
        inner.limits.attach_timeout(),
        streams.recv.read_exact(&mut onion),
    )
    .await;
    if !matches!(read, Ok(Ok(()))) {
        bump(&counters.bad_streams);
        return refuse(streams, "setup cut short");
    }
    let read_in = started.elapsed();
    // RSA decryption off the network thread.
    let onion_in = inner.audit_dir.as_ref().map(|_| onion.clone());
    let peeled = {
        let inner = Arc::clone(&inner);
        tokio::task::spawn_blocking(move || {
            setup::peel(&inner.onion_key, &onion, unix_now(), &mut SystemEntropy)
        })
        .await
    };
    let peeled = match peeled {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            bump(&counters.setups_refused);
            tracing::debug!(error = %e, "setup refused");
            return refuse(streams, "setup refused");
        }
        Err(_) => return refuse(streams, "internal"),
    };
    let s = &peeled.setup;
    if matches!(&s.prev, Peer::Host { fingerprint, .. } if *fingerprint != peer) {
        bump(&counters.wrong_neighbour);
        return refuse(streams, "not from the neighbour named in the setup");
    }
    if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&(s.frame_len as usize)) {
        bump(&counters.setups_refused);
        return refuse(streams, "frame length out of range");
    }
    {
        let mut a = lock(&inner.admission);
        if !a.replay.insert(peeled.replay_tag, s.expires_at, unix_now()) {
            bump(&counters.setups_replayed);
            return refuse(streams, "replayed setup");
        }
        if a.active >= inner.limits.max_sessions {
            bump(&counters.sessions_refused_full);
            return refuse(streams, "too many sessions");
        }
        a.active += 1;
    }
    bump(&counters.setups_accepted);
    tracing::info!(
        onion_bytes = len,
        read_ms = read_in.as_secs_f64() * 1e3,
        peeled_ms = (started.elapsed() - read_in).as_secs_f64() * 1e3,
        "setup accepted"
    );
    let n = inner
        .sessions_accepted
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let audit = inner
        .audit_dir
        .as_deref()
        .and_then(|root| audit::SessionAudit::create(root, n));
    if let (Some(audit), Some(onion_in)) = (&audit, &onion_in) {
        audit.setup(&peeled.setup, onion_in, &peeled.forward);
    }
    link::run(
        Arc::clone(&inner),
        peeled.setup,
        peeled.forward,
        streams,
        audit,
    )
    .await;
}

async fn accept_attach(inner: &Inner, mut streams: Streams) {
    let mut circuit: CircuitId = [0; CIRCUIT_ID_LEN];
    if streams.recv.read_exact(&mut circuit).await.is_err() {
        bump(&inner.counters.bad_streams);
        return refuse(streams, "no circuit id");
    }
    // Decide under the lock, wait outside it.
    let waiting = {
        let mut slots = lock(&inner.rendezvous);
        match slots.remove(&circuit) {
            Some(Slot::Session(tx)) => {
                if let Err(streams) = tx.send(streams) {
                    refuse(streams, "the session is gone");
                }
                false
            }
            Some(Slot::Designer(old)) => {
                // Two attaches for one circuit: neither is trusted.
                bump(&inner.counters.attach_refused);
                refuse(old, "attached twice");
                refuse(streams, "attached twice");
                false
            }
            None if slots.len() >= MAX_WAITING_ATTACHES => {
                bump(&inner.counters.attach_refused);
                refuse(streams, "too many waiting attaches");
                false
            }
            None => {
                slots.insert(circuit, Slot::Designer(streams));
                true
            }
        }
    };
    if waiting {
        // Forget it if no session claims it in time.
        tokio::time::sleep(inner.limits.attach_timeout()).await;
        let unclaimed = {
            let mut slots = lock(&inner.rendezvous);
            match slots.get(&circuit) {
                Some(Slot::Designer(_)) => slots.remove(&circuit),
                _ => None,
            }
        };
        if let Some(Slot::Designer(streams)) = unclaimed {
            bump(&inner.counters.attach_refused);
            refuse(streams, "no session for this circuit");
        }
    }
}
