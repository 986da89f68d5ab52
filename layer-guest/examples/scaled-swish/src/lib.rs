//! A custom layer written outside the standard set: a scaled Swish with a learnable slope,
//! `y = scale * x * sigmoid(beta * x)` (Ramachandran et al., 2017), `beta` trained by the
//! SDK's SGD like any weight.
//!
//! Build the component with
//! `cargo build --release --target wasm32-wasip2 -p scaled-swish`.

use mixnn_layer_sdk::{Init, Layer, LayerError, Mode, Param, Tensor};
use serde::Deserialize;

/// Settings: the fixed output scale and the starting slope.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwishConfig {
    /// Constant factor on the output (default 1).
    #[serde(default = "one")]
    pub scale: f32,
    /// Initial value of the learnable slope (default 1).
    #[serde(default = "one")]
    pub beta: f32,
}

fn one() -> f32 {
    1.0
}

/// `scale * x * sigmoid(beta * x)`.
#[derive(Debug)]
pub struct ScaledSwish {
    scale: f32,
    beta: Param,
    input: Option<Tensor>,
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + libm::expf(-v))
}

impl ScaledSwish {
    fn beta(&self) -> f32 {
        self.beta.value.data().first().copied().unwrap_or(1.0)
    }
}

impl Layer for ScaledSwish {
    type Config = SwishConfig;
    const NAME: &'static str = "scaled-swish";

    fn new(config: SwishConfig, _: &mut Init) -> Result<Self, LayerError> {
        if !(config.scale.is_finite() && config.beta.is_finite()) {
            return Err(LayerError::BadConfig(
                "scale and beta must be finite".into(),
            ));
        }
        let beta = Param::new(Tensor::new(vec![1], vec![config.beta])?);
        Ok(ScaledSwish {
            scale: config.scale,
            beta,
            input: None,
        })
    }

    fn forward(&mut self, input: Tensor, mode: Mode) -> Result<Tensor, LayerError> {
        let (scale, beta) = (self.scale, self.beta());
        let y = input
            .data()
            .iter()
            .map(|&x| scale * x * sigmoid(beta * x))
            .collect();
        let y = input.with_data(y)?;
        self.input = (mode == Mode::Train).then_some(input);
        Ok(y)
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor, LayerError> {
        let input = self
            .input
            .take()
            .ok_or_else(|| LayerError::BadOrder("backward without a training forward".into()))?;
        grad_output.expect_shape(input.shape(), "swish gradient")?;
        let (scale, beta) = (self.scale, self.beta());
        let mut d_beta = 0.0f32;
        let dx = input
            .data()
            .iter()
            .zip(grad_output.data())
            .map(|(&x, &g)| {
                let s = sigmoid(beta * x);
                let ds = s * (1.0 - s);
                d_beta += g * scale * x * x * ds;
                g * scale * (s + beta * x * ds)
            })
            .collect();
        self.beta.grad = Tensor::new(vec![1], vec![d_beta])?;
        input.with_data(dx)
    }

    fn params(&mut self) -> Vec<(&'static str, &mut Param)> {
        vec![("beta", &mut self.beta)]
    }
}

mixnn_layer_sdk::export_layer!(ScaledSwish);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradients_match_finite_differences() {
        let config = || SwishConfig {
            scale: 1.7,
            beta: 0.8,
        };
        let x = Tensor::new(vec![2, 3], vec![-2.0, -0.5, 0.0, 0.3, 1.2, 3.0]).unwrap();
        let r = [0.3f32, -1.0, 0.5, 2.0, -0.7, 1.1];
        let objective = |layer: &mut ScaledSwish, x: &Tensor| -> f64 {
            let y = layer.forward(x.clone(), Mode::Test).unwrap();
            y.data().iter().zip(r).map(|(a, b)| f64::from(a * b)).sum()
        };
        let mut layer = ScaledSwish::new(config(), &mut Init::new(0)).unwrap();
        layer.forward(x.clone(), Mode::Train).unwrap();
        let dx = layer
            .backward(Tensor::new(vec![2, 3], r.to_vec()).unwrap())
            .unwrap();
        let eps = 1e-3f32;
        for i in 0..x.len() {
            let mut plus = x.clone();
            plus.data_mut()[i] += eps;
            let mut minus = x.clone();
            minus.data_mut()[i] -= eps;
            let numeric = (objective(&mut layer, &plus) - objective(&mut layer, &minus))
                / f64::from(2.0 * eps);
            assert!(
                (numeric - f64::from(dx.data()[i])).abs() < 2e-3,
                "dx[{i}]: {numeric} vs {}",
                dx.data()[i]
            );
        }
        let analytic = f64::from(layer.beta.grad.data()[0]);
        let shifted = |delta: f32| {
            let mut l = ScaledSwish::new(
                SwishConfig {
                    beta: 0.8 + delta,
                    ..config()
                },
                &mut Init::new(0),
            )
            .unwrap();
            objective(&mut l, &x)
        };
        let numeric = (shifted(eps) - shifted(-eps)) / f64::from(2.0 * eps);
        assert!(
            (numeric - analytic).abs() < 2e-3,
            "dbeta: {numeric} vs {analytic}"
        );
    }
}
