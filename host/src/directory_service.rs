//! The directory over QUIC: the server (`mixnn-host directory`) and the two requests hosts
//! and designers make of it. One bidirectional stream per request:
//!
//! - `PUBLISH || u32 len || signed descriptor` → `0` (taken) or `1 || u32 len || reason`;
//! - `POOL` → `0 || u32 count || (u32 len || signed descriptor)*`: the live pool. Designers
//!   verify every descriptor themselves; the directory cannot forge one.

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use mixnn_wire::{
    descriptor::MAX_DESCRIPTOR_LEN,
    reader::{Reader, put_lp32},
};
use tokio::sync::Mutex;

use crate::{
    directory::{Directory, DirectoryError, MAX_HOSTS},
    transport::{Endpoint, Fingerprint, TlsIdentity, TransportError, stream_kind},
};

/// Why a request to the directory failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryClientError {
    /// It could not be reached.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The stream broke.
    #[error("directory stream: {0}")]
    Stream(String),
    /// It refused the descriptor.
    #[error("the directory refused the descriptor: {0}")]
    Refused(String),
    /// Its answer does not parse.
    #[error("malformed answer from the directory")]
    Malformed,
}

fn stream_error(e: impl std::fmt::Display) -> DirectoryClientError {
    DirectoryClientError::Stream(e.to_string())
}

/// Largest answer a client reads: a full pool.
const MAX_ANSWER: usize = MAX_HOSTS * (MAX_DESCRIPTOR_LEN + 4) + 5;
/// A request's deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

async fn request(
    endpoint: &Endpoint,
    addr: SocketAddr,
    fingerprint: Fingerprint,
    message: &[u8],
) -> Result<Vec<u8>, DirectoryClientError> {
    let exchange = async {
        let connection = endpoint.connect(addr, fingerprint).await?;
        let (mut send, mut recv) = connection.open_bi().await.map_err(stream_error)?;
        send.write_all(message).await.map_err(stream_error)?;
        send.finish().map_err(stream_error)?;
        let answer = recv.read_to_end(MAX_ANSWER).await.map_err(stream_error)?;
        connection.close(0u32.into(), b"done");
        Ok(answer)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| DirectoryClientError::Stream("timed out".into()))?
}

/// Publishes a signed descriptor (also the host's heartbeat).
pub async fn publish(
    endpoint: &Endpoint,
    addr: SocketAddr,
    fingerprint: Fingerprint,
    signed: &[u8],
) -> Result<(), DirectoryClientError> {
    let mut message = vec![stream_kind::PUBLISH];
    put_lp32(&mut message, signed);
    let answer = request(endpoint, addr, fingerprint, &message).await?;
    let mut r = Reader::new(&answer);
    match r.take_u8() {
        Ok(0) => Ok(()),
        Ok(1) => Err(DirectoryClientError::Refused(
            String::from_utf8_lossy(r.take_lp32(4096).unwrap_or_default()).into_owned(),
        )),
        _ => Err(DirectoryClientError::Malformed),
    }
}

/// The signed descriptors of the live pool (unverified: verify each before use).
pub async fn fetch_pool(
    endpoint: &Endpoint,
    addr: SocketAddr,
    fingerprint: Fingerprint,
) -> Result<Vec<Vec<u8>>, DirectoryClientError> {
    let answer = request(endpoint, addr, fingerprint, &[stream_kind::POOL]).await?;
    let mut r = Reader::new(&answer);
    let malformed = |_| DirectoryClientError::Malformed;
    if r.take_u8().map_err(malformed)? != 0 {
        return Err(DirectoryClientError::Malformed);
    }
    let count = r.take_u32().map_err(malformed)? as usize;
    if count > MAX_HOSTS {
        return Err(DirectoryClientError::Malformed);
    }
    let pool = (0..count)
        .map(|_| r.take_lp32(MAX_DESCRIPTOR_LEN).map(<[u8]>::to_vec))
        .collect::<Result<Vec<_>, _>>()
        .map_err(malformed)?;
    r.should_be_exhausted().map_err(malformed)?;
    Ok(pool)
}

/// The directory server.
#[derive(Debug)]
pub struct DirectoryServer {
    endpoint: Endpoint,
    state: Arc<Mutex<Directory>>,
    path: PathBuf,
    max_age_s: u64,
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
            state: Arc::new(Mutex::new(state)),
            path,
            max_age_s,
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
                    let server = Arc::clone(&server);
                    tokio::spawn(async move {
                        let Ok((connection, _)) = incoming.handshake().await else {
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
        let Ok(Ok(request)) =
            tokio::time::timeout(REQUEST_TIMEOUT, recv.read_to_end(MAX_DESCRIPTOR_LEN + 5)).await
        else {
            return;
        };
        let answer = self.handle(&request).await;
        if send.write_all(&answer).await.is_ok() && send.finish().is_ok() {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, send.stopped()).await;
        }
    }

    async fn handle(&self, request: &[u8]) -> Vec<u8> {
        let now = crate::daemon::unix_now();
        let mut r = Reader::new(request);
        match r.take_u8() {
            Ok(stream_kind::PUBLISH) => {
                let result = match r.take_lp32(MAX_DESCRIPTOR_LEN) {
                    Ok(signed) => {
                        let mut state = self.state.lock().await;
                        match state.publish(signed, now) {
                            Ok(d) => {
                                tracing::debug!(address = %d.address, "descriptor published");
                                state.save(&self.path).map_err(|e| {
                                    tracing::error!(error = %e, "cannot save the state");
                                    "the directory cannot save its state".to_owned()
                                })
                            }
                            Err(e) => {
                                tracing::info!(error = %e, "descriptor refused");
                                Err(e.to_string())
                            }
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                match result {
                    Ok(()) => vec![0],
                    Err(reason) => {
                        let mut out = vec![1];
                        put_lp32(&mut out, reason.as_bytes());
                        out
                    }
                }
            }
            Ok(stream_kind::POOL) => {
                let state = self.state.lock().await;
                let pool = state.live_pool(now, self.max_age_s);
                let mut out = vec![0];
                out.extend(u32::try_from(pool.len()).unwrap_or(u32::MAX).to_be_bytes());
                for signed in pool {
                    put_lp32(&mut out, signed);
                }
                out
            }
            _ => {
                let mut out = vec![1];
                put_lp32(&mut out, b"unknown request");
                out
            }
        }
    }
}
