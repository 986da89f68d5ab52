//! The host daemon (`mixnn-host run`): a QUIC endpoint that takes op=0 onions from strangers,
//! runs each session's hop on its own worker thread, relays frames between its two
//! neighbours, and keeps itself registered with the directory.
//!
//! Every stream starts with a header ([`StreamHeader`]). A `SETUP` stream carries an onion
//! and then the link's frames; an `ATTACH` stream is the designer joining the last hop of a
//! session by the circuit id of their link. A host accepts a session's frames only from the
//! neighbour its setup names (pinned certificate), and counts everything it refuses.
//!
//! Strangers are the normal case: every size, count and time a peer controls has a limit
//! ([`Limits`]). Connections are counted per source (an address prefix, which costs a
//! stranger more than a certificate); a stream's header must arrive within a timeout; an op=0
//! message is read in three steps, each refused as soon as it can be: its length, its head
//! (the one RSA block, [`mixnn_wire::setup::open_head`]), its own layer (authenticated, then
//! checked: sizes, lifetime, neighbour), and only then the layers it forwards, never more at
//! once than the host's and the source's reading quotas allow.

pub mod audit;
mod config;
mod guard;
mod link;
pub mod metrics;
mod worker;

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

pub use config::{
    ConfigError, DirectoryConfig, FaultLie, FaultOp, FaultSignal, Faults, HostConfig, Limits,
    LimitsError, MAX_DRAIN_S, OperatorConfig, SandboxLimits,
};
pub use guard::{
    Counters, DaemonStats, MAX_REPLAY_TAGS, Quota, QuotaFull, QuotaSlot, RateLimiter, ReplayCache,
    Source,
};
use guard::{bump, lock};
use mixnn_sandbox::{Sandbox, SandboxError};
use mixnn_transport::{
    self as transport, Endpoint, Fingerprint, HeaderError, TransportError, directory_client,
};
use mixnn_wire::{
    crypto::{OnionPrivateKey, SystemEntropy},
    descriptor::{Descriptor, IDENTITY_LEN, IdentityKey, SIGNATURE_LEN},
    directory::{AnswerError, Refusal},
    family::{self, FamilyError},
    setup::{self, CircuitId, Freshness, HEAD_LEN, Peer, SetupError},
    stream::{StreamHeader, StreamRefusal},
};
use tokio::sync::oneshot;

use crate::keys::{HostKeys, KeyError};
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
    /// The `[operator]` table does not certify this host's identity, or the proof of work
    /// cannot be made.
    #[error("descriptor: {0}")]
    Family(#[from] FamilyError),
}

/// What the host adds under reserved keys to its descriptor's metadata: its operator's
/// certificate, its invitation, its proof of work (computed here, once: 2^bits hashes).
fn reserved_metadata(
    config: &HostConfig,
    identity: &[u8; IDENTITY_LEN],
) -> Result<std::collections::BTreeMap<String, String>, DaemonError> {
    let mut reserved = std::collections::BTreeMap::new();
    if let Some(op) = &config.operator {
        // The config's check made sure both are hex of their lengths.
        let key = family::parse_hex::<IDENTITY_LEN>(&op.key)
            .ok_or(FamilyError::Malformed(family::OPERATOR))?;
        let certificate = family::parse_hex::<SIGNATURE_LEN>(&op.certificate)
            .ok_or(FamilyError::Malformed(family::OPERATOR_SIG))?;
        // A certificate of another host would get every publication refused: say so now.
        if !family::verify_certificate(&key, identity, &certificate) {
            return Err(FamilyError::BadCertificate.into());
        }
        reserved.insert(family::OPERATOR.to_owned(), family::to_hex(&key));
        reserved.insert(
            family::OPERATOR_SIG.to_owned(),
            family::to_hex(&certificate),
        );
    }
    if let Some(d) = &config.directory {
        if let Some(invitation) = &d.invitation {
            reserved.insert(family::INVITATION.to_owned(), invitation.trim().to_owned());
        }
        if d.pow_bits > 0 {
            let started = Instant::now();
            let nonce = family::solve_pow(identity, d.pow_bits)?;
            tracing::info!(
                bits = d.pow_bits,
                seconds = started.elapsed().as_secs_f64(),
                "proof of work computed"
            );
            reserved.insert(family::POW.to_owned(), family::pow_value(nonce));
        }
    }
    Ok(reserved)
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

/// Who may start a session, and what the open ones hold.
struct Admission {
    per_peer: RateLimiter<Fingerprint>,
    per_source: RateLimiter<Source>,
    total: RateLimiter<()>,
    replay: ReplayCache,
    active: usize,
    /// Open sessions by the source of their previous hop.
    sessions_by_source: HashMap<Source, usize>,
    /// The frame lengths of the open sessions, summed.
    frame_bytes: usize,
}

impl Admission {
    /// Whether the host has room for one more session of `frame_len` from `source`.
    fn room(&self, limits: &Limits, source: Source, frame_len: usize) -> bool {
        self.active < limits.max_sessions
            && self.sessions_by_source.get(&source).copied().unwrap_or(0)
                < limits.max_sessions_per_source
            && self.frame_bytes + frame_len <= limits.max_frame_bytes_total
    }
}

pub(crate) struct Inner {
    endpoint: Endpoint,
    onion_key: Arc<OnionPrivateKey>,
    sandbox: Sandbox,
    limits: Limits,
    counters: Counters,
    admission: Mutex<Admission>,
    /// Connections accepted and open, by source.
    connections: Quota<Source>,
    /// op=0 messages being read, by source.
    setups_reading: Quota<Source>,
    rendezvous: Mutex<HashMap<CircuitId, Slot>>,
    audit_dir: Option<std::path::PathBuf>,
    /// Sessions accepted so far (names their audits).
    sessions_accepted: std::sync::atomic::AtomicU64,
    faults: Faults,
    /// Frames (or setups) of the fault's operation seen so far.
    fault_count: std::sync::atomic::AtomicU64,
    /// Forward and test frames seen so far, for a lie's start.
    lie_frames: Arc<std::sync::atomic::AtomicU64>,
    /// Whether frames may run inline.
    inline_gate: worker::InlineGate,
    /// Set once the host is shutting down: sessions end at the end of their step.
    draining: tokio::sync::watch::Sender<bool>,
}

impl Inner {
    /// Dies, if the faults say so, at this frame of `op` (see [`Faults`]).
    pub(crate) fn maybe_die(&self, op: FaultOp) {
        if self.faults.die_on != Some(op) {
            return;
        }
        let seen = self
            .fault_count
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if seen == self.faults.die_at {
            let signal = match self.faults.die_by {
                FaultSignal::Kill => rustix::process::Signal::KILL,
                FaultSignal::Term => rustix::process::Signal::TERM,
            };
            tracing::warn!(?op, seen, ?signal, "faults: dying now, as asked");
            let _ = rustix::process::kill_process(rustix::process::getpid(), signal);
            if signal == rustix::process::Signal::KILL {
                std::process::abort();
            }
        }
    }
}

/// An open session's place in the host: its slot and its frame bytes, given back when the
/// session's worker ends.
pub(crate) struct SessionSlot {
    inner: Arc<Inner>,
    source: Source,
    frame_len: usize,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut a = lock(&self.inner.admission);
        a.active = a.active.saturating_sub(1);
        if let Some(n) = a.sessions_by_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                a.sessions_by_source.remove(&self.source);
            }
        }
        a.frame_bytes = a.frame_bytes.saturating_sub(self.frame_len);
    }
}

impl Inner {
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
    /// Reserved metadata: operator, invitation, proof of work (made once, at bind).
    reserved: std::collections::BTreeMap<String, String>,
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
        let reserved = reserved_metadata(
            &config,
            &keys.identity.public().map_err(KeyError::Identity)?,
        )?;
        let sandbox = Sandbox::new(config.sandbox_config())?;
        if let Some(dir) = &config.cache_dir {
            tracing::info!(dir = %dir.display(), "compilation cache on disk");
        }
        let endpoint = Endpoint::bind(config.listen, keys.tls.clone())?;
        let onion_key =
            OnionPrivateKey::from_pkcs8(keys.onion.to_pkcs8_der()).map_err(KeyError::Onion)?;
        let inner = Arc::new(Inner {
            endpoint,
            onion_key: Arc::new(onion_key),
            sandbox,
            limits: config.limits.clone(),
            counters: Counters::default(),
            admission: Mutex::new(Admission {
                per_peer: RateLimiter::new(config.limits.setups_per_minute),
                per_source: RateLimiter::new(config.limits.setups_per_minute_per_source),
                total: RateLimiter::new(config.limits.setups_per_minute_total),
                replay: ReplayCache::default(),
                active: 0,
                sessions_by_source: HashMap::new(),
                frame_bytes: 0,
            }),
            connections: Quota::new(
                config.limits.max_connections,
                config.limits.max_connections_per_source,
            ),
            setups_reading: Quota::new(
                config.limits.max_setups_reading,
                config.limits.max_setups_reading_per_source,
            ),
            rendezvous: Mutex::new(HashMap::new()),
            audit_dir: config.audit_dir.clone(),
            sessions_accepted: std::sync::atomic::AtomicU64::new(0),
            faults: config.faults.clone(),
            fault_count: std::sync::atomic::AtomicU64::new(0),
            lie_frames: Arc::default(),
            inline_gate: worker::InlineGate::default(),
            draining: tokio::sync::watch::Sender::new(false),
        });
        Ok(Daemon {
            inner,
            config,
            keys,
            reserved,
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
            metadata: self
                .config
                .metadata
                .iter()
                .chain(&self.reserved)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
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
            ..
        } = self;
        let register = config.directory.clone().map(|d| {
            tokio::spawn(register_loop(
                inner.endpoint.clone(),
                keys.identity,
                template,
                d,
            ))
        });
        let stats = (config.stats_file.is_some() || config.metrics_file.is_some()).then(|| {
            let inner = Arc::clone(&inner);
            let (json, prom) = (config.stats_file.clone(), config.metrics_file.clone());
            tokio::spawn(async move {
                loop {
                    write_stats(&inner, json.as_deref(), prom.as_deref());
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        });
        shutdown.await;
        let open = lock(&inner.admission).active;
        tracing::info!(
            sessions = open,
            drain_s = config.drain_s,
            "shutting down: open sessions end at the end of their step"
        );
        // No new session, and no more descriptors: the directory forgets the host.
        inner.draining.send_replace(true);
        if let Some(task) = &register {
            task.abort();
        }
        let drained = tokio::select! {
            drained = drain(&inner, Duration::from_secs(config.drain_s)) => drained,
            () = stopped(false) => {
                tracing::warn!("a second signal: exiting without waiting for the sessions");
                false
            }
        };
        let last = inner.counters.snapshot();
        if drained {
            tracing::info!(stats = ?last, "every session drained; exiting");
        } else {
            let left = lock(&inner.admission).active;
            tracing::warn!(sessions = left, stats = ?last, "exiting with sessions open");
        }
        write_stats(
            &inner,
            config.stats_file.as_deref(),
            config.metrics_file.as_deref(),
        );
        for task in [Some(accept), register, stats].into_iter().flatten() {
            task.abort();
        }
        inner.endpoint.close();
        Ok(())
    }
}

/// How long the last frames of drained sessions (their reports to their designers) may take
/// to leave before the endpoint closes.
const FLUSH: Duration = Duration::from_secs(2);

/// Waits until every session has ended (each at the end of its step) and their connections
/// closed, for at most `timeout` (and [`FLUSH`]); true if they all ended.
async fn drain(inner: &Inner, timeout: Duration) -> bool {
    let tick = Duration::from_millis(20);
    let until = Instant::now() + timeout;
    while lock(&inner.admission).active > 0 {
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(tick).await;
    }
    // Closing the endpoint now would drop the reports still in flight.
    let flushed = Instant::now() + FLUSH;
    while inner.endpoint.open_connections() > 0 && Instant::now() < flushed {
        tokio::time::sleep(tick).await;
    }
    true
}

async fn register_loop(
    endpoint: Endpoint,
    identity: IdentityKey,
    template: Descriptor,
    directory: DirectoryConfig,
) {
    let mut last_published = 0;
    let mut refused = false;
    loop {
        // A descriptor must be newer than the last one the directory holds.
        let now = unix_now().max(last_published + 1);
        let mut descriptor = template.clone();
        descriptor.published_at = now;
        match sign(&identity, descriptor) {
            Ok(signed) => match directory_client::publish(
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
                Err(directory_client::DirectoryClientError::Answer(AnswerError::Refused(
                    refusal @ (Refusal::BAD_OPERATOR_CERTIFICATE
                    | Refusal::NOT_ADMITTED
                    | Refusal::PROOF_OF_WORK
                    | Refusal::UNREACHABLE),
                ))) => {
                    // Not a passing failure: retrying every second would not change it.
                    refused = true;
                    tracing::warn!(%refusal, "the directory refused this host; retrying at the next heartbeat");
                }
                Err(e) => tracing::warn!(error = %e, "registration failed; retrying"),
            },
            Err(e) => tracing::error!(error = %e, "cannot sign a descriptor"),
        }
        let wait = if last_published == now || std::mem::take(&mut refused) {
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
        .map_err(|e| DaemonError::Keys(KeyError::Identity(e)))
}

/// Writes the counters as JSON to `json` and, with the gauges, in Prometheus' format to
/// `prom` (each atomically: a reader never sees half a file).
fn write_stats(inner: &Inner, json: Option<&std::path::Path>, prom: Option<&std::path::Path>) {
    let stats = inner.counters.snapshot();
    if let Some(path) = json {
        match serde_json::to_vec_pretty(&stats) {
            Ok(bytes) => write_atomically(path, &bytes),
            Err(e) => tracing::error!(error = %e, "cannot serialise the counters (a bug)"),
        }
    }
    if let Some(path) = prom {
        let gauges = {
            let a = lock(&inner.admission);
            metrics::Gauges {
                sessions_open: a.active,
                frame_bytes_held: a.frame_bytes,
                connections_open: inner.endpoint.open_connections(),
                draining: *inner.draining.borrow(),
            }
        };
        write_atomically(path, metrics::prometheus(&stats, &gauges).as_bytes());
    }
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) {
    // node_exporter's textfile collector reads `*.prom` only: the temporary name is not one.
    let tmp = path.with_extension("tmp");
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::warn!(error = %e, path = %path.display(), "cannot write the stats file");
    }
}

async fn accept_loop(inner: Arc<Inner>) {
    while let Some(incoming) = inner.endpoint.accept().await {
        // Full: refused before any handshake work.
        if inner.connections.held() >= inner.limits.max_connections {
            bump(&inner.counters.connections_refused);
            incoming.refuse();
            continue;
        }
        let inner = Arc::clone(&inner);
        tokio::spawn(async move {
            let (connection, peer) = match incoming.handshake().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "handshake failed");
                    return;
                }
            };
            // The handshake proved the peer receives at its address: count it by source.
            let source = inner.limits.source(connection.remote_address().ip());
            let _slot = match inner.connections.take(source) {
                Ok(slot) => slot,
                Err(full) => {
                    bump(&inner.counters.connections_refused);
                    tracing::debug!(%source, ?full, "connection refused");
                    connection.close(transport::CLOSE_BUSY, b"too many connections");
                    return;
                }
            };
            while let Ok((send, recv)) = connection.accept_bi().await {
                tokio::spawn(serve_stream(Arc::clone(&inner), peer, source, send, recv));
            }
        });
    }
}

async fn serve_stream(
    inner: Arc<Inner>,
    peer: Fingerprint,
    source: Source,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let header = transport::read_header(&mut recv, inner.limits.header_timeout()).await;
    let streams = Streams {
        send,
        recv,
        connection: None,
    };
    match header {
        Ok(StreamHeader::Setup { len }) => accept_setup(inner, peer, source, len, streams).await,
        Ok(StreamHeader::Attach { circuit }) => accept_attach(&inner, circuit, streams).await,
        Ok(_) => {
            bump(&inner.counters.bad_streams);
            refuse(streams, StreamRefusal::MALFORMED);
        }
        Err(HeaderError::TimedOut) => {
            bump(&inner.counters.streams_timed_out);
            refuse(streams, StreamRefusal::TIMED_OUT);
        }
        Err(_) => {
            bump(&inner.counters.bad_streams);
            refuse(streams, StreamRefusal::MALFORMED);
        }
    }
}

fn refuse(mut streams: Streams, why: StreamRefusal) {
    tracing::debug!(%why, "stream refused");
    let code = quinn::VarInt::from_u32(why.0);
    let _ = streams.send.reset(code);
    let _ = streams.recv.stop(code);
}

/// Runs `work` on a blocking thread (RSA, and AES over megabytes, stay off the network
/// thread).
async fn blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    tokio::task::spawn_blocking(work).await.ok()
}

/// Takes a setup token of the peer, its source and the host, or none if any is out.
fn rate_allows(a: &mut Admission, peer: Fingerprint, source: Source) -> bool {
    let now = Instant::now();
    // Checked before any is taken: a setup refused by one limit costs the others nothing.
    if !(a.per_peer.check(peer, now) && a.per_source.check(source, now) && a.total.check((), now)) {
        return false;
    }
    a.per_peer.allow(peer, now) && a.per_source.allow(source, now) && a.total.allow((), now)
}

/// Reads an op=0 message of `len` bytes and, if this host takes it, runs its session.
async fn accept_setup(
    inner: Arc<Inner>,
    peer: Fingerprint,
    source: Source,
    len: u32,
    mut streams: Streams,
) {
    let counters = &inner.counters;
    let limits = &inner.limits;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if *inner.draining.borrow() {
        bump(&counters.setups_refused_draining);
        return refuse(streams, StreamRefusal::SHUTTING_DOWN);
    }
    if !(HEAD_LEN..=limits.max_setup_bytes).contains(&len) {
        bump(&counters.setups_refused);
        return refuse(streams, StreamRefusal::OUT_OF_BOUNDS);
    }
    {
        let mut a = lock(&inner.admission);
        // A full host refuses before it takes a token of the peer's rates.
        if !a.room(limits, source, 0) {
            bump(&counters.sessions_refused_full);
            return refuse(streams, StreamRefusal::FULL);
        }
        if !rate_allows(&mut a, peer, source) {
            bump(&counters.setups_rate_limited);
            return refuse(streams, StreamRefusal::RATE_LIMITED);
        }
    }
    let Ok(reading) = inner.setups_reading.take(source) else {
        bump(&counters.setups_busy);
        return refuse(streams, StreamRefusal::BUSY);
    };
    let started = Instant::now();
    // The head: all a stranger's garbage costs before it is refused.
    let head_deadline = started + limits.header_timeout();
    let head_bytes =
        match transport::read_exact_by(&mut streams.recv, HEAD_LEN, head_deadline).await {
            Ok(bytes) => bytes,
            Err(e) => return refuse_read(&inner, streams, e),
        };
    // Audits record the message as it came.
    let audit_head = inner.audit_dir.as_ref().map(|_| head_bytes.clone());
    let key = Arc::clone(&inner.onion_key);
    let head = match blocking(move || setup::open_head(&key, len, &head_bytes)).await {
        Some(Ok(head)) => head,
        Some(Err(e)) => return refuse_setup(&inner, streams, &e),
        None => return refuse(streams, StreamRefusal::OTHER),
    };
    // Its own layer, authenticated and checked before anything it forwards is read.
    let deadline = started + limits.attach_timeout();
    let body = match transport::read_exact_by(&mut streams.recv, head.body_len(), deadline).await {
        Ok(bytes) => bytes,
        Err(e) => return refuse_read(&inner, streams, e),
    };
    let freshness = Freshness {
        now: unix_now(),
        max_lifetime_s: limits.max_session_lifetime_s,
    };
    let (head, body, opened) = match blocking(move || {
        let opened = head.open_body(&body, freshness);
        (head, body, opened)
    })
    .await
    {
        Some(parts) => parts,
        None => return refuse(streams, StreamRefusal::OTHER),
    };
    let setup = match opened {
        Ok(setup) => setup,
        Err(e) => return refuse_setup(&inner, streams, &e),
    };
    if matches!(&setup.prev, Peer::Host { fingerprint, .. } if *fingerprint != peer) {
        bump(&counters.wrong_neighbour);
        return refuse(streams, StreamRefusal::WRONG_NEIGHBOUR);
    }
    let frame_len = setup.frame_len as usize;
    if !lock(&inner.admission).room(limits, source, frame_len) {
        bump(&counters.sessions_refused_full);
        return refuse(streams, StreamRefusal::FULL);
    }
    let rest = match transport::read_exact_by(&mut streams.recv, head.rest_len(), deadline).await {
        Ok(bytes) => bytes,
        Err(e) => return refuse_read(&inner, streams, e),
    };
    let read_in = started.elapsed();
    let onion_in = audit_head.map(|h| [h.as_slice(), &body, &rest].concat());
    let replay_tag = head.replay_tag();
    let forward = match blocking(move || head.forward(rest, &mut SystemEntropy)).await {
        Some(Ok(forward)) => forward,
        Some(Err(e)) => return refuse_setup(&inner, streams, &e),
        None => return refuse(streams, StreamRefusal::OTHER),
    };
    drop(reading);
    let slot = {
        let mut a = lock(&inner.admission);
        if !a.replay.insert(replay_tag, setup.expires_at, unix_now()) {
            bump(&counters.setups_replayed);
            return refuse(streams, StreamRefusal::REPLAYED);
        }
        if !a.room(limits, source, frame_len) {
            bump(&counters.sessions_refused_full);
            return refuse(streams, StreamRefusal::FULL);
        }
        a.active += 1;
        *a.sessions_by_source.entry(source).or_insert(0) += 1;
        a.frame_bytes += frame_len;
        SessionSlot {
            inner: Arc::clone(&inner),
            source,
            frame_len,
        }
    };
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
        audit.setup(&setup, onion_in, &forward);
    }
    link::run(Arc::clone(&inner), slot, setup, forward, streams, audit).await;
}

/// A setup whose bytes did not arrive.
fn refuse_read(inner: &Inner, streams: Streams, e: transport::ReadFailure) {
    let why = match e {
        transport::ReadFailure::TimedOut => {
            bump(&inner.counters.streams_timed_out);
            StreamRefusal::TIMED_OUT
        }
        transport::ReadFailure::Broken => {
            bump(&inner.counters.bad_streams);
            StreamRefusal::MALFORMED
        }
    };
    refuse(streams, why);
}

/// A setup that did not peel (`setups_refused`) or that asks for more than the host grants
/// (`setups_invalid`).
fn refuse_setup(inner: &Inner, streams: Streams, e: &SetupError) {
    let (counter, why) = match e {
        SetupError::Crypto(_) | SetupError::Read(_) => {
            (&inner.counters.setups_refused, StreamRefusal::MALFORMED)
        }
        _ => (&inner.counters.setups_invalid, StreamRefusal::OUT_OF_BOUNDS),
    };
    bump(counter);
    tracing::debug!(error = %e, "setup refused");
    refuse(streams, why);
}

async fn accept_attach(inner: &Inner, circuit: CircuitId, streams: Streams) {
    // Decide under the lock, wait outside it.
    let waiting = {
        let mut slots = lock(&inner.rendezvous);
        match slots.remove(&circuit) {
            Some(Slot::Session(tx)) => {
                if let Err(streams) = tx.send(streams) {
                    refuse(streams, StreamRefusal::NO_SESSION);
                }
                false
            }
            Some(Slot::Designer(old)) => {
                // Two attaches for one circuit: neither is trusted.
                bump(&inner.counters.attach_refused);
                refuse(old, StreamRefusal::NO_SESSION);
                refuse(streams, StreamRefusal::NO_SESSION);
                false
            }
            None if slots.len() >= MAX_WAITING_ATTACHES => {
                bump(&inner.counters.attach_refused);
                refuse(streams, StreamRefusal::BUSY);
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
            refuse(streams, StreamRefusal::NO_SESSION);
        }
    }
}
