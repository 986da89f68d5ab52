//! The cascade's side of `mixnn bench floor`: a real training session over host processes
//! timed batch by batch beside the same model in this process (through the sandbox), so that
//! what the cascade adds per link can be read off.

use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use mixnn_designer::{
    backend::Backend,
    cascade::Cascade,
    data::Dataset,
    remote::{RemoteCascade, RemoteOptions},
    spec::ModelSpec,
    train::{self, Model},
};
use mixnn_layer_sdk::Tensor;
use mixnn_sandbox::Sandbox;

/// One batch of each model, timed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchTimes {
    pub(crate) cascade_us: f64,
    pub(crate) inproc_us: f64,
}

/// A session over host processes and the same model here, from the same weights, fed the
/// same batches.
pub(crate) struct CascadeRun {
    remote: Option<RemoteCascade>,
    inproc: Cascade,
    batches: Vec<(Tensor, Tensor)>,
    next: usize,
    /// The hops, first to last.
    pub(crate) hops: Vec<String>,
    /// The loss hop turns batches around: the designer's last link is off the critical path.
    pub(crate) loss_turns: bool,
    /// op=0 end to end.
    pub(crate) setup_s: f64,
}

impl CascadeRun {
    /// Sets a session up over `options`' directory (on a sandbox worker), with batches of
    /// `batch_size` from the first examples of `train`.
    pub(crate) fn connect(
        spec: &ModelSpec,
        sandbox: &Sandbox,
        options: &RemoteOptions,
        train: &Dataset,
        batch_size: usize,
    ) -> Result<Self> {
        let count = (train.len() / batch_size.max(1)).min(64);
        if count == 0 {
            bail!("the training set holds fewer than {batch_size} examples");
        }
        let batches = (0..count)
            .map(|b| {
                let indices: Vec<usize> = (b * batch_size..(b + 1) * batch_size).collect();
                train::batch(train, &indices, spec.input_shape.as_deref())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let init = Cascade::build(spec, Backend::Wasm, Some(sandbox))?.export_states()?;
        let mut inproc = Cascade::build(spec, Backend::Wasm, Some(sandbox))?;
        inproc.import_states(&init)?;
        let input = spec.batch_shape(batch_size, train.pixels)?;
        let remote = RemoteCascade::connect_from(spec, sandbox, options, &input, &init)
            .context("setting up the session over the host processes")?;
        Ok(CascadeRun {
            hops: remote.describe(),
            loss_turns: remote.loss_turns(),
            setup_s: remote.setup_time().as_secs_f64(),
            remote: Some(remote),
            inproc,
            batches,
            next: 0,
        })
    }

    /// Links on the critical path of one training batch, counted from the plan: forward, the
    /// designer to the first hop and hop to hop; backward, hop to hop and the first hop to
    /// the designer; and unless the loss hop turns the batch around, the last hop to the
    /// designer and back.
    pub(crate) fn links_per_batch(&self) -> usize {
        2 * self.hops.len() + if self.loss_turns { 0 } else { 2 }
    }

    /// Trains `n` batches, each over the cascade and then here; their times.
    pub(crate) fn batches(&mut self, n: usize) -> Result<Vec<BatchTimes>> {
        let remote = self
            .remote
            .as_mut()
            .ok_or_else(|| anyhow!("session closed"))?;
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let (x, y) = self.batches[self.next % self.batches.len()].clone();
            self.next += 1;
            let (x2, y2) = (x.clone(), y.clone());
            let started = Instant::now();
            remote
                .train_step(x, y)
                .context("a batch over the cascade")?;
            let cascade_us = started.elapsed().as_secs_f64() * 1e6;
            let started = Instant::now();
            Model::train_step(&mut self.inproc, x2, y2)?;
            let inproc_us = started.elapsed().as_secs_f64() * 1e6;
            times.push(BatchTimes {
                cascade_us,
                inproc_us,
            });
        }
        Ok(times)
    }
}

impl Drop for CascadeRun {
    fn drop(&mut self) {
        if let Some(remote) = self.remote.take() {
            remote.close();
        }
    }
}
