//! What mixnn's hosts and designers both use to talk: QUIC between hosts (and with the
//! designer), with each peer's certificate pinned to the fingerprint published in its
//! descriptor, in both directions: a client checks the server's certificate against the
//! fingerprint it expects; a server requires a client certificate and reports its fingerprint,
//! so a host can accept a circuit's frames only from the neighbour named for it at setup.
//!
//! Also the client's half of the directory ([`directory_client`]: publishing a descriptor,
//! fetching the pool) and fingerprints as hex ([`hex_fingerprint`]).

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod delay;
pub mod directory_client;
pub mod hex_fingerprint;
mod socket;

use std::{net::SocketAddr, sync::Arc};

pub use bytes::Bytes;
pub use delay::delay_line;
use mixnn_wire::stream::StreamHeader;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::{
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{
        CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
    },
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};
use sha2::{Digest, Sha256};
pub use socket::MAX_SEND_BYTES;

/// The ALPN protocol name of mixnn's QUIC connections.
pub const ALPN: &[u8] = b"mixnn/1";

/// Streams a peer may open at once on one connection: a link needs one, a directory request
/// one; a few more leave room for a request while a link is open.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 4;
/// Bytes a peer may have in flight to us on one stream, and on one connection: what QUIC
/// buffers for a peer before we read (a frame of the paper's model is 52 KB).
pub const STREAM_RECEIVE_WINDOW: u32 = 1 << 20;
/// See [`STREAM_RECEIVE_WINDOW`].
pub const CONNECTION_RECEIVE_WINDOW: u32 = 2 << 20;
/// Bytes we buffer to send on one connection while the peer does not read.
pub const SEND_WINDOW: u64 = 2 << 20;
/// Connection attempts waiting for their handshake at once.
pub const MAX_INCOMING: usize = 256;
/// A connection that hears nothing for this long is dead (a peer gone, or the network). It is
/// how a killed host is noticed: a dead process sends nothing, not even a close, so its
/// neighbours know only by silence. Short, so that the designer hears of it within 2 s
/// (neighbours report a lost link at once); long enough for several keep-alives to be lost.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1500);
/// Both ends ping this often when they have nothing else to send, so a live session that
/// sends no frame for a while (a designer evaluating, say) keeps its links; a silent session
/// ends by the host's `session_idle_s`. A ping is a few dozen bytes.
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_millis(400);

/// The largest UDP payload a link's packets grow to (MTU discovery probes up to it): a
/// frame of the paper's model (52 KB) then crosses loopback, or any path that carries jumbo
/// datagrams, as one packet instead of 37. It must stay under IPv4's 65,507; on an Ethernet
/// path discovery stops at the path's MTU, so a high bound is safe anywhere (quinn's docs).
pub const MAX_DATAGRAM: u16 = 65_000;
/// The congestion window a connection starts with. quinn never sends a packet larger than the
/// free window, so it must hold a large datagram (the default, 14,720 bytes, keeps frames in
/// 1.2 KB packets until the window has grown). A session has one or two frames in flight
/// per link, so this bounds a burst, not a rate.
pub const INITIAL_WINDOW: u64 = 1 << 20;
/// Ack-eliciting packets a peer may receive before it must acknowledge (ACK frequency): a
/// link's frames are answered by frames the other way, which carry the ACKs, so fewer
/// ACK-only packets wake the sender.
pub const ACK_EVERY: u32 = 16;
/// Bytes of datagrams the kernel queues for us before it drops them: several large
/// datagrams (a 64 KB datagram costs about 128 KB of the buffer). The kernel caps it at
/// `net.core.rmem_max`.
pub const SOCKET_RECEIVE_BUFFER: usize = 4 << 20;

/// The QUIC transport both ends use: streams and windows bounded (a peer's buffered bytes
/// cost us memory), no unidirectional streams, no datagrams; large packets where the path
/// carries them, a large initial window and infrequent ACKs (DESIGN.md section 8).
fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(MAX_STREAMS_PER_CONNECTION.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window(STREAM_RECEIVE_WINDOW.into())
        .receive_window(CONNECTION_RECEIVE_WINDOW.into())
        .send_window(SEND_WINDOW)
        .datagram_receive_buffer_size(None)
        .keep_alive_interval(Some(KEEP_ALIVE));
    // It fits a QUIC idle timeout's 62-bit milliseconds.
    if let Ok(idle) = IDLE_TIMEOUT.try_into() {
        t.max_idle_timeout(Some(idle));
    }
    // The initial MTU stays quinn's safe 1,200 (handshake packets are padded to min_mtu, and
    // a large one panics in quinn-proto 0.11): discovery raises it right after the handshake.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_DATAGRAM);
    t.mtu_discovery_config(Some(mtu));
    let mut cubic = quinn::congestion::CubicConfig::default();
    cubic.initial_window(INITIAL_WINDOW);
    t.congestion_controller_factory(Arc::new(cubic));
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(ACK_EVERY.into());
    t.ack_frequency_config(Some(ack));
    Arc::new(t)
}

/// The application error code of a connection closed because the endpoint is full.
pub const CLOSE_BUSY: quinn::VarInt = quinn::VarInt::from_u32(2);

/// Bytes a read grows its buffer by at most at a time, so that a peer that announces a
/// length and sends less makes us hold only what it sent.
const READ_CHUNK: usize = 1 << 20;

/// Why a stream's header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// It did not arrive within the timeout.
    #[error("no header in time")]
    TimedOut,
    /// The stream ended or broke first.
    #[error("the stream ended before its header")]
    Closed,
    /// It does not parse.
    #[error(transparent)]
    Malformed(#[from] mixnn_wire::reader::ReadError),
}

/// Reads the header that opens a stream ([`StreamHeader`]), within `timeout`.
pub async fn read_header(
    recv: &mut quinn::RecvStream,
    timeout: std::time::Duration,
) -> Result<StreamHeader, HeaderError> {
    let read = async {
        let mut bytes = [0u8; StreamHeader::MAX_LEN];
        recv.read_exact(&mut bytes[..1])
            .await
            .map_err(|_| HeaderError::Closed)?;
        let len = StreamHeader::len_for(bytes[0]).ok_or(
            mixnn_wire::reader::ReadError::Malformed("unknown stream kind"),
        )?;
        recv.read_exact(&mut bytes[1..len])
            .await
            .map_err(|_| HeaderError::Closed)?;
        Ok(StreamHeader::decode(&bytes[..len])?)
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| HeaderError::TimedOut)?
}

/// Why [`read_exact_by`] returned early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadFailure {
    /// The deadline passed first.
    #[error("timed out")]
    TimedOut,
    /// The stream ended or broke first.
    #[error("the stream ended early")]
    Broken,
}

/// Reads exactly `n` bytes by `deadline`, holding no more memory than has arrived (a peer
/// that announces megabytes and sends nothing costs nothing).
pub async fn read_exact_by(
    recv: &mut quinn::RecvStream,
    n: usize,
    deadline: std::time::Instant,
) -> Result<Vec<u8>, ReadFailure> {
    let mut out: Vec<u8> = Vec::with_capacity(n.min(READ_CHUNK));
    while out.len() < n {
        let chunk = tokio::time::timeout_at(
            deadline.into(),
            recv.read_chunk((n - out.len()).min(READ_CHUNK), true),
        )
        .await
        .map_err(|_| ReadFailure::TimedOut)?;
        let Ok(Some(chunk)) = chunk else {
            return Err(ReadFailure::Broken);
        };
        let need = out.len() + chunk.bytes.len();
        if need > out.capacity() {
            // Doubling, but never past `n`.
            let grown = need.max(out.capacity() * 2).min(n);
            out.reserve_exact(grown - out.len());
        }
        out.extend_from_slice(&chunk.bytes);
    }
    Ok(out)
}

/// Reads the next frame of exactly `len` bytes from a link's stream. A frame that arrived
/// in one piece (one datagram: a training frame wherever the path's MTU holds it) is handed
/// over as the stream's own buffer, neither copied nor zeroed first; one that came in pieces
/// is gathered once. `FinishedEarly(0)` is a stream that ended between frames.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    len: usize,
) -> Result<Bytes, quinn::ReadExactError> {
    let mut got = 0;
    let mut frame: Option<Vec<u8>> = None;
    while got < len {
        let chunk = match recv.read_chunk(len - got, true).await {
            Ok(Some(chunk)) => chunk.bytes,
            Ok(None) => return Err(quinn::ReadExactError::FinishedEarly(got)),
            Err(e) => return Err(quinn::ReadExactError::ReadError(e)),
        };
        if chunk.len() == len {
            return Ok(chunk);
        }
        got += chunk.len();
        frame
            .get_or_insert_with(|| Vec::with_capacity(len))
            .extend_from_slice(&chunk);
    }
    Ok(frame.map(Bytes::from).unwrap_or_default())
}

/// SHA-256 of a certificate (DER): how descriptors name a host's certificate.
pub type Fingerprint = [u8; 32];

/// Why a QUIC endpoint or connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A certificate could not be made.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// TLS could not be configured (a bug, or an unusable key).
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The TLS configuration does not suit QUIC (a bug).
    #[error("tls for quic: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The socket could not be bound or read.
    #[error("endpoint: {0}")]
    Endpoint(#[from] std::io::Error),
    /// The connection could not be started (an unusable address, say).
    #[error("connecting: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed: refused, timed out, or a peer whose certificate is not the
    /// pinned one.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// A client presented no certificate.
    #[error("the client presented no certificate")]
    NoClientCertificate,
}

/// The fingerprint of a certificate.
pub fn fingerprint(cert: &[u8]) -> Fingerprint {
    Sha256::digest(cert).into()
}

/// A QUIC identity: a self-signed certificate and its key (ECDSA P-256).
#[derive(Debug)]
pub struct TlsIdentity {
    /// The certificate, DER.
    pub cert: CertificateDer<'static>,
    /// Its private key, PKCS#8 DER.
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        TlsIdentity {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl TlsIdentity {
    /// A fresh self-signed identity.
    pub fn generate() -> Result<Self, TransportError> {
        let certified = rcgen::generate_simple_self_signed(vec!["mixnn".to_owned()])?;
        Ok(TlsIdentity {
            cert: certified.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()),
        })
    }

    /// The certificate's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        fingerprint(&self.cert)
    }
}

/// A UDP socket bound to `addr`, with a receive buffer that holds several large datagrams
/// (best effort: the kernel may cap it, and the default still works, only with more losses).
fn bind_socket(addr: SocketAddr) -> Result<std::net::UdpSocket, TransportError> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    if let Err(e) = state.set_recv_buffer_size((&socket).into(), SOCKET_RECEIVE_BUFFER) {
        tracing::debug!(error = %e, "cannot enlarge the UDP receive buffer");
    }
    Ok(socket)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Accepts exactly one server certificate: the pinned one.
#[derive(Debug)]
struct PinnedServer {
    expected: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Requires a client certificate (proof of its key by the handshake signature); which
/// fingerprints may send what is decided per circuit, above TLS.
#[derive(Debug)]
struct AnyClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A QUIC endpoint that both accepts and opens pinned connections.
#[derive(Debug, Clone)]
pub struct Endpoint {
    inner: quinn::Endpoint,
    identity: Arc<TlsIdentity>,
}

impl Endpoint {
    /// Binds `addr` with `identity`. Must be called inside a tokio runtime.
    pub fn bind(addr: SocketAddr, identity: TlsIdentity) -> Result<Self, TransportError> {
        let provider = provider();
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(AnyClientCert {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_single_cert(
                vec![identity.cert.clone()],
                PrivateKeyDer::Pkcs8(identity.key.clone_key()),
            )?;
        let mut server = server;
        server.alpn_protocols = vec![ALPN.to_vec()];
        let server = QuicServerConfig::try_from(server)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(server));
        config
            .transport_config(transport_config())
            .max_incoming(MAX_INCOMING)
            // No 0-RTT: nothing but the first packet needs buffering before a handshake.
            .incoming_buffer_size(64 << 10)
            .incoming_buffer_size_total(4 << 20);
        let mut endpoint = quinn::EndpointConfig::default();
        // What we accept, told to peers (their discovery stops at it); a bug if out of range.
        endpoint
            .max_udp_payload_size(MAX_DATAGRAM)
            .map_err(|_| TransportError::Endpoint(std::io::Error::other("max datagram size")))?;
        let inner = quinn::Endpoint::new_with_abstract_socket(
            endpoint,
            Some(config),
            socket::BoundedGso::wrap(bind_socket(addr)?, MAX_DATAGRAM)?,
            Arc::new(quinn::TokioRuntime),
        )?;
        Ok(Endpoint {
            inner,
            identity: Arc::new(identity),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.inner.local_addr().map_err(TransportError::Endpoint)
    }

    /// This endpoint's certificate fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.identity.fingerprint()
    }

    /// Connects to `addr`, accepting only the certificate with fingerprint `expected`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: Fingerprint,
    ) -> Result<quinn::Connection, TransportError> {
        let provider = provider();
        let mut client = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServer {
                expected,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_client_auth_cert(
                vec![self.identity.cert.clone()],
                PrivateKeyDer::Pkcs8(self.identity.key.clone_key()),
            )?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        let client = QuicClientConfig::try_from(client)?;
        let mut config = quinn::ClientConfig::new(Arc::new(client));
        config.transport_config(transport_config());
        let connecting = self.inner.connect_with(config, addr, "mixnn")?;
        connecting.await.map_err(TransportError::Connection)
    }

    /// Waits for the next incoming connection attempt; `None` once the endpoint is closed.
    /// Complete each attempt's handshake in its own task, so that one slow or failed peer
    /// never stalls the accept loop.
    pub async fn accept(&self) -> Option<Incoming> {
        self.inner.accept().await.map(Incoming)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.inner.open_connections()
    }

    /// Closes every connection.
    pub fn close(&self) {
        self.inner.close(0u32.into(), b"closing");
    }
}

/// An incoming connection attempt.
#[derive(Debug)]
pub struct Incoming(quinn::Incoming);

impl Incoming {
    /// The peer's address (not yet validated by a handshake).
    pub fn remote_address(&self) -> SocketAddr {
        self.0.remote_address()
    }

    /// Refuses the attempt at once.
    pub fn refuse(self) {
        self.0.refuse();
    }

    /// Completes the handshake; returns the connection and the fingerprint of the client's
    /// certificate.
    pub async fn handshake(self) -> Result<(quinn::Connection, Fingerprint), TransportError> {
        let connection = self.0.await?;
        let peer = peer_fingerprint(&connection).ok_or(TransportError::NoClientCertificate)?;
        Ok((connection, peer))
    }
}

/// The fingerprint of the certificate the peer presented.
pub fn peer_fingerprint(connection: &quinn::Connection) -> Option<Fingerprint> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast_ref::<Vec<CertificateDer<'static>>>()?;
    certs.first().map(|c| fingerprint(c))
}

// ok: unwrap/expect below are test code only (never built into a binary); a failure is a
// failed test.
#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[tokio::test]
    async fn pinned_connections_both_ways_and_wrong_certificates_refused() {
        let server = Endpoint::bind(loopback(), TlsIdentity::generate().unwrap()).unwrap();
        let client = Endpoint::bind(loopback(), TlsIdentity::generate().unwrap()).unwrap();
        let addr = server.local_addr().unwrap();
        let (server_fp, client_fp) = (server.fingerprint(), client.fingerprint());

        // The server's accept loop: each handshake in its own task; echoes one stream.
        let (peers, mut peers_rx) = tokio::sync::mpsc::unbounded_channel();
        let accept_loop = {
            let server = server.clone();
            tokio::spawn(async move {
                while let Some(incoming) = server.accept().await {
                    let peers = peers.clone();
                    tokio::spawn(async move {
                        let Ok((conn, peer)) = incoming.handshake().await else {
                            return;
                        };
                        let _ = peers.send(peer);
                        if let Ok((mut send, mut recv)) = conn.accept_bi().await {
                            let got = recv.read_to_end(1024).await.unwrap_or_default();
                            let _ = send.write_all(&got).await;
                            let _ = send.finish();
                            let _ = conn.closed().await;
                        }
                    });
                }
            })
        };

        let conn = client.connect(addr, server_fp).await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(b"hello hop").await.unwrap();
        send.finish().unwrap();
        assert_eq!(recv.read_to_end(1024).await.unwrap(), b"hello hop");
        assert_eq!(
            peers_rx.recv().await.unwrap(),
            client_fp,
            "the server learns the client's identity"
        );
        conn.close(0u32.into(), b"done");

        // A client expecting another certificate refuses the server ...
        let err = client.connect(addr, [0; 32]).await.unwrap_err();
        assert!(matches!(err, TransportError::Connection(_)), "{err}");
        // ... and the server goes on accepting.
        let again = client.connect(addr, server_fp).await.unwrap();
        assert_eq!(peers_rx.recv().await.unwrap(), client_fp);
        again.close(0u32.into(), b"done");
        server.close();
        accept_loop.await.unwrap();
    }

    /// A setup message (megabytes) on a fresh connection, once MTU discovery has raised the
    /// MTU: quinn batches its packets, and a batch the kernel refuses is dropped unseen
    /// (`socket`). Before the batches were bounded, more bytes were lost than the message
    /// held, and it took 140-250 ms instead of 10-15 ms on loopback.
    #[tokio::test]
    async fn a_bulk_message_after_mtu_discovery_is_not_lost_in_batches() {
        const LEN: usize = 2_291_393;
        let server = Endpoint::bind(loopback(), TlsIdentity::generate().unwrap()).unwrap();
        let client = Endpoint::bind(loopback(), TlsIdentity::generate().unwrap()).unwrap();
        let (addr, fingerprint) = (server.local_addr().unwrap(), server.fingerprint());
        let reader = tokio::spawn(async move {
            let (conn, _) = server.accept().await.unwrap().handshake().await.unwrap();
            let (_send, mut recv) = conn.accept_bi().await.unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let got = read_exact_by(&mut recv, LEN, deadline).await.ok().unwrap();
            (got, conn)
        });
        let conn = client.connect(addr, fingerprint).await.unwrap();
        let message: Vec<u8> = (0..LEN).map(|i| u8::try_from(i % 251).unwrap()).collect();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        // Discovery first (a few round trips), so that the message goes in large packets.
        let mut mtu_raised = false;
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            if usize::from(conn.stats().path.current_mtu) > MAX_SEND_BYTES / 10 {
                mtu_raised = true;
                break;
            }
        }
        assert!(mtu_raised, "the MTU never grew: {:?}", conn.stats().path);
        send.write_all(&message).await.unwrap();
        let (got, _server_conn) = reader.await.unwrap();
        assert!(got == message, "the message arrived altered");
        let path = conn.stats().path;
        // A full receive buffer may still drop a few (the kernel's default is 208 KB).
        assert!(
            path.lost_bytes < LEN as u64 / 4,
            "lost {} of {LEN} bytes: {path:?}",
            path.lost_bytes
        );
    }
}
