//! Helpers shared by the layers' tests: small tensors, deterministic values, and the check of
//! a layer's gradients against central finite differences.

#![allow(dead_code)]

use mixnn_layer_sdk::{Init, Layer, Mode, Tensor};

pub(crate) fn t(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::new(shape.to_vec(), data.to_vec()).unwrap()
}

/// Deterministic pseudo-random values in [-1, 1).
pub(crate) fn values(n: usize, salt: u64) -> Vec<f32> {
    let mut init = Init::new(salt);
    (0..n).map(|_| init.uniform(-1.0, 1.0)).collect()
}

pub(crate) fn assert_close(what: &str, got: f32, want: f64, tol: f64) {
    let err = (f64::from(got) - want).abs();
    assert!(
        err <= tol * (1.0 + want.abs()),
        "{what}: analytic {got} vs numeric {want}"
    );
}

/// Checks `backward` of `layer` at `x` against central differences of `L = sum(y * r)`, for
/// the input and for every parameter.
pub(crate) fn check_gradients<L: Layer>(mut layer: L, x: Tensor, eps: f32, tol: f64) {
    let y = layer.forward(x.clone(), Mode::Train).unwrap();
    let r = Tensor::new(y.shape().to_vec(), values(y.len(), 99)).unwrap();
    let dx = layer.backward(r.clone()).unwrap();
    assert_eq!(dx.shape(), x.shape());
    let objective = |layer: &mut L, x: &Tensor| -> f64 {
        let y = layer.forward(x.clone(), Mode::Test).unwrap();
        y.data()
            .iter()
            .zip(r.data())
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum()
    };
    for i in 0..x.len() {
        let (mut plus, mut minus) = (x.clone(), x.clone());
        plus.data_mut()[i] += eps;
        minus.data_mut()[i] -= eps;
        let numeric =
            (objective(&mut layer, &plus) - objective(&mut layer, &minus)) / f64::from(2.0 * eps);
        assert_close(&format!("dx[{i}]"), dx.data()[i], numeric, tol);
    }
    let names: Vec<&str> = layer.params().iter().map(|(n, _)| *n).collect();
    for name in names {
        let (grad, len) = {
            let params = layer.params();
            let p = params.into_iter().find(|(n, _)| *n == name).unwrap().1;
            (p.grad.clone(), p.value.len())
        };
        for i in 0..len {
            let mut at = |delta: f32| {
                {
                    let mut params = layer.params();
                    let p = params.iter_mut().find(|(n, _)| *n == name).unwrap();
                    p.1.value.data_mut()[i] += delta;
                }
                let v = objective(&mut layer, &x);
                let mut params = layer.params();
                let p = params.iter_mut().find(|(n, _)| *n == name).unwrap();
                p.1.value.data_mut()[i] -= delta;
                v
            };
            let numeric = (at(eps) - at(-eps)) / f64::from(2.0 * eps);
            assert_close(&format!("d{name}[{i}]"), grad.data()[i], numeric, tol);
        }
    }
}
