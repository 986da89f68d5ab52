//! Blobs: the opaque bytes every frame carries, of one length per session. A blob is
//! `iv (16) || body`. The designer seals labels for the loss hop in one; a hop seals reports
//! for the designer in one; otherwise it holds random bytes.
//!
//! Every hop transforms every blob it receives with its own `blob_key` ([`layer`]): the body
//! is XORed with an AES-CTR keystream under the IV, and the IV goes through a keyed AES
//! permutation. So a blob never looks the same on two links (P3), yet the designer, who knows
//! every hop's key, can add the layers of the hops before the loss hop in advance
//! ([`unlayer`]), and remove those added after a report was sealed.

use crate::crypto::{CryptoError, Entropy, Key, TAG_LEN};

/// Bytes of a blob's IV.
pub const IV_LEN: usize = 16;
/// What sealing adds to a payload: the IV, the AEAD tag and a length.
pub const SEAL_OVERHEAD: usize = IV_LEN + TAG_LEN + 4;

const BODY_STREAM: &[u8] = b"blob body";
const IV_PERMUTATION: &[u8] = b"blob iv";
const AAD: &[u8] = b"mixnn blob v1";

/// Who a sealed blob is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient {
    /// The hop (labels, from the designer).
    Host,
    /// The designer (reports, from a hop).
    Designer,
}

impl Recipient {
    fn key(self, designer_key: &Key) -> Key {
        designer_key.derive(match self {
            Recipient::Host => b"to host",
            Recipient::Designer => b"to designer",
        })
    }
}

/// Why a blob could not be sealed, opened or transformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// Shorter than an IV, or the payload does not fit.
    #[error("blob of {0} bytes is too short")]
    TooShort(usize),
    /// Not sealed under this key, or tampered with.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The sealed length field is inconsistent.
    #[error("malformed sealed blob")]
    Malformed,
}

fn split(blob: &mut [u8]) -> Result<(&mut [u8; IV_LEN], &mut [u8]), BlobError> {
    let len = blob.len();
    let (iv, body) = blob
        .split_first_chunk_mut::<IV_LEN>()
        .ok_or(BlobError::TooShort(len))?;
    Ok((iv, body))
}

/// A hop's transformation of a blob it receives, with its `blob_key`.
pub fn layer(key: &Key, blob: &mut [u8]) -> Result<(), BlobError> {
    let (iv, body) = split(blob)?;
    key.xor_keystream(BODY_STREAM, u128::from_be_bytes(*iv), body)?;
    key.permute_block(IV_PERMUTATION, iv)?;
    Ok(())
}

/// Undoes [`layer`].
pub fn unlayer(key: &Key, blob: &mut [u8]) -> Result<(), BlobError> {
    let (iv, body) = split(blob)?;
    key.unpermute_block(IV_PERMUTATION, iv)?;
    key.xor_keystream(BODY_STREAM, u128::from_be_bytes(*iv), body)?;
    Ok(())
}

/// Random bytes: the blob of a frame that carries nothing for anyone.
pub fn random(len: usize, entropy: &mut impl Entropy) -> Vec<u8> {
    let mut blob = vec![0u8; len];
    entropy.fill(&mut blob);
    blob
}

/// Seals `payload` for `to` under a hop's `designer_key`, padded to a blob of `len` bytes
/// that looks random to anyone else.
pub fn seal(
    designer_key: &Key,
    to: Recipient,
    payload: &[u8],
    len: usize,
    entropy: &mut impl Entropy,
) -> Result<Vec<u8>, BlobError> {
    let room = len
        .checked_sub(SEAL_OVERHEAD)
        .filter(|&room| payload.len() <= room)
        .ok_or(BlobError::TooShort(len))?;
    let payload_len = u32::try_from(payload.len()).map_err(|_| BlobError::TooShort(len))?;
    let mut iv = [0u8; IV_LEN];
    entropy.fill(&mut iv);
    let mut plain = Vec::with_capacity(len - IV_LEN - TAG_LEN);
    plain.extend(payload_len.to_be_bytes());
    plain.extend(payload);
    plain.resize(4 + room, 0);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&iv[..12]);
    // The whole IV is authenticated: its last bytes are not part of the nonce.
    let sealed = to.key(designer_key).seal(nonce, &aad(&iv), &plain)?;
    let mut blob = Vec::with_capacity(len);
    blob.extend(iv);
    blob.extend(sealed);
    Ok(blob)
}

fn aad(iv: &[u8; IV_LEN]) -> Vec<u8> {
    [AAD, iv].concat()
}

/// Opens what [`seal`] sealed for `to`.
pub fn open(designer_key: &Key, to: Recipient, blob: &[u8]) -> Result<Vec<u8>, BlobError> {
    let (iv, sealed) = blob
        .split_first_chunk::<IV_LEN>()
        .ok_or(BlobError::TooShort(blob.len()))?;
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&iv[..12]);
    let mut plain = to.key(designer_key).open(nonce, &aad(iv), sealed)?;
    let (len, rest) = plain.split_first_chunk::<4>().ok_or(BlobError::Malformed)?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| BlobError::Malformed)?;
    if len > rest.len() {
        return Err(BlobError::Malformed);
    }
    plain.truncate(4 + len);
    plain.drain(..4);
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::tests::seeded;

    #[test]
    fn labels_reach_the_loss_hop_through_layers_that_change_every_byte() {
        let mut e = seeded(3);
        let blob_keys: Vec<Key> = (0..4).map(|_| Key::random(&mut e)).collect();
        let loss_key = Key::random(&mut e);
        // The designer seals for hop 3 and adds the layers hops 0..=3 will remove.
        let sealed = seal(&loss_key, Recipient::Host, b"labels", 300, &mut e).unwrap();
        assert_eq!(sealed.len(), 300);
        let mut blob = sealed.clone();
        for key in blob_keys.iter().rev() {
            unlayer(key, &mut blob).unwrap();
        }
        let mut seen = vec![blob.clone()];
        for key in &blob_keys {
            layer(key, &mut blob).unwrap();
            seen.push(blob.clone());
        }
        assert_eq!(blob, sealed);
        assert_eq!(open(&loss_key, Recipient::Host, &blob).unwrap(), b"labels");
        // P3: no 16-byte window repeats between the links' blobs.
        for (i, a) in seen.iter().enumerate() {
            for b in &seen[i + 1..] {
                let windows: std::collections::HashSet<&[u8]> = a.windows(16).collect();
                assert!(b.windows(16).all(|w| !windows.contains(w)));
            }
        }
        // Sealed for the host, it cannot be opened as a report, nor by another key.
        assert!(open(&loss_key, Recipient::Designer, &blob).is_err());
        assert!(open(&blob_keys[0], Recipient::Host, &blob).is_err());
    }

    #[test]
    fn tampering_and_oversize_are_refused() {
        let mut e = seeded(4);
        let key = Key::random(&mut e);
        let blob = seal(&key, Recipient::Designer, &[1, 2, 3], 64, &mut e).unwrap();
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 1;
            assert!(open(&key, Recipient::Designer, &bad).is_err(), "byte {i}");
        }
        assert_eq!(
            seal(&key, Recipient::Designer, &[0; 40], 64, &mut e),
            Err(BlobError::TooShort(64))
        );
        assert!(layer(&key, &mut [0u8; 8]).is_err());
        assert!(open(&key, Recipient::Designer, &[0; 10]).is_err());
    }
}
