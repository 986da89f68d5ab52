//! Drives a [`Layer`]: decodes its config, keeps its optimizer, enforces the call order, and
//! saves and loads its state. The exported component and the native baseline both go through
//! this one path, so they behave alike down to the bit.

use serde::{Deserialize, Serialize};

use crate::{Init, Layer, LayerError, LossOutput, Mode, Sgd, SgdConfig, Tensor, state};

/// The most config bytes a layer accepts.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// The config the designer sends to `init`, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// Seed of the layer's random initialisation.
    #[serde(default)]
    pub seed: u64,
    /// Optimizer settings.
    #[serde(default)]
    pub optimizer: SgdConfig,
    /// The layer's own fields (its `Layer::Config`); `null` stands for `{}`.
    #[serde(default)]
    pub layer: serde_json::Value,
}

impl InitConfig {
    /// Encodes the config as the bytes `init` expects.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A `Value` and plain numbers always serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What `init` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// The layer's type name.
    pub name: String,
    /// Whether it is a loss layer.
    pub is_loss: bool,
    /// Number of trainable scalars.
    pub param_count: u64,
}

/// A layer behind an object-safe interface: the operations of the WIT `layer` interface.
pub trait LayerRuntime {
    /// Builds the layer from config bytes.
    fn init(&mut self, config: &[u8]) -> Result<LayerInfo, LayerError>;
    /// Forward pass.
    fn forward(&mut self, input: Tensor, mode: Mode) -> Result<Tensor, LayerError>;
    /// Backward pass: the gradient of the input (if `input_grad`); `update` must follow.
    fn backward(
        &mut self,
        grad_output: Tensor,
        input_grad: bool,
    ) -> Result<Option<Tensor>, LayerError>;
    /// The parameters' gradients of the last backward pass, and the optimizer step.
    fn update(&mut self) -> Result<(), LayerError>;
    /// Loss and its gradient (loss layers).
    fn loss(&mut self, input: Tensor, target: Tensor) -> Result<LossOutput, LayerError>;
    /// Parameters and optimizer state as safetensors bytes.
    fn export_state(&mut self) -> Result<Vec<u8>, LayerError>;
    /// Loads parameters and optimizer state from safetensors bytes.
    fn import_state(&mut self, bytes: &[u8]) -> Result<(), LayerError>;
}

/// Where a layer stands in a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Step {
    /// Between steps.
    #[default]
    Idle,
    /// A training forward pass is waiting for its backward pass.
    Forwarded,
    /// A backward pass is waiting for its update; nothing else may come first.
    Backwarded,
}

/// The runtime of one layer type `L`.
#[derive(Debug)]
pub struct Runtime<L> {
    built: Option<(L, Sgd)>,
    step: Step,
}

impl<L> Default for Runtime<L> {
    fn default() -> Self {
        Runtime {
            built: None,
            step: Step::Idle,
        }
    }
}

impl<L: Layer> Runtime<L> {
    /// A runtime waiting for `init`.
    pub fn new() -> Self {
        Self::default()
    }

    fn built(&mut self) -> Result<&mut (L, Sgd), LayerError> {
        if self.step == Step::Backwarded {
            return Err(LayerError::BadOrder(
                "update must follow backward before any other call".into(),
            ));
        }
        self.built
            .as_mut()
            .ok_or_else(|| LayerError::BadOrder("init has not been called".into()))
    }
}

impl<L: Layer> LayerRuntime for Runtime<L> {
    fn init(&mut self, config: &[u8]) -> Result<LayerInfo, LayerError> {
        if self.built.is_some() {
            return Err(LayerError::BadOrder("init called twice".into()));
        }
        if config.len() > MAX_CONFIG_BYTES {
            return Err(LayerError::BadConfig(format!(
                "{} config bytes is too many",
                config.len()
            )));
        }
        let config: InitConfig =
            serde_json::from_slice(config).map_err(|e| LayerError::BadConfig(e.to_string()))?;
        let fields = match config.layer {
            serde_json::Value::Null => serde_json::Value::Object(Default::default()),
            v => v,
        };
        let layer_config = L::Config::deserialize(fields)
            .map_err(|e| LayerError::BadConfig(format!("{}: {e}", L::NAME)))?;
        let sgd = Sgd::new(config.optimizer)?;
        let mut layer = L::new(layer_config, &mut Init::new(config.seed))?;
        let param_count = layer
            .params()
            .iter()
            .map(|(_, p)| p.value.len() as u64)
            .sum();
        self.built = Some((layer, sgd));
        Ok(LayerInfo {
            name: L::NAME.to_owned(),
            is_loss: L::IS_LOSS,
            param_count,
        })
    }

    fn forward(&mut self, input: Tensor, mode: Mode) -> Result<Tensor, LayerError> {
        let (layer, _) = self.built()?;
        let out = layer.forward(input, mode);
        self.step = if mode == Mode::Train && out.is_ok() {
            Step::Forwarded
        } else {
            Step::Idle
        };
        out
    }

    fn backward(
        &mut self,
        grad_output: Tensor,
        input_grad: bool,
    ) -> Result<Option<Tensor>, LayerError> {
        self.built()?;
        if self.step != Step::Forwarded {
            return Err(LayerError::BadOrder(
                "backward without a training forward".into(),
            ));
        }
        self.step = Step::Idle;
        let (layer, _) = self.built()?;
        let grad_input = layer.backward_input(grad_output, input_grad)?;
        self.step = Step::Backwarded;
        Ok(grad_input)
    }

    fn update(&mut self) -> Result<(), LayerError> {
        if self.step != Step::Backwarded {
            return Err(LayerError::BadOrder("update without a backward".into()));
        }
        self.step = Step::Idle;
        let (layer, sgd) = self.built()?;
        layer.param_grads()?;
        for (name, param) in layer.params() {
            sgd.step(name, param)?;
        }
        Ok(())
    }

    fn loss(&mut self, input: Tensor, target: Tensor) -> Result<LossOutput, LayerError> {
        let (layer, _) = self.built()?;
        layer.loss(input, target)
    }

    fn export_state(&mut self) -> Result<Vec<u8>, LayerError> {
        let (layer, sgd) = self.built()?;
        state::export(layer, sgd)
    }

    fn import_state(&mut self, bytes: &[u8]) -> Result<(), LayerError> {
        let (layer, sgd) = self.built()?;
        state::import(layer, sgd, bytes)
    }
}
