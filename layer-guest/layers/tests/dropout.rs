//! `Dropout`: the law of its masks, the identity in testing, a backward that reuses the
//! forward's mask, determinism by seed, and a checkpoint that resumes its masks exactly.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss
)]

mod common;

use common::{t, values};
use mixnn_layer_sdk::{Init, InitConfig, Layer, LayerError, LayerRuntime, Mode, Runtime};
use mixnn_layers::{Dropout, DropoutConfig};
use serde_json::json;

fn dropout(p: f32, seed: u64) -> Dropout {
    Dropout::new(DropoutConfig { p }, &mut Init::new(seed)).unwrap()
}

#[test]
fn training_zeroes_a_share_p_and_scales_the_rest() {
    let n = 20_000;
    let x = t(&[4, n / 4], &vec![1.5; n]);
    for p in [0.1f32, 0.5, 0.8] {
        let mut l = dropout(p, 7);
        let y = l.forward(x.clone(), Mode::Train).unwrap();
        assert_eq!(y.shape(), x.shape());
        let zeros = y.data().iter().filter(|v| **v == 0.0).count();
        let share = zeros as f64 / n as f64;
        // Binomial: 4 standard deviations of n * p * (1 - p).
        let sd = (f64::from(p) * (1.0 - f64::from(p)) / n as f64).sqrt();
        assert!((share - f64::from(p)).abs() < 4.0 * sd, "p {p}: {share}");
        let scaled = 1.5 * (1.0 / (1.0 - p));
        assert!(y.data().iter().all(|v| *v == 0.0 || *v == scaled));
    }
}

#[test]
fn testing_is_the_identity_and_draws_no_mask() {
    let x = t(&[2, 3], &values(6, 1));
    let mut l = dropout(0.5, 3);
    assert_eq!(l.forward(x.clone(), Mode::Test).unwrap(), x);
    assert_eq!(l.extra_state().as_deref(), Some("draws=0"));
    // No backward after a test forward.
    assert!(matches!(
        l.backward(x.clone()),
        Err(LayerError::BadOrder(_))
    ));
    // The edges: p = 0 keeps everything; p = 1 gives zeros (and zero gradients), as PyTorch.
    assert_eq!(dropout(0.0, 3).forward(x.clone(), Mode::Train).unwrap(), x);
    let mut all = dropout(1.0, 3);
    let y = all.forward(x.clone(), Mode::Train).unwrap();
    assert!(y.data().iter().all(|v| *v == 0.0));
    assert!(all.backward(x).unwrap().data().iter().all(|v| *v == 0.0));
}

#[test]
fn backward_applies_the_forwards_mask_and_scale() {
    let x = t(
        &[8, 16],
        &values(128, 2).iter().map(|v| v + 2.0).collect::<Vec<_>>(),
    );
    let mut l = dropout(0.3, 11);
    let y = l.forward(x.clone(), Mode::Train).unwrap();
    let g = t(&[8, 16], &values(128, 5));
    let dx = l.backward(g.clone()).unwrap();
    // Given its mask the layer is linear: where the forward kept a value (all inputs are
    // positive, so exactly where y is not 0) the gradient is scaled as the value was.
    let scale = 1.0 / (1.0 - 0.3f32);
    for i in 0..128 {
        let want = if y.data()[i] == 0.0 {
            0.0
        } else {
            g.data()[i] * scale
        };
        assert_eq!(dx.data()[i], want, "at {i}");
        assert!(y.data()[i] == 0.0 || y.data()[i] == x.data()[i] * scale);
    }
    // A gradient of another size is refused.
    l.forward(x, Mode::Train).unwrap();
    assert!(matches!(
        l.backward(t(&[2], &[1.0, 2.0])),
        Err(LayerError::BadShape(_))
    ));
}

#[test]
fn masks_depend_on_the_seed_and_change_every_step() {
    let x = t(&[1, 256], &vec![1.0; 256]);
    let masks = |seed| {
        let mut l = dropout(0.5, seed);
        (0..3)
            .map(|_| l.forward(x.clone(), Mode::Train).unwrap())
            .collect::<Vec<_>>()
    };
    let (a, b) = (masks(1), masks(1));
    assert_eq!(a, b, "one seed, one sequence");
    assert_ne!(a[0], a[1], "a new mask every step");
    assert_ne!(a[1], a[2]);
    assert_ne!(masks(2)[0], a[0], "another seed, other masks");
}

#[test]
fn bad_probabilities_are_refused() {
    for p in [-0.1f32, 1.5, f32::NAN] {
        let config: DropoutConfig = serde_json::from_value(json!({ "p": p })).unwrap_or(
            // NaN does not survive JSON: build it directly.
            DropoutConfig { p },
        );
        assert!(matches!(
            Dropout::new(config, &mut Init::new(0)),
            Err(LayerError::BadConfig(_))
        ));
    }
    let default: DropoutConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!(default.p, 0.5);
}

/// Through the runtime, as a host runs it: a state exported after some steps and imported
/// into a fresh layer built from the same config resumes the same masks; a weights-style
/// state without the extra state leaves the position alone; a garbled one is refused.
#[test]
fn a_checkpoint_resumes_the_masks_exactly() {
    let config = InitConfig {
        seed: 42,
        optimizer: Default::default(),
        layer: json!({ "p": 0.5 }),
    }
    .to_bytes();
    let x = t(&[4, 32], &vec![1.0; 128]);
    let step = |rt: &mut Runtime<Dropout>| {
        let y = rt.forward(x.clone(), Mode::Train).unwrap();
        rt.backward(y.clone(), true).unwrap();
        rt.update().unwrap();
        y
    };
    let mut original = Runtime::<Dropout>::new();
    original.init(&config).unwrap();
    for _ in 0..3 {
        step(&mut original);
    }
    let checkpoint = original.export_state().unwrap();
    let next: Vec<_> = (0..2).map(|_| step(&mut original)).collect();

    let mut resumed = Runtime::<Dropout>::new();
    resumed.init(&config).unwrap();
    resumed.import_state(&checkpoint).unwrap();
    let again: Vec<_> = (0..2).map(|_| step(&mut resumed)).collect();
    assert_eq!(next, again);
    // Equal states are equal bytes (states are compared byte for byte).
    assert_eq!(
        resumed.export_state().unwrap(),
        original.export_state().unwrap()
    );

    // A state without extra state (as a weights file gives) keeps the layer's position.
    let mut fresh = Runtime::<Dropout>::new();
    fresh.init(&config).unwrap();
    let empty = safetensors::serialize(
        Vec::<(&str, safetensors::tensor::TensorView<'_>)>::new(),
        None,
    )
    .unwrap();
    fresh.import_state(&empty).unwrap();
    let first = step(&mut fresh);
    let mut reference = Runtime::<Dropout>::new();
    reference.init(&config).unwrap();
    assert_eq!(first, step(&mut reference));

    let lots = b"draws=lots".to_vec();
    let garbled = safetensors::serialize(
        [(
            "_extra_state",
            safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![lots.len()], &lots)
                .unwrap(),
        )],
        None,
    )
    .unwrap();
    assert!(matches!(
        fresh.import_state(&garbled),
        Err(LayerError::BadState(_))
    ));
}
