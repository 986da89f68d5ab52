//! A model's weights as one safetensors file, under the names PyTorch gives the `state_dict` of
//! an `nn.Sequential` of the model's layers, in PyTorch's layout (`weight` is `[out, in]`).
//!
//! Each layer stands for some modules of that `Sequential`: `linear-relu` for two (`Linear`,
//! `ReLU`), the loss for none (PyTorch keeps it outside the model), any other layer for one
//! (a spec's `torch_modules` overrides this). A parameter `p` of the layer at module `k` is
//! `k.p`: the paper's model gives `0.weight`, `0.bias`, `2.weight`, `2.bias`, `4.weight`,
//! `4.bias`, and `model.load_state_dict(safetensors.torch.load_file(path))` loads it.
//!
//! The file holds parameters only: momentum buffers belong to the optimizer, and a model that
//! starts from a file starts with fresh ones, as a PyTorch optimizer built after loading does.

use std::path::{Path, PathBuf};

use mixnn_layer_sdk::state::{EXTRA_STATE, MOMENTUM_SUFFIX};
use safetensors::{Dtype, SafeTensorError, SafeTensors, tensor::TensorView};

use crate::spec::ModelSpec;

/// Why weights could not be read, matched to the model, or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeightsError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a safetensors file.
    #[error("not a safetensors file: {0}")]
    Format(SafeTensorError),
    /// A layer's own state does not parse (a layer bug, not the file's fault).
    #[error("layer {index}: its state does not parse: {source}")]
    LayerState {
        /// The layer.
        index: usize,
        /// The parser's error.
        source: SafeTensorError,
    },
    /// A layer's tensor changed shape or dtype since the model was read (a layer bug).
    #[error("layer {index}: {name} changed shape or dtype")]
    LayerChanged {
        /// The layer.
        index: usize,
        /// The tensor's name in the layer.
        name: String,
    },
    /// States for another number of layers than the model has.
    #[error("{states} states for {layers} layers")]
    StateCount {
        /// States given.
        states: usize,
        /// The model's layers.
        layers: usize,
    },
    /// Two layers claim the same name (their `torch_modules` overlap).
    #[error("two layers both name a tensor {0:?}: check the layers' torch_modules")]
    Clash(String),
    /// The file has a tensor the model has not.
    #[error("the file has a tensor {name:?} the model has not (the model's: {expected})")]
    Unexpected {
        /// Its name.
        name: String,
        /// The model's names.
        expected: String,
    },
    /// The file lacks one of the model's tensors.
    #[error("the file has no tensor {0:?}")]
    Missing(String),
    /// A tensor has the wrong shape.
    #[error("{name} has shape {got:?}, the model's is {expected:?}")]
    Shape {
        /// Its name.
        name: String,
        /// Its shape in the file.
        got: Vec<usize>,
        /// The model's.
        expected: Vec<usize>,
    },
    /// A tensor is not `F32`.
    #[error("{name} has dtype {got}; mixnn trains in F32 (in PyTorch, save `model.float()`)")]
    Dtype {
        /// Its name.
        name: String,
        /// Its dtype in the file.
        got: String,
    },
}

/// The suffix of BatchNorm's batch counter, which PyTorch saves as an `I64` and mixnn keeps as
/// an `F32` (exact up to 2^24 batches; PyTorch converts it back when it loads a file).
const COUNTER_SUFFIX: &str = ".num_batches_tracked";

/// Little-endian `I64` values as little-endian `F32` ones.
fn counter_as_f32(bytes: &[u8]) -> Vec<u8> {
    bytes
        .chunks_exact(8)
        .flat_map(|c| {
            let v = i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            #[allow(clippy::cast_precision_loss)]
            (v as f32).to_le_bytes()
        })
        .collect()
}

/// One parameter of a layer: its name in the layer's state and in the file, and its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Param {
    local: String,
    name: String,
    shape: Vec<usize>,
}

/// The names and shapes of a model's parameters, layer by layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    layers: Vec<Vec<Param>>,
}

/// How many modules of a PyTorch `nn.Sequential` layer `i` of `spec` stands for.
fn torch_modules(spec: &ModelSpec, i: usize) -> usize {
    let layer = &spec.layers[i];
    layer
        .torch_modules
        .unwrap_or(if i + 1 == spec.layers.len() {
            0 // The loss: PyTorch keeps it outside the model.
        } else if layer.component == "linear-relu" {
            2
        } else {
            1
        })
}

impl Layout {
    /// The layout of `spec`'s parameters, read off each layer's state (as
    /// [`crate::cascade::Cascade::export_states`] gives them; trained or not).
    pub fn new(spec: &ModelSpec, states: &[Vec<u8>]) -> Result<Self, WeightsError> {
        let mut module = 0;
        let mut seen = std::collections::HashSet::new();
        let mut layers = Vec::with_capacity(states.len());
        if states.len() != spec.layers.len() {
            return Err(WeightsError::StateCount {
                states: states.len(),
                layers: spec.layers.len(),
            });
        }
        for (index, state) in states.iter().enumerate() {
            let file = SafeTensors::deserialize(state)
                .map_err(|source| WeightsError::LayerState { index, source })?;
            let mut params: Vec<Param> = file
                .tensors()
                .into_iter()
                // Momentum belongs to the optimizer, extra state to checkpoints.
                .filter(|(local, _)| !local.ends_with(MOMENTUM_SUFFIX) && local != EXTRA_STATE)
                .map(|(local, view)| Param {
                    name: format!("{module}.{local}"),
                    local,
                    shape: view.shape().to_vec(),
                })
                .collect();
            params.sort_by(|a, b| a.local.cmp(&b.local));
            for p in &params {
                if !seen.insert(p.name.clone()) {
                    return Err(WeightsError::Clash(p.name.clone()));
                }
            }
            layers.push(params);
            module += torch_modules(spec, index);
        }
        Ok(Layout { layers })
    }

    /// Every tensor's name in the file, in the model's order.
    pub fn names(&self) -> Vec<&str> {
        self.layers
            .iter()
            .flatten()
            .map(|p| p.name.as_str())
            .collect()
    }

    /// The file's bytes for the layers' `states`: their parameters under the model's names.
    pub fn save(&self, states: &[Vec<u8>]) -> Result<Vec<u8>, WeightsError> {
        let mut views = Vec::new();
        for (index, (params, state)) in self.layers.iter().zip(states).enumerate() {
            let layer_error = |source: SafeTensorError| WeightsError::LayerState { index, source };
            let file = SafeTensors::deserialize(state).map_err(layer_error)?;
            for p in params {
                let view = file.tensor(&p.local).map_err(layer_error)?;
                if view.shape() != p.shape.as_slice() || view.dtype() != Dtype::F32 {
                    return Err(WeightsError::LayerChanged {
                        index,
                        name: p.local.clone(),
                    });
                }
                // Both are little-endian F32: the bytes move unchanged.
                views.push((p.name.clone(), view.data().to_vec()));
            }
        }
        let views = views
            .iter()
            .zip(self.layers.iter().flatten())
            .map(|((name, bytes), p)| {
                TensorView::new(Dtype::F32, p.shape.clone(), bytes)
                    .map(|view| (name.as_str(), view))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(WeightsError::Format)?;
        // What `safetensors.torch.save_file` writes, so PyTorch tools take the file as theirs.
        let metadata = [("format".to_owned(), "pt".to_owned())]
            .into_iter()
            .collect();
        safetensors::serialize(views, Some(metadata)).map_err(WeightsError::Format)
    }

    /// Each layer's state from a file's bytes (empty for layers without parameters), after
    /// checking that the file has exactly the model's tensors, each `F32` in its shape.
    pub fn load(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, WeightsError> {
        let file = SafeTensors::deserialize(bytes).map_err(WeightsError::Format)?;
        let names = self.names();
        let mut found = file.names();
        found.sort();
        if let Some(name) = found.iter().find(|n| !names.contains(n)) {
            return Err(WeightsError::Unexpected {
                name: (*name).to_owned(),
                expected: names.join(", "),
            });
        }
        let mut states = Vec::with_capacity(self.layers.len());
        for params in &self.layers {
            let mut views = Vec::with_capacity(params.len());
            // Counters PyTorch keeps as integers, as F32 values.
            let mut converted = Vec::new();
            for p in params {
                let view = file
                    .tensor(&p.name)
                    .map_err(|_| WeightsError::Missing(p.name.clone()))?;
                if view.shape() != p.shape.as_slice() {
                    return Err(WeightsError::Shape {
                        name: p.name.clone(),
                        got: view.shape().to_vec(),
                        expected: p.shape.clone(),
                    });
                }
                if view.dtype() == Dtype::I64 && p.name.ends_with(COUNTER_SUFFIX) {
                    converted.push((p, counter_as_f32(view.data())));
                    continue;
                }
                if view.dtype() != Dtype::F32 {
                    return Err(WeightsError::Dtype {
                        name: p.name.clone(),
                        got: view.dtype().to_string(),
                    });
                }
                views.push((p.local.as_str(), view));
            }
            for (p, bytes) in &converted {
                let view = TensorView::new(Dtype::F32, p.shape.clone(), bytes)
                    .map_err(WeightsError::Format)?;
                views.push((p.local.as_str(), view));
            }
            states.push(if views.is_empty() {
                Vec::new()
            } else {
                safetensors::serialize(views, None).map_err(WeightsError::Format)?
            });
        }
        Ok(states)
    }

    /// Reads a weights file and splits it into the layers' states ([`Layout::load`]).
    pub fn read(&self, path: &Path) -> Result<Vec<Vec<u8>>, WeightsError> {
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
            path: path.to_owned(),
            source,
        })?;
        self.load(&bytes)
    }

    /// Writes the layers' `states` to a weights file ([`Layout::save`]).
    pub fn write(&self, path: &Path, states: &[Vec<u8>]) -> Result<(), WeightsError> {
        let bytes = self.save(states)?;
        std::fs::write(path, bytes).map_err(|source| WeightsError::Io {
            path: path.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use mixnn_layer_sdk::Tensor;

    use super::*;
    use crate::{backend::Backend, cascade::Cascade};

    fn paper() -> ModelSpec {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/paper-mlp.toml");
        ModelSpec::from_file(&path).unwrap()
    }

    /// The paper's model, natively, after `steps` SGD steps on made-up data (so that the
    /// weights and momentum buffers are not the init's).
    fn trained(seed: u64, steps: usize) -> Cascade {
        let mut spec = paper();
        spec.training.seed = seed;
        let mut cascade = Cascade::build(&spec, Backend::Native, None).unwrap();
        for step in 0..steps {
            let x = (0..8 * 784)
                .map(|i| ((i * 31 + step * 7) % 255) as f32 / 255.0)
                .collect();
            let y = (0..8).map(|i| ((i + step) % 10) as f32).collect();
            cascade
                .train_step(
                    Tensor::new(vec![8, 784], x).unwrap(),
                    Tensor::new(vec![8], y).unwrap(),
                )
                .unwrap();
        }
        cascade
    }

    fn serialize(tensors: &[(&str, Dtype, Vec<usize>)]) -> Vec<u8> {
        let buffers: Vec<Vec<u8>> = tensors
            .iter()
            .map(|(_, dtype, shape)| {
                vec![0u8; shape.iter().product::<usize>() * dtype.bitsize() / 8]
            })
            .collect();
        let views: Vec<_> = tensors
            .iter()
            .zip(&buffers)
            .map(|((name, dtype, shape), bytes)| {
                (
                    *name,
                    TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
                )
            })
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    /// The paper's six tensors, F32 in their shapes, with `change` applied.
    fn paper_file(change: impl FnOnce(&mut Vec<(&'static str, Dtype, Vec<usize>)>)) -> Vec<u8> {
        let mut tensors = vec![
            ("0.weight", Dtype::F32, vec![128, 784]),
            ("0.bias", Dtype::F32, vec![128]),
            ("2.weight", Dtype::F32, vec![64, 128]),
            ("2.bias", Dtype::F32, vec![64]),
            ("4.weight", Dtype::F32, vec![10, 64]),
            ("4.bias", Dtype::F32, vec![10]),
        ];
        change(&mut tensors);
        serialize(&tensors)
    }

    #[test]
    fn the_paper_model_has_pytorchs_sequential_names_and_layout() {
        let mut model = trained(1, 0);
        let layout = Layout::new(&paper(), &model.export_states().unwrap()).unwrap();
        assert_eq!(
            layout.names(),
            [
                "0.bias", "0.weight", "2.bias", "2.weight", "4.bias", "4.weight"
            ]
        );
        let file = layout.save(&model.export_states().unwrap()).unwrap();
        let read = SafeTensors::deserialize(&file).unwrap();
        assert_eq!(read.tensor("0.weight").unwrap().shape(), [128, 784]);
        assert_eq!(read.tensor("4.bias").unwrap().shape(), [10]);
        // A file with exactly these tensors loads.
        layout.load(&paper_file(|_| {})).unwrap();
    }

    #[test]
    fn a_round_trip_through_a_file_changes_no_bit() {
        let spec = paper();
        let mut source = trained(1, 3);
        let states = source.export_states().unwrap();
        let layout = Layout::new(&spec, &states).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weights.safetensors");
        layout.write(&path, &states).unwrap();

        let mut target = trained(2, 0);
        target.import_states(&layout.read(&path).unwrap()).unwrap();
        let loaded = target.export_states().unwrap();
        // Every parameter, bit for bit (the file carries no momentum).
        for (i, (a, b)) in states.iter().zip(&loaded).enumerate() {
            let (a, b) = (
                SafeTensors::deserialize(a).unwrap(),
                SafeTensors::deserialize(b).unwrap(),
            );
            for name in b.names() {
                assert_eq!(
                    a.tensor(name).unwrap().data(),
                    b.tensor(name).unwrap().data(),
                    "layer {i} {name}"
                );
            }
            assert!(b.names().iter().all(|n| !n.ends_with(MOMENTUM_SUFFIX)));
        }
        // The same file again, byte for byte.
        assert_eq!(layout.save(&loaded).unwrap(), std::fs::read(&path).unwrap());
        // And the two models now compute the same.
        let x = Tensor::new(vec![2, 784], vec![0.5; 2 * 784]).unwrap();
        assert_eq!(
            source.predict(x.clone()).unwrap().data(),
            target.predict(x).unwrap().data()
        );
    }

    #[test]
    fn files_that_do_not_fit_the_model_are_refused_with_clear_errors() {
        let mut model = trained(1, 0);
        let layout = Layout::new(&paper(), &model.export_states().unwrap()).unwrap();
        let message = |bytes: Vec<u8>| layout.load(&bytes).unwrap_err().to_string();

        let wrong_name = message(paper_file(|t| t[0].0 = "fc1.weight"));
        assert!(
            wrong_name.contains("\"fc1.weight\"") && wrong_name.contains("0.weight"),
            "{wrong_name}"
        );
        let missing = message(paper_file(|t| {
            t.remove(3);
        }));
        assert_eq!(missing, "the file has no tensor \"2.bias\"");
        // PyTorch's layout is [out, in]: the transpose is refused.
        let transposed = message(paper_file(|t| t[0].2 = vec![784, 128]));
        assert_eq!(
            transposed,
            "0.weight has shape [784, 128], the model's is [128, 784]"
        );
        let double = message(paper_file(|t| t[2].1 = Dtype::F64));
        assert!(
            double.starts_with("2.weight has dtype F64; mixnn trains in F32"),
            "{double}"
        );
        let half = message(paper_file(|t| t[5].1 = Dtype::BF16));
        assert!(half.starts_with("4.bias has dtype BF16"), "{half}");
        assert!(message(b"not safetensors".to_vec()).starts_with("not a safetensors file"));
        let missing_file = layout
            .read(Path::new("/nonexistent/weights.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(missing_file.starts_with("/nonexistent/weights.safetensors: "));
    }

    /// BatchNorm's buffers are in the file under PyTorch's names, and its batch counter,
    /// which PyTorch saves as an `I64`, loads from either dtype.
    #[test]
    fn batch_norm_buffers_are_in_the_file_and_pytorchs_integer_counter_loads() {
        let spec = ModelSpec::parse(
            r#"
            name = "bn"
            input_shape = [1, 4, 4]
            [[layer]]
            component = "conv2d"
            config = { in_channels = 1, out_channels = 2, kernel_size = 3 }
            [[layer]]
            component = "batch-norm2d"
            config = { num_features = 2 }
            [[layer]]
            component = "flatten"
            [[layer]]
            component = "linear"
            config = { in_features = 8, out_features = 3 }
            [[layer]]
            component = "log-softmax"
            [[layer]]
            component = "nll-loss"
            "#,
            ".".into(),
        )
        .unwrap();
        let mut model = Cascade::build(&spec, Backend::Native, None).unwrap();
        let states = model.export_states().unwrap();
        let layout = Layout::new(&spec, &states).unwrap();
        assert_eq!(
            layout.names(),
            [
                "0.bias",
                "0.weight",
                "1.bias",
                "1.num_batches_tracked",
                "1.running_mean",
                "1.running_var",
                "1.weight",
                "3.bias",
                "3.weight"
            ]
        );
        let mut tensors: Vec<(&str, Dtype, Vec<usize>)> = vec![
            ("0.bias", Dtype::F32, vec![2]),
            ("0.weight", Dtype::F32, vec![2, 1, 3, 3]),
            ("1.bias", Dtype::F32, vec![2]),
            ("1.num_batches_tracked", Dtype::I64, vec![]),
            ("1.running_mean", Dtype::F32, vec![2]),
            ("1.running_var", Dtype::F32, vec![2]),
            ("1.weight", Dtype::F32, vec![2]),
            ("3.bias", Dtype::F32, vec![3]),
            ("3.weight", Dtype::F32, vec![3, 8]),
        ];
        // PyTorch's counter, 7 batches, as the little-endian i64 it writes.
        let mut bytes = serialize(&tensors);
        let at = SafeTensors::deserialize(&bytes)
            .unwrap()
            .tensor("1.num_batches_tracked")
            .unwrap()
            .data()
            .as_ptr() as usize
            - bytes.as_ptr() as usize;
        bytes[at..at + 8].copy_from_slice(&7i64.to_le_bytes());
        model.import_states(&layout.load(&bytes).unwrap()).unwrap();
        let saved = layout.save(&model.export_states().unwrap()).unwrap();
        let saved = SafeTensors::deserialize(&saved).unwrap();
        let counter = saved.tensor("1.num_batches_tracked").unwrap();
        assert_eq!(
            (counter.dtype(), counter.data()),
            (Dtype::F32, &7.0f32.to_le_bytes()[..])
        );
        // Any other integer tensor is still refused.
        tensors[4].1 = Dtype::I64;
        assert!(
            layout
                .load(&serialize(&tensors))
                .unwrap_err()
                .to_string()
                .starts_with("1.running_mean has dtype I64")
        );
    }

    #[test]
    fn torch_modules_renumbers_the_tensors_and_overlaps_are_refused() {
        let mut spec = paper();
        // As if the first layer were Linear, ReLU, Dropout in PyTorch.
        spec.layers[0].torch_modules = Some(3);
        let states = trained(1, 0).export_states().unwrap();
        let layout = Layout::new(&spec, &states).unwrap();
        assert_eq!(
            layout.names(),
            [
                "0.bias", "0.weight", "3.bias", "3.weight", "5.bias", "5.weight"
            ]
        );
        spec.layers[0].torch_modules = Some(0);
        assert_eq!(
            Layout::new(&spec, &states).unwrap_err().to_string(),
            "two layers both name a tensor \"0.bias\": check the layers' torch_modules"
        );
    }
}
