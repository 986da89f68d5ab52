//! The directory's client: the two requests hosts and designers make of the directory
//! (`mixnn-host directory`), one bidirectional stream each ([`mixnn_wire::directory`] gives
//! the answers' format):
//!
//! - `PUBLISH || u32 len || signed descriptor`: taken, or refused with a code;
//! - `POOL`: the live pool, as signed descriptors. Designers verify every descriptor
//!   themselves; the directory cannot forge one. A client reads no more than the pool it
//!   takes ([`fetch_pool`]'s `max_hosts`).

use std::{net::SocketAddr, time::Duration};

use mixnn_wire::{
    directory::{self, AnswerError, POOL_HEADER_LEN, REFUSAL_LEN},
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

/// The signed descriptors of the live pool (unverified: verify each before use), if it holds
/// at most `max_hosts` hosts ([`DEFAULT_MAX_POOL`]): the answer is read no further than that.
pub async fn fetch_pool(
    endpoint: &Endpoint,
    addr: SocketAddr,
    fingerprint: Fingerprint,
    max_hosts: usize,
) -> Result<Vec<Vec<u8>>, DirectoryClientError> {
    let ask = StreamHeader::Pool.encode();
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
        let count = directory::decode_pool_header(&head[..head_len], max_hosts)?;
        let body = recv
            .read_to_end(directory::pool_body_max(count))
            .await
            .map_err(|e| read(e.into()))?;
        Ok(directory::decode_pool_body(&body, count)
            .map_err(AnswerError::Read)?
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect())
    })
    .await
}
