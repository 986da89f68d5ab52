//! What a descriptor's reserved metadata proves, for the directory's Sybil resistance. The
//! descriptor's format does not change: these facts ride in its signed metadata, under keys
//! starting with `mixnn.` ([`RESERVED_PREFIX`]), so the host's own signature covers them too.
//!
//! - **Operator families** ([`OPERATOR`], [`OPERATOR_SIG`]): an operator's Ed25519 key
//!   certifies each of its hosts' identity keys ([`certify`]); with the host's signature over
//!   the descriptor both ends agree, as in Tor's declared families. [`operator_of`] checks it:
//!   a descriptor naming an operator whose certificate does not verify is refused by the
//!   directory, and designers ignore such a host.
//! - **Invitations** ([`INVITATION`]): the directory operator's signature over a host's
//!   identity ([`invite`], [`check_invitation`]).
//! - **Proof of work** ([`POW`]): a nonce such that SHA-256(domain ‖ identity ‖ nonce) starts
//!   with N zero bits ([`solve_pow`], [`check_pow`]): a cost per identity, paid once.

use aws_lc_rs::{
    digest::{SHA256, digest},
    signature::{ED25519, UnparsedPublicKey},
};

use crate::descriptor::{Descriptor, IDENTITY_LEN, IdentityKey, SIGNATURE_LEN};

/// Metadata keys starting with this are mixnn's own: a host's free-form metadata may not use
/// them.
pub const RESERVED_PREFIX: &str = "mixnn.";
/// The operator's public key, hex.
pub const OPERATOR: &str = "mixnn.operator";
/// The operator's certificate of the host's identity, hex.
pub const OPERATOR_SIG: &str = "mixnn.operator-sig";
/// The directory's invitation of the host's identity, hex.
pub const INVITATION: &str = "mixnn.invitation";
/// The proof of work's nonce, 16 hex digits.
pub const POW: &str = "mixnn.pow";
/// The most bits of work a directory may ask: 2^28 hashes take about half a minute on one core,
/// and a typo must not make every host compute for hours.
pub const MAX_POW_BITS: u32 = 28;

const OPERATOR_DOMAIN: &[u8] = b"mixnn operator v1\0";
const INVITATION_DOMAIN: &[u8] = b"mixnn invitation v1\0";
const POW_DOMAIN: &[u8] = b"mixnn pow v1\0";

/// What is wrong with a descriptor's family, invitation or proof of work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FamilyError {
    /// A reserved field is not hex of its length.
    #[error("{0} is not hex of the right length")]
    Malformed(&'static str),
    /// An operator without a certificate, or a certificate without an operator.
    #[error("an operator key and its certificate go together")]
    Incomplete,
    /// The operator's certificate does not verify for this host.
    #[error("the operator's certificate does not verify")]
    BadCertificate,
    /// No invitation.
    #[error("no invitation")]
    NoInvitation,
    /// The invitation is not the directory's for this host.
    #[error("the invitation does not verify")]
    BadInvitation,
    /// No proof of work.
    #[error("no proof of work")]
    NoProofOfWork,
    /// Too little work.
    #[error("a proof of work of {bits} bits; {needed} needed")]
    WeakProofOfWork {
        /// What the nonce gives.
        bits: u32,
        /// What is asked.
        needed: u32,
    },
    /// More bits asked than [`MAX_POW_BITS`].
    #[error("{0} bits of work asked; at most {MAX_POW_BITS}")]
    TooManyBits(u32),
}

/// Lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exactly `2 * N` hex digits.
pub fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.trim();
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Whether `key` is one of mixnn's own metadata keys.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// The operator's certificate of `host` (an identity public key).
pub fn certify(operator: &IdentityKey, host: &[u8; IDENTITY_LEN]) -> [u8; SIGNATURE_LEN] {
    operator.sign_in_domain(OPERATOR_DOMAIN, host)
}

/// Whether `certificate` is `operator`'s certificate of `host`.
pub fn verify_certificate(
    operator: &[u8; IDENTITY_LEN],
    host: &[u8; IDENTITY_LEN],
    certificate: &[u8; SIGNATURE_LEN],
) -> bool {
    verify_in_domain(operator, OPERATOR_DOMAIN, host, certificate)
}

fn verify_in_domain(
    key: &[u8; IDENTITY_LEN],
    domain: &[u8],
    host: &[u8; IDENTITY_LEN],
    signature: &[u8; SIGNATURE_LEN],
) -> bool {
    let mut message = domain.to_vec();
    message.extend(host);
    UnparsedPublicKey::new(&ED25519, key)
        .verify(&message, signature)
        .is_ok()
}

fn field<const N: usize>(
    d: &Descriptor,
    key: &'static str,
) -> Result<Option<[u8; N]>, FamilyError> {
    d.metadata
        .get(key)
        .map(|v| parse_hex(v).ok_or(FamilyError::Malformed(key)))
        .transpose()
}

/// The operator a verified descriptor declares, if any, once its certificate verifies for the
/// descriptor's identity. A descriptor with a bad or half certificate is an error: refuse it
/// (the directory does) or ignore the host (a designer should).
pub fn operator_of(d: &Descriptor) -> Result<Option<[u8; IDENTITY_LEN]>, FamilyError> {
    let operator = field::<IDENTITY_LEN>(d, OPERATOR)?;
    let certificate = field::<SIGNATURE_LEN>(d, OPERATOR_SIG)?;
    match (operator, certificate) {
        (None, None) => Ok(None),
        (Some(operator), Some(certificate)) => {
            if verify_certificate(&operator, &d.identity, &certificate) {
                Ok(Some(operator))
            } else {
                Err(FamilyError::BadCertificate)
            }
        }
        _ => Err(FamilyError::Incomplete),
    }
}

/// The directory's invitation of `host` (an identity public key), signed with the directory's
/// identity key.
pub fn invite(directory: &IdentityKey, host: &[u8; IDENTITY_LEN]) -> [u8; SIGNATURE_LEN] {
    directory.sign_in_domain(INVITATION_DOMAIN, host)
}

/// Whether a verified descriptor carries the invitation of the directory whose identity
/// public key is `directory`.
pub fn check_invitation(d: &Descriptor, directory: &[u8; IDENTITY_LEN]) -> Result<(), FamilyError> {
    let invitation = field::<SIGNATURE_LEN>(d, INVITATION)?.ok_or(FamilyError::NoInvitation)?;
    if verify_in_domain(directory, INVITATION_DOMAIN, &d.identity, &invitation) {
        Ok(())
    } else {
        Err(FamilyError::BadInvitation)
    }
}

/// The zero bits that start SHA-256(domain ‖ identity ‖ nonce).
pub fn pow_bits(identity: &[u8; IDENTITY_LEN], nonce: u64) -> u32 {
    let mut message = [0u8; POW_DOMAIN.len() + IDENTITY_LEN + 8];
    let (domain, rest) = message.split_at_mut(POW_DOMAIN.len());
    domain.copy_from_slice(POW_DOMAIN);
    let (id, n) = rest.split_at_mut(IDENTITY_LEN);
    id.copy_from_slice(identity);
    n.copy_from_slice(&nonce.to_be_bytes());
    let hash = digest(&SHA256, &message);
    let mut bits = 0;
    for byte in hash.as_ref() {
        bits += byte.leading_zeros();
        if *byte != 0 {
            break;
        }
    }
    bits
}

/// The first nonce that gives `identity` `bits` zero bits: 2^bits hashes on average, at about
/// 10 million a second on one core (measured: 20 bits 0.2 s, 24 bits 1.5 s; [`MAX_POW_BITS`]
/// about 25 s).
pub fn solve_pow(identity: &[u8; IDENTITY_LEN], bits: u32) -> Result<u64, FamilyError> {
    if bits > MAX_POW_BITS {
        return Err(FamilyError::TooManyBits(bits));
    }
    // 2^28 tries succeed but with a chance of about e^-(2^36): the loop ends.
    Ok((0..u64::MAX)
        .find(|&nonce| pow_bits(identity, nonce) >= bits)
        .unwrap_or(u64::MAX))
}

/// The metadata value of a nonce.
pub fn pow_value(nonce: u64) -> String {
    to_hex(&nonce.to_be_bytes())
}

/// Whether a verified descriptor carries a proof of work of at least `needed` bits for its
/// identity.
pub fn check_pow(d: &Descriptor, needed: u32) -> Result<(), FamilyError> {
    if needed == 0 {
        return Ok(());
    }
    let nonce = u64::from_be_bytes(field::<8>(d, POW)?.ok_or(FamilyError::NoProofOfWork)?);
    let bits = pow_bits(&d.identity, nonce);
    if bits >= needed {
        Ok(())
    } else {
        Err(FamilyError::WeakProofOfWork { bits, needed })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{crypto::OnionPrivateKey, descriptor};

    fn signed(host: &IdentityKey, metadata: BTreeMap<String, String>) -> Descriptor {
        let onion = OnionPrivateKey::generate().unwrap().public_key().unwrap();
        let signed = host
            .sign(Descriptor {
                identity: [0; 32],
                address: "127.0.0.1:1".into(),
                onion_key: onion.der().to_vec(),
                fingerprint: [1; 32],
                published_at: 1,
                metadata,
            })
            .unwrap();
        descriptor::verify(&signed).unwrap()
    }

    fn meta(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn operator_certificates_verify_for_their_host_only() {
        let (operator, host, other) = (
            IdentityKey::generate().unwrap(),
            IdentityKey::generate().unwrap(),
            IdentityKey::generate().unwrap(),
        );
        let op = operator.public().unwrap();
        let cert = certify(&operator, &host.public().unwrap());
        // Hex fits the metadata's 128 bytes.
        assert_eq!(to_hex(&cert).len(), 128);
        let good = signed(
            &host,
            meta(&[(OPERATOR, to_hex(&op)), (OPERATOR_SIG, to_hex(&cert))]),
        );
        assert_eq!(operator_of(&good), Ok(Some(op)));
        assert_eq!(operator_of(&signed(&host, BTreeMap::new())), Ok(None));
        // Another host cannot reuse the certificate.
        let stolen = signed(
            &other,
            meta(&[(OPERATOR, to_hex(&op)), (OPERATOR_SIG, to_hex(&cert))]),
        );
        assert_eq!(operator_of(&stolen), Err(FamilyError::BadCertificate));
        // Nor claim another operator with it, nor use a certificate of the host's own making.
        let forged = certify(&other, &host.public().unwrap());
        let claimed = signed(
            &host,
            meta(&[(OPERATOR, to_hex(&op)), (OPERATOR_SIG, to_hex(&forged))]),
        );
        assert_eq!(operator_of(&claimed), Err(FamilyError::BadCertificate));
        // An invitation is no certificate: the domains differ.
        let invitation = invite(&operator, &host.public().unwrap());
        let crossed = signed(
            &host,
            meta(&[(OPERATOR, to_hex(&op)), (OPERATOR_SIG, to_hex(&invitation))]),
        );
        assert_eq!(operator_of(&crossed), Err(FamilyError::BadCertificate));
        let half = signed(&host, meta(&[(OPERATOR, to_hex(&op))]));
        assert_eq!(operator_of(&half), Err(FamilyError::Incomplete));
        let garbage = signed(
            &host,
            meta(&[(OPERATOR, "zz".into()), (OPERATOR_SIG, to_hex(&cert))]),
        );
        assert_eq!(operator_of(&garbage), Err(FamilyError::Malformed(OPERATOR)));
    }

    #[test]
    fn invitations_are_the_directorys_for_this_host() {
        let (directory, host, mallory) = (
            IdentityKey::generate().unwrap(),
            IdentityKey::generate().unwrap(),
            IdentityKey::generate().unwrap(),
        );
        let key = directory.public().unwrap();
        let good = invite(&directory, &host.public().unwrap());
        let d = signed(&host, meta(&[(INVITATION, to_hex(&good))]));
        assert_eq!(check_invitation(&d, &key), Ok(()));
        let self_made = invite(&mallory, &host.public().unwrap());
        let d = signed(&host, meta(&[(INVITATION, to_hex(&self_made))]));
        assert_eq!(check_invitation(&d, &key), Err(FamilyError::BadInvitation));
        let d = signed(&mallory, meta(&[(INVITATION, to_hex(&good))]));
        assert_eq!(check_invitation(&d, &key), Err(FamilyError::BadInvitation));
        let d = signed(&host, BTreeMap::new());
        assert_eq!(check_invitation(&d, &key), Err(FamilyError::NoInvitation));
    }

    #[test]
    fn proofs_of_work_have_their_bits() {
        let host = IdentityKey::generate().unwrap();
        let id = host.public().unwrap();
        let nonce = solve_pow(&id, 12).unwrap();
        assert!(pow_bits(&id, nonce) >= 12);
        let d = signed(&host, meta(&[(POW, pow_value(nonce))]));
        assert_eq!(check_pow(&d, 12), Ok(()));
        assert_eq!(check_pow(&d, 0), Ok(()));
        let bits = pow_bits(&id, nonce);
        assert_eq!(
            check_pow(&d, bits + 1),
            Err(FamilyError::WeakProofOfWork {
                bits,
                needed: bits + 1
            })
        );
        // The nonce is bound to the identity.
        let other = IdentityKey::generate().unwrap();
        let other_bits = pow_bits(&other.public().unwrap(), nonce);
        let d = signed(&other, meta(&[(POW, pow_value(nonce))]));
        assert_eq!(check_pow(&d, 12).is_ok(), other_bits >= 12);
        assert_eq!(
            check_pow(&signed(&host, BTreeMap::new()), 1),
            Err(FamilyError::NoProofOfWork)
        );
        assert_eq!(
            solve_pow(&id, MAX_POW_BITS + 1),
            Err(FamilyError::TooManyBits(MAX_POW_BITS + 1))
        );
        assert_eq!(parse_hex::<2>("0aff"), Some([10, 255]));
        assert_eq!(parse_hex::<2>("0af"), None);
        assert_eq!(parse_hex::<1>("é"), None);
    }

    /// What a proof of work costs on this machine:
    /// `cargo test -p mixnn-wire --release -- --ignored pow_cost --nocapture`.
    #[test]
    #[ignore]
    fn pow_cost() {
        for bits in [16, 20, 24] {
            let mut total = 0.0;
            for _ in 0..5 {
                let id = IdentityKey::generate().unwrap().public().unwrap();
                let start = std::time::Instant::now();
                solve_pow(&id, bits).unwrap();
                total += start.elapsed().as_secs_f64();
            }
            println!("{bits} bits: {:.3} s on average", total / 5.0);
        }
    }
}
