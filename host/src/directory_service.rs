//! The directory over QUIC: the server (`mixnn-host directory`), which answers the two
//! requests of [`mixnn_transport::directory_client`] (publishing a descriptor, fetching the
//! live pool), one bidirectional stream each ([`mixnn_wire::directory`] gives the answers'
//! format).
//!
//! Before it serves a new host (or a host's new address or certificate) it connects to the
//! published address pinning the published certificate: a handshake, closed at once (a host
//! counts nothing for it). It re-checks every host it serves now and then
//! ([`ReachabilityConfig`]) and stops serving those that fail, keeping them in its state,
//! marked. Refusals are counted by reason ([`DirectoryStats`]) and logged at `debug`.

use std::{
    future::Future,
    hash::{BuildHasher, Hasher},
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use mixnn_transport::{
    self as transport, CLOSE_BUSY, Endpoint, Fingerprint, HeaderError, TlsIdentity, TransportError,
    directory_client::REQUEST_TIMEOUT,
};
use mixnn_wire::{
    descriptor::MAX_DESCRIPTOR_LEN,
    directory::{self, POOL_V2, PoolVersion, Refusal},
    family,
    setup::FINGERPRINT_LEN,
    stream::StreamHeader,
};
use serde::Serialize;
use tokio::sync::{Mutex, Semaphore};

pub use crate::directory_config::ReachabilityConfig;
use crate::{
    daemon::{Quota, Source},
    directory::{Directory, DirectoryError, Policy, Probe, Reach},
};

/// Requests the directory answers at once; beyond, it answers "busy".
const MAX_REQUESTS: usize = 64;
/// Connections the directory keeps at once, in all and from one source (a /24 or a /56).
const MAX_CONNECTIONS: (usize, usize) = (1024, 64);
/// What one source is, in bits of its address (IPv4, IPv6).
const SOURCE_PREFIX: (u8, u8) = (24, 56);

/// How often the stats file is rewritten.
const STATS_EVERY: Duration = Duration::from_secs(5);
/// Bytes a pool request may carry after its header (the version it reads).
const MAX_POOL_REQUEST_TAIL: usize = 1;

macro_rules! directory_counters {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        /// Live counters of a directory.
        #[derive(Debug, Default)]
        pub struct DirectoryCounters {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
        }

        /// A snapshot of [`DirectoryCounters`], as written to the stats file.
        #[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub struct DirectoryStats {
            $(pub $name: u64,)*
        }

        impl DirectoryCounters {
            /// The current values.
            pub fn snapshot(&self) -> DirectoryStats {
                DirectoryStats { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

directory_counters! {
    /// Descriptors taken (heartbeats included).
    published,
    /// Descriptors that do not parse or verify.
    refused_invalid,
    /// Descriptors no newer than the one held (replays).
    refused_stale,
    /// Descriptors published too far in the future.
    refused_from_the_future,
    /// Descriptors of new hosts while the directory is full.
    refused_full,
    /// Descriptors naming an operator whose certificate does not verify.
    refused_operator_certificate,
    /// Hosts on no allow-list.
    refused_not_allowed,
    /// Hosts without a valid invitation.
    refused_invitation,
    /// Hosts without enough proof of work.
    refused_proof_of_work,
    /// Hosts unreachable at their published address and certificate.
    refused_unreachable,
    /// Requests refused as busy.
    refused_busy,
    /// Probes made (at publication and re-checks).
    probes,
    /// Probes that failed.
    probes_failed,
    /// Served hosts that failed a re-check (no longer served).
    hosts_unserved,
    /// Unserved hosts that passed a re-check (served again).
    hosts_restored,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What a directory admits and checks beyond valid signatures.
#[derive(Debug, Clone, Default)]
pub struct DirectoryOptions {
    /// Who is admitted.
    pub policy: Policy,
    /// Probes of published addresses.
    pub reachability: ReachabilityConfig,
    /// Where the counters are written, as JSON.
    pub stats_file: Option<PathBuf>,
}

/// The directory server.
#[derive(Debug)]
pub struct DirectoryServer {
    endpoint: Endpoint,
    state: Arc<Mutex<Served>>,
    path: PathBuf,
    max_age_s: u64,
    requests: Semaphore,
    connections: Quota<Source>,
    counters: Arc<DirectoryCounters>,
    reachability: ReachabilityConfig,
    /// Probes at once: of publications, and of re-checks (apart, so that a long round of
    /// re-checks does not hold up a new host's admission).
    probes: (Semaphore, Semaphore),
    stats_file: Option<PathBuf>,
}

/// A pool answer with the generation and the second it was built for.
type CachedAnswer = (u64, u64, Arc<Vec<u8>>);

/// The directory's state, and the pool answer built from it: one answer shared by every
/// request until the state or the second changes, so a flood of requests costs no copies.
#[derive(Debug)]
struct Served {
    directory: Directory,
    /// Bumped at every change of `directory`.
    generation: u64,
    /// The answers (first and second version), each with the generation and the second it
    /// was built for.
    pool: [Option<CachedAnswer>; 2],
}

impl Served {
    fn pool_answer(&mut self, now: u64, max_age_s: u64, version: PoolVersion) -> Arc<Vec<u8>> {
        let slot = match version {
            PoolVersion::V1 => 0,
            PoolVersion::V2 => 1,
        };
        match &self.pool[slot] {
            Some((generation, at, answer)) if *generation == self.generation && *at == now => {
                Arc::clone(answer)
            }
            _ => {
                let pool = self.directory.live_entries(now, max_age_s);
                let answer = Arc::new(match version {
                    PoolVersion::V1 => directory::encode_pool(pool.into_iter().map(|(d, _)| d)),
                    PoolVersion::V2 => directory::encode_pool_v2(pool.into_iter()),
                });
                self.pool[slot] = Some((self.generation, now, Arc::clone(&answer)));
                answer
            }
        }
    }

    fn save(&mut self, path: &std::path::Path) -> Result<(), Refusal> {
        self.generation += 1;
        self.directory.save(path).map_err(|e| {
            tracing::error!(error = %e, "cannot save the state");
            Refusal::UNAVAILABLE
        })
    }
}

/// Why the directory could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryServerError {
    /// The state file is unreadable.
    #[error(transparent)]
    State(#[from] DirectoryError),
    /// The endpoint could not be bound.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl DirectoryServer {
    /// Loads the state at `path` (re-verifying every descriptor) and binds `listen`. Hosts
    /// not heard from within `max_age_s` seconds leave the served pool (not the state). Open
    /// admission, reachability probes as [`ReachabilityConfig::default`].
    pub fn bind(
        listen: SocketAddr,
        identity: TlsIdentity,
        path: PathBuf,
        max_age_s: u64,
    ) -> Result<Self, DirectoryServerError> {
        Self::bind_with(
            listen,
            identity,
            path,
            max_age_s,
            DirectoryOptions::default(),
        )
    }

    /// [`DirectoryServer::bind`] with an admission policy and reachability settings. Hosts
    /// of the state that the policy no longer admits are forgotten.
    pub fn bind_with(
        listen: SocketAddr,
        identity: TlsIdentity,
        path: PathBuf,
        max_age_s: u64,
        options: DirectoryOptions,
    ) -> Result<Self, DirectoryServerError> {
        let mut state = Directory::load(&path)?;
        let forgotten = state.set_policy(options.policy);
        if !options.reachability.enabled {
            // Without probes, no host stays unserved for a probe of before.
            state.forget_probes();
        }
        tracing::info!(
            hosts = state.len(),
            forgotten,
            path = %path.display(),
            "directory state loaded"
        );
        Ok(DirectoryServer {
            endpoint: Endpoint::bind(listen, identity)?,
            state: Arc::new(Mutex::new(Served {
                directory: state,
                generation: 0,
                pool: [None, None],
            })),
            path,
            max_age_s,
            requests: Semaphore::new(MAX_REQUESTS),
            connections: Quota::new(MAX_CONNECTIONS.0, MAX_CONNECTIONS.1),
            counters: Arc::default(),
            probes: (
                Semaphore::new(options.reachability.concurrency.max(1)),
                Semaphore::new(options.reachability.concurrency.max(1)),
            ),
            reachability: options.reachability,
            stats_file: options.stats_file,
        })
    }

    /// The counters, live (they keep counting while the server serves).
    pub fn counters(&self) -> Arc<DirectoryCounters> {
        Arc::clone(&self.counters)
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.endpoint.local_addr()
    }

    /// The certificate fingerprint hosts and designers pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.endpoint.fingerprint()
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let server = Arc::new(self);
        let accept = {
            let server = Arc::clone(&server);
            tokio::spawn(async move {
                while let Some(incoming) = server.endpoint.accept().await {
                    if server.connections.held() >= MAX_CONNECTIONS.0 {
                        incoming.refuse();
                        continue;
                    }
                    let server = Arc::clone(&server);
                    tokio::spawn(async move {
                        let Ok((connection, _)) = incoming.handshake().await else {
                            return;
                        };
                        let source = Source::of(
                            connection.remote_address().ip(),
                            SOURCE_PREFIX.0,
                            SOURCE_PREFIX.1,
                        );
                        let Ok(_slot) = server.connections.take(source) else {
                            tracing::debug!(%source, "connection refused");
                            connection.close(CLOSE_BUSY, b"too many connections");
                            return;
                        };
                        while let Ok((send, recv)) = connection.accept_bi().await {
                            tokio::spawn(Arc::clone(&server).answer(send, recv));
                        }
                    });
                }
            })
        };
        let recheck = server
            .reachability
            .enabled
            .then(|| tokio::spawn(Arc::clone(&server).recheck_loop()));
        let stats = server.stats_file.clone().map(|path| {
            let counters = Arc::clone(&server.counters);
            tokio::spawn(async move {
                loop {
                    write_stats(&counters, &path);
                    tokio::time::sleep(STATS_EVERY).await;
                }
            })
        });
        shutdown.await;
        for task in [Some(accept), recheck, stats].into_iter().flatten() {
            task.abort();
        }
        if let Some(path) = &server.stats_file {
            write_stats(&server.counters, path);
        }
        tracing::info!(stats = ?server.counters.snapshot(), "directory stopped");
        server.endpoint.close();
    }

    /// Connects to `address` pinning `fingerprint` and closes at once: whether the host
    /// answers there with that certificate.
    async fn probe(
        &self,
        address: &str,
        fingerprint: [u8; FINGERPRINT_LEN],
        recheck: bool,
    ) -> Reach {
        bump(&self.counters.probes);
        let slots = if recheck {
            &self.probes.1
        } else {
            &self.probes.0
        };
        // Literal addresses only: the directory resolves no stranger's names.
        let ok = match (address.parse::<SocketAddr>(), slots.acquire().await) {
            (Ok(addr), Ok(_permit)) => {
                let connect = self.endpoint.connect(addr, fingerprint);
                match tokio::time::timeout(self.reachability.timeout(), connect).await {
                    Ok(Ok(connection)) => {
                        connection.close(0u32.into(), b"probe");
                        true
                    }
                    _ => false,
                }
            }
            _ => false,
        };
        if !ok {
            bump(&self.counters.probes_failed);
        }
        Reach {
            ok,
            at: crate::daemon::unix_now(),
        }
    }

    /// Re-checks every live host now and then, at most `concurrency` at once.
    async fn recheck_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(jittered(self.reachability.interval())).await;
            let targets = {
                let state = self.state.lock().await;
                state
                    .directory
                    .probe_targets(crate::daemon::unix_now(), self.max_age_s)
            };
            let mut probes = tokio::task::JoinSet::new();
            for (identity, address, fingerprint) in targets {
                let server = Arc::clone(&self);
                probes.spawn(async move {
                    let reach = server.probe(&address, fingerprint, true).await;
                    (identity, address, fingerprint, reach)
                });
            }
            // Probes run without the state: publications and pool requests go on meanwhile.
            let mut results = Vec::new();
            while let Some(joined) = probes.join_next().await {
                if let Ok(result) = joined {
                    results.push(result);
                }
            }
            let (probed, mut failed, mut changed) = (results.len(), 0usize, false);
            let mut state = self.state.lock().await;
            for (identity, address, fingerprint, reach) in results {
                failed += usize::from(!reach.ok);
                let flipped =
                    state
                        .directory
                        .record_probe(&identity, &address, &fingerprint, reach);
                changed |= flipped;
                if flipped {
                    bump(if reach.ok {
                        &self.counters.hosts_restored
                    } else {
                        &self.counters.hosts_unserved
                    });
                }
                let first_seen = state.directory.host(&identity).map(|h| h.first_seen);
                tracing::debug!(
                    host = %family::to_hex(&identity),
                    %address,
                    reachable = reach.ok,
                    ?first_seen,
                    "re-checked"
                );
            }
            // Each probe's result is kept in the state, served or not.
            let _ = state.save(&self.path);
            let served = state
                .directory
                .live_pool(crate::daemon::unix_now(), self.max_age_s)
                .len();
            drop(state);
            tracing::info!(probed, failed, served, changed, "hosts re-checked");
        }
    }

    async fn answer(self: Arc<Self>, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let answer = match self.requests.try_acquire() {
            Ok(_permit) => {
                let deadline = Instant::now() + REQUEST_TIMEOUT;
                match self.read_request(&mut recv, deadline).await {
                    Ok(request) => self.handle(request).await,
                    Err(refusal) => Arc::new(directory::encode_refusal(refusal)),
                }
            }
            Err(_) => {
                bump(&self.counters.refused_busy);
                Arc::new(directory::encode_refusal(Refusal::BUSY))
            }
        };
        if send.write_all(&answer).await.is_ok() && send.finish().is_ok() {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, send.stopped()).await;
        }
    }

    async fn read_request(
        &self,
        recv: &mut quinn::RecvStream,
        deadline: Instant,
    ) -> Result<Request, Refusal> {
        let header =
            transport::read_header(recv, deadline.saturating_duration_since(Instant::now())).await;
        match header {
            Ok(StreamHeader::Publish { len }) => {
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                if len > MAX_DESCRIPTOR_LEN {
                    return Err(Refusal::INVALID);
                }
                transport::read_exact_by(recv, len, deadline)
                    .await
                    .map(Request::Publish)
                    .map_err(|_| Refusal::INVALID)
            }
            Ok(StreamHeader::Pool) => {
                // A client that reads the second version says so in one byte; an older one
                // sends none (and an unknown version gets the first).
                let tail = tokio::time::timeout(
                    deadline.saturating_duration_since(Instant::now()),
                    recv.read_to_end(MAX_POOL_REQUEST_TAIL),
                )
                .await;
                match tail {
                    Ok(Ok(tail)) if tail.as_slice() == [POOL_V2] => {
                        Ok(Request::Pool(PoolVersion::V2))
                    }
                    Ok(Ok(_)) => Ok(Request::Pool(PoolVersion::V1)),
                    _ => Err(Refusal::INVALID),
                }
            }
            Ok(_) | Err(HeaderError::Malformed(_)) => Err(Refusal::UNKNOWN_REQUEST),
            Err(_) => Err(Refusal::INVALID),
        }
    }

    async fn handle(&self, request: Request) -> Arc<Vec<u8>> {
        match request {
            Request::Publish(signed) => {
                let result = self.publish(&signed).await;
                if let Err(e) = &result {
                    tracing::debug!(error = %e, "descriptor refused");
                }
                Arc::new(directory::encode_publish_answer(
                    result.map_err(|e| self.refusal(&e)),
                ))
            }
            Request::Pool(version) => {
                let now = crate::daemon::unix_now();
                self.state
                    .lock()
                    .await
                    .pool_answer(now, self.max_age_s, version)
            }
        }
    }

    /// Admits, probes if needed (without holding the state), and stores a descriptor.
    async fn publish(&self, signed: &[u8]) -> Result<(), DirectoryError> {
        let admitted = {
            let state = self.state.lock().await;
            state.directory.admit(signed, crate::daemon::unix_now())?
        };
        let reach = match admitted.probe {
            _ if !self.reachability.enabled => None,
            Probe::No => None,
            Probe::TooSoon => return Err(DirectoryError::Unreachable),
            Probe::Yes => {
                let d = &admitted.descriptor;
                Some(self.probe(&d.address, d.fingerprint, false).await)
            }
        };
        let now = crate::daemon::unix_now();
        let mut state = self.state.lock().await;
        let published = match reach {
            None => state.directory.publish(signed, now),
            Some(reach) => state.directory.publish_reached(signed, now, reach),
        };
        match published {
            Ok(d) => {
                tracing::debug!(address = %d.address, "descriptor published");
                bump(&self.counters.published);
                state
                    .save(&self.path)
                    .map_err(|_| DirectoryError::Unavailable)
            }
            Err(e) => {
                if matches!(e, DirectoryError::Unreachable) {
                    // A known host's failed probe is recorded.
                    let _ = state.save(&self.path);
                }
                Err(e)
            }
        }
    }

    /// The refusal for `e`, counted.
    fn refusal(&self, e: &DirectoryError) -> Refusal {
        let c = &self.counters;
        let (counter, refusal) = match e {
            DirectoryError::Stale { .. } => (&c.refused_stale, Refusal::STALE),
            DirectoryError::FromTheFuture => (&c.refused_from_the_future, Refusal::FROM_THE_FUTURE),
            DirectoryError::Full => (&c.refused_full, Refusal::FULL),
            DirectoryError::Operator(_) => (
                &c.refused_operator_certificate,
                Refusal::BAD_OPERATOR_CERTIFICATE,
            ),
            DirectoryError::NotAllowed => (&c.refused_not_allowed, Refusal::NOT_ADMITTED),
            DirectoryError::Invitation(_) => (&c.refused_invitation, Refusal::NOT_ADMITTED),
            DirectoryError::ProofOfWork(_) => (&c.refused_proof_of_work, Refusal::PROOF_OF_WORK),
            DirectoryError::Unreachable => (&c.refused_unreachable, Refusal::UNREACHABLE),
            DirectoryError::Unavailable | DirectoryError::State { .. } => {
                return Refusal::UNAVAILABLE;
            }
            _ => (&c.refused_invalid, Refusal::INVALID),
        };
        bump(counter);
        refusal
    }
}

/// `base`, give or take 20%, so that re-checks of many directories (or restarts) do not fall
/// into step.
fn jittered(base: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    // A fraction in [0.8, 1.2).
    let fraction = 0.8 + 0.4 * (random >> 11) as f64 / (1u64 << 53) as f64;
    base.mul_f64(fraction)
}

fn write_stats(counters: &DirectoryCounters, path: &std::path::Path) {
    let written = serde_json::to_vec_pretty(&counters.snapshot())
        .map_err(std::io::Error::other)
        .and_then(|json| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, path))
        });
    if let Err(e) = written {
        tracing::warn!(error = %e, path = %path.display(), "cannot write the stats file");
    }
}

/// A request, read.
enum Request {
    Publish(Vec<u8>),
    Pool(PoolVersion),
}
