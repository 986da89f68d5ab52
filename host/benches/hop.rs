//! What a hop costs apart from its layer's compute, sans IO (the QUIC transfer is measured end
//! to end by `mixnn demo`):
//!
//! - per frame: open the incoming frame (AES-GCM, parse), re-layer its blob, seal the outgoing
//!   frame, at 1 KB, 32 KB and 200 KB frames;
//! - op=0 for a 7-hop cascade of the paper's components: the designer building the onion, and
//!   each hop peeling its layer (one RSA-2048 OAEP decryption).
//!
//! Interleaved rounds, medians. `MIXNN_BENCH_QUICK=1` runs a short form.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::time::{Duration, Instant};

use mixnn_wire::{
    blob,
    circuit::{self, HopPlan, SessionParams},
    crypto::{Key, OnionPrivateKey, SystemEntropy},
    frame::{BODY_OVERHEAD, FrameBody, LinkEnd, Op, Side, WireTensor},
    setup::{self, CIRCUIT_ID_LEN, HopLayer, Peer},
};

// As in the binaries: 200 KB frames through glibc's malloc cost page faults on every frame.
#[global_allocator]
static GLOBAL: mixnn_alloc::Allocator = mixnn_alloc::Allocator;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn relay_cost(frame_len: usize, iterations: usize) -> Duration {
    let blob_len = 512;
    // The frame's circuit id and tag, the body's header, the tensor's rank and two dims.
    let values = (frame_len - CIRCUIT_ID_LEN - 16 - BODY_OVERHEAD - blob_len - 9) / 4;
    let (a, b) = (Key([1; 32]), Key([2; 32]));
    let mut prev_up = LinkEnd::new([1; 16], &a, Side::Upstream, frame_len).unwrap();
    let mut me_down = LinkEnd::new([1; 16], &a, Side::Downstream, frame_len).unwrap();
    let mut me_up = LinkEnd::new([2; 16], &b, Side::Upstream, frame_len).unwrap();
    let blob_key = Key([3; 32]);
    let body = FrameBody {
        op: Op::FORWARD,
        tensor: Some(WireTensor {
            shape: vec![2, values as u32 / 2],
            data: vec![0.5; values / 2 * 2],
        }),
        blob: vec![7; blob_len],
        route: Vec::new(),
    };
    let frames: Vec<Vec<u8>> = (0..iterations)
        .map(|_| prev_up.seal(&body).unwrap())
        .collect();
    let started = Instant::now();
    for frame in &frames {
        let mut body = me_down.open(frame).unwrap();
        blob::layer(&blob_key, &mut body.blob).unwrap();
        std::hint::black_box(me_up.seal(&body).unwrap());
    }
    started.elapsed() / iterations as u32
}

fn main() {
    let quick = std::env::var_os("MIXNN_BENCH_QUICK").is_some();
    let (rounds, iterations) = if quick { (3, 20) } else { (15, 200) };
    let sizes = [1 << 10, 32 << 10, 200 << 10];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); sizes.len()];
    for _ in 0..rounds {
        for (i, &size) in sizes.iter().enumerate() {
            samples[i].push(relay_cost(size, iterations));
        }
    }
    println!(
        "per hop, excluding the layer: open + re-layer blob + seal ({rounds} rounds x {iterations}, medians)"
    );
    for (size, s) in sizes.iter().zip(samples) {
        let m = median(s);
        println!(
            "  frame {:>4} KB: {:>7.1} us  ({:.2} GB/s)",
            size >> 10,
            m.as_secs_f64() * 1e6,
            *size as f64 / m.as_secs_f64() / 1e9
        );
    }

    // op=0 for 7 hops: 5 paper layers and 2 dummies.
    let components: [&[u8]; 7] = [
        mixnn_components::LINEAR_RELU,
        mixnn_components::IDENTITY,
        mixnn_components::LINEAR_RELU,
        mixnn_components::LINEAR,
        mixnn_components::IDENTITY,
        mixnn_components::LOG_SOFTMAX,
        mixnn_components::NLL_LOSS,
    ];
    let keys: Vec<OnionPrivateKey> = (0..7)
        .map(|_| OnionPrivateKey::generate().unwrap())
        .collect();
    let publics: Vec<_> = keys.iter().map(|k| k.public_key().unwrap()).collect();
    let setup_rounds = if quick { 2 } else { 9 };
    let (mut builds, mut peels) = (Vec::new(), Vec::new());
    let mut onion_len = 0;
    for _ in 0..setup_rounds {
        let plan = components
            .iter()
            .zip(&publics)
            .enumerate()
            .map(|(i, (c, k))| HopPlan {
                host: Peer::Host {
                    address: format!("127.0.0.1:{}", 7100 + i),
                    fingerprint: [i as u8; 32],
                },
                onion_key: k,
                layers: vec![HopLayer {
                    component: c.to_vec(),
                    config: b"{}".to_vec(),
                    state: Vec::new(),
                }],
                flags: 0,
            })
            .collect();
        let params = SessionParams {
            // Virtual time: the hops peel at second 1.
            expires_at: 1000,
            frame_len: 205_000,
            blob_len: 512,
        };
        let started = Instant::now();
        let (mut onion, _) = circuit::build(plan, params, &mut SystemEntropy).unwrap();
        builds.push(started.elapsed());
        onion_len = onion.len();
        let started = Instant::now();
        for key in &keys {
            onion = setup::peel(key, &onion, setup::Freshness::at(1), &mut SystemEntropy)
                .unwrap()
                .forward;
        }
        peels.push(started.elapsed() / 7);
    }
    let (build, peel) = (median(builds), median(peels));
    println!(
        "op=0, 7 hops, onion of {} KB: build {:.1} ms, peel {:.2} ms per hop, {:.1} ms for the chain (crypto only)",
        onion_len >> 10,
        build.as_secs_f64() * 1e3,
        peel.as_secs_f64() * 1e3,
        (build + peel * 7).as_secs_f64() * 1e3
    );
}
