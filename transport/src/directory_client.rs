//! The directory's client: the two requests hosts and designers make of the directory
//! (`mixnn-host directory`), one bidirectional stream each ([`mixnn_wire::directory`] gives
//! the answers' format):
//!
//! - `PUBLISH || u32 len || signed descriptor`: taken, or refused with a code;
//! - `POOL || 2`: the live pool, as signed descriptors, each with when the directory first
//!   admitted its host ([`fetch_pool_entries`]; a directory that predates it answers without).
//!   Designers verify every descriptor themselves; the directory cannot forge one. A client
//!   reads no more than the pool it takes (`max_hosts`).

use std::{net::SocketAddr, time::Duration};

use mixnn_wire::{
    directory::{self, AnswerError, POOL_HEADER_LEN, POOL_V2, REFUSAL_LEN},
    reader::ReadError,
    stream::StreamHeader,
};

use crate::{Endpoint, Fingerprint, TransportError};

/// The most hosts a designer takes from the directory unless told otherwise: what it reads of
/// an answer is sized to this many ([`mixnn_wire::directory::pool_body_max`]).
pub const DEFAULT_MAX_POOL: usize = 10_000;
/// A request's deadline (the directory's, for each request it answers, too).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a request to the directory failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryClientError {
    /// It could not be reached.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The stream broke.
    #[error("directory stream ({step}): {source}")]
    Stream {
        /// What was being done.
        step: &'static str,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// It did not answer in time.
    #[error("the directory did not answer within {0:?}")]
    TimedOut(Duration),
    /// It refused, or its answer is unusable (malformed, more hosts than asked for).
    #[error(transparent)]
    Answer(#[from] AnswerError),
}

fn stream_error(
    step: &'static str,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> DirectoryClientError {
    move |source| DirectoryClientError::Stream { step, source }
}

/// Opens a request stream, sends `request`, and runs `answer` on the stream back.
async fn request<T>(
    endpoint: &Endpoint,
    addr: SocketAddr,
    fingerprint: Fingerprint,
    request: &[u8],
    answer: impl AsyncFnOnce(&mut quinn::RecvStream) -> Result<T, DirectoryClientError>,
) -> Result<T, DirectoryClientError> {
    let exchange = async {
        let connection = endpoint.connect(addr, fingerprint).await?;
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| stream_error("open")(e.into()))?;
        send.write_all(request)
            .await
            .map_err(|e| stream_error("send")(e.into()))?;
        send.finish().map_err(|e| stream_error("send")(e.into()))?;
        let got = answer(&mut recv).await;
        connection.close(0u32.into(), b"done");
        got
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| DirectoryClientError::TimedOut(REQUEST_TIMEOUT))?
}

/// Publishes a signed descriptor (also the host's heartbeat).
pub async fn publish(
    endpoint: &Endpoint,
    addr: SocketAddr,
    fingerprint: Fingerprint,
    signed: &[u8],
) -> Result<(), DirectoryClientError> {
    let len = u32::try_from(signed.len())
        .map_err(|_| AnswerError::Read(ReadError::Malformed("descriptor too large")))?;
    let mut message = StreamHeader::Publish { len }.encode();
    message.extend_from_slice(signed);
    request(endpoint, addr, fingerprint, &message, async |recv| {
        let answer = recv
            .read_to_end(REFUSAL_LEN)
            .await
            .map_err(|e| stream_error("answer")(e.into()))?;
        Ok(directory::decode_publish_answer(&answer)?)
    })
    .await
}

/// A host of the live pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolHost {
    /// Its signed descriptor (unverified: verify it before use).
    pub signed: Vec<u8>,
    /// When the directory first admitted it (Unix seconds); `None` from a directory that
    /// predates it. The directory's word: designers can only trust it as far as the directory.
    pub first_seen: Option<u64>,
}

/// The signed descriptors of the live pool (unverified: verify each before use), if it holds
/// at most `max_hosts` hosts ([`DEFAULT_MAX_POOL`]): the answer is read no further than that.
pub async fn fetch_pool(
    endpoint: &Endpoint,
    addr: SocketAddr,
    fingerprint: Fingerprint,
    max_hosts: usize,
) -> Result<Vec<Vec<u8>>, DirectoryClientError> {
    Ok(fetch_pool_entries(endpoint, addr, fingerprint, max_hosts)
        .await?
        .into_iter()
        .map(|host| host.signed)
        .collect())
}

/// [`fetch_pool`], with when the directory first admitted each host.
pub async fn fetch_pool_entries(
    endpoint: &Endpoint,
    addr: SocketAddr,
    fingerprint: Fingerprint,
    max_hosts: usize,
) -> Result<Vec<PoolHost>, DirectoryClientError> {
    let mut ask = StreamHeader::Pool.encode();
    ask.push(POOL_V2);
    request(endpoint, addr, fingerprint, &ask, async |recv| {
        let read = stream_error("answer");
        let mut head = [0u8; POOL_HEADER_LEN];
        recv.read_exact(&mut head[..1])
            .await
            .map_err(|e| stream_error("answer")(e.into()))?;
        let head_len = if head[0] == 1 {
            REFUSAL_LEN
        } else {
            POOL_HEADER_LEN
        };
        recv.read_exact(&mut head[1..head_len])
            .await
            .map_err(|e| stream_error("answer")(e.into()))?;
        let (version, count) =
            directory::decode_pool_header_versioned(&head[..head_len], max_hosts)?;
        let body = recv
            .read_to_end(directory::pool_body_max_versioned(version, count))
            .await
            .map_err(|e| read(e.into()))?;
        Ok(directory::decode_pool_body_versioned(&body, version, count)
            .map_err(AnswerError::Read)?
            .into_iter()
            .map(|entry| PoolHost {
                signed: entry.signed.to_vec(),
                first_seen: entry.first_seen,
            })
            .collect())
    })
    .await
}
