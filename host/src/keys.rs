//! A host's long-term keys: its Ed25519 identity key (signs its descriptor), its RSA-2048
//! onion key (for the setup onions) and its QUIC certificate (pinned by fingerprint in its
//! descriptor), as standard PEM files: PKCS#8 for private keys, SPKI for the public onion key. Private key files are created readable only by
//! their owner, and never overwritten.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use mixnn_transport::{TlsIdentity, TransportError};
use mixnn_wire::{
    crypto::{CryptoError, OnionPrivateKey, OnionPublicKey},
    descriptor::{DescriptorError, IdentityKey},
};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

/// The identity key (PKCS#8 PEM, owner-only).
pub const IDENTITY_KEY_FILE: &str = "identity-key.pem";
/// The onion key (PKCS#8 PEM, owner-only).
pub const ONION_KEY_FILE: &str = "onion-key.pem";
/// The onion public key (SPKI PEM), for the host's descriptor.
pub const ONION_PUBLIC_FILE: &str = "onion-key.pub.pem";
/// The QUIC certificate (PEM).
pub const TLS_CERT_FILE: &str = "tls-cert.pem";
/// The QUIC private key (PKCS#8 PEM, owner-only).
pub const TLS_KEY_FILE: &str = "tls-key.pem";
/// An operator's Ed25519 key (PKCS#8 PEM, owner-only), which certifies its hosts
/// ([`mixnn_wire::family::certify`]); kept apart from any host's keys.
pub const OPERATOR_KEY_FILE: &str = "operator-key.pem";

/// Writes a new operator key into `dir` (created if needed); never overwrites one.
pub fn generate_operator_key(dir: &Path) -> Result<IdentityKey, KeyError> {
    fs::create_dir_all(dir).map_err(|source| KeyError::Io {
        path: dir.into(),
        source,
    })?;
    let key = IdentityKey::generate()?;
    write_pem(
        &dir.join(OPERATOR_KEY_FILE),
        "PRIVATE KEY",
        key.to_pkcs8_der(),
        true,
    )?;
    Ok(key)
}

/// Reads the operator key that [`generate_operator_key`] wrote.
pub fn load_operator_key(dir: &Path) -> Result<IdentityKey, KeyError> {
    let path = dir.join(OPERATOR_KEY_FILE);
    IdentityKey::from_pkcs8(&read_pem(&path, "PRIVATE KEY")?).map_err(|e| KeyError::Invalid {
        path,
        source: e.into(),
    })
}

/// Why keys could not be created, saved or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A file could not be read or written (the cause follows in the error's source).
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: InvalidKey,
    },
    /// An identity key could not be made or used.
    #[error("identity key: {0}")]
    Identity(#[from] DescriptorError),
    /// An onion key could not be made or used.
    #[error("onion key: {0}")]
    Onion(#[from] CryptoError),
    /// A QUIC certificate could not be made.
    #[error("certificate: {0}")]
    Tls(#[from] TransportError),
}

/// What is wrong with a key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidKey {
    /// It is not PEM.
    #[error(transparent)]
    Pem(#[from] pem::PemError),
    /// It is PEM of another kind.
    #[error("expected {expected}, found {found}")]
    Tag {
        /// The kind expected.
        expected: &'static str,
        /// The kind found.
        found: String,
    },
    /// It is not an Ed25519 PKCS#8 key.
    #[error(transparent)]
    Identity(#[from] DescriptorError),
    /// It is not an RSA-2048 PKCS#8 key.
    #[error(transparent)]
    Onion(#[from] CryptoError),
}

/// A host's keys.
#[derive(Debug)]
pub struct HostKeys {
    /// The identity key.
    pub identity: IdentityKey,
    /// The onion key.
    pub onion: OnionPrivateKey,
    /// The QUIC identity.
    pub tls: TlsIdentity,
}

impl HostKeys {
    /// New keys.
    pub fn generate() -> Result<Self, KeyError> {
        Ok(HostKeys {
            identity: IdentityKey::generate()?,
            onion: OnionPrivateKey::generate()?,
            tls: TlsIdentity::generate()?,
        })
    }

    /// The public onion key.
    pub fn onion_public(&self) -> Result<OnionPublicKey, KeyError> {
        Ok(self.onion.public_key()?)
    }

    /// Writes the five files into `dir` (created if needed); refuses to overwrite any.
    pub fn save(&self, dir: &Path) -> Result<(), KeyError> {
        fs::create_dir_all(dir).map_err(|source| KeyError::Io {
            path: dir.into(),
            source,
        })?;
        let public = self.onion_public()?;
        write_pem(
            &dir.join(IDENTITY_KEY_FILE),
            "PRIVATE KEY",
            self.identity.to_pkcs8_der(),
            true,
        )?;
        write_pem(
            &dir.join(ONION_KEY_FILE),
            "PRIVATE KEY",
            self.onion.to_pkcs8_der(),
            true,
        )?;
        write_pem(
            &dir.join(ONION_PUBLIC_FILE),
            "PUBLIC KEY",
            public.der(),
            false,
        )?;
        write_pem(
            &dir.join(TLS_CERT_FILE),
            "CERTIFICATE",
            &self.tls.cert,
            false,
        )?;
        write_pem(
            &dir.join(TLS_KEY_FILE),
            "PRIVATE KEY",
            self.tls.key.secret_pkcs8_der(),
            true,
        )
    }

    /// Reads the keys that [`HostKeys::save`] wrote.
    pub fn load(dir: &Path) -> Result<Self, KeyError> {
        let identity_path = dir.join(IDENTITY_KEY_FILE);
        let identity =
            IdentityKey::from_pkcs8(&read_pem(&identity_path, "PRIVATE KEY")?).map_err(|e| {
                KeyError::Invalid {
                    path: identity_path,
                    source: e.into(),
                }
            })?;
        let onion_path = dir.join(ONION_KEY_FILE);
        let onion =
            OnionPrivateKey::from_pkcs8(&read_pem(&onion_path, "PRIVATE KEY")?).map_err(|e| {
                KeyError::Invalid {
                    path: onion_path,
                    source: e.into(),
                }
            })?;
        let cert = CertificateDer::from(read_pem(&dir.join(TLS_CERT_FILE), "CERTIFICATE")?);
        let key = PrivatePkcs8KeyDer::from(read_pem(&dir.join(TLS_KEY_FILE), "PRIVATE KEY")?);
        Ok(HostKeys {
            identity,
            onion,
            tls: TlsIdentity { cert, key },
        })
    }
}

fn write_pem(path: &Path, tag: &str, der: &[u8], secret: bool) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.into(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(pem::encode(&pem::Pem::new(tag, der)).as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)
}

fn read_pem(path: &Path, tag: &'static str) -> Result<Vec<u8>, KeyError> {
    let text = fs::read(path).map_err(|source| KeyError::Io {
        path: path.into(),
        source,
    })?;
    let parsed = pem::parse(text).map_err(|e| KeyError::Invalid {
        path: path.into(),
        source: e.into(),
    })?;
    if parsed.tag() != tag {
        return Err(KeyError::Invalid {
            path: path.into(),
            source: InvalidKey::Tag {
                expected: tag,
                found: parsed.tag().to_owned(),
            },
        });
    }
    Ok(parsed.into_contents())
}

// ok: unwrap/expect below are test code only (never built into the host); a failure is a
// failed test.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_owner_only_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let keys = HostKeys::generate().unwrap();
        keys.save(dir.path()).unwrap();
        let loaded = HostKeys::load(dir.path()).unwrap();
        assert_eq!(loaded.tls.fingerprint(), keys.tls.fingerprint());
        assert_eq!(
            loaded.identity.public().unwrap(),
            keys.identity.public().unwrap()
        );
        assert_eq!(loaded.onion.to_pkcs8_der(), keys.onion.to_pkcs8_der());
        // What is wrapped to the saved public key opens with the loaded private key.
        let public = OnionPublicKey::from_der(
            &read_pem(&dir.path().join(ONION_PUBLIC_FILE), "PUBLIC KEY").unwrap(),
        )
        .unwrap();
        let (k, wrapped) = public.wrap(&mut mixnn_wire::crypto::SystemEntropy).unwrap();
        assert_eq!(loaded.onion.unwrap_key(&wrapped).unwrap(), k);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for file in [IDENTITY_KEY_FILE, ONION_KEY_FILE, TLS_KEY_FILE] {
                let mode = fs::metadata(dir.path().join(file))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{file}");
            }
        }
        assert!(
            matches!(keys.save(dir.path()), Err(KeyError::Io { .. })),
            "overwrote existing keys"
        );
        fs::write(dir.path().join(TLS_CERT_FILE), "garbage").unwrap();
        assert!(matches!(
            HostKeys::load(dir.path()),
            Err(KeyError::Invalid { .. })
        ));
    }

    #[test]
    fn operator_keys_round_trip_and_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate_operator_key(dir.path()).unwrap();
        let loaded = load_operator_key(dir.path()).unwrap();
        assert_eq!(loaded.public().unwrap(), key.public().unwrap());
        assert!(generate_operator_key(dir.path()).is_err());
    }
}
