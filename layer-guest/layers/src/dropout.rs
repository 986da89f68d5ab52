//! `Dropout` (as `torch.nn.Dropout(p)`): in training, each value is zeroed with probability `p`
//! and the others scaled by `1 / (1 - p)`; in testing, the identity.
//!
//! The masks are seeded and deterministic: the layer draws its own seed from the designer's at
//! init, and the mask of its `k`-th training forward is ChaCha8 stream `k` of that seed. So a
//! model with dropout trains bit for bit alike in process and over hosts, and the position `k`
//! is the layer's extra state: a checkpoint restores it and replays draw the same masks. The
//! masks are not PyTorch's (its generator is another), only their law is.

use mixnn_layer_sdk::{Init, Layer, LayerError, Mode, Tensor};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use serde::Deserialize;

/// `Dropout`'s settings.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropoutConfig {
    /// The probability that a value is zeroed, in `[0, 1]` (PyTorch's default 0.5).
    #[serde(default = "half")]
    pub p: f32,
}

fn half() -> f32 {
    0.5
}

/// Zeroes values at random in training, scaling the rest so the expectation is unchanged.
#[derive(Debug)]
pub struct Dropout {
    p: f32,
    /// A value is kept when its 32 random bits are at least this.
    threshold: u64,
    seed: u64,
    /// Training forwards so far: the next mask's stream.
    draws: u64,
    /// Which values the last training forward kept.
    kept: Option<Vec<bool>>,
}

impl Dropout {
    /// `1 / (1 - p)`, or 0 when everything is dropped (PyTorch's output is then all zeros).
    fn scale(&self) -> f32 {
        if self.p >= 1.0 {
            0.0
        } else {
            1.0 / (1.0 - self.p)
        }
    }

    /// The mask of training forward number `draw`, for `len` values.
    fn mask(&self, draw: u64, len: usize) -> Vec<bool> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(draw);
        (0..len)
            .map(|_| u64::from(rng.next_u32()) >= self.threshold)
            .collect()
    }
}

impl Layer for Dropout {
    type Config = DropoutConfig;
    const NAME: &'static str = "dropout";

    fn new(config: DropoutConfig, init: &mut Init) -> Result<Self, LayerError> {
        if !(0.0..=1.0).contains(&config.p) {
            return Err(LayerError::BadConfig(format!(
                "dropout probability has to be between 0 and 1, but got {}",
                config.p
            )));
        }
        // p of the 2^32 values of a u32 drop; computed in f64, where p * 2^32 is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let threshold = (f64::from(config.p) * 4_294_967_296.0).round() as u64;
        Ok(Dropout {
            p: config.p,
            threshold,
            seed: init.seed(),
            draws: 0,
            kept: None,
        })
    }

    fn forward(&mut self, mut input: Tensor, mode: Mode) -> Result<Tensor, LayerError> {
        if mode == Mode::Test {
            self.kept = None;
            return Ok(input);
        }
        let kept = self.mask(self.draws, input.len());
        self.draws = self.draws.wrapping_add(1);
        let scale = self.scale();
        // A multiplication, as PyTorch's: a dropped NaN stays NaN.
        for (v, &keep) in input.data_mut().iter_mut().zip(&kept) {
            *v *= if keep { scale } else { 0.0 };
        }
        self.kept = Some(kept);
        Ok(input)
    }

    fn backward(&mut self, mut grad_output: Tensor) -> Result<Tensor, LayerError> {
        let kept = self
            .kept
            .take()
            .ok_or_else(|| LayerError::BadOrder("backward without a training forward".into()))?;
        if kept.len() != grad_output.len() {
            return Err(LayerError::BadShape(format!(
                "dropout gradient has {} values, the input had {}",
                grad_output.len(),
                kept.len()
            )));
        }
        let scale = self.scale();
        for (g, keep) in grad_output.data_mut().iter_mut().zip(kept) {
            *g *= if keep { scale } else { 0.0 };
        }
        Ok(grad_output)
    }

    fn extra_state(&self) -> Option<String> {
        Some(format!("draws={}", self.draws))
    }

    fn set_extra_state(&mut self, state: &str) -> Result<(), LayerError> {
        self.draws = state
            .strip_prefix("draws=")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| LayerError::BadState(format!("dropout: extra state {state:?}")))?;
        Ok(())
    }
}
