//! The directory over QUIC: the server (`mixnn-host directory`), which answers the two
//! requests of [`mixnn_transport::directory_client`] (publishing a descriptor, fetching the
//! live pool), one bidirectional stream each ([`mixnn_wire::directory`] gives the answers'
//! format).

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Instant};

use mixnn_transport::{
    self as transport, CLOSE_BUSY, Endpoint, Fingerprint, HeaderError, TlsIdentity, TransportError,
    directory_client::REQUEST_TIMEOUT,
};
use mixnn_wire::{
    descriptor::MAX_DESCRIPTOR_LEN,
    directory::{self, Refusal},
    stream::StreamHeader,
};
use tokio::sync::{Mutex, Semaphore};

use crate::{
    daemon::{Quota, Source},
    directory::{Directory, DirectoryError},
};

/// Requests the directory answers at once; beyond, it answers "busy".
const MAX_REQUESTS: usize = 64;
/// Connections the directory keeps at once, in all and from one source (a /24 or a /56).
const MAX_CONNECTIONS: (usize, usize) = (1024, 64);
/// What one source is, in bits of its address (IPv4, IPv6).
const SOURCE_PREFIX: (u8, u8) = (24, 56);

/// The directory server.
#[derive(Debug)]
pub struct DirectoryServer {
    endpoint: Endpoint,
    state: Arc<Mutex<Served>>,
    path: PathBuf,
    max_age_s: u64,
    requests: Semaphore,
    connections: Quota<Source>,
}

/// The directory's state, and the pool answer built from it: one answer shared by every
/// request until the state or the second changes, so a flood of requests costs no copies.
#[derive(Debug)]
struct Served {
    directory: Directory,
    /// Bumped at every change of `directory`.
    generation: u64,
    /// The answer, with the generation and the second it was built for.
    pool: Option<(u64, u64, Arc<Vec<u8>>)>,
}

impl Served {
    fn pool_answer(&mut self, now: u64, max_age_s: u64) -> Arc<Vec<u8>> {
        match &self.pool {
            Some((generation, at, answer)) if *generation == self.generation && *at == now => {
                Arc::clone(answer)
            }
            _ => {
                let pool = self.directory.live_pool(now, max_age_s);
                let answer = Arc::new(directory::encode_pool(pool.into_iter()));
                self.pool = Some((self.generation, now, Arc::clone(&answer)));
                answer
            }
        }
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
    /// not heard from within `max_age_s` seconds leave the served pool (not the state).
    pub fn bind(
        listen: SocketAddr,
        identity: TlsIdentity,
        path: PathBuf,
        max_age_s: u64,
    ) -> Result<Self, DirectoryServerError> {
        let state = Directory::load(&path)?;
        tracing::info!(hosts = state.len(), path = %path.display(), "directory state loaded");
        Ok(DirectoryServer {
            endpoint: Endpoint::bind(listen, identity)?,
            state: Arc::new(Mutex::new(Served {
                directory: state,
                generation: 0,
                pool: None,
            })),
            path,
            max_age_s,
            requests: Semaphore::new(MAX_REQUESTS),
            connections: Quota::new(MAX_CONNECTIONS.0, MAX_CONNECTIONS.1),
        })
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
        shutdown.await;
        accept.abort();
        server.endpoint.close();
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
            Err(_) => Arc::new(directory::encode_refusal(Refusal::BUSY)),
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
            Ok(StreamHeader::Pool) => Ok(Request::Pool),
            Ok(_) | Err(HeaderError::Malformed(_)) => Err(Refusal::UNKNOWN_REQUEST),
            Err(_) => Err(Refusal::INVALID),
        }
    }

    async fn handle(&self, request: Request) -> Arc<Vec<u8>> {
        let now = crate::daemon::unix_now();
        let mut state = self.state.lock().await;
        match request {
            Request::Publish(signed) => {
                let result = match state.directory.publish(&signed, now) {
                    Ok(d) => {
                        tracing::debug!(address = %d.address, "descriptor published");
                        state.generation += 1;
                        state.directory.save(&self.path).map_err(|e| {
                            tracing::error!(error = %e, "cannot save the state");
                            Refusal::UNAVAILABLE
                        })
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "descriptor refused");
                        Err(match e {
                            DirectoryError::Stale { .. } => Refusal::STALE,
                            DirectoryError::FromTheFuture => Refusal::FROM_THE_FUTURE,
                            DirectoryError::Full => Refusal::FULL,
                            _ => Refusal::INVALID,
                        })
                    }
                };
                Arc::new(directory::encode_publish_answer(result))
            }
            Request::Pool => state.pool_answer(now, self.max_age_s),
        }
    }
}

/// A request, read.
enum Request {
    Publish(Vec<u8>),
    Pool,
}
