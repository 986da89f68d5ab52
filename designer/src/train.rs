//! The training loop: an order per epoch ([`crate::order`]), SGD steps over batches, and a
//! test pass per epoch.

use std::time::Instant;

use indicatif::ProgressBar;
use mixnn_layer_sdk::Tensor;
use serde::Serialize;

pub use crate::metrics::Evaluation;
use crate::{
    cascade::{Cascade, CascadeError},
    data::{Dataset, Splits},
    metrics::{Confusion, argmax_rows},
    order::DataOrder,
    progress, spec,
};

/// How to train.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// Passes over the training set.
    pub epochs: usize,
    /// Seed of the shuffles.
    pub seed: u64,
    /// Examples per SGD step.
    pub batch_size: usize,
    /// Examples per forward pass when testing.
    pub test_batch_size: usize,
    /// Whether to draw progress bars (training and test passes; on stderr, and only when
    /// it is a terminal).
    pub progress: bool,
    /// The order of the training examples in each epoch.
    pub order: DataOrder,
    /// The shape of one example as the model takes it: the spec's
    /// [`input_shape`](crate::spec::ModelSpec::input_shape) (`None`: flat).
    pub input_shape: Option<Vec<usize>>,
}

/// What an epoch achieved; as a JSON line (`mixnn train --json`), its fields then the test
/// pass's metrics ([`Evaluation`]: `macro`, `per_class`, `confusion`).
#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Test-set accuracy after the epoch.
    pub test_acc: f64,
    /// Seconds spent training (not testing).
    pub train_s: f64,
    /// How the layers ran.
    pub mode: String,
    /// Seconds spent testing.
    pub test_s: f64,
    /// The test pass's metrics.
    #[serde(flatten)]
    pub evaluation: Evaluation,
}

/// A batch of images, shaped as `input_shape` says ([`spec::batch_shape`]), and labels (as
/// class indices in `f32`, the loss layer's target).
pub fn batch(
    data: &Dataset,
    indices: &[usize],
    input_shape: Option<&[usize]>,
) -> Result<(Tensor, Tensor), CascadeError> {
    let shape = spec::batch_shape(input_shape, indices.len(), data.pixels)?;
    let mut pixels = Vec::with_capacity(indices.len() * data.pixels);
    for &i in indices {
        pixels.extend_from_slice(data.image(i));
    }
    let labels = indices.iter().map(|&i| f32::from(data.labels[i])).collect();
    let shape_error = CascadeError::Batch;
    Ok((
        Tensor::new(shape, pixels).map_err(shape_error)?,
        Tensor::new(vec![indices.len()], labels).map_err(shape_error)?,
    ))
}

/// What trains batch by batch: the in-process [`Cascade`], or a cascade of remote hosts.
pub trait Model {
    /// What can go wrong.
    type Error: From<CascadeError>;
    /// The mode's name in reports (`wasm`, `native`, `cascade`).
    fn mode(&self) -> String;
    /// One SGD step; returns the batch's mean loss.
    fn train_step(&mut self, input: Tensor, target: Tensor) -> Result<f32, Self::Error>;
    /// The model's output for a batch (test mode).
    fn predict(&mut self, input: Tensor) -> Result<Tensor, Self::Error>;
}

impl Model for Cascade {
    type Error = CascadeError;

    fn mode(&self) -> String {
        self.backend().name().to_owned()
    }

    fn train_step(&mut self, input: Tensor, target: Tensor) -> Result<f32, CascadeError> {
        Cascade::train_step(self, input, target)
    }

    fn predict(&mut self, input: Tensor) -> Result<Tensor, CascadeError> {
        Cascade::predict(self, input)
    }
}

/// Trains `model` for `options.epochs` epochs, testing after each; calls `on_epoch` with
/// each epoch's report as soon as it is known.
pub fn train<M: Model>(
    cascade: &mut M,
    data: &Splits,
    options: &TrainOptions,
    on_epoch: impl FnMut(&EpochReport),
) -> Result<Vec<EpochReport>, M::Error> {
    train_from(cascade, data, options, 0, on_epoch)
}

/// As [`train`], for a model that has already trained the first `done` batches of the run
/// (a resumed one): epochs those batches complete are skipped, and the epoch they end in
/// goes on from the next batch (its report covers the batches trained here).
pub fn train_from<M: Model>(
    cascade: &mut M,
    data: &Splits,
    options: &TrainOptions,
    done: u64,
    mut on_epoch: impl FnMut(&EpochReport),
) -> Result<Vec<EpochReport>, M::Error> {
    options
        .order
        .check(options.epochs, data.train.len())
        .map_err(CascadeError::from)?;
    let per_epoch = data.train.len().div_ceil(options.batch_size.max(1)).max(1) as u64;
    let mut reports = Vec::with_capacity(options.epochs);
    for epoch in 1..=options.epochs {
        let before = (epoch as u64 - 1) * per_epoch;
        let skip = done.saturating_sub(before);
        if skip >= per_epoch {
            continue;
        }
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        let report = train_epoch_from(cascade, data, options, epoch, skip)?;
        on_epoch(&report);
        reports.push(report);
    }
    Ok(reports)
}

/// Trains `model` for epoch `epoch` (1-based; it picks the epoch's order) and tests it. Call
/// for epochs 1, 2, ... in turn, after checking `options.order` (as [`train`] does).
pub fn train_epoch<M: Model>(
    cascade: &mut M,
    data: &Splits,
    options: &TrainOptions,
    epoch: usize,
) -> Result<EpochReport, M::Error> {
    train_epoch_from(cascade, data, options, epoch, 0)
}

/// As [`train_epoch`], from batch `skip` of the epoch on.
fn train_epoch_from<M: Model>(
    cascade: &mut M,
    data: &Splits,
    options: &TrainOptions,
    epoch: usize,
    skip: usize,
) -> Result<EpochReport, M::Error> {
    let batch_size = options.batch_size.max(1);
    let order = options.order.epoch(options.seed, epoch, data.train.len());
    let batches = order.len().div_ceil(batch_size) - skip.min(order.len().div_ceil(batch_size));
    let bar = progress::bar(
        options.progress,
        batches,
        "epoch {msg} [{bar:30}] {pos}/{len} batches, {elapsed} elapsed, eta {eta}",
    );
    bar.set_message(format!("{epoch}/{}", options.epochs));
    let started = Instant::now();
    let mut loss_sum = 0.0f64;
    for chunk in order.chunks(batch_size).skip(skip) {
        let (x, y) = batch(&data.train, chunk, options.input_shape.as_deref())?;
        loss_sum += f64::from(cascade.train_step(x, y)?);
        bar.inc(1);
    }
    let train_s = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let started = Instant::now();
    let test_bar = progress::bar(
        options.progress,
        data.test.len().div_ceil(options.test_batch_size.max(1)),
        "epoch {msg} test [{bar:30}] {pos}/{len} batches, {elapsed} elapsed, eta {eta}",
    );
    test_bar.set_message(format!("{epoch}/{}", options.epochs));
    let evaluation = evaluate_with(
        cascade,
        &data.test,
        options.test_batch_size,
        options.input_shape.as_deref(),
        &test_bar,
    )?;
    test_bar.finish_and_clear();
    Ok(EpochReport {
        epoch,
        train_loss: loss_sum / batches.max(1) as f64,
        test_acc: evaluation.accuracy(),
        train_s,
        mode: cascade.mode(),
        test_s: started.elapsed().as_secs_f64(),
        evaluation,
    })
}

/// Runs the test set through the model (examples of `input_shape`, as in [`batch`]) and
/// scores the predictions ([`Evaluation`]).
pub fn evaluate<M: Model>(
    cascade: &mut M,
    test: &Dataset,
    batch_size: usize,
    input_shape: Option<&[usize]>,
) -> Result<Evaluation, M::Error> {
    evaluate_with(
        cascade,
        test,
        batch_size,
        input_shape,
        &ProgressBar::hidden(),
    )
}

/// As [`evaluate`], advancing `bar` by one at each batch.
fn evaluate_with<M: Model>(
    cascade: &mut M,
    test: &Dataset,
    batch_size: usize,
    input_shape: Option<&[usize]>,
    bar: &ProgressBar,
) -> Result<Evaluation, M::Error> {
    // Sized by the labels; a prediction past them widens it (and counts as wrong).
    let mut confusion = Confusion::new(test.classes().max(1));
    let indices: Vec<usize> = (0..test.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let (x, _) = batch(test, chunk, input_shape)?;
        let out = cascade.predict(x)?;
        let cols = out.shape().last().copied().unwrap_or(1);
        for (&i, predicted) in chunk.iter().zip(argmax_rows(out.data(), cols)) {
            confusion
                .record(usize::from(test.labels[i]), predicted)
                .map_err(CascadeError::from)?;
        }
        bar.inc(1);
    }
    Ok(Evaluation::of(confusion))
}

#[cfg(test)]
mod tests {
    use mixnn_wire::{
        frame::{WireTensor, byte_tensor_len},
        reader::Reader,
    };

    use super::*;
    use crate::spec::SpecError;

    /// Three 28x28 images whose pixels are all k / 255, as MNIST's are.
    fn images() -> Dataset {
        Dataset {
            images: (0..3 * 784u32)
                .map(|i| f32::from(u8::try_from(i % 256).unwrap()) / 255.0)
                .collect(),
            labels: vec![7, 2, 1],
            pixels: 784,
        }
    }

    #[test]
    fn batches_take_the_models_input_shape() {
        let data = images();
        let (flat, labels) = batch(&data, &[2, 0], None).unwrap();
        assert_eq!(flat.shape(), &[2, 784]);
        assert_eq!(labels.data(), &[1.0, 7.0]);
        let (given, _) = batch(&data, &[2, 0], Some(&[784])).unwrap();
        assert_eq!(given, flat);
        let (image, _) = batch(&data, &[2, 0], Some(&[1, 28, 28])).unwrap();
        assert_eq!(image.shape(), &[2, 1, 28, 28]);
        assert_eq!(image.data(), flat.data());
        let e = batch(&data, &[0], Some(&[3, 32, 32])).unwrap_err();
        assert!(
            matches!(
                e,
                CascadeError::Spec(SpecError::InputMismatch {
                    values: 3072,
                    pixels: 784,
                    ..
                })
            ),
            "{e}"
        );
    }

    #[test]
    fn a_batch_of_images_travels_as_bytes_whatever_its_rank() {
        let (image, _) = batch(&images(), &[0, 1, 2], Some(&[1, 28, 28])).unwrap();
        let (shape, data) = image.into_parts();
        let wire = WireTensor {
            shape: shape.iter().map(|&d| u32::try_from(d).unwrap()).collect(),
            data,
        };
        assert_eq!(wire.encoded_len(), byte_tensor_len(&shape));
        let mut out = Vec::new();
        wire.encode_into(&mut out).unwrap();
        assert_eq!(out.len(), 1 + 4 * 4 + 3 * 784);
        let back = WireTensor::decode(&mut Reader::new(&out)).unwrap();
        assert_eq!(back.shape, wire.shape);
        assert!(
            back.data
                .iter()
                .zip(&wire.data)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }
}
