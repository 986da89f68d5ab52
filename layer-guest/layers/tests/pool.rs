//! `Flatten`, `MaxPool2d` and `AvgPool2d`: forward against hand-computed values (PyTorch's
//! semantics), backward by hand and against central finite differences, and refusals of bad
//! configs and inputs as errors.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod common;

use common::{check_gradients, t, values};
use mixnn_layer_sdk::{Init, Layer, LayerError, Mode, Tensor};
use mixnn_layers::{
    AvgPool2d, Flatten, MAX_POOL_WINDOW, MaxPool2d, Pair, PoolConfig, STANDARD, native,
};
use serde_json::json;

/// `n` distinct values, 0.05 apart and shuffled (n must be prime to 37): no ties, and no
/// finite-difference step reorders them.
fn distinct(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 37) % n) as f32 * 0.05 - 1.0).collect()
}

fn config(value: serde_json::Value) -> PoolConfig {
    serde_json::from_value(value).unwrap()
}

fn max_pool(value: serde_json::Value) -> MaxPool2d {
    MaxPool2d::new(config(value), &mut Init::new(0)).unwrap()
}

fn avg_pool(value: serde_json::Value) -> AvgPool2d {
    AvgPool2d::new(config(value), &mut Init::new(0)).unwrap()
}

/// 1x1x4x4 holding 0..16 in a scrambled order.
fn four_by_four() -> Tensor {
    t(
        &[1, 1, 4, 4],
        &[
            3.0, 1.0, 12.0, 0.0, //
            2.0, 7.0, 4.0, 9.0, //
            15.0, 5.0, 10.0, 8.0, //
            6.0, 14.0, 11.0, 13.0,
        ],
    )
}

#[test]
fn max_pool_forward_by_hand() {
    // nn.MaxPool2d(2): stride defaults to the kernel size.
    let mut l = max_pool(json!({"kernel_size": 2}));
    let y = l.forward(four_by_four(), Mode::Test).unwrap();
    assert_eq!(y.shape(), &[1, 1, 2, 2]);
    assert_eq!(y.data(), &[7.0, 12.0, 15.0, 13.0]);

    // nn.MaxPool2d(3, stride=2, padding=1): (4 + 2 - 3) / 2 + 1 = 2 per side; windows over
    // rows/cols {0,1}, {1,2,3}.
    let mut l = max_pool(json!({"kernel_size": 3, "stride": 2, "padding": 1}));
    let y = l.forward(four_by_four(), Mode::Test).unwrap();
    assert_eq!(y.shape(), &[1, 1, 2, 2]);
    assert_eq!(y.data(), &[7.0, 12.0, 15.0, 14.0]);

    // A rectangular kernel [1, 4] and stride [2, 1]: rows 0 and 2, whole.
    let mut l = max_pool(json!({"kernel_size": [1, 4], "stride": [2, 1]}));
    let y = l.forward(four_by_four(), Mode::Test).unwrap();
    assert_eq!(y.shape(), &[1, 1, 2, 1]);
    assert_eq!(y.data(), &[12.0, 15.0]);

    // Batches and channels pool independently; floor of a size that does not divide.
    let x = t(
        &[2, 2, 3, 3],
        &(0..36).map(|v| v as f32).collect::<Vec<_>>(),
    );
    let y = max_pool(json!({"kernel_size": 2}))
        .forward(x, Mode::Test)
        .unwrap();
    assert_eq!(y.shape(), &[2, 2, 1, 1]);
    assert_eq!(y.data(), &[4.0, 13.0, 22.0, 31.0]);
}

#[test]
fn max_pool_backward_routes_to_the_maximum_and_sums_overlaps() {
    let mut l = max_pool(json!({"kernel_size": 2}));
    l.forward(four_by_four(), Mode::Train).unwrap();
    let g = l.backward(t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0])).unwrap();
    assert_eq!(g.shape(), &[1, 1, 4, 4]);
    #[rustfmt::skip]
    let want = [
        0.0, 0.0, 2.0, 0.0,
        0.0, 1.0, 0.0, 0.0,
        3.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 4.0,
    ];
    assert_eq!(g.data(), &want);

    // Overlapping windows (stride 1 < kernel 2): the centre is every window's maximum, and
    // takes the sum of their gradients.
    let mut l = max_pool(json!({"kernel_size": 2, "stride": 1}));
    let x = t(
        &[1, 1, 3, 3],
        &[1.0, 2.0, 3.0, 4.0, 9.0, 5.0, 6.0, 7.0, 8.0],
    );
    let y = l.forward(x, Mode::Train).unwrap();
    assert_eq!(y.data(), &[9.0, 9.0, 9.0, 9.0]);
    let g = l.backward(t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0])).unwrap();
    assert_eq!(g.data(), &[0.0, 0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0]);

    // With padding, the maximum of a border window is a real value (padding is -inf), even
    // when every real value is negative.
    let mut l = max_pool(json!({"kernel_size": 2, "padding": 1}));
    let x = t(&[1, 1, 2, 2], &[-4.0, -3.0, -2.0, -1.0]);
    let y = l.forward(x, Mode::Train).unwrap();
    assert_eq!(y.shape(), &[1, 1, 2, 2]);
    assert_eq!(y.data(), &[-4.0, -3.0, -2.0, -1.0]);
    let g = l.backward(t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0])).unwrap();
    assert_eq!(g.data(), &[1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn max_pool_ties_go_to_the_first_maximum() {
    // As PyTorch (a strict `>` in row-major scan): the first of equal maxima wins.
    let mut l = max_pool(json!({"kernel_size": 2}));
    l.forward(t(&[1, 1, 2, 2], &[1.0; 4]), Mode::Train).unwrap();
    let g = l.backward(t(&[1, 1, 1, 1], &[5.0])).unwrap();
    assert_eq!(g.data(), &[5.0, 0.0, 0.0, 0.0]);

    l.forward(t(&[1, 1, 2, 2], &[0.0, 2.0, 2.0, 2.0]), Mode::Train)
        .unwrap();
    let g = l.backward(t(&[1, 1, 1, 1], &[5.0])).unwrap();
    assert_eq!(g.data(), &[0.0, 5.0, 0.0, 0.0]);

    // A window of -inf only: its first real value (PyTorch's initial index), never padding.
    let mut l = max_pool(json!({"kernel_size": 2, "padding": 1}));
    let y = l
        .forward(t(&[1, 1, 2, 2], &[f32::NEG_INFINITY; 4]), Mode::Train)
        .unwrap();
    assert!(y.data().iter().all(|v| *v == f32::NEG_INFINITY));
    let g = l.backward(t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0])).unwrap();
    assert_eq!(g.data(), &[1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn max_pool_propagates_nan_as_pytorch() {
    // A NaN is its window's maximum: PyTorch's CPU kernel takes `val > max || isnan(val)`,
    // so the last NaN of the window is its index.
    let mut l = max_pool(json!({"kernel_size": 2}));
    let x = t(
        &[1, 1, 2, 4],
        &[1.0, f32::NAN, 1.0, 2.0, 3.0, f32::NAN, 0.0, 1.0],
    );
    let y = l.forward(x, Mode::Train).unwrap();
    assert!(y.data()[0].is_nan());
    assert_eq!(y.data()[1], 2.0);
    let g = l.backward(t(&[1, 1, 1, 2], &[1.0, 2.0])).unwrap();
    assert_eq!(g.data(), &[0.0, 0.0, 0.0, 2.0, 0.0, 1.0, 0.0, 0.0]);
}

#[test]
fn max_pool_gradients() {
    // Distinct values: the maximum of each window is unique and stays put under eps.
    let x = t(&[2, 3, 5, 5], &distinct(150));
    let l = max_pool(json!({"kernel_size": 3, "stride": 2, "padding": 1}));
    check_gradients(l, x.clone(), 1e-3, 1e-3);
    let l = max_pool(json!({"kernel_size": [2, 3], "stride": 1}));
    check_gradients(l, x, 1e-3, 1e-3);
}

#[test]
fn avg_pool_forward_by_hand() {
    let mut l = avg_pool(json!({"kernel_size": 2}));
    let y = l.forward(four_by_four(), Mode::Test).unwrap();
    assert_eq!(y.shape(), &[1, 1, 2, 2]);
    assert_eq!(y.data(), &[13.0 / 4.0, 25.0 / 4.0, 40.0 / 4.0, 42.0 / 4.0]);

    // count_include_pad = True: border windows still divide by 9.
    let mut l = avg_pool(json!({"kernel_size": 3, "stride": 2, "padding": 1}));
    let y = l.forward(four_by_four(), Mode::Test).unwrap();
    assert_eq!(y.shape(), &[1, 1, 2, 2]);
    let want = [
        (3.0 + 1.0 + 2.0 + 7.0) / 9.0,
        (1.0 + 12.0 + 0.0 + 7.0 + 4.0 + 9.0) / 9.0,
        (2.0 + 7.0 + 15.0 + 5.0 + 6.0 + 14.0) / 9.0,
        (7.0 + 4.0 + 9.0 + 5.0 + 10.0 + 8.0 + 14.0 + 11.0 + 13.0) / 9.0,
    ];
    for (got, want) in y.data().iter().zip(want) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    // Overlapping windows with stride 1.
    let mut l = avg_pool(json!({"kernel_size": 2, "stride": 1}));
    let x = t(&[1, 1, 2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let y = l.forward(x, Mode::Train).unwrap();
    assert_eq!(y.data(), &[3.0, 4.0]);
    // The middle column is in both windows.
    let g = l.backward(t(&[1, 1, 1, 2], &[4.0, 8.0])).unwrap();
    assert_eq!(g.data(), &[1.0, 3.0, 2.0, 1.0, 3.0, 2.0]);
}

#[test]
fn avg_pool_gradients() {
    let x = t(&[2, 3, 5, 5], &values(150, 11));
    let l = avg_pool(json!({"kernel_size": 3, "stride": 2, "padding": 1}));
    check_gradients(l, x.clone(), 1e-2, 1e-3);
    let l = avg_pool(json!({"kernel_size": [2, 3], "stride": [1, 2], "padding": [1, 1]}));
    check_gradients(l, x, 1e-2, 1e-3);
}

#[test]
fn flatten_forward_backward_and_gradients() {
    let mut l = Flatten::default();
    let data = values(24, 12);
    let y = l.forward(t(&[2, 3, 2, 2], &data), Mode::Train).unwrap();
    assert_eq!(y.shape(), &[2, 12]);
    assert_eq!(y.data(), &data[..]);
    let g = l.backward(t(&[2, 12], &data)).unwrap();
    assert_eq!(g, t(&[2, 3, 2, 2], &data));
    // Already flat: unchanged. An empty batch keeps its other sizes.
    let y = l.forward(t(&[3, 4], &data[..12]), Mode::Test).unwrap();
    assert_eq!(y, t(&[3, 4], &data[..12]));
    let y = l.forward(t(&[0, 3, 4], &[]), Mode::Test).unwrap();
    assert_eq!(y.shape(), &[0, 12]);
    check_gradients(Flatten::default(), t(&[2, 2, 3], &data[..12]), 1e-2, 1e-3);
}

#[test]
fn flatten_refuses_bad_inputs_and_orders() {
    let mut l = Flatten::default();
    // PyTorch's start_dim = 1 needs two dimensions.
    for shape in [&[][..], &[4][..]] {
        let n = shape.iter().product();
        let x = t(shape, &vec![0.0; n]);
        assert!(
            matches!(l.forward(x, Mode::Train), Err(LayerError::BadShape(_))),
            "{shape:?}"
        );
    }
    // An empty batch whose other sizes overflow.
    let x = Tensor::new(vec![0, usize::MAX, 2], vec![]).unwrap();
    assert!(matches!(
        l.forward(x, Mode::Train),
        Err(LayerError::BadShape(_))
    ));
    // Backward needs a training forward, and its own output's shape.
    assert!(matches!(
        l.backward(t(&[1, 4], &[0.0; 4])),
        Err(LayerError::BadOrder(_))
    ));
    l.forward(t(&[1, 2, 2], &[0.0; 4]), Mode::Test).unwrap();
    assert!(matches!(
        l.backward(t(&[1, 4], &[0.0; 4])),
        Err(LayerError::BadOrder(_))
    ));
    l.forward(t(&[1, 2, 2], &[0.0; 4]), Mode::Train).unwrap();
    assert!(l.backward(t(&[2, 2], &[0.0; 4])).is_err());
}

#[test]
fn pools_refuse_bad_configs() {
    let refused = [
        json!({"kernel_size": 0}),
        json!({"kernel_size": 2, "stride": 0}),
        json!({"kernel_size": [2, 0]}),
        json!({"kernel_size": 2, "stride": [1, 0]}),
        // PyTorch: padding at most half the kernel size.
        json!({"kernel_size": 2, "padding": 2}),
        json!({"kernel_size": 3, "padding": 2}),
        json!({"kernel_size": 1, "padding": 1}),
        json!({"kernel_size": [4, 2], "padding": [2, 2]}),
        json!({"kernel_size": MAX_POOL_WINDOW + 1}),
        json!({"kernel_size": 2, "stride": MAX_POOL_WINDOW + 1}),
        json!({"kernel_size": usize::MAX, "padding": usize::MAX / 2}),
    ];
    for value in &refused {
        let c = config(value.clone());
        let mut init = Init::new(0);
        assert!(
            matches!(
                MaxPool2d::new(c.clone(), &mut init),
                Err(LayerError::BadConfig(_))
            ),
            "max {value}"
        );
        assert!(
            matches!(AvgPool2d::new(c, &mut init), Err(LayerError::BadConfig(_))),
            "avg {value}"
        );
    }
    // Not decodable: through the runtime, as a designer's config arrives.
    let undecodable = [
        json!({}),
        json!({"kernel_size": -1}),
        json!({"kernel_size": 2.5}),
        json!({"kernel_size": [2]}),
        json!({"kernel_size": [2, 2, 2]}),
        json!({"kernel_size": 2, "dilation": 2}),
        json!({"kernel_size": "2"}),
    ];
    for value in refused.iter().chain(&undecodable) {
        for name in ["max-pool2d", "avg-pool2d"] {
            let mut rt = native(name).unwrap();
            let bytes = serde_json::to_vec(&json!({"layer": value})).unwrap();
            assert!(
                matches!(rt.init(&bytes), Err(LayerError::BadConfig(_))),
                "{name} {value}"
            );
        }
    }
    // Accepted forms: an integer, a pair, and a null stride (the kernel size).
    assert_eq!(
        config(json!({"kernel_size": [2, 3], "stride": null})).kernel_size,
        Pair::Sides([2, 3])
    );
    let mut l = max_pool(json!({"kernel_size": MAX_POOL_WINDOW, "padding": 1}));
    let y = l.forward(t(&[1, 1, 1, 1], &[1.0]), Mode::Test);
    assert!(matches!(y, Err(LayerError::BadShape(_))));
}

#[test]
fn pools_refuse_bad_inputs() {
    let mut max = max_pool(json!({"kernel_size": 2, "padding": 1}));
    let mut avg = avg_pool(json!({"kernel_size": 2, "padding": 1}));
    let bad = [
        // Not [N, C, H, W].
        Tensor::new(vec![1, 4, 4], vec![0.0; 16]).unwrap(),
        Tensor::new(vec![1, 1, 1, 4, 4], vec![0.0; 16]).unwrap(),
        Tensor::new(vec![16], vec![0.0; 16]).unwrap(),
        Tensor::new(vec![], vec![0.0]).unwrap(),
        // Zero channels, height or width.
        Tensor::new(vec![1, 0, 4, 4], vec![]).unwrap(),
        Tensor::new(vec![1, 1, 0, 4], vec![]).unwrap(),
        Tensor::new(vec![1, 1, 4, 0], vec![]).unwrap(),
        // An empty batch whose other sizes overflow.
        Tensor::new(vec![0, 1, usize::MAX, usize::MAX], vec![]).unwrap(),
        Tensor::new(vec![0, 1, usize::MAX, 1], vec![]).unwrap(),
    ];
    for x in bad {
        let shape = x.shape().to_vec();
        assert!(
            matches!(
                max.forward(x.clone(), Mode::Train),
                Err(LayerError::BadShape(_))
            ),
            "max {shape:?}"
        );
        assert!(
            matches!(avg.forward(x, Mode::Train), Err(LayerError::BadShape(_))),
            "avg {shape:?}"
        );
    }
    // A kernel larger than the padded input: no output (PyTorch: "output size is too small").
    let mut max = max_pool(json!({"kernel_size": 5, "padding": 1}));
    let mut avg = avg_pool(json!({"kernel_size": [1, 5], "padding": [0, 1]}));
    let x = t(&[1, 1, 2, 2], &[0.0; 4]);
    assert!(matches!(
        max.forward(x.clone(), Mode::Train),
        Err(LayerError::BadShape(_))
    ));
    assert!(matches!(
        avg.forward(x, Mode::Train),
        Err(LayerError::BadShape(_))
    ));
    // An empty batch is fine.
    let mut max = max_pool(json!({"kernel_size": 2}));
    let y = max.forward(t(&[0, 3, 4, 4], &[]), Mode::Train).unwrap();
    assert_eq!(y.shape(), &[0, 3, 2, 2]);
    assert_eq!(
        max.backward(t(&[0, 3, 2, 2], &[])).unwrap().shape(),
        &[0, 3, 4, 4]
    );
}

#[test]
fn pools_refuse_out_of_order_and_misshapen_gradients() {
    let x = four_by_four();
    let mut max = max_pool(json!({"kernel_size": 2}));
    let mut avg = avg_pool(json!({"kernel_size": 2}));
    let g = t(&[1, 1, 2, 2], &[1.0; 4]);
    assert!(matches!(
        max.backward(g.clone()),
        Err(LayerError::BadOrder(_))
    ));
    assert!(matches!(
        avg.backward(g.clone()),
        Err(LayerError::BadOrder(_))
    ));
    // A test forward keeps nothing.
    max.forward(x.clone(), Mode::Test).unwrap();
    avg.forward(x.clone(), Mode::Test).unwrap();
    assert!(matches!(
        max.backward(g.clone()),
        Err(LayerError::BadOrder(_))
    ));
    assert!(matches!(
        avg.backward(g.clone()),
        Err(LayerError::BadOrder(_))
    ));
    // The gradient must have the output's shape; one backward per training forward.
    for bad in [t(&[1, 1, 4], &[1.0; 4]), t(&[1, 1, 4, 4], &[1.0; 16])] {
        max.forward(x.clone(), Mode::Train).unwrap();
        avg.forward(x.clone(), Mode::Train).unwrap();
        assert!(matches!(
            max.backward(bad.clone()),
            Err(LayerError::BadShape(_))
        ));
        assert!(matches!(avg.backward(bad), Err(LayerError::BadShape(_))));
    }
    max.forward(x.clone(), Mode::Train).unwrap();
    max.backward(g.clone()).unwrap();
    assert!(matches!(max.backward(g), Err(LayerError::BadOrder(_))));
}

/// Through the runtime, as a host runs them: named in `STANDARD`, built by `native`, a
/// training step with an update that has nothing to step, and a state of no tensors.
#[test]
fn runtimes_train_and_round_trip_an_empty_state() {
    let cases = [
        ("flatten", json!(null), vec![2, 3, 2, 2], vec![2, 12]),
        (
            "max-pool2d",
            json!({"kernel_size": 2}),
            vec![2, 3, 2, 2],
            vec![2, 3, 1, 1],
        ),
        (
            "avg-pool2d",
            json!({"kernel_size": [2, 1], "stride": 1, "padding": [1, 0]}),
            vec![2, 3, 2, 2],
            vec![2, 3, 3, 2],
        ),
    ];
    for (name, layer, in_shape, out_shape) in cases {
        assert!(STANDARD.contains(&name), "{name}");
        let mut rt = native(name).unwrap();
        let config = json!({"seed": 1, "optimizer": {"lr": 0.1, "momentum": 0.9}, "layer": layer});
        let info = rt.init(&serde_json::to_vec(&config).unwrap()).unwrap();
        assert_eq!(
            (info.name.as_str(), info.is_loss, info.param_count),
            (name, false, 0)
        );
        let x = Tensor::new(in_shape.clone(), values(24, 13)).unwrap();
        let y = rt.forward(x, Mode::Train).unwrap();
        assert_eq!(y.shape(), &out_shape[..]);
        let g = Tensor::new(out_shape.clone(), values(y.len(), 14)).unwrap();
        let dx = rt.backward(g, true).unwrap().unwrap();
        assert_eq!(dx.shape(), &in_shape[..]);
        rt.update().unwrap();
        let state = rt.export_state().unwrap();
        let mut other = native(name).unwrap();
        other.init(&serde_json::to_vec(&config).unwrap()).unwrap();
        other.import_state(&state).unwrap();
        assert_eq!(other.export_state().unwrap(), state);
    }
}
