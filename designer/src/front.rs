//! PrivyNet's split: the designer keeps a model's first layers, frozen and pretrained, and
//! only the features they make leave it; the rest of the model trains as any model does (in
//! process or over a cascade).
//!
//! The front is frozen, so an example's features never change: they are computed once, here,
//! for the whole data set ([`Split::new`]), in test mode (a batch norm there normalises with
//! its running statistics, a dropout drops nothing), and the rest trains on them as on any
//! data. The rest's layers keep their seeds ([`ModelSpec::without_front`]), so a split model
//! whose front has no such layer trains exactly as the whole model would with its front's
//! learning rate at zero.

use std::time::Instant;

use mixnn_layer_sdk::{Mode, Tensor};

use crate::{
    backend::{Backend, LayerBackend},
    cascade::{CascadeError, build_layer},
    data::{Dataset, Splits},
    spec::{ModelSpec, SpecError},
};

/// Examples per forward pass through the front.
const CHUNK: usize = 500;

/// The frozen first layers of a model, run natively by the designer.
pub struct Front {
    layers: Vec<(String, Box<dyn LayerBackend>)>,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.layers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Front").field("layers", &names).finish()
    }
}

impl Front {
    /// The first `n` layers of `spec`, natively, from their seeded init.
    pub fn build(spec: &ModelSpec, n: usize) -> Result<Self, CascadeError> {
        let layers = (0..n.min(spec.layers.len()))
            .map(|i| {
                let (info, layer) = build_layer(spec, i, Backend::Native, None)?;
                Ok((info.name, layer))
            })
            .collect::<Result<_, CascadeError>>()?;
        Ok(Front { layers })
    }

    /// Layers in the front.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether the front has no layer (all of the model trains).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    fn call<R>(
        &mut self,
        index: usize,
        op: &'static str,
        f: impl FnOnce(&mut dyn LayerBackend) -> Result<R, crate::backend::LayerFailure>,
    ) -> Result<R, CascadeError> {
        let (name, layer) = &mut self.layers[index];
        f(layer.as_mut()).map_err(|source| CascadeError::Call {
            index,
            name: name.clone(),
            op,
            source,
        })
    }

    /// The features of a batch: the front's output in test mode.
    pub fn apply(&mut self, input: Tensor) -> Result<Tensor, CascadeError> {
        let mut x = input;
        for i in 0..self.layers.len() {
            x = self.call(i, "forward", |l| l.forward(x, Mode::Test))?;
        }
        Ok(x)
    }

    /// Sets the front's layers from the first of `states` (a whole model's, as
    /// [`crate::weights::Layout::load`] gives them).
    pub fn import_states(&mut self, states: &[Vec<u8>]) -> Result<(), CascadeError> {
        for (i, state) in states
            .iter()
            .enumerate()
            .take(self.layers.len())
            .filter(|(_, s)| !s.is_empty())
        {
            self.call(i, "import-state", |l| l.import_state(state))?;
        }
        Ok(())
    }

    /// Every layer's state.
    pub fn export_states(&mut self) -> Result<Vec<Vec<u8>>, CascadeError> {
        (0..self.layers.len())
            .map(|i| self.call(i, "export-state", |l| l.export_state()))
            .collect()
    }

    /// The features of every example of `data` (taken as `input_shape` says), as a data set
    /// with the same labels, and the shape of one example's features.
    pub fn features(
        &mut self,
        data: &Dataset,
        input_shape: Option<&[usize]>,
    ) -> Result<(Dataset, Vec<usize>), CascadeError> {
        let mut images = Vec::new();
        let mut shape = Vec::new();
        let all: Vec<usize> = (0..data.len()).collect();
        for chunk in all.chunks(CHUNK) {
            let (x, _) = crate::train::batch(data, chunk, input_shape)?;
            let y = self.apply(x)?;
            shape = y.shape().get(1..).unwrap_or_default().to_vec();
            images.extend_from_slice(y.data());
        }
        let pixels = shape.iter().product();
        Ok((
            Dataset {
                images,
                labels: data.labels.clone(),
                pixels,
            },
            shape,
        ))
    }
}

/// A model cut in two: its frozen front, kept here, and the rest with the data it trains on.
#[derive(Debug)]
pub struct Split {
    /// The frozen front.
    pub front: Front,
    /// The rest of the model, taking the front's features.
    pub rest: ModelSpec,
    /// The features of the training and test sets.
    pub features: Splits,
    /// Seconds the front took per example.
    pub local_s_per_example: f64,
}

/// Why a split could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    /// A layer of the front did not build or run.
    #[error(transparent)]
    Cascade(#[from] CascadeError),
    /// The data do not fit the model.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Nothing to compute the features' shape from.
    #[error("the training set is empty")]
    NoData,
}

impl Split {
    /// Splits `spec` after its frozen layers ([`ModelSpec::frozen_front`]): builds the front,
    /// sets it from `states` (a whole model's, as a weights file gives them; `None`: the
    /// seeded init), and computes the features of `data`.
    pub fn new(
        spec: &ModelSpec,
        data: &Splits,
        states: Option<&[Vec<u8>]>,
    ) -> Result<Self, SplitError> {
        Self::at(spec, spec.frozen_front(), data, states)
    }

    /// As [`Split::new`], with the first `n` layers as the front whatever the spec says.
    pub fn at(
        spec: &ModelSpec,
        n: usize,
        data: &Splits,
        states: Option<&[Vec<u8>]>,
    ) -> Result<Self, SplitError> {
        if data.train.is_empty() {
            return Err(SplitError::NoData);
        }
        // The data must fit the model, front or none.
        spec.batch_shape(1, data.train.pixels)?;
        let mut front = Front::build(spec, n)?;
        if let Some(states) = states {
            front.import_states(states)?;
        }
        let shape = spec.input_shape.as_deref();
        let started = Instant::now();
        let (train, rest_shape) = front.features(&data.train, shape)?;
        let seconds = started.elapsed().as_secs_f64();
        let (test, _) = front.features(&data.test, shape)?;
        #[allow(clippy::cast_precision_loss)]
        let local_s_per_example = seconds / data.train.len() as f64;
        let rest_shape = if front.is_empty() {
            spec.input_shape
                .clone()
                .unwrap_or_else(|| vec![data.train.pixels])
        } else {
            rest_shape
        };
        Ok(Split {
            front,
            rest: spec.without_front(n, rest_shape),
            features: Splits { train, test },
            local_s_per_example,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

    use super::*;
    use crate::{
        cascade::Cascade,
        order::DataOrder,
        train::{TrainOptions, train},
    };

    fn lenet() -> ModelSpec {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/lenet5-fashion.toml");
        ModelSpec::from_file(&path).unwrap()
    }

    /// Made-up images, `n` of them, with labels.
    fn images(n: usize, salt: usize) -> Dataset {
        Dataset {
            images: (0..n * 784)
                .map(|i| ((i * 31 + salt * 7) % 251) as f32 / 251.0)
                .collect(),
            labels: (0..n).map(|i| ((i * 7 + salt) % 10) as u8).collect(),
            pixels: 784,
        }
    }

    fn options(spec: &ModelSpec) -> TrainOptions {
        TrainOptions {
            epochs: 1,
            seed: spec.training.seed,
            batch_size: 16,
            test_batch_size: 50,
            progress: false,
            order: DataOrder::Shuffled,
            input_shape: spec.input_shape.clone(),
        }
    }

    /// Training the rest on the front's features is training the whole model with the
    /// front's learning rate at zero: the same weights, bit for bit, and the front unchanged.
    #[test]
    fn a_split_trains_as_the_whole_model_with_a_frozen_front() {
        let data = Splits {
            train: images(96, 1),
            test: images(50, 2),
        };
        // LeNet's first host (conv, relu, pool) frozen, from weights that are not the init's.
        let mut spec = lenet();
        spec.training.seed = 5;
        let mut pretrained = Cascade::build(&spec, Backend::Native, None).unwrap();
        let mut other = spec.clone();
        other.training.seed = 9;
        let states = Cascade::build(&other, Backend::Native, None)
            .unwrap()
            .export_states()
            .unwrap();
        pretrained.import_states(&states).unwrap();

        let mut whole_spec = spec.clone();
        for layer in &mut whole_spec.layers[..3] {
            layer.lr = Some(0.0);
            layer.momentum = Some(0.0);
        }
        let mut whole = Cascade::build(&whole_spec, Backend::Native, None).unwrap();
        whole.import_states(&states[..3]).unwrap();
        let reports = train(&mut whole, &data, &options(&spec), |_| {}).unwrap();

        let mut split_spec = spec.clone();
        for layer in &mut split_spec.layers[..3] {
            layer.frozen = true;
        }
        assert_eq!(split_spec.frozen_front(), 3);
        let mut split = Split::new(&split_spec, &data, Some(&states)).unwrap();
        assert_eq!(split.rest.input_shape.as_deref(), Some(&[6, 14, 14][..]));
        assert_eq!(split.features.train.pixels, 6 * 14 * 14);
        let mut rest = Cascade::build(&split.rest, Backend::Native, None).unwrap();
        let split_reports =
            train(&mut rest, &split.features, &options(&split.rest), |_| {}).unwrap();

        assert_eq!(reports[0].train_loss, split_reports[0].train_loss);
        assert_eq!(reports[0].test_acc, split_reports[0].test_acc);
        let (whole_states, rest_states) = (
            whole.export_states().unwrap(),
            rest.export_states().unwrap(),
        );
        assert_eq!(&whole_states[3..], &rest_states[..]);
        // The front did not move (the whole model's lr-0 copy neither).
        let front = split.front.export_states().unwrap();
        for (i, state) in front.iter().enumerate() {
            let (a, b) = (
                safetensors::SafeTensors::deserialize(state).unwrap(),
                safetensors::SafeTensors::deserialize(&states[i]).unwrap(),
            );
            for name in a
                .names()
                .into_iter()
                .filter(|n| !n.ends_with("momentum_buffer"))
            {
                assert_eq!(
                    a.tensor(name).unwrap().data(),
                    b.tensor(name).unwrap().data()
                );
            }
        }
    }

    #[test]
    fn frozen_layers_must_come_first_and_not_be_the_loss() {
        let text = |frozen: &[usize]| {
            let mut spec = String::from("name = \"t\"\n");
            for i in 0..3 {
                let component = ["linear-relu", "linear", "nll-loss"][i];
                spec.push_str(&format!(
                    "[[layer]]\ncomponent = \"{component}\"\nfrozen = {}\n",
                    frozen.contains(&i)
                ));
            }
            ModelSpec::parse(&spec, ".".into())
        };
        assert_eq!(text(&[]).unwrap().frozen_front(), 0);
        assert_eq!(text(&[0]).unwrap().frozen_front(), 1);
        let all = text(&[0, 1]).unwrap_err().to_string();
        assert!(all.contains("nothing would train"), "{all}");
        for bad in [&[1][..], &[0, 2], &[0, 1, 2]] {
            let err = text(bad).unwrap_err().to_string();
            assert!(
                err.contains("frozen layers must come first"),
                "{bad:?}: {err}"
            );
        }
    }
}
