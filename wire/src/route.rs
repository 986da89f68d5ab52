//! The paper's per-message onion (MixNN, its Eq. (2) and (3)), kept so that its cost can be
//! measured rather than guessed. In a session flagged [`crate::setup::HopSetup::PER_MESSAGE_RSA`],
//! every forward and backward frame carries a route: one layer per hop, in the order the frame
//! travels, each wrapping a fresh key to that hop's RSA-2048 onion key and sealing the frame's
//! operation under it. A hop must unwrap its layer (one RSA private-key operation) and find the
//! frame's operation there before it acts.
//!
//! Layers are peeled as the op=0 onion's are: the hop strips its layer, XORs the rest with its
//! key's keystream and appends as many random bytes, so a route has one length on every link
//! and a hop learns nothing of the layers after its own. Our default sessions skip all this:
//! RSA once per hop per session, then symmetric link keys (DESIGN.md section 4).

use crate::{
    crypto::{
        CryptoError, Entropy, Key, OnionPrivateKey, OnionPublicKey, TAG_LEN, WRAPPED_KEY_LEN,
    },
    frame::Op,
};

/// Bytes of one hop's layer: the wrapped key and the sealed operation.
pub const LAYER_LEN: usize = WRAPPED_KEY_LEN + 1 + TAG_LEN;

const AAD: &[u8] = b"mixnn route v1";
const NONCE: [u8; 12] = [0; 12];
const SEAL_KEY: &[u8] = b"route layer";
const STREAM: &[u8] = b"route onion";

/// Why a route was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// Shorter than one layer.
    #[error("a route shorter than one layer")]
    TooShort,
    /// The layer is not for this hop, or was tampered with.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The layer authorises another operation than the frame's.
    #[error("the route is for operation {route}, the frame is {frame}")]
    WrongOp {
        /// The route's.
        route: u8,
        /// The frame's.
        frame: u8,
    },
}

/// The length of a route through `hops` hops.
pub fn len(hops: usize) -> usize {
    hops * LAYER_LEN
}

/// Builds a fresh route for a frame of `op` through the hops whose keys are `keys`, in the
/// order the frame travels.
pub fn build(
    keys: &[&OnionPublicKey],
    op: Op,
    entropy: &mut impl Entropy,
) -> Result<Vec<u8>, CryptoError> {
    let mut inner: Vec<u8> = Vec::new();
    for key in keys.iter().rev() {
        let (k, wrapped) = key.wrap(entropy)?;
        let mut layer = Vec::with_capacity(LAYER_LEN + inner.len());
        layer.extend(wrapped);
        layer.extend(k.derive(SEAL_KEY).seal(NONCE, AAD, &[op.0])?);
        k.xor_keystream(STREAM, 0, &mut inner)?;
        layer.extend(inner);
        inner = layer;
    }
    Ok(inner)
}

/// Peels this hop's layer of `route` for a frame of `op`: returns the route to pass on, of
/// the same length.
pub fn peel(
    key: &OnionPrivateKey,
    route: &[u8],
    op: Op,
    entropy: &mut impl Entropy,
) -> Result<Vec<u8>, RouteError> {
    if route.len() < LAYER_LEN {
        return Err(RouteError::TooShort);
    }
    peel_with_secret(&key.decrypt(&route[..WRAPPED_KEY_LEN])?, route, op, entropy)
}

/// What [`peel`] does after the RSA decryption of the layer's first [`WRAPPED_KEY_LEN`]
/// bytes into `secret`.
pub fn peel_with_secret(
    secret: &[u8],
    route: &[u8],
    op: Op,
    entropy: &mut impl Entropy,
) -> Result<Vec<u8>, RouteError> {
    if route.len() < LAYER_LEN {
        return Err(RouteError::TooShort);
    }
    let (layer, rest) = route.split_at(LAYER_LEN);
    let sealed = &layer[WRAPPED_KEY_LEN..];
    let k = Key(secret
        .try_into()
        .map_err(|_| CryptoError::BadKey("a wrapped route key of the wrong length"))?);
    let opened = k.derive(SEAL_KEY).open(NONCE, AAD, sealed)?;
    if opened.as_slice() != [op.0] {
        return Err(RouteError::WrongOp {
            route: opened.first().copied().unwrap_or(0),
            frame: op.0,
        });
    }
    let mut forward = rest.to_vec();
    k.xor_keystream(STREAM, 0, &mut forward)?;
    let mut padding = [0u8; LAYER_LEN];
    entropy.fill(&mut padding);
    forward.extend(padding);
    Ok(forward)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{SystemEntropy, tests::seeded};

    #[test]
    fn each_hop_peels_its_layer_and_the_route_keeps_its_length() {
        let keys: Vec<OnionPrivateKey> = (0..3)
            .map(|_| OnionPrivateKey::generate().unwrap())
            .collect();
        let publics: Vec<OnionPublicKey> = keys.iter().map(|k| k.public_key().unwrap()).collect();
        let order: Vec<&OnionPublicKey> = publics.iter().collect();
        let mut route = build(&order, Op::FORWARD, &mut SystemEntropy).unwrap();
        assert_eq!(route.len(), len(3));
        for (i, key) in keys.iter().enumerate() {
            // Another hop's key, or another operation, is refused.
            let other = &keys[(i + 1) % 3];
            assert!(peel(other, &route, Op::FORWARD, &mut seeded(1)).is_err());
            assert!(matches!(
                peel(key, &route, Op::BACKWARD, &mut seeded(1)),
                Err(RouteError::WrongOp { .. })
            ));
            let next = peel(key, &route, Op::FORWARD, &mut seeded(10 + i as u64)).unwrap();
            assert_eq!(next.len(), route.len());
            // What a hop passes on shares no 16-byte window with what it received.
            assert!(next.windows(16).all(|w| !route.windows(16).any(|v| v == w)));
            route = next;
        }
        // Every byte of a layer is checked.
        let fresh = build(&order, Op::FORWARD, &mut SystemEntropy).unwrap();
        for at in [0, 100, WRAPPED_KEY_LEN, LAYER_LEN - 1] {
            let mut bad = fresh.clone();
            bad[at] ^= 1;
            assert!(peel(&keys[0], &bad, Op::FORWARD, &mut seeded(3)).is_err());
        }
        assert_eq!(
            peel(&keys[0], &fresh[..10], Op::FORWARD, &mut seeded(3)),
            Err(RouteError::TooShort)
        );
    }
}
