//! `BatchNorm2d` (as `torch.nn.BatchNorm2d(num_features)`): each channel of `[N, C, H, W]`
//! normalised by the batch's statistics in training and by running ones in testing, then scaled
//! and shifted by learnt `weight` and `bias`.
//!
//! In a cascade it is at home: a hop sees whole batches, as one PyTorch device does, so the
//! batch statistics are the same, and the running statistics are buffers of the hop's state
//! (saved in checkpoints and weights files under PyTorch's names, `running_mean`,
//! `running_var`, `num_batches_tracked`). What it costs is that a training forward changes the
//! layer's state, so a replayed step must start from a checkpoint, as recovery does.

use mixnn_layer_sdk::{Init, Layer, LayerError, Mode, Param, Tensor};
use serde::Deserialize;

use crate::linear::MAX_WEIGHTS;

/// `BatchNorm2d`'s settings (PyTorch's names and defaults).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchNorm2dConfig {
    /// Channels.
    pub num_features: usize,
    /// Added to the variance before its square root (default 1e-5).
    #[serde(default = "default_eps")]
    pub eps: f32,
    /// The weight of a batch's statistics in the running ones (default 0.1).
    #[serde(default = "default_momentum")]
    pub momentum: f32,
}

fn default_eps() -> f32 {
    1e-5
}

fn default_momentum() -> f32 {
    0.1
}

/// What a training forward keeps for backward.
#[derive(Debug)]
struct Kept {
    shape: Vec<usize>,
    /// The normalised input.
    xhat: Vec<f32>,
    /// `1 / sqrt(var + eps)` per channel.
    inv_std: Vec<f32>,
}

/// Batch normalisation over the channels of images.
#[derive(Debug)]
pub struct BatchNorm2d {
    channels: usize,
    eps: f32,
    momentum: f32,
    weight: Param,
    bias: Param,
    running_mean: Tensor,
    running_var: Tensor,
    /// Training batches seen, as PyTorch counts them (an `i64` there; exact here up to 2^24).
    num_batches_tracked: Tensor,
    kept: Option<Kept>,
}

impl BatchNorm2d {
    /// `(N, C, H * W)` of an input, which must be `[N, channels, H, W]`.
    fn dims(&self, shape: &[usize]) -> Result<(usize, usize, usize), LayerError> {
        let bad = || {
            LayerError::BadShape(format!(
                "batch-norm2d takes [N, {}, H, W], not {shape:?}",
                self.channels
            ))
        };
        match *shape {
            // Checked: with N = 0 the input's size bounds neither H nor W.
            [n, c, h, w] if c == self.channels => Ok((n, c, h.checked_mul(w).ok_or_else(bad)?)),
            _ => Err(bad()),
        }
    }
}

impl Layer for BatchNorm2d {
    type Config = BatchNorm2dConfig;
    const NAME: &'static str = "batch-norm2d";

    fn new(config: BatchNorm2dConfig, _: &mut Init) -> Result<Self, LayerError> {
        let c = config.num_features;
        if c == 0 || c > MAX_WEIGHTS {
            return Err(LayerError::BadConfig(format!(
                "batch-norm2d: num_features {c} is not in 1..={MAX_WEIGHTS}"
            )));
        }
        let eps_ok = config.eps > 0.0 && config.eps.is_finite();
        if !eps_ok || !(0.0..=1.0).contains(&config.momentum) {
            return Err(LayerError::BadConfig(format!(
                "batch-norm2d: eps must be positive and momentum in [0, 1], got {} and {}",
                config.eps, config.momentum
            )));
        }
        Ok(BatchNorm2d {
            channels: c,
            eps: config.eps,
            momentum: config.momentum,
            weight: Param::new(Tensor::new(vec![c], vec![1.0; c])?),
            bias: Param::new(Tensor::zeros(vec![c])),
            running_mean: Tensor::zeros(vec![c]),
            running_var: Tensor::new(vec![c], vec![1.0; c])?,
            num_batches_tracked: Tensor::zeros(vec![]),
            kept: None,
        })
    }

    fn forward(&mut self, mut input: Tensor, mode: Mode) -> Result<Tensor, LayerError> {
        let (n, c, plane) = self.dims(input.shape())?;
        let count = n * plane;
        self.kept = None;
        let (mean, inv_std): (Vec<f32>, Vec<f32>) = if mode == Mode::Train {
            if count < 2 {
                return Err(LayerError::BadShape(format!(
                    "batch-norm2d needs more than one value per channel to train, got {:?}",
                    input.shape()
                )));
            }
            let x = input.data();
            let channel = |ch: usize| {
                (0..n).flat_map(move |b| {
                    let start = (b * c + ch) * plane;
                    start..start + plane
                })
            };
            let mut means = Vec::with_capacity(c);
            let mut inv = Vec::with_capacity(c);
            #[allow(clippy::cast_precision_loss)]
            let m = count as f64;
            for ch in 0..c {
                // In f64: sums over a whole batch's plane lose nothing that matters.
                let mean = channel(ch).map(|i| f64::from(x[i])).sum::<f64>() / m;
                let var = channel(ch)
                    .map(|i| (f64::from(x[i]) - mean).powi(2))
                    .sum::<f64>()
                    / m;
                let momentum = f64::from(self.momentum);
                let (rm, rv) = (
                    &mut self.running_mean.data_mut()[ch],
                    f64::from(self.running_var.data()[ch]),
                );
                #[allow(clippy::cast_possible_truncation)]
                {
                    *rm = ((1.0 - momentum) * f64::from(*rm) + momentum * mean) as f32;
                    // The running variance is unbiased, as PyTorch's.
                    self.running_var.data_mut()[ch] =
                        ((1.0 - momentum) * rv + momentum * var * m / (m - 1.0)) as f32;
                    means.push(mean as f32);
                    inv.push((1.0 / (var + f64::from(self.eps)).sqrt()) as f32);
                }
            }
            self.num_batches_tracked.data_mut()[0] += 1.0;
            (means, inv)
        } else {
            let inv = self
                .running_var
                .data()
                .iter()
                .map(|v| 1.0 / (v + self.eps).sqrt())
                .collect();
            (self.running_mean.data().to_vec(), inv)
        };
        let train = mode == Mode::Train;
        let mut xhat = Vec::with_capacity(if train { input.len() } else { 0 });
        let (gamma, beta) = (self.weight.value.data(), self.bias.value.data());
        for (i, v) in input.data_mut().iter_mut().enumerate() {
            let ch = (i / plane) % c;
            let h = (*v - mean[ch]) * inv_std[ch];
            if train {
                xhat.push(h);
            }
            *v = h * gamma[ch] + beta[ch];
        }
        if train {
            self.kept = Some(Kept {
                shape: input.shape().to_vec(),
                xhat,
                inv_std,
            });
        }
        Ok(input)
    }

    fn backward(&mut self, mut grad_output: Tensor) -> Result<Tensor, LayerError> {
        let kept = self
            .kept
            .take()
            .ok_or_else(|| LayerError::BadOrder("backward without a training forward".into()))?;
        grad_output.expect_shape(&kept.shape, "batch-norm2d gradient")?;
        let (_, c, plane) = self.dims(&kept.shape)?;
        let dy = grad_output.data();
        // Per channel: sum(dy) (the bias's gradient) and sum(dy * xhat) (the weight's).
        let (mut sum_dy, mut sum_dy_xhat) = (vec![0.0f64; c], vec![0.0f64; c]);
        for (i, (&g, &h)) in dy.iter().zip(&kept.xhat).enumerate() {
            let ch = (i / plane) % c;
            sum_dy[ch] += f64::from(g);
            sum_dy_xhat[ch] += f64::from(g) * f64::from(h);
        }
        #[allow(clippy::cast_possible_truncation)]
        let to_f32 = |v: &[f64]| v.iter().map(|&s| s as f32).collect::<Vec<f32>>();
        self.bias.grad = Tensor::new(vec![c], to_f32(&sum_dy))?;
        self.weight.grad = Tensor::new(vec![c], to_f32(&sum_dy_xhat))?;
        #[allow(clippy::cast_precision_loss)]
        let m = (dy.len() / c) as f64;
        let gamma = self.weight.value.data();
        // dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)).
        let (mean_dy, mean_dy_xhat) = (
            to_f32(&sum_dy.iter().map(|s| s / m).collect::<Vec<_>>()),
            to_f32(&sum_dy_xhat.iter().map(|s| s / m).collect::<Vec<_>>()),
        );
        for (i, (g, &h)) in grad_output
            .data_mut()
            .iter_mut()
            .zip(&kept.xhat)
            .enumerate()
        {
            let ch = (i / plane) % c;
            *g = gamma[ch] * kept.inv_std[ch] * (*g - mean_dy[ch] - h * mean_dy_xhat[ch]);
        }
        Ok(grad_output)
    }

    fn params(&mut self) -> Vec<(&'static str, &mut Param)> {
        vec![("weight", &mut self.weight), ("bias", &mut self.bias)]
    }

    fn buffers(&mut self) -> Vec<(&'static str, &mut Tensor)> {
        vec![
            ("running_mean", &mut self.running_mean),
            ("running_var", &mut self.running_var),
            ("num_batches_tracked", &mut self.num_batches_tracked),
        ]
    }
}
