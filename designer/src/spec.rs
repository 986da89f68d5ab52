//! The model spec: a TOML file listing the layers (component, config, host grouping) and the
//! training settings.
//!
//! ```toml
//! name = "paper-mlp"
//! input_shape = [784]                # one example's shape, without the batch dimension:
//!                                    # [1, 28, 28] for a conv layer's [N, C, H, W] (default:
//!                                    # the data's values per example, flat)
//!
//! [training]
//! batch_size = 64
//! lr = 0.01
//! momentum = 0.9
//!
//! [[layer]]
//! component = "linear-relu"          # a standard layer, or a path to a .wasm component
//! host = "a"                         # adjacent layers with the same host run together
//! config = { in_features = 784, out_features = 128 }
//!
//! [cascade]                          # over hosts: `mixnn train --directory`
//! dummies = 2
//! keep_first = false
//! keep_last = true                 # the designer keeps the last weight layer to the loss
//! cover_rate = 0.0                   # cover messages per second
//! ```

use std::path::{Path, PathBuf};

use mixnn_layer_sdk::{InitConfig, MAX_RANK, SgdConfig};
use serde::Deserialize;

/// The most dimensions of one example (`input_shape`): a batch adds one, and tensors have at
/// most [`MAX_RANK`].
pub const MAX_INPUT_RANK: usize = MAX_RANK - 1;

/// The most values in one example (`input_shape`'s product): 64 MiB of `f32`, four times what
/// a frame to a host carries.
pub const MAX_INPUT_VALUES: usize = 1 << 24;

/// Why a model spec was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown fields.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: toml::de::Error,
    },
    /// The model has no layer.
    #[error("the model has no layer")]
    NoLayers,
    /// A batch size of zero.
    #[error("batch sizes must be positive")]
    ZeroBatch,
    /// A frozen layer after a trainable one, or a frozen loss.
    #[error(
        "layer {0}: frozen layers must come first, before any trainable layer and the loss \
         (the designer keeps them)"
    )]
    FrozenNotFirst(usize),
    /// Every layer but the loss is frozen.
    #[error("every layer but the loss is frozen: nothing would train")]
    NothingToTrain,
    /// A host label that comes back after another host.
    #[error("host {0:?} holds layers that are not adjacent")]
    HostNotAdjacent(String),
    /// An `input_shape` that no tensor can take.
    #[error(
        "input_shape {shape:?}: needs 1 to {MAX_INPUT_RANK} dimensions, none zero, \
         and at most {MAX_INPUT_VALUES} values"
    )]
    InputShape {
        /// The spec's shape.
        shape: Vec<usize>,
    },
    /// The model's inputs and the data's examples differ in size.
    #[error(
        "the model takes inputs of {shape:?} ({values} values) but the data has {pixels} \
         values per example"
    )]
    InputMismatch {
        /// One example's shape, as the model takes it.
        shape: Vec<usize>,
        /// The values it holds.
        values: usize,
        /// The values of one example of the data.
        pixels: usize,
    },
    /// A layer's config cannot be passed to its `init`.
    #[error("layer {index}: config: {source}")]
    Config {
        /// The layer.
        index: usize,
        /// Why.
        source: serde_json::Error,
    },
}

/// Training settings (PyTorch's names and the paper's defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Training {
    /// Examples per SGD step.
    pub batch_size: usize,
    /// Passes over the training set.
    pub epochs: usize,
    /// Seed of the weights' initialisation and of the shuffles.
    pub seed: u64,
    /// Learning rate.
    pub lr: f32,
    /// SGD momentum.
    pub momentum: f32,
    /// Examples per forward pass when testing.
    pub test_batch_size: usize,
}

impl Default for Training {
    fn default() -> Self {
        Training {
            batch_size: 64,
            epochs: 3,
            seed: 1,
            lr: 0.01,
            momentum: 0.9,
            test_batch_size: 1000,
        }
    }
}

/// Where a layer's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentSource {
    /// One of the standard layers, built into `mixnn`.
    Standard(String),
    /// A component file.
    File(PathBuf),
}

/// One layer of the model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// A standard layer's name (see `mixnn_layers::STANDARD`) or a path to a `.wasm` component,
    /// relative to the spec file.
    pub component: String,
    /// Hosts label: adjacent layers with the same label run on one host. Unlabelled layers get
    /// a host each.
    #[serde(default)]
    pub host: Option<String>,
    /// The layer's own settings, passed to its `init`.
    #[serde(default)]
    pub config: toml::Table,
    /// Learning rate for this layer (default: the training one).
    #[serde(default)]
    pub lr: Option<f32>,
    /// Momentum for this layer (default: the training one).
    #[serde(default)]
    pub momentum: Option<f32>,
    /// How many modules of a PyTorch `nn.Sequential` the layer stands for, which numbers the
    /// tensors of weights files ([`crate::weights`]). Default: 2 for `linear-relu`, 0 for the
    /// loss (the last layer), 1 otherwise.
    #[serde(default)]
    pub torch_modules: Option<usize>,
    /// Frozen: pretrained and never trained, no optimizer state and no backward through it.
    /// Frozen layers come first, and the designer runs them itself (PrivyNet's split, see
    /// [`crate::front`]): only the features they make travel.
    #[serde(default)]
    pub frozen: bool,
}

/// How a model runs over remote hosts (the `[cascade]` table; command-line flags override).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CascadeSettings {
    /// Dummy hosts (identity layers) interleaved at random between the actual hosts.
    pub dummies: usize,
    /// Keep the first host's layers on the designer: raw inputs never leave it.
    pub keep_first: bool,
    /// Keep the last layers on the designer, from the last weight layer to the loss: no host
    /// sees the labels or a gradient that spells them out, and all hosts together lack the last
    /// weight layer. On by default (`mixnn attack` measures what it saves); `false` lets hosts
    /// run every layer, as the paper does.
    pub keep_last: bool,
    /// Cover messages per second looped through the cascade (0: none).
    pub cover_rate: f64,
}

impl Default for CascadeSettings {
    fn default() -> Self {
        CascadeSettings {
            dummies: 2,
            keep_first: false,
            keep_last: true,
            cover_rate: 0.0,
        }
    }
}

/// A model: its layers in order and how to train it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// A name for reports.
    pub name: String,
    /// The shape of one example as the first layer takes it, without the batch dimension
    /// (`[1, 28, 28]`: batches of `[N, 1, 28, 28]`). `None`: the data's values per example,
    /// flat (`[N, pixels]`). See [`ModelSpec::batch_shape`].
    #[serde(default)]
    pub input_shape: Option<Vec<usize>>,
    /// Training settings.
    #[serde(default)]
    pub training: Training,
    /// How to run the model over hosts (`mixnn train --directory`).
    #[serde(default)]
    pub cascade: CascadeSettings,
    /// The layers, input first; the last one is the loss.
    #[serde(rename = "layer")]
    pub layers: Vec<LayerSpec>,
    /// The directory of the spec file (component paths are relative to it).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The index of the first layer in the model this one was cut from
    /// ([`ModelSpec::without_front`]): seeds follow the layers, so a layer starts from the
    /// same weights whatever was cut before it.
    #[serde(skip)]
    pub first_layer: usize,
}

impl ModelSpec {
    /// Reads and checks a spec file.
    pub fn from_file(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.into(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, base).map_err(|e| match e {
            SpecError::Parse { source, .. } => SpecError::Parse {
                path: path.into(),
                source,
            },
            other => other,
        })
    }

    /// Parses and checks a spec; component paths are relative to `base_dir`.
    pub fn parse(text: &str, base_dir: PathBuf) -> Result<Self, SpecError> {
        let mut spec: ModelSpec = toml::from_str(text).map_err(|source| SpecError::Parse {
            path: PathBuf::new(),
            source,
        })?;
        spec.base_dir = base_dir;
        spec.validate()?;
        Ok(spec)
    }

    fn validate(&self) -> Result<(), SpecError> {
        let t = &self.training;
        if self.layers.is_empty() {
            return Err(SpecError::NoLayers);
        }
        if t.batch_size == 0 || t.test_batch_size == 0 {
            return Err(SpecError::ZeroBatch);
        }
        if let Some(shape) = &self.input_shape {
            let values = shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .filter(|&v| v <= MAX_INPUT_VALUES);
            if shape.is_empty()
                || shape.len() > MAX_INPUT_RANK
                || shape.contains(&0)
                || values.is_none()
            {
                return Err(SpecError::InputShape {
                    shape: shape.clone(),
                });
            }
        }
        let front = self.frozen_front();
        if let Some(i) = self.layers.iter().rposition(|l| l.frozen)
            && (i >= front || i + 1 == self.layers.len())
        {
            return Err(SpecError::FrozenNotFirst(i));
        }
        if front > 0 && front + 1 == self.layers.len() {
            return Err(SpecError::NothingToTrain);
        }
        // A host label may not come back after another host: a host holds adjacent layers.
        let hosts = self.hosts();
        for (i, group) in hosts.iter().enumerate() {
            let label = &self.layers[group[0]].host;
            if label.is_some() && hosts[..i].iter().any(|g| &self.layers[g[0]].host == label) {
                return Err(SpecError::HostNotAdjacent(
                    label.clone().unwrap_or_default(),
                ));
            }
        }
        Ok(())
    }

    /// The shape of a batch of `batch` examples of data with `pixels` values each:
    /// `[batch, input_shape...]`, or `[batch, pixels]` without an `input_shape`. Fails if
    /// `input_shape` holds other than `pixels` values.
    pub fn batch_shape(&self, batch: usize, pixels: usize) -> Result<Vec<usize>, SpecError> {
        batch_shape(self.input_shape.as_deref(), batch, pixels)
    }

    /// The layers grouped by host, in cascade order: each inner list holds adjacent layer
    /// indices.
    pub fn hosts(&self) -> Vec<Vec<usize>> {
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            match groups.last_mut() {
                Some(group) if layer.host.is_some() && self.layers[group[0]].host == layer.host => {
                    group.push(i)
                }
                _ => groups.push(vec![i]),
            }
        }
        groups
    }

    /// How many layers at the front are frozen (the designer keeps them).
    pub fn frozen_front(&self) -> usize {
        self.layers.iter().take_while(|l| l.frozen).count()
    }

    /// The model from layer `n` on, taking examples of `input_shape` (what the first `n`
    /// layers make). Its layers keep their seeds, so they start as they would in the whole
    /// model; weights files of the whole model number its tensors.
    /// The loss always stays: `n` counts at most the layers before it.
    pub fn without_front(&self, n: usize, input_shape: Vec<usize>) -> ModelSpec {
        let n = n.min(self.layers.len().saturating_sub(1));
        let mut rest = self.clone();
        rest.layers.drain(..n);
        rest.input_shape = Some(input_shape);
        rest.first_layer = self.first_layer + n;
        rest
    }

    /// The same model with every layer on one host: a session of one hop (what a host's load
    /// test runs many of).
    pub fn on_one_host(mut self) -> Self {
        for layer in &mut self.layers {
            layer.host = Some("all".into());
        }
        self
    }

    /// Where layer `i`'s component comes from.
    pub fn source(&self, i: usize) -> ComponentSource {
        let name = &self.layers[i].component;
        if mixnn_layers::STANDARD.contains(&name.as_str()) {
            ComponentSource::Standard(name.clone())
        } else {
            ComponentSource::File(self.base_dir.join(name))
        }
    }

    /// The `init` config of layer `i` (its seed derives from the training seed and `i`).
    pub fn init_config(&self, i: usize) -> Result<InitConfig, SpecError> {
        let layer = &self.layers[i];
        let fields = serde_json::to_value(&layer.config)
            .map_err(|source| SpecError::Config { index: i, source })?;
        Ok(InitConfig {
            seed: layer_seed(self.training.seed, self.first_layer + i),
            optimizer: SgdConfig {
                lr: layer.lr.unwrap_or(self.training.lr),
                momentum: layer.momentum.unwrap_or(self.training.momentum),
            },
            layer: fields,
        })
    }
}

/// The shape of a batch of `batch` examples of `pixels` values each, for a model that takes
/// examples of `input_shape` (`None`: flat, `[batch, pixels]`); see [`ModelSpec::batch_shape`].
pub fn batch_shape(
    input_shape: Option<&[usize]>,
    batch: usize,
    pixels: usize,
) -> Result<Vec<usize>, SpecError> {
    let Some(shape) = input_shape else {
        return Ok(vec![batch, pixels]);
    };
    // A product that overflows holds more values than any data set.
    let values = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .unwrap_or(usize::MAX);
    if values != pixels {
        return Err(SpecError::InputMismatch {
            shape: shape.to_vec(),
            values,
            pixels,
        });
    }
    Ok(std::iter::once(batch)
        .chain(shape.iter().copied())
        .collect())
}

/// The seed of layer `index`: distinct per layer, fixed by the model's seed.
pub fn layer_seed(seed: u64, index: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
        name = "t"
        [training]
        lr = 0.05
        [[layer]]
        component = "linear-relu"
        host = "a"
        config = { in_features = 4, out_features = 3 }
        [[layer]]
        component = "linear"
        host = "a"
        config = { in_features = 3, out_features = 2 }
        momentum = 0.5
        [[layer]]
        component = "custom/swish.wasm"
        [[layer]]
        component = "softmax-cross-entropy"
    "#;

    #[test]
    fn parses_groups_and_configs() {
        let spec = ModelSpec::parse(SPEC, "/models".into()).unwrap();
        assert_eq!(spec.hosts(), vec![vec![0, 1], vec![2], vec![3]]);
        assert_eq!(
            spec.source(0),
            ComponentSource::Standard("linear-relu".into())
        );
        assert_eq!(
            spec.source(2),
            ComponentSource::File("/models/custom/swish.wasm".into())
        );
        let c = spec.init_config(1).unwrap();
        assert_eq!(
            c.optimizer,
            SgdConfig {
                lr: 0.05,
                momentum: 0.5
            }
        );
        assert_eq!(c.layer["out_features"], 2);
        assert_ne!(spec.init_config(0).unwrap().seed, c.seed);
        assert_eq!(spec.training.batch_size, 64);
    }

    #[test]
    fn refuses_bad_specs() {
        let split = SPEC.replace(
            "component = \"softmax-cross-entropy\"",
            "component = \"softmax-cross-entropy\"\nhost = \"a\"",
        );
        assert!(
            ModelSpec::parse(&split, "/".into())
                .unwrap_err()
                .to_string()
                .contains("not adjacent")
        );
        assert!(ModelSpec::parse("name = \"x\"\nlayer = []", "/".into()).is_err());
        assert!(ModelSpec::parse(&SPEC.replace("lr = 0.05", "rate = 0.05"), "/".into()).is_err());
    }

    fn with_shape(shape: &str) -> Result<ModelSpec, SpecError> {
        let text = SPEC.replace(
            "name = \"t\"",
            &format!("name = \"t\"\ninput_shape = {shape}"),
        );
        ModelSpec::parse(&text, "/".into())
    }

    #[test]
    fn input_shape_parses_and_shapes_batches() {
        let flat = ModelSpec::parse(SPEC, "/".into()).unwrap();
        assert_eq!(flat.input_shape, None);
        assert_eq!(flat.batch_shape(64, 784).unwrap(), vec![64, 784]);
        let image = with_shape("[1, 28, 28]").unwrap();
        assert_eq!(image.input_shape, Some(vec![1, 28, 28]));
        assert_eq!(image.batch_shape(64, 784).unwrap(), vec![64, 1, 28, 28]);
        assert_eq!(image.batch_shape(1, 784).unwrap(), vec![1, 1, 28, 28]);
        let given = with_shape("[784]").unwrap();
        assert_eq!(
            given.batch_shape(64, 784).unwrap(),
            flat.batch_shape(64, 784).unwrap()
        );
        let deepest = with_shape("[1, 1, 1, 1, 1, 28, 28]").unwrap();
        assert_eq!(deepest.batch_shape(2, 784).unwrap().len(), MAX_RANK);
    }

    #[test]
    fn refuses_bad_input_shapes() {
        for bad in [
            "[]",
            "[1, 0, 28]",
            "[1, 1, 1, 1, 1, 1, 28, 28]",
            "[65536, 65536]",
            "[4294967296, 4294967296, 4294967296]",
        ] {
            let e = with_shape(bad).unwrap_err();
            assert!(matches!(e, SpecError::InputShape { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("input_shape"), "{e}");
        }
        assert!(matches!(
            with_shape("[-1, 28]").unwrap_err(),
            SpecError::Parse { .. }
        ));
        assert!(matches!(
            with_shape("28").unwrap_err(),
            SpecError::Parse { .. }
        ));
    }

    #[test]
    fn batch_shape_refuses_data_of_another_size() {
        let e = with_shape("[1, 28, 28]")
            .unwrap()
            .batch_shape(64, 3072)
            .unwrap_err();
        assert!(matches!(
            e,
            SpecError::InputMismatch {
                values: 784,
                pixels: 3072,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "the model takes inputs of [1, 28, 28] (784 values) but the data has 3072 values per example"
        );
        // An overflowing product matches no data.
        assert!(batch_shape(Some(&[usize::MAX, 2]), 1, 784).is_err());
    }
}
