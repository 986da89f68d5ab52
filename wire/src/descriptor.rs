//! A host's descriptor: what the directory publishes about it (address, onion public key,
//! certificate fingerprint, free-form metadata), signed by the host's Ed25519 identity key, so
//! the directory and designers can check that a descriptor is the host's own and unaltered.

use std::collections::BTreeMap;

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey},
};

use crate::{
    crypto::OnionPublicKey,
    reader::{ReadError, Reader, put_lp32},
    setup::{FINGERPRINT_LEN, MAX_ADDRESS_LEN},
};

/// Bytes of an Ed25519 public key.
pub const IDENTITY_LEN: usize = 32;
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Largest encoded onion public key.
pub const MAX_ONION_KEY_LEN: usize = 1024;
/// Most metadata entries.
pub const MAX_METADATA: usize = 16;
/// Longest metadata key or value.
pub const MAX_METADATA_FIELD: usize = 128;
/// Largest signed descriptor: every field at its maximum fits (5.6 KB), and a directory
/// answer for a pool of 10,000 hosts stays under 82 MB ([`crate::directory`]).
pub const MAX_DESCRIPTOR_LEN: usize = 8 << 10;

const DOMAIN: &[u8] = b"mixnn descriptor v1\0";

/// Why a descriptor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptorError {
    /// The bytes do not parse.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The signature does not verify: forged or altered.
    #[error("bad signature")]
    BadSignature,
    /// A field is unusable (bad onion key, too many metadata entries, ...).
    #[error("invalid descriptor: {0}")]
    Invalid(&'static str),
    /// Key handling failed.
    #[error("identity key: {0}")]
    Key(&'static str),
}

/// What a host says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The host's Ed25519 identity public key (what the directory keys it by).
    pub identity: [u8; IDENTITY_LEN],
    /// `host:port` of its QUIC endpoint.
    pub address: String,
    /// Its RSA-2048 onion public key, SPKI DER.
    pub onion_key: Vec<u8>,
    /// SHA-256 of its QUIC certificate.
    pub fingerprint: [u8; FINGERPRINT_LEN],
    /// When it was signed (Unix seconds): a newer descriptor replaces an older one.
    pub published_at: u64,
    /// Free-form facts: region, price, ...
    pub metadata: BTreeMap<String, String>,
}

impl Descriptor {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.onion_key.len());
        out.extend(self.identity);
        put_lp32(&mut out, self.address.as_bytes());
        put_lp32(&mut out, &self.onion_key);
        out.extend(self.fingerprint);
        out.extend(self.published_at.to_be_bytes());
        out.extend(
            u32::try_from(self.metadata.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        for (k, v) in &self.metadata {
            put_lp32(&mut out, k.as_bytes());
            put_lp32(&mut out, v.as_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, DescriptorError> {
        let mut r = Reader::new(bytes);
        let text = |b: &[u8]| {
            std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|_| ReadError::Malformed("not UTF-8"))
        };
        let identity = r.take_array()?;
        let address = text(r.take_lp32(MAX_ADDRESS_LEN)?)?;
        let onion_key = r.take_lp32(MAX_ONION_KEY_LEN)?.to_vec();
        let fingerprint = r.take_array()?;
        let published_at = r.take_u64()?;
        let count = usize::try_from(r.take_u32()?).unwrap_or(usize::MAX);
        if count > MAX_METADATA {
            return Err(DescriptorError::Invalid("too many metadata entries"));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..count {
            let k = text(r.take_lp32(MAX_METADATA_FIELD)?)?;
            let v = text(r.take_lp32(MAX_METADATA_FIELD)?)?;
            if metadata.insert(k, v).is_some() {
                return Err(DescriptorError::Invalid("duplicate metadata key"));
            }
        }
        r.should_be_exhausted()?;
        Ok(Descriptor {
            identity,
            address,
            onion_key,
            fingerprint,
            published_at,
            metadata,
        })
    }

    fn check(&self) -> Result<(), DescriptorError> {
        if self.address.len() > MAX_ADDRESS_LEN {
            return Err(DescriptorError::Invalid("address too long"));
        }
        if self.metadata.len() > MAX_METADATA
            || self
                .metadata
                .iter()
                .any(|(k, v)| k.len() > MAX_METADATA_FIELD || v.len() > MAX_METADATA_FIELD)
        {
            return Err(DescriptorError::Invalid("metadata too large"));
        }
        OnionPublicKey::from_der(&self.onion_key)
            .map_err(|_| DescriptorError::Invalid("onion key is not RSA-2048"))?;
        Ok(())
    }

    /// The descriptor's onion key, decoded.
    pub fn onion_public_key(&self) -> Result<OnionPublicKey, DescriptorError> {
        OnionPublicKey::from_der(&self.onion_key)
            .map_err(|_| DescriptorError::Invalid("onion key is not RSA-2048"))
    }
}

/// A host's Ed25519 identity key.
pub struct IdentityKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityKey(..)")
    }
}

impl IdentityKey {
    /// A new identity key.
    pub fn generate() -> Result<Self, DescriptorError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| DescriptorError::Key("generate"))?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// Decodes a PKCS#8 DER key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, DescriptorError> {
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .map_err(|_| DescriptorError::Key("not an Ed25519 PKCS#8 key"))?;
        Ok(IdentityKey {
            pair,
            pkcs8: der.to_vec(),
        })
    }

    /// PKCS#8 DER (secret).
    pub fn to_pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key.
    pub fn public(&self) -> Result<[u8; IDENTITY_LEN], DescriptorError> {
        self.pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| DescriptorError::Key("public key size"))
    }

    /// Signs `domain || message`: for [`crate::family`]'s certificates and invitations, each
    /// under a domain of its own, so that no signature of one kind passes for another (or for
    /// a descriptor's).
    pub(crate) fn sign_in_domain(&self, domain: &[u8], message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut signed = domain.to_vec();
        signed.extend(message);
        let mut out = [0; SIGNATURE_LEN];
        out.copy_from_slice(self.pair.sign(&signed).as_ref());
        out
    }

    /// Signs `descriptor` (its `identity` is set to this key's) into the bytes a directory takes.
    pub fn sign(&self, mut descriptor: Descriptor) -> Result<Vec<u8>, DescriptorError> {
        descriptor.identity = self.public()?;
        descriptor.check()?;
        let body = descriptor.encode();
        let mut message = DOMAIN.to_vec();
        message.extend(&body);
        let mut out = self.pair.sign(&message).as_ref().to_vec();
        out.extend(body);
        if out.len() > MAX_DESCRIPTOR_LEN {
            return Err(DescriptorError::Invalid("descriptor too large"));
        }
        Ok(out)
    }
}

/// Checks a signed descriptor and returns what it says.
pub fn verify(signed: &[u8]) -> Result<Descriptor, DescriptorError> {
    if signed.len() > MAX_DESCRIPTOR_LEN {
        return Err(DescriptorError::Invalid("descriptor too large"));
    }
    let mut r = Reader::new(signed);
    let signature = r.take(SIGNATURE_LEN)?;
    let body = r.take_rest();
    let descriptor = Descriptor::decode(body)?;
    let mut message = DOMAIN.to_vec();
    message.extend(body);
    UnparsedPublicKey::new(&ED25519, descriptor.identity)
        .verify(&message, signature)
        .map_err(|_| DescriptorError::BadSignature)?;
    descriptor.check()?;
    Ok(descriptor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::OnionPrivateKey;

    fn descriptor() -> Descriptor {
        let onion = OnionPrivateKey::generate().unwrap().public_key().unwrap();
        Descriptor {
            identity: [0; 32],
            address: "127.0.0.1:4433".into(),
            onion_key: onion.der().to_vec(),
            fingerprint: [7; 32],
            published_at: 1_700_000_000,
            metadata: [("region".to_owned(), "eu-west".to_owned())]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn signed_descriptors_verify_and_forgeries_do_not() {
        let key = IdentityKey::generate().unwrap();
        let signed = key.sign(descriptor()).unwrap();
        let got = verify(&signed).unwrap();
        assert_eq!(got.identity, key.public().unwrap());
        assert_eq!(got.address, "127.0.0.1:4433");
        assert_eq!(got.metadata["region"], "eu-west");
        assert!(got.onion_public_key().is_ok());
        // Any altered byte is refused.
        for i in 0..signed.len() {
            let mut bad = signed.clone();
            bad[i] ^= 1;
            assert!(verify(&bad).is_err(), "byte {i} altered went unnoticed");
        }
        // Another identity cannot claim this host's fields with its own signature and identity
        // swapped in: the signature binds the identity.
        let mallory = IdentityKey::generate().unwrap();
        let mut forged = key.sign(descriptor()).unwrap();
        forged[SIGNATURE_LEN..SIGNATURE_LEN + 32].copy_from_slice(&mallory.public().unwrap());
        assert_eq!(verify(&forged), Err(DescriptorError::BadSignature));
        assert!(verify(&signed[..10]).is_err());
        // A restored key signs as the same identity.
        let restored = IdentityKey::from_pkcs8(key.to_pkcs8_der()).unwrap();
        assert_eq!(restored.public().unwrap(), key.public().unwrap());
    }

    #[test]
    fn unusable_fields_are_refused() {
        let key = IdentityKey::generate().unwrap();
        let mut d = descriptor();
        d.onion_key = b"not a key".to_vec();
        assert!(matches!(key.sign(d), Err(DescriptorError::Invalid(_))));
        // Every field at its maximum still fits.
        let mut d = descriptor();
        d.address = "a".repeat(MAX_ADDRESS_LEN);
        d.metadata = (0..MAX_METADATA)
            .map(|i| (format!("{i:0>128}"), "v".repeat(MAX_METADATA_FIELD)))
            .collect();
        assert!(key.sign(d).unwrap().len() <= MAX_DESCRIPTOR_LEN);
        let mut d = descriptor();
        d.metadata = (0..=MAX_METADATA)
            .map(|i| (i.to_string(), String::new()))
            .collect();
        assert!(matches!(key.sign(d), Err(DescriptorError::Invalid(_))));
    }
}
