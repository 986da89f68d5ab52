//! The op=0 session-setup onion: one layer per hop, each telling its hop only what that hop
//! needs (its component, config and initial state, neighbours, circuit ids and keys).
//!
//! Layer `i` is `RSA-OAEP(pk_i, k_i || body_len) || AES-GCM(k_i, setup_i) || E_i(layer i+1)`,
//! where `E_i` is the AES-CTR keystream of `k_i`. A hop strips its layer from the front,
//! XORs the whole remainder with its keystream (so what it forwards shares no byte pattern with
//! what it received, P3) and appends as many random bytes as it stripped, so every op=0 message
//! of a session has the same length on every link (P5). It cannot tell where the next layers
//! end and the padding starts, so it learns neither the cascade's length nor its position (P2).

use std::net::SocketAddr;

pub use crate::frame::{CIRCUIT_ID_LEN, CircuitId};
use crate::{
    blob::SEAL_OVERHEAD,
    crypto::{
        CryptoError, Entropy, KEY_LEN, Key, OnionPrivateKey, OnionPublicKey, WRAPPED_KEY_LEN,
    },
    frame::{MAX_FRAME_LEN, MIN_FRAME_LEN, max_blob_len},
    reader::{ReadError, Reader, put_lp32},
    report::MAX_FAILURE_LEN,
};

/// Bytes of a certificate fingerprint (SHA-256).
pub const FINGERPRINT_LEN: usize = 32;
/// Longest host address (`ip:port`).
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
/// Bytes at the front of a hop's layer that only its onion key opens: a host reads this much
/// of a setup, and no more, before it can refuse one that is not for it ([`open_head`]).
pub const HEAD_LEN: usize = WRAPPED_KEY_LEN;
/// Shortest blob a session may use: room for any failure report sealed for the designer, so
/// that every hop can always say why it stopped.
pub const MIN_BLOB_LEN: usize = SEAL_OVERHEAD + MAX_FAILURE_LEN;
/// Longest session a setup may ask for, from the time it is peeled to its expiry (hosts may
/// grant less: [`Freshness::max_lifetime_s`]).
pub const MAX_SESSION_LIFETIME_S: u64 = 7 * 24 * 3600;

const SETUP_NONCE: [u8; 12] = [0; 12];
const SETUP_AAD: &[u8] = b"mixnn setup v2";
const SETUP_KEY: &[u8] = b"setup body";
const ONION_STREAM: &[u8] = b"setup onion";

/// Why a hop refused a setup layer: each is the sender's fault (or, for [`SetupError::Crypto`],
/// a layer meant for another host).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The layer is not for this host, or was tampered with.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The decrypted layer does not parse.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The message, or a field of it, is longer than its maximum.
    #[error("{what} of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Which.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A hop needs between one and [`MAX_LAYERS_PER_HOP`] layers.
    #[error("{0} layers for one hop")]
    LayerCount(usize),
    /// A neighbour's address is not a literal `ip:port` (hosts resolve no names for strangers).
    #[error("a neighbour's address is not ip:port")]
    Address,
    /// The frame length is outside [`MIN_FRAME_LEN`]..=[`MAX_FRAME_LEN`].
    #[error("frame length {0} is out of range")]
    FrameLen(u32),
    /// The blob length is below [`MIN_BLOB_LEN`] or more than a frame carries.
    #[error("blob length {blob_len} is outside {min}..={max} for the session's frames")]
    BlobLen {
        /// The setup's.
        blob_len: u32,
        /// The least allowed.
        min: usize,
        /// The most the session's frames carry.
        max: usize,
    },
    /// Role flags this version does not know.
    #[error("unknown role flags {0:#04x}")]
    UnknownFlags(u8),
    /// The session's expiry is in the past.
    #[error("the session expired")]
    Expired,
    /// The session would last longer than the host grants.
    #[error("a session of {lifetime_s} s asked for; this host grants at most {max_s} s")]
    TooLong {
        /// Seconds from now to its expiry.
        lifetime_s: u64,
        /// The host's maximum.
        max_s: u64,
    },
}

/// Why a setup onion could not be built: the caller's mistake, or a failure of the crypto
/// library.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A cascade needs at least one hop.
    #[error("a cascade needs at least one hop")]
    EmptyCascade,
    /// The setup of a hop is one it would refuse.
    #[error("hop {hop}'s setup would be refused: {reason}")]
    Invalid {
        /// The hop (0 is the first).
        hop: usize,
        /// Why.
        reason: SetupError,
    },
    /// The whole onion is larger than [`MAX_SETUP_LEN`].
    #[error("an onion of {0} bytes exceeds the maximum of {MAX_SETUP_LEN}")]
    TooLarge(usize),
    /// Encryption failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// When a setup is read, and the longest session the host grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Unix time (seconds).
    pub now: u64,
    /// Longest lifetime granted, in seconds (at most [`MAX_SESSION_LIFETIME_S`]).
    pub max_lifetime_s: u64,
}

impl Freshness {
    /// At `now`, granting the protocol's longest lifetime.
    pub fn at(now: u64) -> Self {
        Freshness {
            now,
            max_lifetime_s: MAX_SESSION_LIFETIME_S,
        }
    }

    fn check(&self, expires_at: u64) -> Result<(), SetupError> {
        if expires_at <= self.now {
            return Err(SetupError::Expired);
        }
        let lifetime_s = expires_at - self.now;
        let max_s = self.max_lifetime_s.min(MAX_SESSION_LIFETIME_S);
        if lifetime_s > max_s {
            return Err(SetupError::TooLong { lifetime_s, max_s });
        }
        Ok(())
    }
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
    /// The loss hop turns each batch around itself: once it has the loss it runs its backward
    /// pass and sends the gradient of its input to its previous hop at once, beside the loss
    /// to the designer, and no backward frame comes to it. Two links (to the designer and
    /// back) leave the critical path. Only with [`HopSetup::LOSS`], never with
    /// [`HopSetup::PER_MESSAGE_RSA`] (the backward route comes from the designer there).
    pub const LOSS_TURNS: u8 = 16;

    /// Every role flag this version knows.
    pub const KNOWN_FLAGS: u8 = Self::LOSS
        | Self::TEST_END
        | Self::PER_MESSAGE_RSA
        | Self::DROP_INPUT_GRAD
        | Self::LOSS_TURNS;

    /// The body that gets sealed (what [`HopSetup::decode`] reads).
    pub fn encode(&self) -> Vec<u8> {
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

    /// Parses and checks a setup body, as a hop finds it once its layer is open.
    pub fn decode(bytes: &[u8]) -> Result<Self, SetupError> {
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
                    return Err(SetupError::LayerCount(count));
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
        setup.check()?;
        Ok(setup)
    }

    /// Checks every size and field a hop must not take on trust (all but the expiry, which
    /// depends on the time: [`Freshness`]). The designer runs the same check before it builds.
    pub fn check(&self) -> Result<(), SetupError> {
        let count = self.layers.len();
        if count == 0 || count > MAX_LAYERS_PER_HOP {
            return Err(SetupError::LayerCount(count));
        }
        for layer in &self.layers {
            for (what, len, max) in [
                ("component", layer.component.len(), MAX_COMPONENT_LEN),
                ("config", layer.config.len(), MAX_CONFIG_LEN),
                ("state", layer.state.len(), MAX_STATE_LEN),
            ] {
                if len > max {
                    return Err(SetupError::TooLarge { what, len, max });
                }
            }
        }
        for peer in [&self.prev, &self.next] {
            if let Peer::Host { address, .. } = peer {
                if address.len() > MAX_ADDRESS_LEN {
                    return Err(SetupError::TooLarge {
                        what: "address",
                        len: address.len(),
                        max: MAX_ADDRESS_LEN,
                    });
                }
                address
                    .parse::<SocketAddr>()
                    .map_err(|_| SetupError::Address)?;
            }
        }
        if self.flags & !Self::KNOWN_FLAGS != 0 {
            return Err(SetupError::UnknownFlags(self.flags & !Self::KNOWN_FLAGS));
        }
        let frame_len = usize::try_from(self.frame_len).unwrap_or(usize::MAX);
        if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&frame_len) {
            return Err(SetupError::FrameLen(self.frame_len));
        }
        // What a hop allocates for every blob it creates: never more than a frame carries.
        let max = max_blob_len(frame_len);
        let blob_len = usize::try_from(self.blob_len).unwrap_or(usize::MAX);
        if !(MIN_BLOB_LEN..=max).contains(&blob_len) {
            return Err(SetupError::BlobLen {
                blob_len: self.blob_len,
                min: MIN_BLOB_LEN,
                max,
            });
        }
        Ok(())
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
) -> Result<Vec<u8>, BuildError> {
    if hops.is_empty() {
        return Err(BuildError::EmptyCascade);
    }
    let mut inner: Vec<u8> = Vec::new();
    for (hop, (public, setup)) in hops.iter().enumerate().rev() {
        setup
            .check()
            .map_err(|reason| BuildError::Invalid { hop, reason })?;
        inner = wrap_layer(public, &setup.encode(), inner, entropy)?;
    }
    Ok(inner)
}

/// One layer of an onion: `body` (an encoded [`HopSetup`], unchecked) sealed for the host of
/// `public`, in front of the `inner` layers. [`build_onion`] checks each setup first; tests
/// use this directly to play a designer that does not.
pub fn wrap_layer(
    public: &OnionPublicKey,
    body: &[u8],
    mut inner: Vec<u8>,
    entropy: &mut impl Entropy,
) -> Result<Vec<u8>, BuildError> {
    let k = Key::random(entropy);
    let body = k.derive(SETUP_KEY).seal(SETUP_NONCE, SETUP_AAD, body)?;
    let body_len = u32::try_from(body.len()).map_err(|_| BuildError::TooLarge(body.len()))?;
    let mut secret = k.0.to_vec();
    secret.extend(body_len.to_be_bytes());
    let mut layer = Vec::with_capacity(HEAD_LEN + body.len() + inner.len());
    layer.extend(public.encrypt(&secret)?);
    layer.extend(body);
    // The inner layers travel under this hop's keystream: the hop removes it.
    k.xor_keystream(ONION_STREAM, 0, &mut inner)?;
    layer.extend(inner);
    if layer.len() > MAX_SETUP_LEN {
        return Err(BuildError::TooLarge(layer.len()));
    }
    Ok(layer)
}

/// A hop's head, opened: the key of its layer, and how long the sealed body after it is.
#[derive(Debug)]
pub struct Head {
    key: Key,
    body_len: usize,
    message_len: usize,
}

/// Opens the first [`HEAD_LEN`] bytes of a setup message of `message_len` bytes with this
/// host's onion key: one RSA private-key operation, and everything a host needs before it
/// reads the rest.
pub fn open_head(
    key: &OnionPrivateKey,
    message_len: usize,
    head: &[u8],
) -> Result<Head, SetupError> {
    if message_len > MAX_SETUP_LEN {
        return Err(SetupError::TooLarge {
            what: "setup",
            len: message_len,
            max: MAX_SETUP_LEN,
        });
    }
    if head.len() != HEAD_LEN || message_len < HEAD_LEN {
        return Err(ReadError::Truncated {
            needed: HEAD_LEN.saturating_sub(head.len().min(message_len)),
        }
        .into());
    }
    Head::from_secret(&key.decrypt(head)?, message_len)
}

impl Head {
    /// The head from the secret its RSA block holds (`key || u32 body length`), checked
    /// against the message it heads: what [`open_head`] does after the RSA decryption.
    pub fn from_secret(secret: &[u8], message_len: usize) -> Result<Self, SetupError> {
        let mut sr = Reader::new(secret);
        let key = Key(sr.take_array::<KEY_LEN>()?);
        let body_len =
            usize::try_from(sr.take_u32()?).map_err(|_| ReadError::Malformed("length"))?;
        sr.should_be_exhausted()?;
        // A message shorter than its head has no head (found by fuzzing: `rest_len` then
        // underflowed).
        if message_len < HEAD_LEN {
            return Err(ReadError::Truncated {
                needed: HEAD_LEN - message_len,
            }
            .into());
        }
        let room = message_len - HEAD_LEN;
        if body_len > room {
            return Err(ReadError::Truncated {
                needed: body_len - room,
            }
            .into());
        }
        Ok(Head {
            key,
            body_len,
            message_len,
        })
    }

    /// Bytes of the sealed body that follows the head.
    pub fn body_len(&self) -> usize {
        self.body_len
    }

    /// Bytes of the message after this hop's layer: the layers of the next hops and padding.
    pub fn rest_len(&self) -> usize {
        // `from_secret` keeps HEAD_LEN + body_len within message_len.
        self.message_len.saturating_sub(HEAD_LEN + self.body_len)
    }

    /// Opens and checks this hop's setup (the [`Head::body_len`] bytes after the head).
    pub fn open_body(&self, body: &[u8], freshness: Freshness) -> Result<HopSetup, SetupError> {
        let plain = self
            .key
            .derive(SETUP_KEY)
            .open(SETUP_NONCE, SETUP_AAD, body)?;
        let setup = HopSetup::decode(&plain)?;
        freshness.check(setup.expires_at)?;
        Ok(setup)
    }

    /// The message for the next hop, from the [`Head::rest_len`] bytes after this hop's
    /// layer: under this hop's keystream, padded with fresh random bytes back to the length
    /// received.
    pub fn forward(
        &self,
        mut rest: Vec<u8>,
        entropy: &mut impl Entropy,
    ) -> Result<Vec<u8>, SetupError> {
        if rest.len() != self.rest_len() {
            return Err(ReadError::Truncated {
                needed: self.rest_len().saturating_sub(rest.len()),
            }
            .into());
        }
        self.key.xor_keystream(ONION_STREAM, 0, &mut rest)?;
        let stripped = HEAD_LEN + self.body_len;
        let start = rest.len();
        rest.resize(start + stripped, 0);
        entropy.fill(&mut rest[start..]);
        Ok(rest)
    }

    /// A tag unique to this layer, for the host's replay cache (P7).
    pub fn replay_tag(&self) -> [u8; 32] {
        self.key.derive(b"replay tag").0
    }
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

/// Peels this host's layer off a whole setup message: [`open_head`], [`Head::open_body`] and
/// [`Head::forward`] in one.
pub fn peel(
    key: &OnionPrivateKey,
    message: &[u8],
    freshness: Freshness,
    entropy: &mut impl Entropy,
) -> Result<Peeled, SetupError> {
    let mut r = Reader::new(message);
    let head = open_head(key, message.len(), r.take(HEAD_LEN.min(message.len()))?)?;
    let setup = head.open_body(r.take(head.body_len)?, freshness)?;
    let forward = head.forward(r.take_rest().to_vec(), entropy)?;
    Ok(Peeled {
        setup,
        forward,
        replay_tag: head.replay_tag(),
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
            blob_len: 512,
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
                peel(&stranger, &message, Freshness::at(10), &mut e),
                Err(SetupError::Crypto(_))
            ));
            let peeled = peel(key, &message, Freshness::at(10), &mut e).unwrap();
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
        assert!(peel(&key, &onion, Freshness::at(10), &mut e).is_ok());
        assert_eq!(
            peel(&key, &onion, Freshness::at(1000), &mut e).unwrap_err(),
            SetupError::Expired
        );
        // Every byte of the wrapped key and the body is authenticated.
        for i in (0..onion.len()).step_by(7) {
            let mut bad = onion.clone();
            bad[i] ^= 0x10;
            assert!(
                peel(&key, &bad, Freshness::at(10), &mut e).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
        for cut in [0, 100, 256, 300, onion.len() - 1] {
            assert!(
                peel(&key, &onion[..cut], Freshness::at(10), &mut e).is_err(),
                "truncated to {cut}"
            );
        }
        let big = vec![0u8; MAX_SETUP_LEN + 1];
        assert!(matches!(
            peel(&key, &big, Freshness::at(10), &mut e),
            Err(SetupError::TooLarge { what: "setup", .. })
        ));
        // A host grants at most its own lifetime, and never more than the protocol's.
        let short = Freshness {
            now: 10,
            max_lifetime_s: 100,
        };
        assert_eq!(
            peel(&key, &onion, short, &mut e).unwrap_err(),
            SetupError::TooLong {
                lifetime_s: 990,
                max_s: 100
            }
        );
        let mut far = setup(0, 64, &mut e);
        far.expires_at = 10 + MAX_SESSION_LIFETIME_S + 1;
        let onion = build_onion(&[(&public, far)], &mut e).unwrap();
        let lenient = Freshness {
            now: 10,
            max_lifetime_s: u64::MAX,
        };
        assert!(matches!(
            peel(&key, &onion, lenient, &mut e),
            Err(SetupError::TooLong { .. })
        ));
    }

    #[test]
    #[allow(clippy::cast_possible_truncation)]
    fn sizes_a_stranger_controls_are_checked_before_use() {
        let mut e = seeded(5);
        let valid = setup(1, 16, &mut e);
        valid.check().unwrap();
        let refused = |change: &dyn Fn(&mut HopSetup)| {
            let mut s = valid.clone();
            change(&mut s);
            // The designer's builder and the hop's decoder refuse alike.
            let key = OnionPrivateKey::generate().unwrap();
            let public = key.public_key().unwrap();
            assert!(matches!(
                build_onion(&[(&public, s.clone())], &mut seeded(6)),
                Err(BuildError::Invalid { hop: 0, .. })
            ));
            HopSetup::decode(&s.encode()).unwrap_err()
        };
        // A blob longer than a frame carries (the 3 GB blob a stranger once named), or too
        // short for a failure report.
        assert!(matches!(
            refused(&|s| s.blob_len = 3_000_000_000),
            SetupError::BlobLen { .. }
        ));
        assert!(matches!(
            refused(&|s| s.blob_len = s.frame_len),
            SetupError::BlobLen { .. }
        ));
        assert!(matches!(
            refused(&|s| s.blob_len = (MIN_BLOB_LEN - 1) as u32),
            SetupError::BlobLen { .. }
        ));
        let mut fits = valid.clone();
        fits.blob_len = max_blob_len(fits.frame_len as usize) as u32;
        fits.check().unwrap();
        assert_eq!(
            refused(&|s| s.frame_len = (MAX_FRAME_LEN + 1) as u32),
            SetupError::FrameLen((MAX_FRAME_LEN + 1) as u32)
        );
        assert_eq!(refused(&|s| s.flags = 0x40), SetupError::UnknownFlags(0x40));
        assert_eq!(
            refused(&|s| s.next = Peer::Host {
                address: "example.com:443".into(),
                fingerprint: [0; 32]
            }),
            SetupError::Address
        );
        assert_eq!(refused(&|s| s.layers.clear()), SetupError::LayerCount(0));
    }

    #[test]
    fn a_head_for_another_host_is_refused_from_its_first_bytes() {
        let mut e = seeded(7);
        let key = OnionPrivateKey::generate().unwrap();
        let public = key.public_key().unwrap();
        let onion = build_onion(&[(&public, setup(0, 64, &mut e))], &mut e).unwrap();
        let head = open_head(&key, onion.len(), &onion[..HEAD_LEN]).unwrap();
        assert_eq!(HEAD_LEN + head.body_len() + head.rest_len(), onion.len());
        let stranger = OnionPrivateKey::generate().unwrap();
        assert!(matches!(
            open_head(&stranger, onion.len(), &onion[..HEAD_LEN]),
            Err(SetupError::Crypto(_))
        ));
        // A body longer than the message announced is refused before it is read.
        let mut secret = vec![0; 32];
        secret.extend(10_000u32.to_be_bytes());
        assert!(matches!(
            Head::from_secret(&secret, HEAD_LEN + 100),
            Err(SetupError::Read(ReadError::Truncated { needed: 9_900 }))
        ));
        assert!(Head::from_secret(&secret[..35], HEAD_LEN + 100).is_err());
        // Regression (fuzzing, setup_head): a message shorter than a head.
        let mut empty_body = vec![0; 32];
        empty_body.extend(0u32.to_be_bytes());
        assert!(matches!(
            Head::from_secret(&empty_body, 9),
            Err(SetupError::Read(ReadError::Truncated { needed: 247 }))
        ));
    }
}
