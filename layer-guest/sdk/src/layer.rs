//! The trait a layer implements, and what it is given to build itself.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use serde::de::DeserializeOwned;

use crate::{LayerError, Tensor};

/// Whether a forward pass belongs to training or to testing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keep what `backward` needs.
    Train,
    /// Inference only.
    Test,
}

/// A trainable tensor and the gradient that the last `backward` left for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// The current value.
    pub value: Tensor,
    /// The gradient of the loss with respect to `value`, set by `backward` and used up by the
    /// optimizer's step ([`Sgd::step`](crate::Sgd::step)). Empty (no gradient yet, or used
    /// up) counts as zero.
    pub grad: Tensor,
}

impl Param {
    /// A parameter with the given value and no gradient yet (which counts as zero).
    pub fn new(value: Tensor) -> Self {
        Param {
            value,
            grad: Tensor::zeros(vec![0]),
        }
    }
}

/// What a loss layer computes: the mean loss and its gradient with respect to its input.
#[derive(Debug, Clone, PartialEq)]
pub struct LossOutput {
    /// Mean loss over the batch.
    pub loss: f32,
    /// Gradient of the loss with respect to the input.
    pub grad_input: Tensor,
}

/// Randomness and settings available while a layer builds itself. The generator is seeded by
/// the designer: components have no other source of randomness.
#[derive(Debug)]
pub struct Init {
    rng: ChaCha8Rng,
}

impl Init {
    /// A context whose generator starts from `seed`.
    pub fn new(seed: u64) -> Self {
        Init {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A value drawn uniformly from `[low, high)`.
    pub fn uniform(&mut self, low: f32, high: f32) -> f32 {
        // 24 random bits give every representable step of [0, 1) at f32 precision.
        let unit = (self.rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32);
        low + (high - low) * unit
    }

    /// A seed for a generator of the layer's own (as a dropout layer keeps), drawn from the
    /// designer's seed.
    pub fn seed(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// A tensor of `shape` with values drawn uniformly from `[-bound, bound)`.
    pub fn uniform_tensor(&mut self, shape: Vec<usize>, bound: f32) -> Tensor {
        let mut t = Tensor::zeros(shape);
        for v in t.data_mut() {
            *v = self.uniform(-bound, bound);
        }
        t
    }
}

/// A neural-network layer, written as plain Rust.
///
/// Implement this, then export the type as a component with [`export_layer!`](crate::export_layer).
/// The SDK decodes the config, keeps the optimizer (SGD with momentum, as `torch.optim.SGD`) for
/// every tensor returned by [`Layer::params`], and saves and loads state.
pub trait Layer: Sized + 'static {
    /// The layer's own settings, decoded from the `layer` field of the config.
    type Config: DeserializeOwned;

    /// The type name, reported by `init`.
    const NAME: &'static str;

    /// Whether this is a loss layer (implements [`Layer::loss`]).
    const IS_LOSS: bool = false;

    /// Builds the layer; `init` carries the designer's seed for random initialisation.
    fn new(config: Self::Config, init: &mut Init) -> Result<Self, LayerError>;

    /// Computes the output; in [`Mode::Train`] keeps what `backward` needs.
    fn forward(&mut self, input: Tensor, mode: Mode) -> Result<Tensor, LayerError>;

    /// Returns the gradient with respect to the last training input and stores each
    /// parameter's gradient in its [`Param::grad`]; the SDK then applies the optimizer.
    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor, LayerError>;

    /// The first half of `backward`, as a cascade runs it: the gradient of the input only
    /// (None when `input_grad` is false: nobody needs it), keeping what
    /// [`Layer::param_grads`] needs. A host sends the input's gradient on before it asks for
    /// the parameters' gradients, so a layer whose parameters are costly to differentiate
    /// (as [`Param`]s of a matrix product are) should split its work here. The default runs
    /// the whole `backward` at once, which is right for layers without parameters.
    fn backward_input(
        &mut self,
        grad_output: Tensor,
        input_grad: bool,
    ) -> Result<Option<Tensor>, LayerError> {
        let g = self.backward(grad_output)?;
        Ok(input_grad.then_some(g))
    }

    /// The second half: stores each parameter's gradient in its [`Param::grad`] from what
    /// the last [`Layer::backward_input`] kept; the SDK then applies the optimizer. The
    /// default does nothing (the default `backward_input` did it all). Whether split or
    /// whole, the gradients must be the same to the bit.
    fn param_grads(&mut self) -> Result<(), LayerError> {
        Ok(())
    }

    /// The trainable parameters, by stable name (`weight`, `bias`, ...).
    fn params(&mut self) -> Vec<(&'static str, &mut Param)> {
        Vec::new()
    }

    /// Tensors the layer keeps but does not train (as BatchNorm's running statistics), by
    /// stable name: saved and loaded with its state and in weights files, as PyTorch's
    /// buffers are in its `state_dict`, but left alone by the optimizer.
    fn buffers(&mut self) -> Vec<(&'static str, &mut Tensor)> {
        Vec::new()
    }

    /// State that is not a tensor (a random generator's position, say), as PyTorch's
    /// `get_extra_state`: saved with the layer's state so that a checkpoint resumes training
    /// exactly, but not in weights files. `None`: the layer has none.
    fn extra_state(&self) -> Option<String> {
        None
    }

    /// Restores what [`Layer::extra_state`] gave. Called only with a state that carries some.
    fn set_extra_state(&mut self, state: &str) -> Result<(), LayerError> {
        let _ = state;
        Err(LayerError::BadState(format!(
            "{} keeps no extra state",
            Self::NAME
        )))
    }

    /// Loss layers: the mean loss of `input` against `target`, and its gradient.
    fn loss(&mut self, input: Tensor, target: Tensor) -> Result<LossOutput, LayerError> {
        let _ = (input, target);
        Err(LayerError::Unsupported(format!(
            "{} is not a loss layer",
            Self::NAME
        )))
    }
}
