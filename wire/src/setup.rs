//! The op=0 session-setup onion: one layer per hop, each telling its hop only what that hop
//! needs (its component, config and initial state, neighbours, circuit ids and keys).
//!
//! Layer `i` is `RSA-OAEP(pk_i, k_i || body_len) || AES-GCM(k_i, setup_i) || E_i(layer i+1)`,
//! where `E_i` is the AES-CTR keystream of `k_i`. A hop strips its layer from the front,
//! XORs the whole remainder with its keystream (so what it forwards shares no byte pattern with
//! what it received, P3) and appends as many random bytes as it stripped, so every op=0 message
//! of a session has the same length on every link (P5). It cannot tell where the next layers
//! end and the padding starts, so it learns neither the cascade's length nor its position (P2).

use crate::{
    crypto::{
        CryptoError, Entropy, KEY_LEN, Key, OnionPrivateKey, OnionPublicKey, WRAPPED_KEY_LEN,
    },
    reader::{ReadError, Reader, put_lp32},
};

/// Bytes of a circuit id.
pub const CIRCUIT_ID_LEN: usize = 16;
/// Bytes of a certificate fingerprint (SHA-256).
pub const FINGERPRINT_LEN: usize = 32;
/// Longest host address (`host:port`).
pub const MAX_ADDRESS_LEN: usize = 255;
/// Largest component a setup layer may carry.
pub const MAX_COMPONENT_LEN: usize = 16 << 20;
/// Largest layer config.
pub const MAX_CONFIG_LEN: usize = 1 << 20;
/// Largest initial state of a layer.
pub const MAX_STATE_LEN: usize = 64 << 20;
/// Most layers one hop may hold.
pub const MAX_LAYERS_PER_HOP: usize = 16;
/// Largest op=0 message a host accepts.
pub const MAX_SETUP_LEN: usize = 128 << 20;

const SETUP_NONCE: [u8; 12] = [0; 12];
const SETUP_AAD: &[u8] = b"mixnn setup v2";
const SETUP_KEY: &[u8] = b"setup body";
const ONION_STREAM: &[u8] = b"setup onion";

/// A circuit id: names one link of one session, different on every link (P3).
pub type CircuitId = [u8; CIRCUIT_ID_LEN];

/// Why a setup layer could not be built or peeled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The layer is not for this host, or was tampered with.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The decrypted layer does not parse.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The message is larger than [`MAX_SETUP_LEN`] or a field exceeds its maximum.
    #[error("too large: {0}")]
    TooLarge(&'static str),
    /// The session's expiry is in the past.
    #[error("the session expired")]
    Expired,
}

/// A neighbour of a hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// The designer (only the hops that talk to it learn this).
    Designer,
    /// Another host: where to reach it and the fingerprint of its certificate.
    Host {
        /// `host:port`.
        address: String,
        /// SHA-256 of its QUIC certificate.
        fingerprint: [u8; FINGERPRINT_LEN],
    },
}

/// Everything one hop learns at setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopSetup {
    /// Unix time (seconds) after which the hop drops the session (P7).
    pub expires_at: u64,
    /// The hop before this one.
    pub prev: Peer,
    /// The hop after this one.
    pub next: Peer,
    /// Circuit id of the link with `prev`.
    pub circuit_in: CircuitId,
    /// Circuit id of the link with `next`.
    pub circuit_out: CircuitId,
    /// Secret of the link with `prev` (both directions derive from it).
    pub link_in: Key,
    /// Secret of the link with `next`.
    pub link_out: Key,
    /// This hop's layer of the blobs that travel with each message.
    pub blob_key: Key,
    /// Key for what this hop seals for the designer (loss, test outputs, failure reports).
    pub designer_key: Key,
    /// Role flags ([`HopSetup::LOSS`], [`HopSetup::TEST_END`]).
    pub flags: u8,
    /// Length of every later frame of the session (P5).
    pub frame_len: u32,
    /// Length of the blobs this hop creates ([`crate::blob`]).
    pub blob_len: u32,
    /// The hop's adjacent layers, in cascade order (one, or a few: paper 5.4.1).
    pub layers: Vec<HopLayer>,
}

/// One layer a hop runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopLayer {
    /// The layer component (WebAssembly).
    pub component: Vec<u8>,
    /// Its `init` config.
    pub config: Vec<u8>,
    /// The state it starts from (safetensors bytes for `import-state`), or empty for the one
    /// its `init` draws.
    pub state: Vec<u8>,
}

impl HopSetup {
    /// The hop runs the loss layer: it reads the labels.
    pub const LOSS: u8 = 1;
    /// In test passes, this hop's output goes back to the designer.
    pub const TEST_END: u8 = 2;
    /// Forward and backward frames carry the paper's per-message onion ([`crate::route`]).
    pub const PER_MESSAGE_RSA: u8 = 4;
    /// The hop before this one (the designer) needs no gradient of this hop's input: its
    /// backward frames carry no tensor. It tells a first hop that the designer keeps no layer
    /// before it, which the raw inputs it reads tell it anyway.
    pub const DROP_INPUT_GRAD: u8 = 8;

    fn encode(&self) -> Vec<u8> {
        let size: usize = self
            .layers
            .iter()
            .map(|l| 12 + l.component.len() + l.config.len() + l.state.len())
            .sum();
        let mut out = Vec::with_capacity(256 + size);
        out.extend(self.expires_at.to_be_bytes());
        encode_peer(&mut out, &self.prev);
        encode_peer(&mut out, &self.next);
        out.extend(self.circuit_in);
        out.extend(self.circuit_out);
        for key in [
            &self.link_in,
            &self.link_out,
            &self.blob_key,
            &self.designer_key,
        ] {
            out.extend(key.0);
        }
        out.push(self.flags);
        out.extend(self.frame_len.to_be_bytes());
        out.extend(self.blob_len.to_be_bytes());
        // At most MAX_LAYERS_PER_HOP, checked before encoding.
        out.push(u8::try_from(self.layers.len()).unwrap_or(u8::MAX));
        for layer in &self.layers {
            put_lp32(&mut out, &layer.component);
            put_lp32(&mut out, &layer.config);
            put_lp32(&mut out, &layer.state);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, SetupError> {
        let mut r = Reader::new(bytes);
        let setup = HopSetup {
            expires_at: r.take_u64()?,
            prev: decode_peer(&mut r)?,
            next: decode_peer(&mut r)?,
            circuit_in: r.take_array()?,
            circuit_out: r.take_array()?,
            link_in: Key(r.take_array::<KEY_LEN>()?),
            link_out: Key(r.take_array::<KEY_LEN>()?),
            blob_key: Key(r.take_array::<KEY_LEN>()?),
            designer_key: Key(r.take_array::<KEY_LEN>()?),
            flags: r.take_u8()?,
            frame_len: r.take_u32()?,
            blob_len: r.take_u32()?,
            layers: {
                let count = usize::from(r.take_u8()?);
                if count == 0 || count > MAX_LAYERS_PER_HOP {
                    return Err(ReadError::Malformed("number of layers").into());
                }
                (0..count)
                    .map(|_| {
                        Ok(HopLayer {
                            component: r.take_lp32(MAX_COMPONENT_LEN)?.to_vec(),
                            config: r.take_lp32(MAX_CONFIG_LEN)?.to_vec(),
                            state: r.take_lp32(MAX_STATE_LEN)?.to_vec(),
                        })
                    })
                    .collect::<Result<_, ReadError>>()?
            },
        };
        r.should_be_exhausted()?;
        Ok(setup)
    }
}

fn encode_peer(out: &mut Vec<u8>, peer: &Peer) {
    match peer {
        Peer::Designer => out.push(0),
        Peer::Host {
            address,
            fingerprint,
        } => {
            out.push(1);
            put_lp32(out, address.as_bytes());
            out.extend(fingerprint);
        }
    }
}

fn decode_peer(r: &mut Reader<'_>) -> Result<Peer, SetupError> {
    match r.take_u8()? {
        0 => Ok(Peer::Designer),
        1 => {
            let address = std::str::from_utf8(r.take_lp32(MAX_ADDRESS_LEN)?)
                .map_err(|_| ReadError::Malformed("address is not UTF-8"))?
                .to_owned();
            Ok(Peer::Host {
                address,
                fingerprint: r.take_array()?,
            })
        }
        _ => Err(ReadError::Malformed("unknown peer kind").into()),
    }
}

/// Builds the setup onion for a cascade, outermost layer (first hop) first in `hops`.
/// The result goes to the first hop; its length is the session's op=0 length.
pub fn build_onion(
    hops: &[(&OnionPublicKey, HopSetup)],
    entropy: &mut impl Entropy,
) -> Result<Vec<u8>, SetupError> {
    let mut inner: Vec<u8> = Vec::new();
    for (public, setup) in hops.iter().rev() {
        check_sizes(setup)?;
        let k = Key::random(entropy);
        let body = k
            .derive(SETUP_KEY)
            .seal(SETUP_NONCE, SETUP_AAD, &setup.encode())?;
        let body_len = u32::try_from(body.len()).map_err(|_| SetupError::TooLarge("layer"))?;
        let mut secret = k.0.to_vec();
        secret.extend(body_len.to_be_bytes());
        let mut layer = Vec::with_capacity(WRAPPED_KEY_LEN + body.len() + inner.len());
        layer.extend(public.encrypt(&secret)?);
        layer.extend(body);
        // The inner layers travel under this hop's keystream: the hop removes it.
        k.xor_keystream(ONION_STREAM, 0, &mut inner)?;
        layer.extend(inner);
        if layer.len() > MAX_SETUP_LEN {
            return Err(SetupError::TooLarge("onion"));
        }
        inner = layer;
    }
    Ok(inner)
}

fn check_sizes(setup: &HopSetup) -> Result<(), SetupError> {
    if setup.layers.is_empty() || setup.layers.len() > MAX_LAYERS_PER_HOP {
        return Err(SetupError::TooLarge("layers"));
    }
    for layer in &setup.layers {
        if layer.component.len() > MAX_COMPONENT_LEN {
            return Err(SetupError::TooLarge("component"));
        }
        if layer.config.len() > MAX_CONFIG_LEN {
            return Err(SetupError::TooLarge("config"));
        }
        if layer.state.len() > MAX_STATE_LEN {
            return Err(SetupError::TooLarge("state"));
        }
    }
    for peer in [&setup.prev, &setup.next] {
        if matches!(peer, Peer::Host { address, .. } if address.len() > MAX_ADDRESS_LEN) {
            return Err(SetupError::TooLarge("address"));
        }
    }
    Ok(())
}

/// What a hop gets from peeling its layer.
#[derive(Debug)]
pub struct Peeled {
    /// Its setup.
    pub setup: HopSetup,
    /// The message for the next hop, as long as the one received.
    pub forward: Vec<u8>,
    /// A tag unique to this layer, for the host's replay cache (P7).
    pub replay_tag: [u8; 32],
}

/// Peels this host's layer off a setup message at time `now` (Unix seconds).
pub fn peel(
    key: &OnionPrivateKey,
    message: &[u8],
    now: u64,
    entropy: &mut impl Entropy,
) -> Result<Peeled, SetupError> {
    if message.len() > MAX_SETUP_LEN {
        return Err(SetupError::TooLarge("onion"));
    }
    let mut r = Reader::new(message);
    let secret = key.decrypt(r.take(WRAPPED_KEY_LEN)?)?;
    let mut sr = Reader::new(&secret);
    let k = Key(sr.take_array::<KEY_LEN>()?);
    let body_len = usize::try_from(sr.take_u32()?).map_err(|_| ReadError::Malformed("length"))?;
    sr.should_be_exhausted()?;
    let body = k
        .derive(SETUP_KEY)
        .open(SETUP_NONCE, SETUP_AAD, r.take(body_len)?)?;
    let setup = HopSetup::decode(&body)?;
    if setup.expires_at <= now {
        return Err(SetupError::Expired);
    }
    let stripped = message.len() - r.remaining();
    let mut forward = r.take_rest().to_vec();
    k.xor_keystream(ONION_STREAM, 0, &mut forward)?;
    let mut padding = vec![0u8; stripped];
    entropy.fill(&mut padding);
    forward.extend(padding);
    Ok(Peeled {
        setup,
        forward,
        replay_tag: k.derive(b"replay tag").0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::tests::{TestEntropy, seeded};

    fn setup(i: u8, component_len: usize, e: &mut TestEntropy) -> HopSetup {
        let host = |n: u8| Peer::Host {
            address: format!("127.0.0.1:{}", 9000 + u16::from(n)),
            fingerprint: [n; 32],
        };
        HopSetup {
            expires_at: 1000,
            prev: if i == 0 { Peer::Designer } else { host(i - 1) },
            next: host(i + 1),
            circuit_in: [i; 16],
            circuit_out: [i + 1; 16],
            link_in: Key::random(e),
            link_out: Key::random(e),
            blob_key: Key::random(e),
            designer_key: Key::random(e),
            flags: 0,
            frame_len: 4096,
            blob_len: 256,
            layers: vec![HopLayer {
                component: vec![i; component_len],
                config: format!("{{\"layer\": {i}}}").into_bytes(),
                state: vec![i; 3],
            }],
        }
    }

    #[test]
    fn every_hop_peels_its_own_setup_and_messages_keep_one_length() {
        let mut e = seeded(1);
        let keys: Vec<OnionPrivateKey> = (0..4)
            .map(|_| OnionPrivateKey::generate().unwrap())
            .collect();
        let publics: Vec<OnionPublicKey> = keys.iter().map(|k| k.public_key().unwrap()).collect();
        // Components of different sizes: the lengths on the wire must not show it.
        let setups: Vec<HopSetup> = (0..4)
            .map(|i| setup(i, 1000 * (usize::from(i) + 1), &mut e))
            .collect();
        let plan: Vec<_> = publics.iter().zip(setups.clone()).collect();
        let mut message = build_onion(&plan, &mut e).unwrap();
        let length = message.len();
        let mut seen = vec![message.clone()];
        for (key, want) in keys.iter().zip(&setups) {
            // Another host's key cannot open this layer.
            let stranger = OnionPrivateKey::generate().unwrap();
            assert!(matches!(
                peel(&stranger, &message, 10, &mut e),
                Err(SetupError::Crypto(_))
            ));
            let peeled = peel(key, &message, 10, &mut e).unwrap();
            assert_eq!(&peeled.setup, want);
            assert_eq!(
                peeled.forward.len(),
                length,
                "P5: one op=0 length on every link"
            );
            message = peeled.forward;
            seen.push(message.clone());
        }
        // P3: no 32-byte window of one link's message appears in another link's message.
        for (a, msg_a) in seen.iter().enumerate() {
            for msg_b in seen.iter().skip(a + 1) {
                let windows: std::collections::HashSet<&[u8]> =
                    msg_a.chunks(32).filter(|w| w.len() == 32).collect();
                assert!(msg_b.windows(32).step_by(1).all(|w| !windows.contains(w)));
            }
        }
    }

    #[test]
    fn tampering_expiry_and_truncation_are_refused() {
        let mut e = seeded(2);
        let key = OnionPrivateKey::generate().unwrap();
        let public = key.public_key().unwrap();
        let onion = build_onion(&[(&public, setup(0, 64, &mut e))], &mut e).unwrap();
        assert!(peel(&key, &onion, 10, &mut e).is_ok());
        assert_eq!(
            peel(&key, &onion, 1000, &mut e).unwrap_err(),
            SetupError::Expired
        );
        // Every byte of the wrapped key and the body is authenticated.
        for i in (0..onion.len()).step_by(7) {
            let mut bad = onion.clone();
            bad[i] ^= 0x10;
            assert!(
                peel(&key, &bad, 10, &mut e).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
        for cut in [0, 100, 256, 300, onion.len() - 1] {
            assert!(
                peel(&key, &onion[..cut], 10, &mut e).is_err(),
                "truncated to {cut}"
            );
        }
        let big = vec![0u8; MAX_SETUP_LEN + 1];
        assert_eq!(
            peel(&key, &big, 10, &mut e).unwrap_err(),
            SetupError::TooLarge("onion")
        );
    }
}
