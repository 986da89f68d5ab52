//! What users look for in the output, end to end through the `mixnn` binary: the test
//! pass's per-class metrics and confusion matrix in `mixnn train --json` lines and in `mixnn
//! predict`'s summary line, and `mixnn predict --test-end K`, which ends the test passes at
//! an inner layer and writes its features: over host processes they are bit for bit those
//! of the same model in this process, wherever K lies (at the first hop with a dummy and a
//! hop relaying its report, at the last hop, in the designer's kept tail).
//!
//! Data: `$MIXNN_DATA`, else `../shared/data/mnist` beside the workspace.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    // The shared helpers' (tests/common).
    clippy::cast_possible_truncation
)]

use std::path::Path;

use mixnn_designer::{
    backend::Backend,
    cascade::{Cascade, CascadeError},
    local_cluster::LocalCluster,
    train::{self, TrainOptions},
    weights::Layout,
};
use serde_json::Value;

mod common;

use common::{mnist, mnist_dir, on_worker, paper_spec, workspace};

/// Test examples the predictions run on, in batches of `BATCH`.
const EXAMPLES: usize = 300;
const BATCH: usize = 50;

/// Runs `mixnn args`; its stdout, or a panic with its stderr.
fn mixnn(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mixnn"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "mixnn {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The JSON object of each line of `text` that is one.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Checks that `line` carries a test pass's metrics and that they hold together.
fn check_metrics(line: &Value, examples: u64) {
    let per_class = line["per_class"].as_array().unwrap();
    let confusion = line["confusion"].as_array().unwrap();
    assert_eq!(per_class.len(), confusion.len());
    let support: u64 = per_class
        .iter()
        .map(|c| c["support"].as_u64().unwrap())
        .sum();
    let predicted: u64 = per_class
        .iter()
        .map(|c| c["predicted"].as_u64().unwrap())
        .sum();
    assert_eq!((support, predicted), (examples, examples));
    let mut correct = 0;
    for (c, (class, row)) in per_class.iter().zip(confusion).enumerate() {
        assert_eq!(class["class"], c);
        let row: Vec<u64> = serde_json::from_value(row.clone()).unwrap();
        assert_eq!(row.iter().sum::<u64>(), class["support"].as_u64().unwrap());
        correct += row[c];
        for key in ["precision", "recall", "f1"] {
            assert!((0.0..=1.0).contains(&class[key].as_f64().unwrap()), "{key}");
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let accuracy = correct as f64 / examples as f64;
    assert_eq!(line["test_acc"].as_f64().unwrap(), accuracy);
    for key in ["precision", "recall", "f1"] {
        let mean = per_class
            .iter()
            .filter(|c| c["support"].as_u64() > Some(0) || c["predicted"].as_u64() > Some(0))
            .map(|c| c[key].as_f64().unwrap())
            .collect::<Vec<f64>>();
        #[allow(clippy::cast_precision_loss)]
        let mean = mean.iter().sum::<f64>() / mean.len() as f64;
        assert!(
            (line["macro"][key].as_f64().unwrap() - mean).abs() < 1e-12,
            "{key}"
        );
    }
}

/// Every epoch's JSON line carries the test pass's metrics.
#[test]
fn train_json_lines_carry_per_class_metrics_and_the_confusion_matrix() {
    let model = workspace().join("models/paper-mlp.toml");
    let stdout = mixnn(&[
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        mnist_dir().to_str().unwrap(),
        "--mode",
        "native",
        "--train-limit",
        "640",
        "--test-limit",
        "200",
        "--epochs",
        "2",
        "--json",
    ]);
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(
        stdout.lines().count(),
        2,
        "nothing but the JSON lines: {stdout}"
    );
    for (e, line) in lines.iter().enumerate() {
        assert_eq!(line["epoch"], e + 1);
        assert_eq!(line["mode"], "native");
        check_metrics(line, 200);
        assert_eq!(line["per_class"].as_array().unwrap().len(), 10);
    }
}

/// Weights trained here for a few batches, written where `predict` reads them; and the
/// trained model.
fn trained(dir: &Path) -> (std::path::PathBuf, Vec<Vec<u8>>) {
    let spec = paper_spec();
    let splits = mnist(640, EXAMPLES);
    let mut model = Cascade::build(&spec, Backend::Native, None).unwrap();
    let options = TrainOptions {
        epochs: 1,
        seed: 7,
        batch_size: 64,
        test_batch_size: 100,
        progress: false,
        order: Default::default(),
        input_shape: None,
    };
    train::train(&mut model, &splits, &options, |_| {}).unwrap();
    let states = model.export_states().unwrap();
    let weights = dir.join("trained.safetensors");
    Layout::new(&spec, &states)
        .unwrap()
        .write(&weights, &states)
        .unwrap();
    (weights, states)
}

/// Layer `end`'s output for the test examples, batch by batch, in this process (wasm, as
/// `predict --compare` runs it).
fn features_here(states: Vec<Vec<u8>>, end: usize) -> Vec<Vec<f32>> {
    on_worker(move |sandbox| {
        let spec = paper_spec();
        let test = mnist(0, EXAMPLES).test;
        let mut model = Cascade::build(&spec, Backend::Wasm, Some(sandbox)).unwrap();
        model.import_states(&states).unwrap();
        let indices: Vec<usize> = (0..test.len()).collect();
        let mut rows = Vec::new();
        for chunk in indices.chunks(BATCH) {
            let (x, _) = train::batch(&test, chunk, None).unwrap();
            let y = model.predict_to(x, end).unwrap();
            let per_example = y.shape()[1..].iter().product::<usize>();
            rows.extend(y.data().chunks(per_example).map(<[f32]>::to_vec));
        }
        // The last layer before the loss is the model's output; the loss gives none.
        let (x, _) = train::batch(&test, &[0, 1], None).unwrap();
        assert_eq!(
            model.predict_to(x.clone(), 3).unwrap(),
            model.predict(x.clone()).unwrap()
        );
        assert!(matches!(
            model.predict_to(x, 4),
            Err(CascadeError::NoTestOutput { layer: 4, last: 3 })
        ));
        rows
    })
}

fn assert_same_bits(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (g, w): (Vec<u32>, Vec<u32>) = (
            g.iter().map(|v| v.to_bits()).collect(),
            w.iter().map(|v| v.to_bits()).collect(),
        );
        assert_eq!(g, w, "{what}: example {i}");
    }
}

/// `predict --test-end K` over host processes gives layer K's output bit for bit, with the
/// labels carried along and no accuracy; a K that cannot end a test pass is refused with
/// the ones that can. Without it, the summary carries the same per-class metrics as
/// training's lines.
#[test]
fn predict_test_end_gives_the_in_process_features_exactly_over_host_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, states) = trained(dir.path());
    let labels = mnist(0, EXAMPLES).test.labels;
    let cluster = LocalCluster::start(env!("CARGO_BIN_EXE_mixnn").as_ref(), 4).unwrap();
    let fingerprint = mixnn_transport::hex_fingerprint::format(&cluster.directory_fingerprint);
    let (model, data) = (
        workspace().join("models/paper-mlp.toml"),
        mnist_dir().to_str().unwrap().to_owned(),
    );
    let directory = cluster.directory_addr.to_string();
    let predict = |extra: &[&str]| -> Result<Value, String> {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_mixnn"))
            .arg("predict")
            .arg("--model")
            .arg(&model)
            .arg("--weights")
            .arg(&weights)
            .args(["--data", &data, "--limit", &EXAMPLES.to_string()])
            .args(["--batch-size", &BATCH.to_string(), "--in-flight", "3"])
            .args([
                "--directory",
                &directory,
                "--directory-fingerprint",
                &fingerprint,
            ])
            .args(extra)
            .output()
            .unwrap();
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        let stdout = String::from_utf8(output.stdout).unwrap();
        Ok(serde_json::from_str(stdout.lines().last().unwrap()).unwrap())
    };

    // Predictions: the summary carries the metrics, as training's lines do.
    let summary = predict(&["--dummies", "0", "--compare"]).unwrap();
    assert_eq!(summary["identical_to_inproc"], true);
    check_metrics(&summary, EXAMPLES as u64);
    assert!(summary["test_end"].is_null());

    // (K, dummies, file): layer 0 at the first hop, its report relayed by a dummy and the
    // second hop; layer 1 at the last hop; layer 2 in the designer's kept tail.
    for (k, dummies, file) in [
        (0, "1", "f0.csv"),
        (1, "0", "f1.jsonl"),
        (2, "1", "f2.jsonl"),
    ] {
        let out = dir.path().join(file);
        let summary = predict(&[
            "--test-end",
            &k.to_string(),
            "--dummies",
            dummies,
            "--compare",
            "--out",
            out.to_str().unwrap(),
        ])
        .unwrap();
        let want = features_here(states.clone(), k);
        let width = [128, 64, 10][k];
        assert_eq!(summary["test_end"], k);
        assert_eq!(summary["features"], width);
        assert_eq!(summary["identical_to_inproc"], true, "K = {k}");
        assert!(summary["test_acc"].is_null());
        assert!(summary.get("per_class").is_none());
        let text = std::fs::read_to_string(&out).unwrap();
        let (got, got_labels): (Vec<Vec<f32>>, Vec<u8>) = if file.ends_with(".csv") {
            let mut lines = text.lines();
            let header: Vec<&str> = lines.next().unwrap().split(',').collect();
            assert_eq!(header[..4], ["index", "name", "label", "f0"]);
            assert_eq!(header.len(), 3 + width);
            lines
                .enumerate()
                .map(|(i, line)| {
                    let cells: Vec<&str> = line.split(',').collect();
                    assert_eq!(cells[0], i.to_string());
                    let features = cells[3..].iter().map(|c| c.parse().unwrap()).collect();
                    (features, cells[2].parse::<u8>().unwrap())
                })
                .unzip()
        } else {
            text.lines()
                .enumerate()
                .map(|(i, line)| {
                    let row: Value = serde_json::from_str(line).unwrap();
                    assert_eq!(row["index"], i);
                    assert!(row.get("prediction").is_none());
                    let features = serde_json::from_value(row["features"].clone()).unwrap();
                    (
                        features,
                        u8::try_from(row["label"].as_u64().unwrap()).unwrap(),
                    )
                })
                .unzip()
        };
        assert_eq!(
            got_labels, labels,
            "K = {k}: the labels travel with the rows"
        );
        assert_same_bits(&got, &want, &format!("K = {k} ({file})"));
    }

    // The loss has no output to give, and a layer a hop shares with the next one cannot end
    // a pass (here every layer is its own host's: all of 0 to 3 can).
    let refused = predict(&["--test-end", "4", "--dummies", "0"]).unwrap_err();
    assert!(
        refused.contains("cannot end at layer 4") && refused.contains("layer 0, 1, 2 or 3"),
        "{refused}"
    );
    assert_eq!(cluster.shutdown().unwrap(), 0);
}
