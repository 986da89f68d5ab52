//! The optimizer the SDK applies after every `backward`: SGD with momentum, as
//! `torch.optim.SGD` (no dampening, no Nesterov, no weight decay): `v = mu * v + g`,
//! `w = w - lr * v`, with `v = g` on the first step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{LayerError, Param, Tensor};

/// SGD hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f32,
    /// Momentum factor (0 disables momentum).
    #[serde(default)]
    pub momentum: f32,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 0.01,
            momentum: 0.0,
        }
    }
}

/// SGD with momentum, holding one velocity buffer per named parameter.
#[derive(Debug, Clone, Default)]
pub struct Sgd {
    config: SgdConfig,
    velocity: BTreeMap<String, Vec<f32>>,
}

impl Sgd {
    /// An optimizer with empty momentum buffers.
    pub fn new(config: SgdConfig) -> Result<Self, LayerError> {
        if !(config.lr.is_finite() && config.lr >= 0.0) {
            return Err(LayerError::BadConfig(format!(
                "learning rate {} is invalid",
                config.lr
            )));
        }
        if !(config.momentum.is_finite() && (0.0..1.0).contains(&config.momentum)) {
            return Err(LayerError::BadConfig(format!(
                "momentum {} is invalid",
                config.momentum
            )));
        }
        Ok(Sgd {
            config,
            velocity: BTreeMap::new(),
        })
    }

    /// Applies one step to `param` using its gradient, and uses the gradient up: its buffer
    /// becomes the momentum buffer on the first step and is freed after later ones, so that a
    /// layer holds no gradient between steps (a layer's memory peaks in `backward`, which makes
    /// the next one, and a component's memory never shrinks). An empty gradient counts as zero.
    pub fn step(&mut self, name: &str, param: &mut Param) -> Result<(), LayerError> {
        let value = param.value.data_mut();
        let (_, mut grad) = std::mem::replace(&mut param.grad, Tensor::zeros(vec![0])).into_parts();
        if grad.is_empty() {
            grad = vec![0.0; value.len()];
        }
        if grad.len() != value.len() {
            return Err(LayerError::Failed(format!(
                "gradient of {name} has the wrong size"
            )));
        }
        let lr = self.config.lr;
        if self.config.momentum == 0.0 {
            for (w, g) in value.iter_mut().zip(&grad) {
                *w -= lr * g;
            }
            return Ok(());
        }
        let mu = self.config.momentum;
        match self.velocity.get_mut(name) {
            Some(v) if v.len() == grad.len() => {
                for ((w, v), g) in value.iter_mut().zip(v.iter_mut()).zip(&grad) {
                    *v = mu * *v + g;
                    *w -= lr * *v;
                }
            }
            _ => {
                for (w, g) in value.iter_mut().zip(&grad) {
                    *w -= lr * g;
                }
                // First step: the gradient becomes the buffer.
                self.velocity.insert(name.to_owned(), grad);
            }
        }
        Ok(())
    }

    /// The momentum buffer of a parameter, if a step has created one.
    pub fn velocity(&self, name: &str) -> Option<&[f32]> {
        self.velocity.get(name).map(Vec::as_slice)
    }

    /// Replaces (or, with `None`, clears) the momentum buffer of a parameter.
    pub fn set_velocity(&mut self, name: &str, velocity: Option<Vec<f32>>) {
        match velocity {
            Some(v) => self.velocity.insert(name.to_owned(), v),
            None => self.velocity.remove(name),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn momentum_matches_hand_computed_steps() {
        // w0 = 1, lr = 0.1, mu = 0.9, gradients 1, 2, -1:
        // v1 = 1        w1 = 1 - 0.1       = 0.9
        // v2 = 0.9 + 2  = 2.9   w2 = 0.9 - 0.29 = 0.61
        // v3 = 2.61 - 1 = 1.61  w3 = 0.61 - 0.161 = 0.449
        let mut sgd = Sgd::new(SgdConfig {
            lr: 0.1,
            momentum: 0.9,
        })
        .unwrap();
        let mut p = Param::new(Tensor::new(vec![1], vec![1.0]).unwrap());
        let mut seen = Vec::new();
        for g in [1.0f32, 2.0, -1.0] {
            p.grad = Tensor::new(vec![1], vec![g]).unwrap();
            sgd.step("w", &mut p).unwrap();
            seen.push((p.value.data()[0], sgd.velocity("w").unwrap()[0]));
        }
        let want = [(0.9f32, 1.0f32), (0.61, 2.9), (0.449, 1.61)];
        for ((w, v), (ew, ev)) in seen.iter().zip(want) {
            assert!((w - ew).abs() < 1e-6, "w {w} vs {ew}");
            assert!((v - ev).abs() < 1e-6, "v {v} vs {ev}");
        }
    }

    #[test]
    fn plain_sgd_and_bad_hyperparameters() {
        let mut sgd = Sgd::new(SgdConfig {
            lr: 0.5,
            momentum: 0.0,
        })
        .unwrap();
        let mut p = Param::new(Tensor::new(vec![2], vec![1.0, 2.0]).unwrap());
        p.grad = Tensor::new(vec![2], vec![2.0, -2.0]).unwrap();
        sgd.step("w", &mut p).unwrap();
        assert_eq!(p.value.data(), &[0.0, 3.0]);
        assert!(sgd.velocity("w").is_none());
        assert!(
            Sgd::new(SgdConfig {
                lr: f32::NAN,
                momentum: 0.0
            })
            .is_err()
        );
        assert!(
            Sgd::new(SgdConfig {
                lr: 0.1,
                momentum: 1.0
            })
            .is_err()
        );
    }
}
