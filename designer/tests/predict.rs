//! `mixnn predict` over real host processes: a host that dies mid-run (SIGKILL to itself at
//! its Nth test frame, several batches in flight) is replaced, the batches it left
//! unanswered run again, and the predictions and accuracy are exactly the in-process ones;
//! and inputs from a `.npy` file give the same results as the IDX files they came from.
//!
//! Data: `$MIXNN_DATA`, else `../shared/data/mnist` beside the workspace (`common::mnist_dir`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::path::Path;

use mixnn_designer::{
    backend::Backend,
    cascade::Cascade,
    data::Splits,
    local_cluster::LocalCluster,
    metrics::argmax_rows,
    train::{self, TrainOptions},
    weights::Layout,
};

mod common;

use common::{mnist, paper_spec, workspace};

/// Examples per batch: the whole test split is 200 batches.
const BATCH: usize = 50;
/// The faulty host dies at this test frame: mid-run, with 8 batches in flight.
const DIE_AT: usize = 90;

/// Weights trained here for a few batches, saved in `dir`; the model that has them.
fn trained(dir: &Path, splits: &Splits) -> (std::path::PathBuf, Cascade) {
    let spec = paper_spec();
    let mut model = Cascade::build(&spec, Backend::Native, None).unwrap();
    let options = TrainOptions {
        epochs: 1,
        seed: 7,
        batch_size: 64,
        test_batch_size: BATCH,
        progress: false,
        order: Default::default(),
        input_shape: spec.input_shape.clone(),
    };
    train::train(&mut model, splits, &options, |_| {}).unwrap();
    let states = model.export_states().unwrap();
    let weights = dir.join("trained.safetensors");
    Layout::new(&spec, &states)
        .unwrap()
        .write(&weights, &states)
        .unwrap();
    (weights, model)
}

/// Runs `mixnn predict` over the cluster's directory; its summary line and its stderr.
fn predict(cluster: &LocalCluster, weights: &Path, extra: &[&str]) -> (serde_json::Value, String) {
    let fingerprint = mixnn_transport::hex_fingerprint::format(&cluster.directory_fingerprint);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mixnn"))
        .arg("predict")
        .arg("--model")
        .arg(workspace().join("models/paper-mlp.toml"))
        .arg("--weights")
        .arg(weights)
        .args(["--directory", &cluster.directory_addr.to_string()])
        .args(["--directory-fingerprint", &fingerprint])
        .args(["--in-flight", "8", "--batch-size", &BATCH.to_string()])
        .args(["--compare"])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let last = stdout.lines().last().unwrap().to_owned();
    (serde_json::from_str(&last).unwrap(), stderr)
}

/// The predictions column of `--out`'s CSV.
fn predictions(csv: &Path) -> Vec<usize> {
    std::fs::read_to_string(csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect()
}

/// The in-process predictions and accuracy over `splits.test`, in batches of `BATCH`.
fn in_process(model: &mut Cascade, splits: &Splits) -> (Vec<usize>, f64) {
    let mut predictions = Vec::new();
    let all: Vec<usize> = (0..splits.test.len()).collect();
    for chunk in all.chunks(BATCH) {
        let (x, _) = train::batch(&splits.test, chunk, None).unwrap();
        let y = model.predict(x).unwrap();
        predictions.extend(argmax_rows(y.data(), 10));
    }
    let accuracy = train::evaluate(model, &splits.test, BATCH, None)
        .unwrap()
        .confusion
        .accuracy();
    (predictions, accuracy)
}

#[test]
fn a_host_dying_mid_predict_is_replaced_and_the_predictions_stay_exactly_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let splits = mnist(640, 10_000);
    let (weights, mut model) = trained(dir.path(), &splits);
    let (want, accuracy) = in_process(&mut model, &splits);
    // The paper's MLP takes 4 positions (2 hops, 2 dummies); host 0 dies at its DIE_AT-th
    // test frame, host 4 is the spare. Which hosts a session takes is drawn at random, so
    // a run without host 0 (no failure) is followed by another, until host 0 was in one.
    let cluster = LocalCluster::start_each(env!("CARGO_BIN_EXE_mixnn").as_ref(), 5, |i| {
        if i == 0 {
            format!("[faults]\ndie_on = \"test\"\ndie_at = {DIE_AT}\n")
        } else {
            String::new()
        }
    })
    .unwrap();
    let csv = dir.path().join("predictions.csv");
    let mut recovered = None;
    for run in 0..12 {
        let (summary, stderr) = predict(
            &cluster,
            &weights,
            &[
                "--data",
                common::mnist_dir().to_str().unwrap(),
                "--out",
                csv.to_str().unwrap(),
            ],
        );
        eprintln!("run {run}: {summary}");
        assert_eq!(summary["examples"], 10_000);
        assert_eq!(summary["identical_to_inproc"], true);
        assert_eq!(
            summary["test_acc"].as_f64().unwrap().to_bits(),
            accuracy.to_bits()
        );
        assert_eq!(predictions(&csv), want, "run {run}");
        let recoveries = summary["recoveries"].as_u64().unwrap();
        if recoveries > 0 {
            recovered = Some((recoveries, stderr));
            break;
        }
        assert!(
            cluster_host_alive(&cluster),
            "host 0 died without a recovery"
        );
    }
    let (recoveries, stderr) = recovered.expect("host 0 was never drawn in 12 runs");
    for line in stderr.lines().filter(|l| l.contains("recover")) {
        eprintln!("{line}");
    }
    assert_eq!(recoveries, 1, "{stderr}");
    // The failure and the recovery are told, with the hop and host.
    let failed = stderr
        .lines()
        .find(|l| l.contains("failed") && l.contains("recovering"))
        .unwrap_or_else(|| panic!("no failure reported: {stderr}"));
    assert!(
        failed.contains("hop ") && failed.contains("127.0.0.1"),
        "{failed}"
    );
    assert!(failed.contains("of 200 batches, hop "), "{failed}");
    assert!(stderr.contains("recovered in"), "{stderr}");
    let mut cluster = cluster;
    assert!(cluster.host_exit(0).is_some(), "host 0 died");
    cluster.shutdown().ok();
}

/// Whether host 0 (the faulty one) still runs: until it is drawn, it must.
fn cluster_host_alive(cluster: &LocalCluster) -> bool {
    cluster
        .host_pid(0)
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// A `.npy` file of `shape` and `descr` holding `data`, as `np.save` writes it (version 1.0).
fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((dict.len() as u16).to_le_bytes());
    out.extend(dict.as_bytes());
    out.extend(data);
    out
}

#[test]
fn npy_inputs_made_from_the_idx_test_split_give_the_same_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let splits = mnist(640, 300);
    let (weights, mut model) = trained(dir.path(), &splits);
    let (want, accuracy) = in_process(&mut model, &splits);
    let cluster = LocalCluster::start(env!("CARGO_BIN_EXE_mixnn").as_ref(), 4).unwrap();
    let pixels: Vec<u8> = splits
        .test
        .images
        .iter()
        .map(|v| (v * 255.0).round() as u8)
        .collect();
    let labels: Vec<u8> = splits
        .test
        .labels
        .iter()
        .flat_map(|&l| i64::from(l).to_le_bytes())
        .collect();
    let floats: Vec<u8> = splits
        .test
        .images
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let files = [
        ("u1.npy", npy("|u1", &[300, 28, 28], &pixels)),
        ("f4.npy", npy("<f4", &[300, 784], &floats)),
        ("f4-nchw.npy", npy("<f4", &[300, 1, 28, 28], &floats)),
        ("labels.npy", npy("<i8", &[300], &labels)),
    ];
    for (name, bytes) in &files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let labels = dir.path().join("labels.npy");
    for name in ["u1.npy", "f4.npy", "f4-nchw.npy"] {
        let csv = dir.path().join(format!("{name}.csv"));
        let (summary, _) = predict(
            &cluster,
            &weights,
            &[
                "--npy",
                dir.path().join(name).to_str().unwrap(),
                "--npy-labels",
                labels.to_str().unwrap(),
                "--out",
                csv.to_str().unwrap(),
            ],
        );
        assert_eq!(summary["examples"], 300, "{name}");
        assert_eq!(summary["identical_to_inproc"], true, "{name}");
        assert_eq!(
            summary["test_acc"].as_f64().unwrap().to_bits(),
            accuracy.to_bits(),
            "{name}"
        );
        assert_eq!(predictions(&csv), want, "{name}");
    }
    // Without labels: predictions, no accuracy. A shape the model does not take: refused.
    let (summary, _) = predict(
        &cluster,
        &weights,
        &["--npy", dir.path().join("u1.npy").to_str().unwrap()],
    );
    assert!(summary["test_acc"].is_null());
    let wrong = dir.path().join("wrong.npy");
    std::fs::write(&wrong, npy("<f4", &[2, 10], &[0; 80])).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mixnn"))
        .arg("predict")
        .arg("--model")
        .arg(workspace().join("models/paper-mlp.toml"))
        .arg("--weights")
        .arg(&weights)
        .args(["--npy", wrong.to_str().unwrap(), "--local-hosts", "1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("wrong.npy") && stderr.contains("the model takes 784 values per example"),
        "{stderr}"
    );
    cluster.shutdown().unwrap();
}
