//! What each host of a real session can see, checked from the audits the host processes keep
//! (`audit_dir`: everything a host decrypted and every byte on its links, recorded by the
//! daemon as it reads and writes its QUIC streams). A short training session runs through a
//! 5 + 2 cascade with cover traffic, then one whose last layers the designer keeps (from the
//! last weight layer on), then one that also keeps the first; the test then shows P1, P2, P3,
//! P5 and P6 (labels included: with the last layers kept, no host receives a gradient that
//! spells them out), and that dummies send what actual hosts send.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use mixnn_designer::{
    attack::views::{self, HostView as View},
    cascade::component_bytes,
    data::Splits,
    local_cluster::LocalCluster,
    remote::{RemoteCascade, RemoteOptions},
    train::{self, TrainOptions},
};
use mixnn_host::{daemon::audit::Record, keys::HostKeys};
use mixnn_sandbox::{Sandbox, SandboxConfig};
use mixnn_wire::frame::Op;
use serde_json::Value;

mod common;

use common::{mnist, paper_spec};

const BATCH: usize = 8;

/// Runs a short session (3 batches, a test pass, the export) and returns every audited
/// host's view of it, in cascade order; the audits are then removed.
fn session(cluster: &LocalCluster, options: RemoteOptions, splits: Splits) -> Vec<View> {
    let sandbox = Arc::new(Sandbox::new(SandboxConfig::default()).unwrap());
    let worker = Arc::clone(&sandbox);
    sandbox
        .spawn_worker("test", move || {
            let spec = paper_spec();
            let input = [BATCH, splits.train.pixels];
            let mut cascade = RemoteCascade::connect(&spec, &worker, &options, &input).unwrap();
            let train_options = TrainOptions {
                epochs: 1,
                seed: 3,
                batch_size: BATCH,
                test_batch_size: BATCH,
                progress: false,
                order: Default::default(),
                input_shape: None,
            };
            train::train(&mut cascade, &splits, &train_options, |_| {}).unwrap();
            cascade.export_states().unwrap();
            cascade.close();
        })
        .unwrap()
        .join()
        .unwrap();
    views::collect(cluster).unwrap()
}

/// What the designer keeps: the first layers, the last ones.
#[derive(Debug, Clone, Copy)]
struct Kept {
    first: bool,
    last: bool,
}

fn options(cluster: &LocalCluster, dummies: usize, kept: Kept) -> RemoteOptions {
    RemoteOptions {
        dummies,
        keep_first: kept.first,
        keep_last: kept.last,
        cover_rate: if kept.last { 0.0 } else { 100.0 },
        step_timeout: Duration::from_secs(30),
        session_ttl: Duration::from_secs(600),
        ..cluster.remote_options()
    }
}

/// Whether a gradient row names its label: one non-zero entry (NLLLoss's gradient), or one
/// negative entry (softmax minus one-hot, the logits' gradient).
fn spells_a_label(row: &[f32]) -> bool {
    row.iter().filter(|v| **v != 0.0).count() == 1 || row.iter().filter(|v| **v < 0.0).count() == 1
}

/// 32-byte windows of each image (from where its pixels are most varied), as `f32` values
/// and as the bytes they travel as: whoever holds an image holds its windows.
fn image_needles(splits: &Splits) -> HashSet<[u8; 32]> {
    let pixels = splits.train.pixels;
    let most_varied = |image: &[f32], width: usize| {
        (0..pixels - width)
            .map(|at| {
                let distinct: HashSet<u32> =
                    image[at..at + width].iter().map(|p| p.to_bits()).collect();
                (distinct.len(), at)
            })
            .max()
            .unwrap()
            .1
    };
    splits
        .train
        .images
        .chunks(pixels)
        .flat_map(|image| {
            let floats: Vec<u8> = image.iter().flat_map(|p| p.to_le_bytes()).collect();
            let bytes: Vec<u8> = image.iter().map(|p| (p * 255.0).round() as u8).collect();
            let (f, b) = (most_varied(image, 8), most_varied(image, 32));
            [
                floats[4 * f..4 * f + 32].try_into().unwrap(),
                bytes[b..b + 32].try_into().unwrap(),
            ]
        })
        .collect()
}

fn contains_any(haystack: &[u8], needles: &HashSet<[u8; 32]>) -> bool {
    haystack
        .windows(32)
        .any(|w| needles.contains(<&[u8; 32]>::try_from(w).unwrap()))
}

/// P3: no 16-byte window of one link's bytes appears on another link.
fn assert_nothing_repeats_across_links(links: &[Vec<u8>]) {
    let mut seen: HashMap<[u8; 16], usize> = HashMap::new();
    for (k, bytes) in links.iter().enumerate() {
        for w in bytes.chunks_exact(16) {
            seen.insert(w.try_into().unwrap(), k);
        }
    }
    for (k, bytes) in links.iter().enumerate() {
        for (at, w) in bytes.windows(16).enumerate() {
            if let Some(&other) = seen.get(<&[u8; 16]>::try_from(w).unwrap()) {
                assert_eq!(other, k, "link {k} byte {at} repeats link {other}'s bytes");
            }
        }
    }
}

/// Checks one session's views; `hosts` says which hosts of the cluster exist.
fn check(views: &[View], cluster: &LocalCluster, splits: &Splits, kept: Kept) {
    let spec = paper_spec();
    let n = views.len();
    let fingerprints: Vec<[u8; 32]> = (0..cluster.host_addrs.len())
        .map(|i| {
            HostKeys::load(&cluster.host_dir(i).unwrap().join("keys"))
                .unwrap()
                .tls
                .fingerprint()
        })
        .collect();

    // P1: each actual hop holds its own layer's component, in the spec's order; dummies hold
    // the identity; nobody holds another hop's.
    let groups = spec.hosts();
    // Kept at the end: from the last weight layer (2: linear 64->10) on.
    let tail = if kept.last { 3 } else { 0 };
    let remote = &groups[usize::from(kept.first)..groups.len() - tail];
    let actual: Vec<&View> = views.iter().filter(|v| !v.is_dummy()).collect();
    assert_eq!(actual.len(), remote.len());
    for (view, group) in actual.iter().zip(remote) {
        let want: Vec<Vec<u8>> = group
            .iter()
            .map(|&i| component_bytes(&spec, i).unwrap())
            .collect();
        assert!(view.components == want, "host {}: components", view.host);
    }
    assert!(!views[0].is_dummy() && !views[n - 1].is_dummy());

    // P2: a host's setup names its two neighbours (the designer only at the ends), and
    // nothing it decrypted names any other host. No field counts the hops: every setup has
    // the same fields, sizes and onion length.
    for (k, view) in views.iter().enumerate() {
        let setup = view.setup.to_string();
        for (other, fp) in fingerprints.iter().enumerate() {
            let neighbour =
                (k > 0 && views[k - 1].host == other) || (k + 1 < n && views[k + 1].host == other);
            let address = cluster.host_addrs[other].to_string();
            let hex = mixnn_transport::hex_fingerprint::format(fp);
            let named = setup.contains(&format!("\"{address}\"")) || setup.contains(&hex);
            assert_eq!(named, neighbour, "hop {k} and host {other}");
            if !neighbour {
                let raw = view.decrypted.windows(32).any(|w| w == fp);
                let text = view
                    .decrypted
                    .windows(address.len())
                    .any(|w| w == address.as_bytes());
                assert!(!raw && !text, "hop {k} decrypted host {other}'s name");
            }
        }
        assert_eq!(view.setup["prev"]["designer"] == true, k == 0);
        assert_eq!(view.setup["next"]["designer"] == true, k + 1 == n);
        let keys = |v: &Value| {
            let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        assert_eq!(keys(&view.setup), keys(&views[0].setup));
        assert_eq!(view.setup["frame_len"], views[0].setup["frame_len"]);
        assert_eq!(view.setup["blob_len"], views[0].setup["blob_len"]);
    }

    // P5: every frame on every link, as it crossed the QUIC stream, has the session's one
    // length, and both ends saw the same bytes; every op=0 message has one length.
    // A loss hop turns batches around itself: the designer sends it nothing on its link, and
    // it alone could tell (it holds the labels, and it is always the last hop).
    let frame_len = views[0].setup["frame_len"].as_u64().unwrap() as usize;
    let turns = !kept.last;
    for (k, view) in views.iter().enumerate() {
        for (name, bytes) in [
            ("prev.in", &view.prev_in),
            ("prev.out", &view.prev_out),
            ("next.in", &view.next_in),
            ("next.out", &view.next_out),
        ] {
            let silent = turns && k + 1 == n && name == "next.in";
            assert!(
                bytes.is_empty() == silent && bytes.len() % frame_len == 0,
                "hop {k} {name}: {} bytes",
                bytes.len()
            );
        }
        assert_eq!(view.frames(true).len(), view.prev_in.len() / frame_len);
        assert_eq!(view.frames(false).len(), view.next_in.len() / frame_len);
        assert_eq!(view.onion_in.len(), views[0].onion_in.len(), "hop {k}");
        if k + 1 < n {
            assert_eq!(view.onion_out.len(), view.onion_in.len());
            assert!(view.onion_out == views[k + 1].onion_in);
            assert!(view.next_out == views[k + 1].prev_in, "link {}", k + 1);
            assert!(view.next_in == views[k + 1].prev_out, "link {}", k + 1);
        }
    }

    // P3: no circuit id, ciphertext or blob repeats across links. A link's bytes are the
    // frames both ways, its op=0 message, and the blobs as the receiving hop decrypted them.
    // (Tensors are left out: a dummy passes its input on unchanged, the paper's limit.)
    let mut links: Vec<Vec<u8>> = vec![Vec::new(); n + 1];
    for (k, view) in views.iter().enumerate() {
        links[k].extend(&view.prev_in);
        links[k].extend(&view.prev_out);
        links[k].extend(&view.onion_in);
        for r in view.records() {
            if let Record::Frame {
                from_prev, blob, ..
            } = r
            {
                links[if *from_prev { k } else { k + 1 }].extend(blob);
            }
        }
        if k + 1 == n {
            links[n].extend(&view.next_in);
            links[n].extend(&view.next_out);
        }
    }
    let circuits: HashSet<String> = views
        .iter()
        .flat_map(|v| [&v.setup["circuit_in"], &v.setup["circuit_out"]])
        .map(Value::to_string)
        .collect();
    assert_eq!(circuits.len(), n + 1, "one circuit id per link");
    assert_nothing_repeats_across_links(&links);

    // Dummies send what actual hosts send: every hop receives the same sequence of ops, blob
    // lengths and (past a dummy) tensor shapes, from either side, whatever its place, cover
    // messages and the export included.
    let ops = |v: &View, from_prev| -> Vec<(u8, usize)> {
        v.frames(from_prev)
            .into_iter()
            .map(|(op, _, blob)| (op, blob))
            .collect()
    };
    // (The first hop, whose prev is the designer, starts the READY rather than receiving it.)
    let from_prev = ops(&views[1], true);
    assert_eq!(from_prev[0].0, Op::READY.0);
    assert_eq!(ops(&views[0], true), from_prev[1..]);
    for (k, view) in views.iter().enumerate() {
        if k > 0 {
            assert_eq!(ops(view, true), from_prev, "hop {k} from prev");
        }
        if !(turns && k + 1 == n) {
            assert_eq!(ops(view, false), ops(&views[0], false), "hop {k} from next");
        }
        if k > 0 && views[k - 1].is_dummy() {
            assert_eq!(view.frames(true), views[k - 1].frames(true));
        }
    }
    // Every batch's backward frame reached the first hop, turned or not.
    let backward = ops(&views[0], false)
        .iter()
        .filter(|f| f.0 == Op::BACKWARD.0)
        .count();
    assert_eq!(backward, 3, "backward frames into the first hop");
    let from_prev: Vec<u8> = from_prev.iter().map(|f| f.0).collect();
    for op in [Op::READY, Op::FORWARD, Op::TEST, Op::EXPORT] {
        assert!(from_prev.contains(&op.0), "op {}", op.0);
    }
    assert_eq!(
        from_prev.contains(&Op::COVER.0),
        !kept.last,
        "cover traffic in the first session only"
    );

    // P6: the raw images reach only the first hop, the labels only the loss hop; neither
    // reaches any host when the designer keeps the first and last layers.
    let images = image_needles(splits);
    for (k, view) in views.iter().enumerate() {
        let has_images = contains_any(&view.decrypted, &images);
        assert_eq!(has_images, !kept.first && k == 0, "hop {k}: raw images");
    }
    let labels: Vec<&[u8]> = views[n - 1]
        .sealed()
        .into_iter()
        .filter(|s| s.len() > 8)
        .collect();
    assert_eq!(labels.len(), if kept.last { 0 } else { 3 }, "label batches");
    let label_needles: HashSet<[u8; 32]> = labels
        .iter()
        .map(|l| l[l.len() - 32..].try_into().unwrap())
        .collect();
    for (k, view) in views.iter().enumerate() {
        assert!(
            view.sealed().iter().all(|s| s.len() == 8 || k + 1 == n),
            "hop {k} opened something other than export slots"
        );
        let has_labels = contains_any(&view.decrypted, &label_needles);
        assert_eq!(has_labels, !kept.last && k + 1 == n, "hop {k}: labels");
    }
    // Nor through gradients: the host after the last weight layer (LogSoftmax's) receives
    // NLLLoss's one-hot gradient, the last weight layer's the logits' softmax minus one-hot,
    // unless the designer keeps them.
    for (k, view) in views.iter().enumerate() {
        let rows: Vec<&[f32]> = view
            .received(Op::BACKWARD, false)
            .into_iter()
            .flat_map(|t| {
                let width = t.shape.last().copied().unwrap_or(1) as usize;
                t.data.chunks(width)
            })
            .collect();
        let spelled = rows.iter().filter(|r| spells_a_label(r)).count();
        let after_weights = view.components == [mixnn_components::LINEAR]
            || view.components == [mixnn_components::LOG_SOFTMAX];
        if kept.last {
            assert_eq!(spelled, 0, "hop {k}: label-spelling gradients");
        } else if after_weights {
            assert_eq!(spelled, rows.len(), "hop {k}: every row spells its label");
            assert_eq!(rows.len(), 3 * BATCH);
        }
    }
}

#[test]
fn each_host_sees_only_its_part_of_a_session() {
    let cluster = LocalCluster::start_audited(env!("CARGO_BIN_EXE_mixnn").as_ref(), 8).unwrap();
    let splits = mnist(3 * BATCH, BATCH);

    let none = Kept {
        first: false,
        last: false,
    };
    let views = session(&cluster, options(&cluster, 2, none), splits.clone());
    assert_eq!(views.len(), 7);
    check(&views, &cluster, &splits, none);

    // The last layers kept: 2 actual hosts (the first two linear-relu) and a dummy.
    let last = Kept {
        first: false,
        last: true,
    };
    let views = session(&cluster, options(&cluster, 1, last), splits.clone());
    assert_eq!(views.len(), 3);
    check(&views, &cluster, &splits, last);

    // Both kept: the second linear-relu alone is left to a host.
    let both = Kept {
        first: true,
        last: true,
    };
    let views = session(&cluster, options(&cluster, 0, both), splits.clone());
    assert_eq!(views.len(), 1);
    assert!(!contains_any(&views[0].decrypted, &image_needles(&splits)));
    assert!(
        views[0].sealed().iter().all(|s| s.len() == 8),
        "only export slots"
    );
    for t in views[0].received(Op::BACKWARD, false) {
        let width = *t.shape.last().unwrap() as usize;
        assert!(!t.data.chunks(width).any(spells_a_label));
    }

    assert_eq!(cluster.shutdown().unwrap(), 0);
}
