//! `Conv2d`: forward against hand-computed values, backward against central finite
//! differences (with stride and padding), PyTorch's initialisation, the split backward pass,
//! and refused configs and inputs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod common;

use common::{check_gradients, t, values};
use mixnn_layer_sdk::{Init, Layer, LayerError, Mode, Tensor};
use mixnn_layers::{Conv2d, Conv2dConfig, Pair};

fn config(in_channels: usize, out_channels: usize, kernel: Pair) -> Conv2dConfig {
    Conv2dConfig {
        in_channels,
        out_channels,
        kernel_size: kernel,
        stride: Pair::Square(1),
        padding: Pair::Square(0),
        bias: true,
        kernels: Default::default(),
    }
}

fn conv(config: Conv2dConfig) -> Conv2d {
    Conv2d::new(config, &mut Init::new(7)).unwrap()
}

#[test]
fn forward_by_hand() {
    // One 3x3 channel of 1..9, two 2x2 filters (ones; a diagonal) with biases 0.5 and -1.
    let mut l = conv(config(1, 2, Pair::Square(2)));
    {
        let mut params = l.params();
        params[0].1.value = t(&[2, 1, 2, 2], &[1., 1., 1., 1., 1., 0., 0., 1.]);
        params[1].1.value = t(&[2], &[0.5, -1.0]);
    }
    let x = t(&[1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
    let y = l.forward(x.clone(), Mode::Test).unwrap();
    assert_eq!(y.shape(), &[1, 2, 2, 2]);
    assert_eq!(
        y.data(),
        &[12.5, 16.5, 24.5, 28.5, 5.0, 7.0, 11.0, 13.0],
        "window sums + 0.5, then diagonals - 1"
    );
    // Padding 1 and stride 2 on the same input: outputs at (-1,-1), (-1,1), (1,-1), (1,1).
    let mut padded = conv(Conv2dConfig {
        stride: Pair::Square(2),
        padding: Pair::Square(1),
        ..config(1, 1, Pair::Square(2))
    });
    {
        let mut params = padded.params();
        params[0].1.value = t(&[1, 1, 2, 2], &[1., 1., 1., 1.]);
        params[1].1.value = t(&[1], &[0.0]);
    }
    let y = padded.forward(x, Mode::Test).unwrap();
    assert_eq!(y.shape(), &[1, 1, 2, 2]);
    assert_eq!(y.data(), &[1.0, 5.0, 11.0, 28.0]);
}

#[test]
fn gradients_match_finite_differences() {
    let cases = [
        config(2, 3, Pair::Square(3)),
        Conv2dConfig {
            stride: Pair::Square(2),
            padding: Pair::Square(1),
            ..config(2, 3, Pair::Square(3))
        },
        Conv2dConfig {
            stride: Pair::Sides([1, 2]),
            padding: Pair::Sides([2, 0]),
            bias: false,
            ..config(1, 2, Pair::Sides([2, 3]))
        },
    ];
    for c in cases {
        let x = Tensor::new(
            vec![2, c.in_channels, 5, 6],
            values(2 * c.in_channels * 30, 5),
        )
        .unwrap();
        check_gradients(conv(c), x, 1e-2, 2e-3);
    }
}

#[test]
fn init_is_pytorch_default() {
    // LeNet-5's second convolution: fan-in 6 * 5 * 5.
    let mut l = conv(config(6, 16, Pair::Square(5)));
    let bound = 1.0 / 150f32.sqrt();
    let params = l.params();
    let (w, b) = (&params[0].1.value, &params[1].1.value);
    assert_eq!((w.shape(), b.shape()), (&[16, 6, 5, 5][..], &[16][..]));
    assert!(w.data().iter().chain(b.data()).all(|v| v.abs() <= bound));
    let var: f32 = w.data().iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
    // Uniform on [-a, a] has variance a^2 / 3.
    assert!(
        (var / (bound * bound / 3.0) - 1.0).abs() < 0.05,
        "variance {var}"
    );
}

#[test]
fn split_backward_equals_the_whole_to_the_bit() {
    let make = || {
        conv(Conv2dConfig {
            padding: Pair::Square(1),
            ..config(3, 4, Pair::Square(3))
        })
    };
    let x = Tensor::new(vec![2, 3, 6, 5], values(180, 3)).unwrap();
    let g = Tensor::new(vec![2, 4, 6, 5], values(240, 4)).unwrap();
    let grads = |l: &mut Conv2d| -> Vec<Tensor> {
        l.params()
            .into_iter()
            .map(|(_, p)| p.grad.clone())
            .collect()
    };
    let mut whole = make();
    whole.forward(x.clone(), Mode::Train).unwrap();
    let dx = whole.backward(g.clone()).unwrap();
    let mut split = make();
    split.forward(x.clone(), Mode::Train).unwrap();
    assert_eq!(split.backward_input(g.clone(), true).unwrap().unwrap(), dx);
    split.param_grads().unwrap();
    assert_eq!(grads(&mut split), grads(&mut whole));
    let mut first = make();
    first.forward(x, Mode::Train).unwrap();
    assert_eq!(first.backward_input(g, false).unwrap(), None);
    first.param_grads().unwrap();
    assert_eq!(grads(&mut first), grads(&mut whole));
}

#[test]
fn bad_configs_and_inputs_are_refused() {
    let refused = [
        config(0, 1, Pair::Square(3)),
        config(1, 0, Pair::Square(3)),
        config(1, 1, Pair::Square(0)),
        Conv2dConfig {
            stride: Pair::Sides([1, 0]),
            ..config(1, 1, Pair::Square(3))
        },
        Conv2dConfig {
            padding: Pair::Square(1 << 20),
            ..config(1, 1, Pair::Square(3))
        },
        config(1 << 14, 1 << 14, Pair::Square(3)),
        config(usize::MAX, 2, Pair::Square(3)),
    ];
    for c in refused {
        assert!(
            matches!(
                Conv2d::new(c.clone(), &mut Init::new(1)),
                Err(LayerError::BadConfig(_))
            ),
            "{c:?}"
        );
    }
    // Configs as the designer writes them: a side or [rows, columns].
    let json = r#"{"in_channels": 1, "out_channels": 6, "kernel_size": 5, "padding": [2, 2]}"#;
    let c: Conv2dConfig = serde_json::from_str(json).unwrap();
    assert_eq!(
        (c.kernel_size, c.padding, c.stride),
        (Pair::Square(5), Pair::Sides([2, 2]), Pair::Square(1))
    );

    let mut l = conv(config(2, 3, Pair::Square(3)));
    for shape in [
        vec![2, 2, 5],          // rank 3
        vec![2, 3, 5, 5],       // 3 channels, 2 expected
        vec![2, 2, 2, 5],       // smaller than the kernel
        vec![1, 2, 1, 1, 1, 1], // rank 6
    ] {
        let n = shape.iter().product();
        let x = Tensor::new(shape.clone(), vec![0.0; n]).unwrap();
        assert!(
            matches!(l.forward(x, Mode::Train), Err(LayerError::BadShape(_))),
            "{shape:?}"
        );
    }
    // A gradient of the wrong shape, and a backward pass without a forward.
    let x = Tensor::new(vec![1, 2, 4, 4], vec![0.5; 32]).unwrap();
    l.forward(x, Mode::Train).unwrap();
    assert!(
        l.backward(Tensor::new(vec![1, 3, 3, 3], vec![0.0; 27]).unwrap())
            .is_err()
    );
    assert!(matches!(
        l.backward(Tensor::new(vec![1, 3, 2, 2], vec![0.0; 12]).unwrap()),
        Err(LayerError::BadOrder(_))
    ));
}
