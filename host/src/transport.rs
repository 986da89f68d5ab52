//! QUIC between hosts (and with the designer), with each peer's certificate pinned to the
//! fingerprint published in its descriptor, in both directions: a client checks the server's
//! certificate against the fingerprint it expects; a server requires a client certificate and
//! reports its fingerprint, so a host can accept a circuit's frames only from the neighbour
//! named for it at setup.

use std::{net::SocketAddr, sync::Arc};

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

/// The ALPN protocol name of mixnn's QUIC connections.
pub const ALPN: &[u8] = b"mixnn/1";

/// The first byte of every QUIC stream says what it carries.
pub mod stream_kind {
    /// An op=0 onion (`u32` length, bytes), then the link's frames both ways.
    pub const SETUP: u8 = 0;
    /// The designer attaching to the last hop: the link's circuit id, then its frames.
    pub const ATTACH: u8 = 1;
    /// A host publishing its signed descriptor to the directory (`u32` length, bytes).
    pub const PUBLISH: u8 = 0x10;
    /// A designer asking the directory for the live pool.
    pub const POOL: u8 = 0x11;
}

/// SHA-256 of a certificate (DER): how descriptors name a host's certificate.
pub type Fingerprint = [u8; 32];

/// Why a QUIC endpoint or connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// TLS or certificate setup failed.
    #[error("tls: {0}")]
    Tls(String),
    /// Binding or configuring the endpoint failed.
    #[error("endpoint: {0}")]
    Endpoint(String),
    /// The connection failed (including a peer whose certificate is not the pinned one).
    #[error("connection: {0}")]
    Connection(String),
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
        let certified = rcgen::generate_simple_self_signed(vec!["mixnn".to_owned()])
            .map_err(|e| TransportError::Tls(e.to_string()))?;
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

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn tls_error(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
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
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_client_cert_verifier(Arc::new(AnyClientCert {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_single_cert(
                vec![identity.cert.clone()],
                PrivateKeyDer::Pkcs8(identity.key.clone_key()),
            )
            .map_err(tls_error)?;
        let mut server = server;
        server.alpn_protocols = vec![ALPN.to_vec()];
        let server = QuicServerConfig::try_from(server).map_err(tls_error)?;
        let config = quinn::ServerConfig::with_crypto(Arc::new(server));
        let inner = quinn::Endpoint::server(config, addr)
            .map_err(|e| TransportError::Endpoint(e.to_string()))?;
        Ok(Endpoint {
            inner,
            identity: Arc::new(identity),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.inner
            .local_addr()
            .map_err(|e| TransportError::Endpoint(e.to_string()))
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
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServer {
                expected,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_client_auth_cert(
                vec![self.identity.cert.clone()],
                PrivateKeyDer::Pkcs8(self.identity.key.clone_key()),
            )
            .map_err(tls_error)?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        let client = QuicClientConfig::try_from(client).map_err(tls_error)?;
        let config = quinn::ClientConfig::new(Arc::new(client));
        let connecting = self
            .inner
            .connect_with(config, addr, "mixnn")
            .map_err(|e| TransportError::Connection(e.to_string()))?;
        connecting
            .await
            .map_err(|e| TransportError::Connection(e.to_string()))
    }

    /// Waits for the next incoming connection attempt; `None` once the endpoint is closed.
    /// Complete each attempt's handshake in its own task, so that one slow or failed peer
    /// never stalls the accept loop.
    pub async fn accept(&self) -> Option<Incoming> {
        self.inner.accept().await.map(Incoming)
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
    /// Completes the handshake; returns the connection and the fingerprint of the client's
    /// certificate.
    pub async fn handshake(self) -> Result<(quinn::Connection, Fingerprint), TransportError> {
        let connection = self
            .0
            .await
            .map_err(|e| TransportError::Connection(e.to_string()))?;
        let peer = peer_fingerprint(&connection).ok_or_else(|| {
            TransportError::Connection("the client presented no certificate".into())
        })?;
        Ok((connection, peer))
    }
}

/// The fingerprint of the certificate the peer presented.
pub fn peer_fingerprint(connection: &quinn::Connection) -> Option<Fingerprint> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast_ref::<Vec<CertificateDer<'static>>>()?;
    certs.first().map(|c| fingerprint(c))
}

// ok: unwrap/expect below are test code only (never built into the host); a failure is a
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
}
