//! What each wire-format target feeds to its decoder and checks on the way out: one function
//! per target, shared by the fuzz targets (`fuzz_targets/<name>.rs`) and the stable
//! regression tests (`wire/tests/fuzz_regressions.rs`, which includes this file by path).
//!
//! Beyond "no panic", each checks what must hold of what a decoder accepts: it re-encodes
//! to the bytes it came from (the formats are canonical), it round-trips, it respects the
//! maxima the format promises, and what the library computes from it has the lengths the
//! protocol relies on. A failed `assert!`/`expect` here is a finding, not a harness bug.

use mixnn_wire::{
    blob::{self, IV_LEN, Recipient, SEAL_OVERHEAD},
    crypto::{KEY_LEN, Key},
    descriptor::{self, MAX_DESCRIPTOR_LEN, MAX_METADATA, MAX_METADATA_FIELD},
    directory::{self, AnswerError, POOL_HEADER_LEN},
    export::ExportSlot,
    frame::{FrameBody, Op, WireTensor},
    report::{MAX_MESSAGE_LEN, Report},
    route::{self, LAYER_LEN, RouteError},
    setup::{
        self, Freshness, HEAD_LEN, Head, HopSetup, MAX_ADDRESS_LEN, MAX_SESSION_LIFETIME_S,
        MAX_SETUP_LEN,
    },
    stream::StreamHeader,
};

use crate::{
    fixtures::{blob_key, designer_key, onion_key},
    input::{FuzzEntropy, Input},
};

/// A target's check.
pub type Check = fn(&[u8]);

/// Every wire target by name (the directory names under `corpus/` and `regressions/`).
pub const TARGETS: &[(&str, Check)] = &[
    ("frame_body", frame_body),
    ("setup_head", setup_head),
    ("setup_layer", setup_layer),
    ("setup_body", setup_body),
    ("blob", blob),
    ("report", report),
    ("export_slot", export_slot),
    ("route_layer", route_layer),
    ("descriptor", descriptor),
    ("directory_answer", directory_answer),
    ("stream_header", stream_header),
];

/// The sealing of a setup body, as `setup::build_onion` does it (its constants are private:
/// if they change there, the seeds stop opening and `setup_layer` says so).
pub const SETUP_KEY: &[u8] = b"setup body";
/// The AEAD nonce of a setup body.
pub const SETUP_NONCE: [u8; 12] = [0; 12];
/// The AEAD associated data of a setup body.
pub const SETUP_AAD: &[u8] = b"mixnn setup v2";
/// The keystream label of the layers under a hop's own.
pub const ONION_STREAM: &[u8] = b"setup onion";

/// Rank-byte flag of a tensor whose values travel as bytes (private in `frame`).
const BYTE_VALUES: u8 = 0x80;

/// Tensors equal bit for bit (NaN payloads included, which `PartialEq` calls unequal).
pub fn same_tensor(a: &WireTensor, b: &WireTensor) -> bool {
    a.shape == b.shape
        && a.data.len() == b.data.len()
        && a.data
            .iter()
            .zip(&b.data)
            .all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Frame bodies equal bit for bit.
pub fn same_body(a: &FrameBody, b: &FrameBody) -> bool {
    a.op == b.op
        && a.blob == b.blob
        && a.route == b.route
        && match (&a.tensor, &b.tensor) {
            (None, None) => true,
            (Some(x), Some(y)) => same_tensor(x, y),
            _ => false,
        }
}

/// `frame_body`: [`FrameBody::decode`] of an opened frame's plaintext. What parses
/// re-encodes at the length it came in ([`FrameBody::encode`]) to a body that decodes equal,
/// and to the same bytes unless it changed a tensor's encoding (f32 values that are all
/// bytes over 255 travel as bytes: the encoder picks that, the decoder takes either).
pub fn frame_body(data: &[u8]) {
    let Ok(body) = FrameBody::decode(data) else {
        return;
    };
    assert!(
        body.encoded_len() <= data.len(),
        "a decoded body claims {} bytes of {}",
        body.encoded_len(),
        data.len()
    );
    let encoded = body
        .encode(data.len())
        .expect("a decoded body re-encodes at the length it came in");
    assert_eq!(encoded.len(), data.len(), "encode pads to its capacity");
    let back = FrameBody::decode(&encoded).expect("a re-encoded body decodes");
    assert!(same_body(&body, &back), "{body:?} came back as {back:?}");
    if encoded != data {
        assert!(
            body.tensor.is_some()
                && data[1] & BYTE_VALUES == 0
                && encoded[1] == data[1] | BYTE_VALUES,
            "a body re-encoded to other bytes without switching a tensor to bytes"
        );
        assert_eq!(
            back.encode(data.len()).expect("re-encodes"),
            encoded,
            "the byte encoding is a fixed point"
        );
    }
}

/// `setup_head`: what a host does with the first [`HEAD_LEN`] bytes of a setup. One input in
/// 16 (first byte 0 mod 16) goes through [`setup::open_head`] with the fixed onion key (one
/// RSA decryption, slow, and nearly always refused); the others through
/// [`Head::from_secret`], which is what `open_head` does after the RSA block and where the
/// lengths a peer chose are checked. Input: `selector u8 || message_len u32 || head or
/// secret`. A head that is accepted has `HEAD_LEN + body_len + rest_len == message_len`.
pub fn setup_head(data: &[u8]) {
    let mut input = Input::new(data);
    let selector = input.u8();
    let message_len = input.u32() as usize;
    if selector.is_multiple_of(16) {
        let head_bytes = input.rest();
        if let Ok(head) = setup::open_head(onion_key(), message_len, head_bytes) {
            assert!(
                message_len <= MAX_SETUP_LEN,
                "a setup over the maximum was opened"
            );
            assert_eq!(head_bytes.len(), HEAD_LEN);
            check_head(&head, message_len);
        }
    } else {
        let secret = input.rest();
        if let Ok(head) = Head::from_secret(secret, message_len) {
            assert_eq!(
                secret.len(),
                KEY_LEN + 4,
                "a secret of the wrong length was taken"
            );
            check_head(&head, message_len);
        }
    }
}

fn check_head(head: &Head, message_len: usize) {
    // What the daemon does next: read `body_len`, then `rest_len` bytes.
    let body_len = head.body_len();
    let rest_len = head.rest_len();
    assert_eq!(
        HEAD_LEN
            .checked_add(body_len)
            .and_then(|n| n.checked_add(rest_len)),
        Some(message_len),
        "head, body and rest do not add up to the message"
    );
    let _ = head.replay_tag();
}

/// `setup_layer`: a hop's own layer after its head, structure-aware. The input gives a layer
/// key `k`, a plaintext and the rest of the message; the plaintext is sealed as
/// `build_onion` seals a setup body, so the fuzzer reaches [`HopSetup::decode`] and the
/// freshness check behind the AEAD, then [`Head::open_body`] and [`Head::forward`] run as
/// [`setup::peel`] runs them. Input: `k [32] || mode u8 || now u64 || max_lifetime u64 ||
/// len u32 || flip_at u16 || flip_bit u8 || plaintext (u16 length) || rest`, where `mode`
/// bit 0 sends the plaintext unsealed, bit 1 gives the message another length than its
/// parts (never shorter than head and body: shorter is `setup_head`'s), bit 2 flips one bit
/// of the body. Checks: a flipped sealed body never opens; what opens passes
/// [`HopSetup::check`], is fresh, and re-encodes to the plaintext; what was sealed right and
/// decodes opens unless it is stale; a forward has the message's length and is the rest
/// under the layer's keystream, padded.
pub fn setup_layer(data: &[u8]) {
    let mut input = Input::new(data);
    let k = Key(input.array());
    let mode = input.u8();
    let sealed = mode & 1 == 0;
    let consistent = mode & 2 == 0;
    let flip = mode & 4 != 0;
    let freshness = Freshness {
        now: input.u64(),
        max_lifetime_s: input.u64(),
    };
    let extra = input.u32() as usize;
    let flip_at = usize::from(input.u16());
    let flip_bit = input.u8() % 8;
    let plaintext = input.lp16();
    let rest = input.rest();

    let mut body = if sealed {
        k.derive(SETUP_KEY)
            .seal(SETUP_NONCE, SETUP_AAD, plaintext)
            .expect("sealing never fails")
    } else {
        plaintext.to_vec()
    };
    let flipped = flip && !body.is_empty();
    if flipped {
        let at = flip_at % body.len();
        body[at] ^= 1 << flip_bit;
    }
    let parts = HEAD_LEN + body.len();
    let message_len = if consistent {
        parts + rest.len()
    } else {
        parts + extra % (2 * rest.len() + 2)
    };
    let mut secret = k.0.to_vec();
    secret.extend(
        u32::try_from(body.len())
            .expect("bodies are short")
            .to_be_bytes(),
    );
    let head = Head::from_secret(&secret, message_len)
        .expect("a head whose body fits in the message is taken");
    assert_eq!(head.body_len(), body.len());
    let rest_len = head.rest_len();
    assert_eq!(parts + rest_len, message_len);

    match head.open_body(&body, freshness) {
        Ok(setup) => {
            assert!(
                sealed && !flipped,
                "a body opened that was not sealed right"
            );
            setup.check().expect("an opened setup passes its own check");
            let max = freshness.max_lifetime_s.min(MAX_SESSION_LIFETIME_S);
            assert!(
                setup.expires_at > freshness.now && setup.expires_at - freshness.now <= max,
                "a stale or too long session was taken"
            );
            assert_eq!(setup.encode(), plaintext, "setups are canonical");
        }
        Err(error) => {
            if let (true, Ok(setup)) = (sealed && !flipped, HopSetup::decode(plaintext)) {
                assert!(
                    matches!(
                        error,
                        setup::SetupError::Expired | setup::SetupError::TooLong { .. }
                    ),
                    "a well-sealed valid setup (expiring {}) was refused: {error:?}",
                    setup.expires_at
                );
            }
        }
    }

    let mut entropy = FuzzEntropy::new(u64::from(mode));
    match head.forward(rest.to_vec(), &mut entropy) {
        Ok(forward) => {
            assert_eq!(rest.len(), rest_len, "forwarded a rest of the wrong length");
            assert_eq!(
                forward.len(),
                message_len,
                "P5: a forward keeps the message's length"
            );
            let mut inner = forward[..rest.len()].to_vec();
            k.xor_keystream(ONION_STREAM, 0, &mut inner)
                .expect("the keystream never fails");
            assert_eq!(
                inner, rest,
                "the forward is the rest under the layer's keystream"
            );
        }
        Err(_) => assert_ne!(rest.len(), rest_len, "refused a rest of the right length"),
    }
}

/// `setup_body`: [`HopSetup::decode`] of an opened setup. What parses passes
/// [`HopSetup::check`] and is canonical: it re-encodes to the same bytes.
pub fn setup_body(data: &[u8]) {
    let Ok(setup) = HopSetup::decode(data) else {
        return;
    };
    setup.check().expect("a decoded setup passes its check");
    for peer in [&setup.prev, &setup.next] {
        if let setup::Peer::Host { address, .. } = peer {
            assert!(address.len() <= MAX_ADDRESS_LEN);
        }
    }
    let encoded = setup.encode();
    assert_eq!(encoded, data, "setups are canonical");
    assert_eq!(HopSetup::decode(&encoded).as_ref(), Ok(&setup));
}

/// `blob`: [`blob::open`] for both recipients under a fixed key; [`blob::layer`] and
/// [`blob::unlayer`] as inverses; [`blob::seal`] of the input as a payload. Checks: what
/// opens for one recipient does not for the other, fits a blob of its length again and
/// round-trips; layers keep lengths and undo; a payload fits exactly when the blob has room.
pub fn blob(data: &[u8]) {
    let key = designer_key();
    let mut entropy = FuzzEntropy::new(data.len() as u64);
    for (to, other) in [
        (Recipient::Host, Recipient::Designer),
        (Recipient::Designer, Recipient::Host),
    ] {
        let Ok(payload) = blob::open(&key, to, data) else {
            continue;
        };
        assert!(
            payload.len() + SEAL_OVERHEAD <= data.len(),
            "a payload longer than its blob"
        );
        assert!(
            blob::open(&key, other, data).is_err(),
            "one blob opened for both"
        );
        let again = blob::seal(&key, to, &payload, data.len(), &mut entropy)
            .expect("a payload fits a blob as long as the one it came in");
        assert_eq!(again.len(), data.len());
        assert_eq!(blob::open(&key, to, &again).as_ref(), Ok(&payload));
    }

    let layers = blob_key();
    let mut x = data.to_vec();
    match blob::layer(&layers, &mut x) {
        Ok(()) => {
            assert!(data.len() >= IV_LEN, "layered a blob shorter than its IV");
            assert_eq!(x.len(), data.len());
            blob::unlayer(&layers, &mut x).expect("what layers unlayers");
            assert_eq!(x, data, "unlayer(layer(x)) != x");
            blob::unlayer(&layers, &mut x).expect("unlayers");
            blob::layer(&layers, &mut x).expect("layers");
            assert_eq!(x, data, "layer(unlayer(x)) != x");
        }
        Err(_) => assert!(
            data.len() < IV_LEN,
            "refused to layer a blob of {}",
            data.len()
        ),
    }

    let spare = usize::from(data.first().copied().unwrap_or(0) % 4);
    let len = data.len() + SEAL_OVERHEAD + spare;
    let sealed = blob::seal(&key, Recipient::Host, data, len, &mut entropy)
        .expect("a payload fits a blob with room for it");
    assert_eq!(sealed.len(), len);
    assert_eq!(
        blob::open(&key, Recipient::Host, &sealed).as_deref(),
        Ok(data)
    );
    assert!(
        blob::seal(&key, Recipient::Host, data, len - spare - 1, &mut entropy).is_err(),
        "a payload was sealed in a blob one byte too short"
    );
}

fn same_report(a: &Report, b: &Report) -> bool {
    match (a, b) {
        (Report::Loss(x), Report::Loss(y)) => x.to_bits() == y.to_bits(),
        (Report::Output(x), Report::Output(y)) => same_tensor(x, y),
        _ => a == b,
    }
}

/// `report`: [`Report::decode`] of a report the designer opened. What parses re-encodes
/// ([`Report::encode`]) to bytes that decode equal, and a failure's message stays within
/// [`MAX_MESSAGE_LEN`] (what keeps every failure report within a session's blobs).
pub fn report(data: &[u8]) {
    let Ok(report) = Report::decode(data) else {
        return;
    };
    let encoded = report.encode().expect("a decoded report re-encodes");
    let back = Report::decode(&encoded)
        .unwrap_or_else(|e| panic!("{report:?} re-encoded does not decode: {e}"));
    assert!(
        same_report(&report, &back),
        "{report:?} came back as {back:?}"
    );
    if let Report::Failure(message) = &report {
        assert!(
            message.len() <= MAX_MESSAGE_LEN,
            "a failure message of {} bytes",
            message.len()
        );
    }
}

/// `export_slot`: [`ExportSlot::decode`]. What parses is in range and re-encodes to the
/// same bytes.
pub fn export_slot(data: &[u8]) {
    let Ok(slot) = ExportSlot::decode(data) else {
        return;
    };
    assert!(slot.index < slot.count);
    assert_eq!(slot.encode().as_slice(), data, "slots are canonical");
    assert_eq!(ExportSlot::decode(&slot.encode()), Ok(slot));
}

/// `route_layer`: a hop's layer of a per-message route. Most inputs go through
/// [`route::peel_with_secret`] (what [`route::peel`] does after its RSA block); one in 32
/// (first byte 0 mod 32) through `peel` with the fixed onion key. Input: `selector u8 ||
/// op u8 || route` for `peel`, `selector u8 || op u8 || secret length code u8 || secret ||
/// route` for the other (a code below 240 means a 32-byte secret). Checks: a peeled route
/// keeps its length (P5), only a 32-byte secret is taken, the layer names one operation
/// (another is refused as [`RouteError::WrongOp`]), and a route shorter than a layer is
/// [`RouteError::TooShort`].
pub fn route_layer(data: &[u8]) {
    let mut input = Input::new(data);
    let selector = input.u8();
    let op = Op(input.u8());
    let mut entropy = FuzzEntropy::new(u64::from(selector));
    if selector.is_multiple_of(32) {
        let layer = input.rest();
        let peeled = route::peel(onion_key(), layer, op, &mut entropy);
        if let Ok(forward) = &peeled {
            assert_eq!(forward.len(), layer.len(), "P5: a route keeps its length");
        }
        if layer.len() < LAYER_LEN {
            assert_eq!(peeled, Err(RouteError::TooShort));
        }
        return;
    }
    let secret_len = match input.u8() {
        0..=239 => KEY_LEN,
        code => usize::from(code - 240) * 3,
    };
    let secret = input.bytes(secret_len);
    let layer = input.rest();
    match route::peel_with_secret(secret, layer, op, &mut entropy) {
        Ok(forward) => {
            assert_eq!(
                secret.len(),
                KEY_LEN,
                "a secret of {} bytes was taken",
                secret.len()
            );
            assert_eq!(forward.len(), layer.len(), "P5: a route keeps its length");
            let other = Op(op.0.wrapping_add(1));
            assert!(
                matches!(
                    route::peel_with_secret(secret, layer, other, &mut entropy),
                    Err(RouteError::WrongOp { .. })
                ),
                "a route layer authorised two operations"
            );
        }
        Err(RouteError::TooShort) => assert!(layer.len() < LAYER_LEN),
        Err(_) => assert!(layer.len() >= LAYER_LEN || secret.len() != KEY_LEN),
    }
}

/// `descriptor`: [`descriptor::verify`] of a signed descriptor from the directory. What
/// verifies respects every maximum the format sets and has a usable onion key.
pub fn descriptor(data: &[u8]) {
    let Ok(descriptor) = descriptor::verify(data) else {
        return;
    };
    assert!(data.len() <= MAX_DESCRIPTOR_LEN);
    assert!(descriptor.address.len() <= MAX_ADDRESS_LEN);
    assert!(descriptor.metadata.len() <= MAX_METADATA);
    assert!(
        descriptor
            .metadata
            .iter()
            .all(|(k, v)| k.len() <= MAX_METADATA_FIELD && v.len() <= MAX_METADATA_FIELD)
    );
    descriptor
        .onion_public_key()
        .expect("a verified descriptor's onion key decodes");
}

/// `directory_answer`: a directory's answers. Input: `max_hosts u8 (mod 8) || answer`.
/// [`directory::decode_pool`] with that small maximum: what parses holds at most that many
/// descriptors, each within [`MAX_DESCRIPTOR_LEN`], agrees with
/// [`directory::decode_pool_header`] and [`directory::decode_pool_body`] read in two steps
/// (as a client reads a stream), and re-encodes ([`directory::encode_pool`]) to the same
/// bytes. [`directory::decode_publish_answer`]: what parses is exactly `0` or `1 || code`.
pub fn directory_answer(data: &[u8]) {
    let mut input = Input::new(data);
    let max_hosts = input.below(8);
    let answer = input.rest();
    let head = &answer[..answer.len().min(POOL_HEADER_LEN)];
    match directory::decode_pool(answer, max_hosts) {
        Ok(pool) => {
            assert!(
                pool.len() <= max_hosts,
                "{} hosts of at most {max_hosts}",
                pool.len()
            );
            assert!(pool.iter().all(|d| d.len() <= MAX_DESCRIPTOR_LEN));
            assert_eq!(
                directory::encode_pool(pool.iter().copied()),
                answer,
                "pool answers are canonical"
            );
            assert_eq!(
                directory::decode_pool_header(head, max_hosts),
                Ok(pool.len())
            );
            assert_eq!(
                directory::decode_pool_body(&answer[POOL_HEADER_LEN..], pool.len()).as_ref(),
                Ok(&pool)
            );
        }
        Err(AnswerError::Refused(refusal)) => {
            assert_eq!(&answer[..2], &[1, refusal.0]);
        }
        Err(AnswerError::TooManyHosts { count, max }) => {
            assert_eq!(max, max_hosts);
            assert!(count > max);
        }
        Err(_) => {}
    }
    if let Ok(count) = directory::decode_pool_header(head, max_hosts) {
        assert_eq!(head.len(), POOL_HEADER_LEN);
        assert!(count <= max_hosts);
        let body = &answer[POOL_HEADER_LEN..];
        // What a client reads after the header is bounded by what it was promised.
        if directory::decode_pool_body(body, count).is_ok() {
            assert!(body.len() <= directory::pool_body_max(count));
        }
    }
    match directory::decode_publish_answer(answer) {
        Ok(()) => assert_eq!(answer, [0]),
        Err(AnswerError::Refused(refusal)) => assert_eq!(answer, [1, refusal.0]),
        Err(_) => {}
    }
}

/// `stream_header`: [`StreamHeader::decode`] of the first bytes of a QUIC stream. What
/// parses is as long as [`StreamHeader::len_for`] its kind says, within
/// [`StreamHeader::MAX_LEN`], and re-encodes to the same bytes; and every input of a known
/// kind and exactly that length parses.
pub fn stream_header(data: &[u8]) {
    let want = data.first().and_then(|&kind| StreamHeader::len_for(kind));
    match StreamHeader::decode(data) {
        Ok(header) => {
            assert_eq!(want, Some(data.len()));
            assert!(data.len() <= StreamHeader::MAX_LEN);
            assert_eq!(header.kind().0, data[0]);
            assert_eq!(header.encode(), data, "stream headers are canonical");
        }
        Err(_) => assert_ne!(
            want,
            Some(data.len()),
            "a header of the length its kind says was refused"
        ),
    }
}
