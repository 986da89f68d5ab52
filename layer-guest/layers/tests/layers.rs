//! Every standard layer: forward against hand-computed values, backward (input and parameter
//! gradients) against central finite differences, and the runtime's SGD step.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod common;

use common::{assert_close, check_gradients, t, values};
use mixnn_layer_sdk::{Init, InitConfig, Layer, LayerRuntime, Mode, Runtime, SgdConfig, Tensor};
use mixnn_layers::{
    Identity, Linear, LinearConfig, LinearRelu, LogSoftmax, MseLoss, NllLoss, Relu,
    SoftmaxCrossEntropy,
};

fn linear(in_features: usize, out_features: usize) -> Linear {
    let config = LinearConfig {
        in_features,
        out_features,
        bias: true,
        kernels: Default::default(),
    };
    Linear::new(config, &mut Init::new(7)).unwrap()
}

/// Checks a loss layer's gradient against central differences of its loss.
fn check_loss_gradient<L: Layer>(mut layer: L, x: Tensor, target: Tensor) {
    let out = layer.loss(x.clone(), target.clone()).unwrap();
    let eps = 1e-2f32;
    for i in 0..x.len() {
        let (mut plus, mut minus) = (x.clone(), x.clone());
        plus.data_mut()[i] += eps;
        minus.data_mut()[i] -= eps;
        let lp = f64::from(layer.loss(plus, target.clone()).unwrap().loss);
        let lm = f64::from(layer.loss(minus, target.clone()).unwrap().loss);
        assert_close(
            &format!("dx[{i}]"),
            out.grad_input.data()[i],
            (lp - lm) / f64::from(2.0 * eps),
            2e-3,
        );
    }
}

#[test]
fn linear_forward_by_hand() {
    let mut l = linear(2, 2);
    {
        let mut params = l.params();
        params[0].1.value = t(&[2, 2], &[1.0, 0.0, 0.5, -1.0]);
        params[1].1.value = t(&[2], &[0.1, 0.2]);
    }
    // [1, 2] W^T + b = [1 + 0.1, 0.5 - 2 + 0.2]
    let y = l.forward(t(&[1, 2], &[1.0, 2.0]), Mode::Test).unwrap();
    assert_eq!(y.shape(), &[1, 2]);
    assert!(
        (y.data()[0] - 1.1).abs() < 1e-6 && (y.data()[1] + 1.3).abs() < 1e-6,
        "{y:?}"
    );
}

#[test]
fn linear_init_is_pytorch_default() {
    let mut l = linear(784, 128);
    let bound = 1.0 / 784f32.sqrt();
    let params = l.params();
    let (w, b) = (&params[0].1.value, &params[1].1.value);
    assert_eq!((w.shape(), b.shape()), (&[128, 784][..], &[128][..]));
    assert!(w.data().iter().chain(b.data()).all(|v| v.abs() <= bound));
    let mean: f32 = w.data().iter().sum::<f32>() / w.len() as f32;
    let var: f32 = w.data().iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
    assert!(mean.abs() < 1e-3, "mean {mean}");
    // Uniform on [-a, a] has variance a^2 / 3.
    assert!(
        (var / (bound * bound / 3.0) - 1.0).abs() < 0.02,
        "variance {var}"
    );
}

#[test]
fn linear_gradients() {
    check_gradients(linear(5, 3), t(&[4, 5], &values(20, 1)), 1e-2, 1e-3);
    // Leading dimensions are flattened, as in PyTorch.
    check_gradients(linear(3, 2), t(&[2, 2, 3], &values(12, 2)), 1e-2, 1e-3);
}

#[test]
fn relu_forward_and_gradients() {
    let mut r = Relu::default();
    let y = r
        .forward(t(&[4], &[-1.0, 0.0, 2.0, -0.5]), Mode::Train)
        .unwrap();
    assert_eq!(y.data(), &[0.0, 0.0, 2.0, 0.0]);
    let g = r.backward(t(&[4], &[1.0, 2.0, 3.0, 4.0])).unwrap();
    assert_eq!(g.data(), &[0.0, 0.0, 3.0, 0.0]);
    // Away from the kink, finite differences agree.
    let x: Vec<f32> = values(12, 3)
        .into_iter()
        .map(|v| if v.abs() < 0.05 { 0.5 } else { v })
        .collect();
    check_gradients(Relu::default(), t(&[3, 4], &x), 1e-2, 1e-3);
}

#[test]
fn linear_relu_gradients() {
    let config = LinearConfig {
        in_features: 4,
        out_features: 3,
        bias: true,
        kernels: Default::default(),
    };
    let layer = LinearRelu::new(config, &mut Init::new(5)).unwrap();
    check_gradients(layer, t(&[3, 4], &values(12, 4)), 1e-3, 2e-3);
}

#[test]
fn log_softmax_forward_and_gradients() {
    let mut l = LogSoftmax::default();
    let y = l
        .forward(t(&[2, 3], &[1.0, 2.0, 3.0, 0.0, 0.0, 0.0]), Mode::Test)
        .unwrap();
    let lse = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
    for (got, x) in y.data()[..3].iter().zip([1.0, 2.0, 3.0]) {
        assert!((f64::from(*got) - (x - lse)).abs() < 1e-6);
    }
    for got in &y.data()[3..] {
        assert!((f64::from(*got) + 3f64.ln()).abs() < 1e-6);
    }
    // Large logits do not overflow.
    let big = l.forward(t(&[1, 2], &[1000.0, 0.0]), Mode::Test).unwrap();
    assert_eq!(big.data()[0], 0.0);
    check_gradients(
        LogSoftmax::default(),
        t(&[3, 4], &values(12, 6)),
        1e-3,
        2e-3,
    );
}

#[test]
fn nll_loss_by_hand_and_gradient() {
    let mut l = NllLoss;
    let out = l
        .loss(t(&[2, 2], &[-1.0, -2.0, -3.0, -4.0]), t(&[2], &[0.0, 1.0]))
        .unwrap();
    assert_eq!(out.loss, 2.5);
    assert_eq!(out.grad_input.data(), &[-0.5, 0.0, 0.0, -0.5]);
    check_loss_gradient(
        NllLoss,
        t(&[3, 4], &values(12, 7)),
        t(&[3], &[3.0, 0.0, 2.0]),
    );
    // Targets must be class indices.
    for bad in [4.0, -1.0, 0.5, f32::NAN] {
        assert!(
            l.loss(t(&[1, 4], &[0.0; 4]), t(&[1], &[bad])).is_err(),
            "{bad}"
        );
    }
    assert!(l.loss(t(&[2, 4], &[0.0; 8]), t(&[3], &[0.0; 3])).is_err());
}

#[test]
fn mse_loss_by_hand_and_gradient() {
    // As torch.nn.MSELoss(): mean over every element.
    let out = MseLoss
        .loss(
            t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]),
            t(&[2, 2], &[1.0, 0.0, 3.0, 5.0]),
        )
        .unwrap();
    assert_eq!(out.loss, (4.0 + 1.0) / 4.0);
    assert_eq!(out.grad_input.data(), &[0.0, 1.0, 0.0, -0.5]);
    check_loss_gradient(
        MseLoss,
        t(&[3, 4], &values(12, 5)),
        t(&[3, 4], &values(12, 6)),
    );
    assert!(
        MseLoss
            .loss(t(&[2, 2], &[0.0; 4]), t(&[4], &[0.0; 4]))
            .is_err()
    );
    assert!(MseLoss.loss(t(&[0, 2], &[]), t(&[0, 2], &[])).is_err());
}

#[test]
fn softmax_cross_entropy_equals_log_softmax_then_nll() {
    let x = t(&[3, 4], &values(12, 8));
    let target = t(&[3], &[1.0, 3.0, 0.0]);
    let fused = SoftmaxCrossEntropy.loss(x.clone(), target.clone()).unwrap();
    let log_p = LogSoftmax::default()
        .forward(x.clone(), Mode::Test)
        .unwrap();
    let nll = NllLoss.loss(log_p, target.clone()).unwrap();
    assert!((fused.loss - nll.loss).abs() < 1e-6);
    check_loss_gradient(SoftmaxCrossEntropy, x, target);
}

#[test]
fn identity_passes_through() {
    let mut l = Identity;
    let x = t(&[2], &[1.0, -1.0]);
    assert_eq!(l.forward(x.clone(), Mode::Train).unwrap(), x);
    assert_eq!(l.backward(x.clone()).unwrap(), x);
}

/// The runtime applies SGD with momentum after backward, as `torch.optim.SGD`.
#[test]
fn runtime_steps_linear_weights_with_momentum() {
    let config = InitConfig {
        seed: 1,
        optimizer: SgdConfig {
            lr: 0.1,
            momentum: 0.9,
        },
        layer: serde_json::json!({"in_features": 1, "out_features": 1, "bias": false}),
    };
    let mut rt = Runtime::<Linear>::new();
    rt.init(&config.to_bytes()).unwrap();
    // Set w = 1 through the state, then y = w x with x = 1 and dL/dy = 1, 2, -1: dL/dw = dL/dy.
    let w0 = {
        let state = rt.export_state().unwrap();
        let st = safetensors_f32(&state, "weight");
        st[0]
    };
    let mut w = f64::from(w0);
    let mut v = 0.0f64;
    for (step, g) in [1.0f32, 2.0, -1.0].into_iter().enumerate() {
        rt.forward(t(&[1, 1], &[1.0]), Mode::Train).unwrap();
        assert_eq!(rt.backward(t(&[1, 1], &[g]), false).unwrap(), None);
        rt.update().unwrap();
        v = if step == 0 {
            f64::from(g)
        } else {
            0.9 * v + f64::from(g)
        };
        w -= 0.1 * v;
        let state = rt.export_state().unwrap();
        let got = safetensors_f32(&state, "weight")[0];
        assert!(
            (f64::from(got) - w).abs() < 1e-6,
            "step {step}: {got} vs {w}"
        );
        let momentum = safetensors_f32(&state, "weight.momentum_buffer")[0];
        assert!((f64::from(momentum) - v).abs() < 1e-6);
    }
    // Backward without a training forward is refused, and so is an update without a backward.
    assert!(rt.backward(t(&[1, 1], &[1.0]), true).is_err());
    assert!(rt.update().is_err());
}

/// Between `backward` and `update` the runtime takes no other call: the parameters would be
/// a step behind.
#[test]
fn runtime_takes_the_update_before_any_other_call() {
    let mut rt = Runtime::<Linear>::new();
    rt.init(br#"{"layer": {"in_features": 2, "out_features": 2}}"#)
        .unwrap();
    let x = t(&[1, 2], &[1.0, -1.0]);
    rt.forward(x.clone(), Mode::Train).unwrap();
    let dx = rt.backward(t(&[1, 2], &[0.5, 0.25]), true).unwrap();
    assert_eq!(dx.map(|d| d.shape().to_vec()), Some(vec![1, 2]));
    assert!(rt.forward(x.clone(), Mode::Test).is_err());
    assert!(rt.forward(x.clone(), Mode::Train).is_err());
    assert!(rt.backward(t(&[1, 2], &[0.5, 0.25]), true).is_err());
    assert!(rt.export_state().is_err());
    rt.update().unwrap();
    assert!(rt.update().is_err());
    rt.export_state().unwrap();
    rt.forward(x, Mode::Train).unwrap();
}

/// A layer's split backward (`backward_input`, then `param_grads`) gives the whole
/// `backward`'s gradients to the bit, and without the input's gradient the same parameters'
/// gradients.
#[test]
fn split_backward_equals_the_whole_to_the_bit() {
    fn grads<L: Layer>(layer: &mut L) -> Vec<Tensor> {
        layer
            .params()
            .into_iter()
            .map(|(_, p)| p.grad.clone())
            .collect()
    }
    fn check<L: Layer>(make: impl Fn() -> L, x: &Tensor, g: &Tensor) {
        let mut whole = make();
        whole.forward(x.clone(), Mode::Train).unwrap();
        let dx = whole.backward(g.clone()).unwrap();
        let mut split = make();
        split.forward(x.clone(), Mode::Train).unwrap();
        let dx_split = split.backward_input(g.clone(), true).unwrap().unwrap();
        // Nothing of the parameters yet.
        assert!(grads(&mut split).iter().all(|p| p.is_empty()));
        split.param_grads().unwrap();
        assert_eq!(dx_split, dx);
        assert_eq!(grads(&mut split), grads(&mut whole));
        let mut no_input = make();
        no_input.forward(x.clone(), Mode::Train).unwrap();
        assert_eq!(no_input.backward_input(g.clone(), false).unwrap(), None);
        no_input.param_grads().unwrap();
        assert_eq!(grads(&mut no_input), grads(&mut whole));
    }
    let x = Tensor::new(vec![5, 7], values(35, 3)).unwrap();
    let g = Tensor::new(vec![5, 4], values(20, 4)).unwrap();
    check(|| linear(7, 4), &x, &g);
    let config = LinearConfig {
        in_features: 7,
        out_features: 4,
        bias: true,
        kernels: Default::default(),
    };
    check(
        || LinearRelu::new(config.clone(), &mut Init::new(7)).unwrap(),
        &x,
        &g,
    );
}

/// State round trip: export, import into a fresh runtime, identical outputs and state bytes.
#[test]
fn state_round_trips_and_rejects_mismatches() {
    let make = |seed| {
        let mut rt = Runtime::<Linear>::new();
        let config = InitConfig {
            seed,
            optimizer: SgdConfig {
                lr: 0.1,
                momentum: 0.9,
            },
            layer: serde_json::json!({"in_features": 3, "out_features": 2}),
        };
        rt.init(&config.to_bytes()).unwrap();
        rt
    };
    let mut a = make(1);
    a.forward(t(&[1, 3], &[1.0, 2.0, 3.0]), Mode::Train)
        .unwrap();
    a.backward(t(&[1, 2], &[0.5, -0.5]), true).unwrap();
    a.update().unwrap();
    let state = a.export_state().unwrap();
    let mut b = make(2);
    b.import_state(&state).unwrap();
    assert_eq!(b.export_state().unwrap(), state);
    let x = t(&[1, 3], &[0.1, 0.2, 0.3]);
    assert_eq!(
        a.forward(x.clone(), Mode::Test).unwrap(),
        b.forward(x, Mode::Test).unwrap()
    );

    let mut other = Runtime::<Linear>::new();
    other
        .init(br#"{"layer": {"in_features": 4, "out_features": 2}}"#)
        .unwrap();
    assert!(
        other.import_state(&state).is_err(),
        "shape mismatch accepted"
    );
    assert!(other.import_state(b"not safetensors").is_err());
}

fn safetensors_f32(bytes: &[u8], name: &str) -> Vec<f32> {
    // Header: u64 length, JSON with data_offsets relative to the end of the header.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let offsets = &header[name]["data_offsets"];
    let (start, end) = (
        offsets[0].as_u64().unwrap() as usize,
        offsets[1].as_u64().unwrap() as usize,
    );
    bytes[8 + n + start..8 + n + end]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
