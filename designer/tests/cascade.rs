//! End to end over real processes on loopback: a directory and hosts started from the `mixnn`
//! binary, sessions set up through onions over QUIC, and the results compared bit for bit
//! with the same model trained in this process (P9), with dummies and with the first and last
//! layers kept by the designer (P6), and from a weights file. Hostile setups are refused and counted while the host
//! keeps serving.
//!
//! Data: `$MIXNN_DATA`, else `../shared/data/mnist` beside the workspace (`common::mnist_dir`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::time::Duration;

use mixnn_designer::{
    backend::Backend,
    cascade::Cascade,
    data::Splits,
    local_cluster::LocalCluster,
    remote::{RemoteCascade, RemoteOptions},
    spec::ModelSpec,
    train::{self, EpochReport, TrainOptions},
    weights::Layout,
};
use mixnn_host::{daemon::unix_now, keys::HostKeys};
use mixnn_wire::{
    circuit::{self, HopPlan, SessionParams},
    crypto::SystemEntropy,
    setup::{Freshness, HopLayer, MIN_BLOB_LEN, peel},
    stream::StreamHeader,
};

mod common;

use common::{mnist, on_worker, paper_spec, workspace};

fn cluster(hosts: usize) -> LocalCluster {
    LocalCluster::start(env!("CARGO_BIN_EXE_mixnn").as_ref(), hosts).unwrap()
}

fn remote_options(cluster: &LocalCluster, dummies: usize, keep: (bool, bool)) -> RemoteOptions {
    RemoteOptions {
        dummies,
        keep_first: keep.0,
        keep_last: keep.1,
        step_timeout: Duration::from_secs(30),
        session_ttl: Duration::from_secs(600),
        ..cluster.remote_options()
    }
}

fn options(spec: &ModelSpec) -> TrainOptions {
    TrainOptions {
        epochs: 1,
        seed: 7,
        batch_size: 64,
        test_batch_size: 64,
        progress: false,
        order: Default::default(),
        input_shape: spec.input_shape.clone(),
    }
}

type Run = (Vec<EpochReport>, Vec<Vec<u8>>);

/// Trains `spec` in this process and over the cluster, both starting from `init` (by layer;
/// none: the seeded init).
fn train_both(
    spec: ModelSpec,
    remote: RemoteOptions,
    splits: Splits,
    init: Vec<Vec<u8>>,
) -> (Run, Run, Vec<String>) {
    on_worker(move |sandbox| {
        let mut local = Cascade::build(&spec, Backend::Wasm, Some(sandbox)).unwrap();
        local.import_states(&init).unwrap();
        let options = options(&spec);
        let local_reports = train::train(&mut local, &splits, &options, |_| {}).unwrap();
        let local_states = local.export_states().unwrap();
        let input = spec.batch_shape(64, splits.train.pixels).unwrap();
        let mut cascade =
            RemoteCascade::connect_from(&spec, sandbox, &remote, &input, &init).unwrap();
        let hops = cascade.describe();
        let reports = train::train(&mut cascade, &splits, &options, |_| {}).unwrap();
        let states = cascade.export_states().unwrap();
        cascade.close();
        ((local_reports, local_states), (reports, states), hops)
    })
}

fn assert_same(local: &Run, remote: &Run) {
    for (a, b) in local.0.iter().zip(&remote.0) {
        assert_eq!(
            a.train_loss.to_bits(),
            b.train_loss.to_bits(),
            "epoch {}",
            a.epoch
        );
        assert_eq!(
            a.test_acc.to_bits(),
            b.test_acc.to_bits(),
            "epoch {}",
            a.epoch
        );
        assert_eq!(b.mode, "cascade");
    }
    assert_eq!(local.1.len(), remote.1.len());
    for (i, (a, b)) in local.1.iter().zip(&remote.1).enumerate() {
        assert!(a == b, "layer {i}: the states differ");
    }
}

#[test]
fn host_processes_train_bit_for_bit_like_one_process_with_dummies_and_kept_layers() {
    let cluster = cluster(8);
    let splits = mnist(640, 256);

    // P9: 5 actual hosts + 2 dummies.
    let (local, remote, hops) = train_both(
        paper_spec(),
        remote_options(&cluster, 2, (false, false)),
        splits.clone(),
        Vec::new(),
    );
    assert_eq!(hops.len(), 7);
    assert_eq!(hops.iter().filter(|h| *h == "dummy").count(), 2);
    assert!(hops[0] != "dummy" && hops[6] != "dummy", "{hops:?}");
    assert_same(&local, &remote);

    // P6: the designer keeps the first layer and the last ones (from the last weight layer
    // on: the second linear-relu alone is left to a host); still exact, with cover traffic
    // looping through the cascade between the batches. Both start from the weights of a
    // weights file (another seed's, as `--init-weights` reads it): the kept layers import
    // them here, the hops from their op=0 layers.
    let mut options = remote_options(&cluster, 0, (true, true));
    options.cover_rate = 50.0;
    let mut other = paper_spec();
    other.training.seed = 99;
    let mut donor = Cascade::build(&other, Backend::Native, None).unwrap();
    let donor_states = donor.export_states().unwrap();
    let layout = Layout::new(&other, &donor_states).unwrap();
    let init = layout.load(&layout.save(&donor_states).unwrap()).unwrap();
    let without_init = local;
    let (local, remote, hops) = train_both(paper_spec(), options, splits, init);
    assert!(
        local.1 != without_init.1,
        "the weights file made no difference"
    );
    assert_eq!(hops, ["layers 1: linear-relu"]);
    assert_same(&local, &remote);

    // Every frame opened: nothing was rejected anywhere.
    std::thread::sleep(Duration::from_millis(1500));
    let stats: Vec<_> = (0..8).map(|i| cluster.host_stats(i).unwrap()).collect();
    assert_eq!(stats.iter().map(|s| s.setups_accepted).sum::<u64>(), 8);
    assert!(
        stats
            .iter()
            .all(|s| s.frames_rejected == 0 && s.sessions_failed == 0),
        "{stats:?}"
    );
    // Most frames ran where they arrived (the paper's hops are cheap), and none went over
    // its budget there: the exact results above include them.
    let sum = |f: fn(&mixnn_host::daemon::DaemonStats) -> u64| stats.iter().map(f).sum::<u64>();
    let (inline, processed) = (sum(|s| s.frames_inline), sum(|s| s.frames_processed));
    assert!(
        2 * inline > processed,
        "{inline} of {processed} frames inline"
    );
    assert_eq!(sum(|s| s.inline_over_budget), 0);
    assert_eq!(
        cluster.shutdown().unwrap(),
        0,
        "every process stopped by itself"
    );
}

/// LeNet-5 (convolutions, pooling, a flatten, images as `[N, 1, 28, 28]`) over host
/// processes: each hop runs its block of layers, and the weights come out as in this process.
#[test]
fn a_convolutional_model_trains_bit_for_bit_over_host_processes() {
    let cluster = cluster(6);
    let spec = ModelSpec::from_file(&workspace().join("models/lenet5-fashion.toml")).unwrap();
    let (local, remote, hops) = train_both(
        spec,
        remote_options(&cluster, 2, (false, true)),
        mnist(256, 128),
        Vec::new(),
    );
    let actual: Vec<&String> = hops.iter().filter(|h| *h != "dummy").collect();
    assert_eq!(
        actual,
        [
            "layers 0,1,2: conv2d + relu + max-pool2d",
            "layers 3,4,5,6: conv2d + relu + max-pool2d + flatten",
            "layers 7: linear-relu",
            "layers 8: linear-relu",
        ],
        "{hops:?}"
    );
    assert_same(&local, &remote);
    assert_eq!(cluster.shutdown().unwrap(), 0);
}

/// PrivyNet's split over host processes: the designer keeps a frozen front (convolution,
/// ReLU, pooling) and sends only its features; the rest, with batch norm (running statistics
/// in the hop's state) and dropout (seeded masks, their position in the state), trains over
/// the hosts exactly as in this process, buffers and dropout positions included.
#[test]
fn a_split_model_with_batch_norm_and_dropout_trains_bit_for_bit_over_host_processes() {
    let cluster = cluster(4);
    let spec = ModelSpec::parse(
        r#"
        name = "split"
        input_shape = [1, 28, 28]
        [[layer]]
        component = "conv2d"
        config = { in_channels = 1, out_channels = 4, kernel_size = 3, padding = 1 }
        frozen = true
        [[layer]]
        component = "relu"
        frozen = true
        [[layer]]
        component = "max-pool2d"
        config = { kernel_size = 2 }
        frozen = true
        [[layer]]
        component = "conv2d"
        config = { in_channels = 4, out_channels = 8, kernel_size = 3, padding = 1 }
        host = "a"
        [[layer]]
        component = "batch-norm2d"
        config = { num_features = 8 }
        host = "a"
        [[layer]]
        component = "relu"
        host = "a"
        [[layer]]
        component = "max-pool2d"
        config = { kernel_size = 2 }
        host = "a"
        [[layer]]
        component = "flatten"
        host = "a"
        [[layer]]
        component = "linear-relu"
        config = { in_features = 392, out_features = 32 }
        host = "b"
        [[layer]]
        component = "dropout"
        config = { p = 0.5 }
        host = "b"
        [[layer]]
        component = "linear"
        config = { in_features = 32, out_features = 10 }
        [[layer]]
        component = "log-softmax"
        [[layer]]
        component = "nll-loss"
        "#,
        workspace(),
    )
    .unwrap();
    let split = mixnn_designer::front::Split::new(&spec, &mnist(256, 128), None).unwrap();
    assert_eq!(split.rest.input_shape.as_deref(), Some(&[4, 14, 14][..]));
    let (local, remote, hops) = train_both(
        split.rest,
        // Features are not bytes over 255: they travel as floats.
        RemoteOptions {
            byte_inputs: false,
            ..remote_options(&cluster, 2, (false, true))
        },
        split.features,
        Vec::new(),
    );
    let actual: Vec<&String> = hops.iter().filter(|h| *h != "dummy").collect();
    assert_eq!(
        actual,
        [
            "layers 0,1,2,3,4: conv2d + batch-norm2d + relu + max-pool2d + flatten",
            "layers 5,6: linear-relu + dropout",
        ],
        "{hops:?}"
    );
    assert_same(&local, &remote);
    // The hops' state holds the running statistics and where the dropout masks are.
    let bn = safetensors::SafeTensors::deserialize(&remote.1[1]).unwrap();
    assert_eq!(
        bn.tensor("num_batches_tracked").unwrap().data(),
        4.0f32.to_le_bytes()
    );
    let dropout = safetensors::SafeTensors::deserialize(&remote.1[6]).unwrap();
    assert_eq!(dropout.tensor("_extra_state").unwrap().data(), b"draws=4");
    assert_eq!(cluster.shutdown().unwrap(), 0);
}

/// The same through `mixnn train`, a real designer process: LeNet with its first host's
/// layers frozen at pretrained weights (`--front-weights`), over the cluster and in process;
/// both save the whole model's weights, byte for byte the same, with the front unchanged.
#[test]
fn mixnn_train_keeps_a_frozen_front_and_saves_the_whole_model() {
    let cluster = cluster(3);
    let dir = tempfile::tempdir().unwrap();
    // LeNet with conv1, its ReLU and pooling frozen.
    let text = std::fs::read_to_string(workspace().join("models/lenet5-fashion.toml")).unwrap();
    let mut parts: Vec<String> = text.split("[[layer]]").map(str::to_owned).collect();
    for part in &mut parts[1..4] {
        *part = part.replacen('\n', "\nfrozen = true\n", 1);
    }
    let model = dir.path().join("frozen.toml");
    std::fs::write(&model, parts.join("[[layer]]")).unwrap();
    // "Pretrained" weights: another seed's.
    let mut other = ModelSpec::from_file(&model).unwrap();
    other.training.seed = 99;
    let mut pretrained = Cascade::build(&other, Backend::Native, None).unwrap();
    let states = pretrained.export_states().unwrap();
    let layout = Layout::new(&other, &states).unwrap();
    let front = dir.path().join("front.safetensors");
    layout.write(&front, &states).unwrap();

    let data = common::mnist_dir();
    let fingerprint = mixnn_transport::hex_fingerprint::format(&cluster.directory_fingerprint);
    let run = |out: &std::path::Path, remote: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mixnn"));
        cmd.arg("train")
            .arg("--model")
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .args([
                "--train-limit",
                "320",
                "--test-limit",
                "64",
                "--epochs",
                "1",
            ])
            .args(["--json", "--front-weights"])
            .arg(&front)
            .arg("--save-weights")
            .arg(out);
        if remote {
            cmd.args(["--dummies", "0", "--directory"])
                .arg(cluster.directory_addr.to_string())
                .args(["--directory-fingerprint", &fingerprint]);
        }
        let output = cmd.output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::read(out).unwrap()
    };
    let over_hosts = run(&dir.path().join("remote.safetensors"), true);
    let in_process = run(&dir.path().join("local.safetensors"), false);
    assert!(over_hosts == in_process, "the saved weights differ");
    let saved = safetensors::SafeTensors::deserialize(&over_hosts).unwrap();
    let pretrained = std::fs::read(&front).unwrap();
    let pretrained = safetensors::SafeTensors::deserialize(&pretrained).unwrap();
    assert_eq!(saved.names().len(), pretrained.names().len());
    for name in ["0.weight", "0.bias"] {
        assert_eq!(
            saved.tensor(name).unwrap().data(),
            pretrained.tensor(name).unwrap().data(),
            "{name} is frozen"
        );
    }
    assert_ne!(
        saved.tensor("3.weight").unwrap().data(),
        pretrained.tensor("3.weight").unwrap().data(),
        "the rest trains (from its own seeded init)"
    );
    assert_eq!(cluster.shutdown().unwrap(), 0);
}

/// `mixnn predict`: trained weights deployed onto host processes (started by the command,
/// and from a running directory), the test split and a folder of PNG images run through
/// with several batches in flight; the accuracy and every output are exactly this
/// process's.
#[test]
fn mixnn_predict_over_host_processes_gives_the_in_process_results_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let spec = paper_spec();
    let splits = mnist(640, 300);
    // Weights trained here for a few batches.
    let mut model = Cascade::build(&spec, Backend::Native, None).unwrap();
    let mut options = options(&spec);
    options.test_batch_size = 100;
    train::train(&mut model, &splits, &options, |_| {}).unwrap();
    let states = model.export_states().unwrap();
    let weights = dir.path().join("trained.safetensors");
    Layout::new(&spec, &states)
        .unwrap()
        .write(&weights, &states)
        .unwrap();
    let want = train::evaluate(&mut model, &splits.test, 100, None).unwrap();

    let predict = |extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_mixnn"))
            .arg("predict")
            .arg("--model")
            .arg(workspace().join("models/paper-mlp.toml"))
            .arg("--weights")
            .arg(&weights)
            .args(["--in-flight", "4", "--batch-size", "50", "--compare"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        let last = stdout.lines().last().unwrap().to_owned();
        serde_json::from_str::<serde_json::Value>(&last).unwrap()
    };
    let csv = dir.path().join("predictions.csv");
    let summary = predict(&[
        "--data",
        common::mnist_dir().to_str().unwrap(),
        "--limit",
        "300",
        "--local-hosts",
        "4",
        "--dummies",
        "1",
        "--out",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(summary["examples"], 300);
    assert_eq!(summary["identical_to_inproc"], true);
    assert_eq!(
        summary["test_acc"].as_f64().unwrap().to_bits(),
        want.confusion.accuracy().to_bits()
    );
    let lines = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(lines.lines().count(), 301);
    assert!(lines.starts_with("index,name,prediction,label\n0,,"));

    // Three test images as PNG files, through a running directory's hosts.
    let cluster = cluster(3);
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    for i in 0..3 {
        let pixels: Vec<u8> = splits
            .test
            .image(i)
            .iter()
            .map(|v| (v * 255.0).round() as u8)
            .collect();
        let file = std::fs::File::create(images.join(format!("digit-{i}.png"))).unwrap();
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), 28, 28);
        encoder.set_color(png::ColorType::Grayscale);
        encoder
            .write_header()
            .unwrap()
            .write_image_data(&pixels)
            .unwrap();
    }
    let jsonl = dir.path().join("predictions.jsonl");
    let fingerprint = mixnn_transport::hex_fingerprint::format(&cluster.directory_fingerprint);
    let summary = predict(&[
        "--images",
        images.to_str().unwrap(),
        "--directory",
        &cluster.directory_addr.to_string(),
        "--directory-fingerprint",
        &fingerprint,
        "--dummies",
        "0",
        "--out",
        jsonl.to_str().unwrap(),
    ]);
    assert_eq!(summary["identical_to_inproc"], true);
    assert!(summary["test_acc"].is_null());
    let first3 = train::batch(&splits.test, &[0, 1, 2], None).unwrap().0;
    let want = model.predict(first3).unwrap();
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["name"], format!("digit-{i}.png"));
        let output: Vec<f32> = serde_json::from_value(row["output"].clone()).unwrap();
        assert_eq!(output, want.data()[i * 10..(i + 1) * 10], "image {i}");
    }
    assert_eq!(cluster.shutdown().unwrap(), 0);
}

#[test]
fn hostile_setups_and_frames_are_refused_and_counted_while_the_host_keeps_serving() {
    let cluster = cluster(5);
    let target = cluster.host_addrs[0];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (endpoint, pool) = common::endpoint_and_pool(&cluster).await;
        let host = pool
            .into_iter()
            .find(|c| c.descriptor.address == target.to_string())
            .unwrap();
        let send_stream = |bytes: Vec<u8>| {
            let endpoint = endpoint.clone();
            let fp = host.descriptor.fingerprint;
            async move {
                let conn = endpoint.connect(target, fp).await.unwrap();
                let (mut send, recv) = conn.open_bi().await.unwrap();
                // The host may refuse (stop) a hostile stream before all of it is written.
                let _ = send.write_all(&bytes).await;
                (conn, send, recv)
            }
        };
        let setup = |onion: &[u8]| {
            let len = onion.len() as u32;
            [StreamHeader::Setup { len }.encode(), onion.to_vec()].concat()
        };
        // Garbage, an oversized length, an unknown stream kind.
        let _a = send_stream(setup(&[7u8; 2000])).await;
        let _b = send_stream(StreamHeader::Setup { len: u32::MAX }.encode()).await;
        let _c = send_stream(vec![0x77, 1, 2, 3]).await;
        // A valid onion, then the same onion again (a replay), then a tampered frame on the
        // valid session's link.
        let plan = vec![HopPlan {
            host: host.peer(),
            onion_key: &host.onion_key,
            layers: vec![HopLayer {
                component: mixnn_components::IDENTITY.to_vec(),
                config: br#"{"seed":0,"optimizer":{"lr":0,"momentum":0},"layer":{}}"#.to_vec(),
                state: Vec::new(),
            }],
            flags: 0,
        }];
        let params = SessionParams {
            expires_at: mixnn_host::daemon::unix_now() + 600,
            frame_len: 1024,
            blob_len: MIN_BLOB_LEN as u32,
        };
        let (onion, _) = circuit::build(plan, params, &mut SystemEntropy).unwrap();
        // An onion whose hop before the target is host 1, sent by someone else (this test,
        // with host 1's onion key but not its certificate): the target refuses it.
        let neighbour_keys = HostKeys::load(&cluster.host_dir(1).unwrap().join("keys")).unwrap();
        let neighbour = neighbour_keys.onion_public().unwrap();
        let identity_config = || HopLayer {
            component: mixnn_components::IDENTITY.to_vec(),
            config: br#"{"seed":0,"optimizer":{"lr":0,"momentum":0},"layer":{}}"#.to_vec(),
            state: Vec::new(),
        };
        let two_hops = vec![
            HopPlan {
                host: mixnn_wire::setup::Peer::Host {
                    address: cluster.host_addrs[1].to_string(),
                    fingerprint: neighbour_keys.tls.fingerprint(),
                },
                onion_key: &neighbour,
                layers: vec![identity_config()],
                flags: 0,
            },
            HopPlan {
                host: host.peer(),
                onion_key: &host.onion_key,
                layers: vec![identity_config()],
                flags: 0,
            },
        ];
        let (outer, _) = circuit::build(two_hops, params, &mut SystemEntropy).unwrap();
        let inner = peel(
            &neighbour_keys.onion,
            &outer,
            Freshness::at(unix_now()),
            &mut SystemEntropy,
        )
        .unwrap()
        .forward;
        let _d = send_stream(setup(&inner)).await;
        let (_conn, mut valid, _recv) = send_stream(setup(&onion)).await;
        // Once the first copy is taken, the second is a replay.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let _replay = send_stream(setup(&onion)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        valid.write_all(&[0x5a; 1024]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    });
    let stats = cluster.host_stats(0).unwrap();
    assert!(stats.setups_refused >= 2, "{stats:?}");
    assert_eq!(stats.setups_replayed, 1, "{stats:?}");
    assert!(stats.bad_streams >= 1, "{stats:?}");
    assert_eq!(stats.frames_rejected, 1, "{stats:?}");
    assert_eq!(stats.setups_accepted, 1, "{stats:?}");
    assert_eq!(stats.wrong_neighbour, 1, "{stats:?}");

    // The host still serves: a full session through all five hosts trains exactly.
    let (local, remote, _) = train_both(
        paper_spec(),
        remote_options(&cluster, 0, (false, false)),
        mnist(256, 64),
        Vec::new(),
    );
    assert_same(&local, &remote);
    cluster.shutdown().unwrap();
}
