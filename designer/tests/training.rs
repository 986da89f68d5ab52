//! The paper's model trained in-process on real MNIST: through the sandbox exactly as a host
//! runs it, and natively; plus the custom-layer example.
//!
//! Data: `$MIXNN_DATA`, else `../shared/data/mnist` beside the workspace.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::sync::Arc;

use mixnn_designer::{
    backend::Backend,
    cascade::{Cascade, CascadeError},
    data::Splits,
    order::DataOrder,
    spec::ModelSpec,
    train::{self, EpochReport, TrainOptions},
};
use mixnn_sandbox::{Sandbox, SandboxConfig};
use safetensors::SafeTensors;

mod common;

use common::{mnist, paper_spec};

fn options(epochs: usize) -> TrainOptions {
    TrainOptions {
        epochs,
        seed: 1,
        batch_size: 64,
        test_batch_size: 1000,
        progress: false,
        order: Default::default(),
        input_shape: None,
    }
}

/// Trains on a sandbox worker thread; returns the reports and every layer's final state.
fn run(
    spec: ModelSpec,
    backend: Backend,
    splits: Splits,
    epochs: usize,
) -> (Vec<EpochReport>, Vec<Vec<u8>>) {
    let sandbox = Arc::new(Sandbox::new(SandboxConfig::default()).unwrap());
    let worker = Arc::clone(&sandbox);
    sandbox
        .spawn_worker("trainer", move || {
            let mut cascade = Cascade::build(&spec, backend, Some(&worker)).unwrap();
            let options = TrainOptions {
                input_shape: spec.input_shape.clone(),
                ..options(epochs)
            };
            let reports = train::train(&mut cascade, &splits, &options, |_| {}).unwrap();
            (reports, cascade.export_states().unwrap())
        })
        .unwrap()
        .join()
        .unwrap()
}

/// All tensors of all layers' states, by (layer, name).
fn tensors(states: &[Vec<u8>]) -> Vec<((usize, String), Vec<f32>)> {
    let mut out = Vec::new();
    for (i, bytes) in states.iter().enumerate() {
        let st = SafeTensors::deserialize(bytes).unwrap();
        let mut names = st.names();
        names.sort();
        for name in names {
            let data = st
                .tensor(name)
                .unwrap()
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            out.push(((i, name.to_owned()), data));
        }
    }
    out
}

#[test]
fn wasm_equals_native_after_one_epoch_on_a_2000_slice() {
    let splits = mnist(2000, 1000);
    let (wasm_reports, wasm_states) = run(paper_spec(), Backend::Wasm, splits.clone(), 1);
    let (native_reports, native_states) = run(paper_spec(), Backend::Native, splits, 1);
    let (w, n) = (tensors(&wasm_states), tensors(&native_states));
    assert_eq!(w.len(), n.len());
    assert!(
        w.len() >= 12,
        "weights, biases and momentum buffers of three linear layers"
    );
    for ((key, a), (key_n, b)) in w.iter().zip(&n) {
        assert_eq!(key, key_n);
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-6 * (1.0 + y.abs()),
                "{key:?}: {x} vs {y}"
            );
        }
    }
    assert!((wasm_reports[0].test_acc - native_reports[0].test_acc).abs() < 1e-9);
    // The layers' math is the same code both ways (host kernels, libm), so the match is exact.
    assert_eq!(
        wasm_states, native_states,
        "wasm and native states differ in some bit"
    );
}

#[test]
fn an_explicit_flat_input_shape_trains_bit_for_bit_as_the_default() {
    let path = common::workspace().join("models/paper-mlp.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let explicit = text.replacen(
        "name = \"paper-mlp\"",
        "name = \"paper-mlp\"\ninput_shape = [784]",
        1,
    );
    assert_ne!(explicit, text);
    let explicit = ModelSpec::parse(&explicit, path.parent().unwrap().into()).unwrap();
    assert_eq!(explicit.input_shape, Some(vec![784]));
    assert_eq!(paper_spec().input_shape, None);
    let splits = mnist(2000, 500);
    let (a_reports, a) = run(paper_spec(), Backend::Wasm, splits.clone(), 1);
    let (b_reports, b) = run(explicit, Backend::Wasm, splits, 1);
    assert_eq!(a, b, "the states differ in some bit");
    assert_eq!(
        a_reports[0].train_loss.to_bits(),
        b_reports[0].train_loss.to_bits()
    );
    assert_eq!(
        a_reports[0].test_acc.to_bits(),
        b_reports[0].test_acc.to_bits()
    );
}

#[test]
fn two_wasm_runs_with_the_same_seed_are_bit_identical() {
    let splits = mnist(2000, 500);
    let (a_reports, a) = run(paper_spec(), Backend::Wasm, splits.clone(), 1);
    let (b_reports, b) = run(paper_spec(), Backend::Wasm, splits.clone(), 1);
    assert_eq!(a, b);
    assert_eq!(
        a_reports[0].train_loss.to_bits(),
        b_reports[0].train_loss.to_bits()
    );
    // And a different seed gives different weights.
    let mut spec = paper_spec();
    spec.training.seed = 2;
    let (_, c) = run(spec, Backend::Wasm, splits, 1);
    assert_ne!(a, c);
}

#[test]
fn one_epoch_on_the_24000_slice_reaches_085() {
    let splits = mnist(24_000, 10_000);
    assert_eq!(
        splits.train.len(),
        24_000,
        "the shared MNIST slice has 24,000 training images"
    );
    let (reports, _) = run(paper_spec(), Backend::Wasm, splits, 1);
    let acc = reports[0].test_acc;
    assert!(
        acc >= 0.85,
        "test accuracy {acc} after one epoch (PyTorch: 0.886)"
    );
    let confusion = &reports[0].evaluation.confusion;
    assert_eq!(confusion.total(), 10_000);
}

#[test]
fn custom_layer_example_trains() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("scaled-swish.wasm"),
        mixnn_components::SCALED_SWISH,
    )
    .unwrap();
    let spec_text = r#"
        name = "swish-mlp"
        [training]
        lr = 0.05
        [[layer]]
        component = "linear"
        config = { in_features = 784, out_features = 64 }
        [[layer]]
        component = "scaled-swish.wasm"
        config = { scale = 1.5, beta = 0.5 }
        [[layer]]
        component = "linear"
        config = { in_features = 64, out_features = 10 }
        [[layer]]
        component = "softmax-cross-entropy"
    "#;
    let spec = ModelSpec::parse(spec_text, dir.path().to_path_buf()).unwrap();
    let (reports, states) = run(spec, Backend::Wasm, mnist(4000, 1000), 1);
    assert!(
        reports[0].test_acc > 0.75,
        "accuracy {}",
        reports[0].test_acc
    );
    // Its learnable slope moved away from its initial value.
    let beta = tensors(&states[1..2])
        .into_iter()
        .find(|((_, n), _)| n == "beta")
        .unwrap()
        .1[0];
    assert!((beta - 0.5).abs() > 1e-4, "beta stayed at {beta}");
}

#[test]
fn bad_cascades_are_refused_with_clear_errors() {
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let parse = |text: &str| ModelSpec::parse(text, "/nonexistent".into()).unwrap();
    let not_last = parse(
        "name = \"x\"\n[[layer]]\ncomponent = \"nll-loss\"\n[[layer]]\ncomponent = \"identity\"\n",
    );
    let err = Cascade::build(&not_last, Backend::Wasm, Some(&sandbox)).unwrap_err();
    assert!(
        err.to_string().contains("loss layer but not the last"),
        "{err}"
    );
    let missing = parse("name = \"x\"\n[[layer]]\ncomponent = \"gone.wasm\"\n");
    let err = Cascade::build(&missing, Backend::Wasm, Some(&sandbox)).unwrap_err();
    assert!(
        matches!(err, CascadeError::Load { .. }) && err.to_string().contains("gone.wasm"),
        "{err}"
    );
    let err = Cascade::build(&missing, Backend::Native, None).unwrap_err();
    assert!(err.to_string().contains("standard layers only"), "{err}");
    let bad_config = parse(
        "name = \"x\"\n[[layer]]\ncomponent = \"linear\"\nconfig = { in_features = 0, out_features = 2 }\n",
    );
    let err = Cascade::build(&bad_config, Backend::Wasm, Some(&sandbox)).unwrap_err();
    assert!(
        err.to_string().contains("features must be positive"),
        "{err}"
    );
}

#[test]
fn an_order_file_reproduces_the_seeded_shuffle_and_is_checked_against_the_run() {
    let splits = mnist(640, 100);
    let n = splits.train.len();
    let lines: String = (1..=2)
        .map(|epoch| {
            let order: Vec<String> = DataOrder::Shuffled
                .epoch(1, epoch, n)
                .iter()
                .map(ToString::to_string)
                .collect();
            order.join(" ") + "\n"
        })
        .collect();
    let given = DataOrder::parse(&lines, n).unwrap();
    let losses = |order: DataOrder, epochs: usize| {
        let mut cascade = Cascade::build(&paper_spec(), Backend::Native, None).unwrap();
        let options = TrainOptions {
            order,
            ..options(epochs)
        };
        train::train(&mut cascade, &splits, &options, |_| {})
            .map(|r| r.iter().map(|e| e.train_loss.to_bits()).collect::<Vec<_>>())
    };
    let shuffled = losses(DataOrder::Shuffled, 2).unwrap();
    assert_eq!(losses(given.clone(), 2).unwrap(), shuffled);
    assert_ne!(losses(DataOrder::Sequential, 2).unwrap(), shuffled);
    // Two epochs of orders do not cover three.
    let err = losses(given, 3).unwrap_err();
    assert!(matches!(err, CascadeError::Order(_)), "{err}");
}
