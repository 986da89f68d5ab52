//! Seed inputs for the wire targets: valid encodings of every message kind, made with the
//! library's own encoders (and the fixed keys of [`crate::fixtures`]), in each target's
//! input format. `seeds` writes them under `corpus/<target>/`; the regression tests run them
//! through the checks too, so a valid message that a check refuses shows up on stable.

use std::collections::BTreeMap;

use mixnn_wire::{
    blob::{self, Recipient},
    crypto::Key,
    descriptor::{Descriptor, IdentityKey},
    directory::{self, Refusal},
    export::ExportSlot,
    frame::{FrameBody, Op, WireTensor, max_blob_len},
    report::{MAX_MESSAGE_LEN, Report},
    route,
    setup::{HopLayer, HopSetup, MIN_BLOB_LEN, Peer},
    stream::StreamHeader,
};

use crate::{
    fixtures::{designer_key, onion_key, onion_public},
    input::{FuzzEntropy, Output},
};

/// Every wire target's seeds, by target name.
pub fn all() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        ("frame_body", frame_bodies()),
        ("setup_head", setup_heads()),
        ("setup_layer", setup_layers()),
        (
            "setup_body",
            setup_bodies().into_iter().map(|s| s.encode()).collect(),
        ),
        ("blob", blobs()),
        ("report", reports()),
        ("export_slot", export_slots()),
        ("route_layer", route_layers()),
        ("descriptor", descriptors()),
        ("directory_answer", directory_answers()),
        ("stream_header", stream_headers()),
    ]
}

fn tensors() -> Vec<WireTensor> {
    vec![
        WireTensor {
            shape: vec![2, 3],
            data: vec![0.5, -1.0, 2.25, 0.0, 1e-3, 7.0],
        },
        // Pixels: they travel as bytes.
        WireTensor {
            shape: vec![2, 4],
            data: (0..8u8).map(|k| f32::from(k * 30) / 255.0).collect(),
        },
        WireTensor {
            shape: vec![4],
            data: vec![0.0, 1.0, 2.0, 1.0],
        },
        WireTensor {
            shape: vec![1, 1, 1],
            data: vec![f32::NAN],
        },
        WireTensor {
            shape: vec![0, 5],
            data: Vec::new(),
        },
        WireTensor {
            shape: Vec::new(),
            data: vec![3.5],
        },
    ]
}

fn frame_bodies() -> Vec<Vec<u8>> {
    let mut e = FuzzEntropy::new(1);
    let mut out = Vec::new();
    for (i, op) in [
        Op::READY,
        Op::FORWARD,
        Op::BACKWARD,
        Op::TEST,
        Op::COVER,
        Op::REPORT,
        Op::EXPORT,
    ]
    .into_iter()
    .enumerate()
    {
        let tensors = tensors();
        let body = FrameBody {
            op,
            tensor: (i % 3 != 0).then(|| tensors[i % tensors.len()].clone()),
            blob: blob::random(if i % 2 == 0 { 64 } else { 20 }, &mut e),
            route: if op == Op::FORWARD {
                blob::random(route::LAYER_LEN, &mut e)
            } else {
                Vec::new()
            },
        };
        // Exactly full, and with padding.
        out.push(body.encode(body.encoded_len()).expect("fits"));
        out.push(body.encode(body.encoded_len() + 40).expect("fits"));
    }
    out
}

fn setup_heads() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (message_len, body_len) in [(4096u32, 1000u32), (300, 44), (256, 0)] {
        let mut secret = vec![9u8; 32];
        secret.extend(body_len.to_be_bytes());
        // The RSA path: a head the fixed key opens.
        let head = onion_public().encrypt(&secret).expect("encrypts");
        out.push(
            Output::default()
                .u8(0)
                .u32(message_len)
                .bytes(&head)
                .finish(),
        );
        // The path after RSA.
        out.push(
            Output::default()
                .u8(1)
                .u32(message_len)
                .bytes(&secret)
                .finish(),
        );
    }
    out
}

/// Setups a hop would accept at time 10 (they expire at 1000).
pub fn setup_bodies() -> Vec<HopSetup> {
    let mut e = FuzzEntropy::new(2);
    let host = |n: u8| Peer::Host {
        address: format!("127.0.0.1:{}", 9000 + u16::from(n)),
        fingerprint: [n; 32],
    };
    let mut setups = Vec::new();
    for (i, flags) in [
        0,
        HopSetup::LOSS | HopSetup::TEST_END,
        HopSetup::PER_MESSAGE_RSA | HopSetup::DROP_INPUT_GRAD,
    ]
    .into_iter()
    .enumerate()
    {
        let i = u8::try_from(i).expect("few");
        setups.push(HopSetup {
            expires_at: 1000,
            prev: if i == 0 { Peer::Designer } else { host(i) },
            next: if i == 1 {
                Peer::Designer
            } else {
                Peer::Host {
                    address: "[::1]:4433".into(),
                    fingerprint: [7; 32],
                }
            },
            circuit_in: [i; 16],
            circuit_out: [i + 1; 16],
            link_in: Key::random(&mut e),
            link_out: Key::random(&mut e),
            blob_key: Key::random(&mut e),
            designer_key: Key::random(&mut e),
            flags,
            frame_len: [2048, 512, 200_000][usize::from(i)],
            blob_len: if i == 2 {
                u32::try_from(max_blob_len(200_000)).expect("fits")
            } else {
                u32::try_from(MIN_BLOB_LEN).expect("fits")
            },
            layers: (0..=i)
                .map(|l| HopLayer {
                    component: vec![0, b'a', b's', b'm', l, 0, 1, 0],
                    config: format!("{{\"layer\": {l}}}").into_bytes(),
                    state: vec![l; usize::from(l) * 5],
                })
                .collect(),
        });
    }
    setups
}

fn setup_layers() -> Vec<Vec<u8>> {
    let mut e = FuzzEntropy::new(3);
    let mut out = Vec::new();
    for (i, setup) in setup_bodies().into_iter().enumerate() {
        let k = Key::random(&mut e);
        let plaintext = setup.encode();
        let rest = blob::random(100 * i, &mut e);
        for (mode, now) in [(0u8, 10u64), (2, 10), (0, 1000)] {
            out.push(
                Output::default()
                    .bytes(&k.0)
                    .u8(mode)
                    .u64(now)
                    .u64(u64::MAX)
                    .u32(7)
                    .u16(0)
                    .u8(0)
                    .lp16(&plaintext)
                    .bytes(&rest)
                    .finish(),
            );
        }
    }
    out
}

fn blobs() -> Vec<Vec<u8>> {
    let mut e = FuzzEntropy::new(4);
    let key = designer_key();
    let mut out = Vec::new();
    let labels = {
        let mut v = Vec::new();
        tensors()[2].encode_into(&mut v).expect("encodes");
        v
    };
    let report = Report::Loss(0.25).encode().expect("encodes");
    let slot = ExportSlot { index: 1, count: 3 }.encode();
    for (to, payload, len) in [
        (Recipient::Host, &labels[..], MIN_BLOB_LEN),
        (Recipient::Host, &slot[..], 2006),
        (Recipient::Designer, &report[..], MIN_BLOB_LEN),
        (Recipient::Designer, &[][..], 36),
    ] {
        out.push(blob::seal(&key, to, payload, len, &mut e).expect("fits"));
    }
    out.push(blob::random(16, &mut e));
    out.push(blob::random(15, &mut e));
    out
}

fn reports() -> Vec<Vec<u8>> {
    let mut reports = vec![
        Report::Ready,
        Report::Loss(0.693),
        Report::Loss(f32::NAN),
        Report::State {
            index: 0,
            count: 2,
            bytes: vec![1, 2, 3, 4],
        },
        Report::failure("layer 2: forward: shape mismatch"),
        // The longest failure, in two-byte characters.
        Report::failure("é".repeat(MAX_MESSAGE_LEN)),
    ];
    reports.extend(tensors().into_iter().map(Report::Output));
    reports
        .iter()
        .map(|r| r.encode().expect("encodes"))
        .collect()
}

fn export_slots() -> Vec<Vec<u8>> {
    [(0, 1), (2, 3), (u32::MAX - 1, u32::MAX)]
        .into_iter()
        .map(|(index, count)| ExportSlot { index, count }.encode().to_vec())
        .collect()
}

fn route_layers() -> Vec<Vec<u8>> {
    let mut e = FuzzEntropy::new(5);
    let public = onion_public();
    let mut out = Vec::new();
    for (hops, op) in [(1, Op::FORWARD), (3, Op::BACKWARD)] {
        let keys = vec![public; hops];
        let built = route::build(&keys, op, &mut e).expect("builds");
        out.push(Output::default().u8(0).u8(op.0).bytes(&built).finish());
        // The secret of the first layer, as the RSA block holds it.
        let secret = onion_key()
            .decrypt(&built[..256])
            .expect("the fixture key opens its own layer");
        out.push(
            Output::default()
                .u8(1)
                .u8(op.0)
                .u8(0)
                .bytes(&secret)
                .bytes(&built)
                .finish(),
        );
    }
    out
}

fn descriptors() -> Vec<Vec<u8>> {
    let key = IdentityKey::generate().expect("an Ed25519 key");
    let mut out = Vec::new();
    for metadata in [
        BTreeMap::new(),
        [
            ("region".to_owned(), "eu-west".to_owned()),
            ("price".to_owned(), "0.01".to_owned()),
        ]
        .into_iter()
        .collect(),
    ] {
        let descriptor = Descriptor {
            identity: [0; 32],
            address: "127.0.0.1:4433".into(),
            onion_key: onion_public().der().to_vec(),
            fingerprint: [7; 32],
            published_at: 1_700_000_000,
            metadata,
        };
        out.push(key.sign(descriptor).expect("signs"));
    }
    out
}

fn directory_answers() -> Vec<Vec<u8>> {
    let signed = descriptors();
    let mut out = Vec::new();
    for max in [0u8, 1, 3, 7] {
        let count = usize::from(max).min(signed.len());
        let pool = directory::encode_pool(signed[..count].iter().map(Vec::as_slice));
        out.push(Output::default().u8(max).bytes(&pool).finish());
    }
    let tiny: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 10]).collect();
    out.push(
        Output::default()
            .u8(5)
            .bytes(&directory::encode_pool(tiny.iter().map(Vec::as_slice)))
            .finish(),
    );
    for answer in [
        directory::encode_refusal(Refusal::BUSY),
        directory::encode_publish_answer(Ok(())),
        directory::encode_publish_answer(Err(Refusal::STALE)),
    ] {
        out.push(Output::default().u8(2).bytes(&answer).finish());
    }
    out
}

fn stream_headers() -> Vec<Vec<u8>> {
    [
        StreamHeader::Setup { len: 4096 },
        StreamHeader::Attach { circuit: [3; 16] },
        StreamHeader::Publish { len: 900 },
        StreamHeader::Pool,
    ]
    .iter()
    .map(StreamHeader::encode)
    .collect()
}
