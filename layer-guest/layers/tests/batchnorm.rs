//! `BatchNorm2d`: forward and running statistics by hand (PyTorch's semantics: biased variance
//! to normalise, unbiased in the running one), testing with the running statistics, backward
//! against central finite differences of the training forward, and its buffers in the state.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod common;

use common::{assert_close, t, values};
use mixnn_layer_sdk::{
    Init, InitConfig, Layer, LayerError, LayerRuntime, Mode, Runtime, SgdConfig, Tensor,
};
use mixnn_layers::{BatchNorm2d, BatchNorm2dConfig};
use serde_json::json;

fn bn(value: serde_json::Value) -> BatchNorm2d {
    let config: BatchNorm2dConfig = serde_json::from_value(value).unwrap();
    BatchNorm2d::new(config, &mut Init::new(0)).unwrap()
}

fn buffer(l: &mut BatchNorm2d, name: &str) -> Vec<f32> {
    l.buffers()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap()
        .1
        .data()
        .to_vec()
}

#[test]
fn forward_and_running_statistics_by_hand() {
    // One channel, values 1, 2 (example 0) and 3, 4 (example 1): mean 2.5, variance 1.25.
    let mut l = bn(json!({"num_features": 1}));
    let y = l
        .forward(t(&[2, 1, 1, 2], &[1.0, 2.0, 3.0, 4.0]), Mode::Train)
        .unwrap();
    let s = (1.25f64 + 1e-5).sqrt();
    for (got, x) in y.data().iter().zip([1.0, 2.0, 3.0, 4.0]) {
        assert_close("y", *got, (x - 2.5) / s, 1e-6);
    }
    // running = 0.9 * (0, 1) + 0.1 * (mean, unbiased variance 1.25 * 4 / 3).
    assert_close(
        "running_mean",
        buffer(&mut l, "running_mean")[0],
        0.25,
        1e-7,
    );
    assert_close(
        "running_var",
        buffer(&mut l, "running_var")[0],
        0.9 + 0.1 * 1.25 * 4.0 / 3.0,
        1e-7,
    );
    assert_eq!(buffer(&mut l, "num_batches_tracked"), [1.0]);

    // Testing normalises with the running statistics and changes none.
    let y = l
        .forward(t(&[1, 1, 1, 2], &[0.25, 1.0]), Mode::Test)
        .unwrap();
    let rv = 0.9 + 0.1 * 1.25 * 4.0 / 3.0;
    assert_close("test y0", y.data()[0], 0.0, 1e-6);
    assert_close("test y1", y.data()[1], 0.75 / (rv + 1e-5f64).sqrt(), 1e-6);
    assert_eq!(buffer(&mut l, "num_batches_tracked"), [1.0]);

    // Channels are independent, and weight and bias scale and shift.
    let mut l = bn(json!({"num_features": 2, "momentum": 0.5}));
    {
        let mut params = l.params();
        params[0].1.value = t(&[2], &[2.0, 3.0]);
        params[1].1.value = t(&[2], &[-1.0, 10.0]);
    }
    // Example 0: channel 0 = (0, 2), channel 1 = (5, 5); example 1: (4, 6), (5, 5).
    let y = l
        .forward(
            t(&[2, 2, 1, 2], &[0.0, 2.0, 5.0, 5.0, 4.0, 6.0, 5.0, 5.0]),
            Mode::Train,
        )
        .unwrap();
    // Channel 0: mean 3, variance 5; channel 1 is constant: xhat 0, so y is the bias.
    let s = (5.0f64 + 1e-5).sqrt();
    let want = [
        2.0 * -3.0 / s - 1.0,
        -2.0 / s - 1.0,
        10.0,
        10.0,
        2.0 / s - 1.0,
        2.0 * 3.0 / s - 1.0,
        10.0,
        10.0,
    ];
    for (i, (got, want)) in y.data().iter().zip(want).enumerate() {
        assert_close(&format!("y[{i}]"), *got, want, 1e-6);
    }
    assert_eq!(buffer(&mut l, "running_mean"), [1.5, 2.5]);
}

/// Central differences of `sum(forward(x, Train) * r)`, for the input, weight and bias.
#[test]
fn backward_matches_finite_differences_of_the_training_forward() {
    let shape = [3, 2, 2, 3];
    let n: usize = shape.iter().product();
    let x = t(&shape, &values(n, 4));
    let mut l = bn(json!({"num_features": 2}));
    {
        let mut params = l.params();
        params[0].1.value = t(&[2], &[1.5, -0.7]);
        params[1].1.value = t(&[2], &[0.2, 0.3]);
    }
    let r = values(n, 8);
    let y = l.forward(x.clone(), Mode::Train).unwrap();
    let dx = l
        .backward(Tensor::new(y.shape().to_vec(), r.clone()).unwrap())
        .unwrap();
    let (dw, db) = {
        let params = l.params();
        (params[0].1.grad.clone(), params[1].1.grad.clone())
    };
    let objective = |l: &mut BatchNorm2d, x: &Tensor| -> f64 {
        let y = l.forward(x.clone(), Mode::Train).unwrap();
        y.data()
            .iter()
            .zip(&r)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum()
    };
    let eps = 1e-2f32;
    for i in 0..n {
        let (mut plus, mut minus) = (x.clone(), x.clone());
        plus.data_mut()[i] += eps;
        minus.data_mut()[i] -= eps;
        let numeric = (objective(&mut l, &plus) - objective(&mut l, &minus)) / f64::from(2.0 * eps);
        assert_close(&format!("dx[{i}]"), dx.data()[i], numeric, 2e-3);
    }
    for (which, grad) in [(0, &dw), (1, &db)] {
        for ch in 0..2 {
            let mut at = |delta: f32| {
                l.params()[which].1.value.data_mut()[ch] += delta;
                let v = objective(&mut l, &x);
                l.params()[which].1.value.data_mut()[ch] -= delta;
                v
            };
            let numeric = (at(eps) - at(-eps)) / f64::from(2.0 * eps);
            assert_close(
                &format!("param {which}[{ch}]"),
                grad.data()[ch],
                numeric,
                2e-3,
            );
        }
    }
}

#[test]
fn bad_configs_and_inputs_are_refused() {
    for config in [
        json!({"num_features": 0}),
        json!({"num_features": 2, "eps": 0.0}),
        json!({"num_features": 2, "momentum": 1.5}),
    ] {
        let config: BatchNorm2dConfig = serde_json::from_value(config).unwrap();
        assert!(matches!(
            BatchNorm2d::new(config, &mut Init::new(0)),
            Err(LayerError::BadConfig(_))
        ));
    }
    let mut l = bn(json!({"num_features": 2}));
    for bad in [t(&[2, 3, 1, 1], &[0.0; 6]), t(&[2, 2], &[0.0; 4])] {
        assert!(matches!(
            l.forward(bad, Mode::Test),
            Err(LayerError::BadShape(_))
        ));
    }
    // One value per channel cannot be normalised in training (PyTorch refuses it too).
    assert!(matches!(
        l.forward(t(&[1, 2, 1, 1], &[1.0, 2.0]), Mode::Train),
        Err(LayerError::BadShape(_))
    ));
    assert!(matches!(
        l.backward(t(&[1], &[1.0])),
        Err(LayerError::BadOrder(_))
    ));
    l.forward(t(&[2, 2, 1, 1], &[1.0, 2.0, 3.0, 4.0]), Mode::Train)
        .unwrap();
    assert!(matches!(
        l.backward(t(&[1], &[1.0])),
        Err(LayerError::BadShape(_))
    ));
}

/// The running statistics are state: exported under PyTorch's names, restored by import,
/// required there, and untouched by the optimizer.
#[test]
fn the_running_statistics_are_saved_and_restored() {
    let config = InitConfig {
        seed: 1,
        optimizer: SgdConfig {
            lr: 0.1,
            momentum: 0.9,
        },
        layer: json!({"num_features": 2}),
    }
    .to_bytes();
    let x = t(&[2, 2, 2, 2], &values(16, 3));
    let mut a = Runtime::<BatchNorm2d>::new();
    a.init(&config).unwrap();
    for _ in 0..3 {
        let y = a.forward(x.clone(), Mode::Train).unwrap();
        a.backward(y, true).unwrap();
        a.update().unwrap();
    }
    let state = a.export_state().unwrap();
    let file = safetensors::SafeTensors::deserialize(&state).unwrap();
    let mut names = file.names();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "bias",
            "bias.momentum_buffer",
            "num_batches_tracked",
            "running_mean",
            "running_var",
            "weight",
            "weight.momentum_buffer"
        ]
    );
    assert_eq!(
        file.tensor("num_batches_tracked").unwrap().shape(),
        [0usize; 0]
    );

    let mut b = Runtime::<BatchNorm2d>::new();
    b.init(&config).unwrap();
    b.import_state(&state).unwrap();
    assert_eq!(b.export_state().unwrap(), state);
    let probe = t(&[1, 2, 2, 2], &values(8, 5));
    assert_eq!(
        a.forward(probe.clone(), Mode::Test).unwrap(),
        b.forward(probe, Mode::Test).unwrap()
    );

    // A state without the buffers is refused, as one without a parameter is.
    let views: Vec<_> = ["weight", "bias"]
        .iter()
        .map(|n| (*n, file.tensor(n).unwrap()))
        .collect();
    let partial = safetensors::serialize(views, None).unwrap();
    assert!(
        matches!(b.import_state(&partial), Err(LayerError::BadState(m)) if m.contains("running_mean"))
    );
}
