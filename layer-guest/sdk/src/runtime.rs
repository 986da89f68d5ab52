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
    /// Backward pass and optimizer step.
    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor, LayerError>;
    /// Loss and its gradient (loss layers).
    fn loss(&mut self, input: Tensor, target: Tensor) -> Result<LossOutput, LayerError>;
    /// Parameters and optimizer state as safetensors bytes.
    fn export_state(&mut self) -> Result<Vec<u8>, LayerError>;
    /// Loads parameters and optimizer state from safetensors bytes.
    fn import_state(&mut self, bytes: &[u8]) -> Result<(), LayerError>;
}

/// The runtime of one layer type `L`.
#[derive(Debug)]
pub struct Runtime<L> {
    built: Option<(L, Sgd)>,
    awaiting_backward: bool,
}

impl<L> Default for Runtime<L> {
    fn default() -> Self {
        Runtime {
            built: None,
            awaiting_backward: false,
        }
    }
}

impl<L: Layer> Runtime<L> {
    /// A runtime waiting for `init`.
    pub fn new() -> Self {
        Self::default()
    }

    fn built(&mut self) -> Result<&mut (L, Sgd), LayerError> {
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
        self.awaiting_backward = mode == Mode::Train && out.is_ok();
        out
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor, LayerError> {
        if !std::mem::take(&mut self.awaiting_backward) {
            return Err(LayerError::BadOrder(
                "backward without a training forward".into(),
            ));
        }
        let (layer, sgd) = self.built()?;
        let grad_input = layer.backward(grad_output)?;
        for (name, param) in layer.params() {
            sgd.step(name, param)?;
        }
        Ok(grad_input)
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
