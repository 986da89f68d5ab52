//! Model completion: a coalition of hosts holds some layers of the model (their final
//! weights) and has seen the tensors on the links around them; with a few labelled examples
//! of its own, it trains the layers it lacks and so gets a working copy of the designer's
//! model. Measured as the completed model's test accuracy and its fidelity (agreement with
//! the designer's predictions), beside the same training from scratch.
//!
//! The coalition keeps what it holds frozen and trains the rest: first, where it saw both
//! sides of a run of layers it lacks (the inputs and outputs of the designer's last test
//! pass, under the final weights), the run alone, to reproduce those outputs (MSE: "hosts
//! around a layer can infer it", as the paper concedes); then the whole model on its labelled
//! examples. With the architecture known, the missing layers are the spec's own (freshly
//! initialised from the attacker's seed); unknown, each run of them is a generic two-layer
//! MLP (`Linear`, `ReLU`, `Linear`) between the sizes the coalition sees, ending in its own
//! softmax cross-entropy where the run reaches the loss.

use std::collections::BTreeMap;

use mixnn_layer_sdk::Tensor;

use crate::{
    backend::Backend,
    cascade::{Cascade, CascadeError},
    data::Dataset,
    metrics::argmax_rows,
    order::DataOrder,
    spec::{LayerSpec, ModelSpec, SpecError},
    train::batch,
};

/// Why a completion could not run.
#[derive(Debug, thiserror::Error)]
pub enum CompletionError {
    /// The model, as the coalition rebuilt it, did not build or run.
    #[error(transparent)]
    Cascade(#[from] CascadeError),
    /// A layer's config.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Observed pairs that do not fit the run they are for.
    #[error("observed pairs for layer {0} do not fit it: {1}")]
    Pairs(usize, mixnn_layer_sdk::LayerError),
    /// Nothing to learn from.
    #[error("no labelled examples")]
    NoLabels,
}

/// Input and output rows of a run of layers, as the coalition saw them cross its links.
#[derive(Debug, Clone)]
pub struct Observed {
    /// `[n, in]`.
    pub inputs: Tensor,
    /// `[n, out]`, row for row.
    pub outputs: Tensor,
}

/// What a coalition knows of the model, from its members' audits.
#[derive(Debug, Clone, Default)]
pub struct Knowledge {
    /// The final state of each layer a member held, by layer index.
    pub held: BTreeMap<usize, Vec<u8>>,
    /// For runs of layers no member held: the pairs it observed, by the run's first layer.
    pub observed: BTreeMap<usize, Observed>,
}

/// Whether the coalition knows the layers it lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// The spec's own layers (the strongest case).
    Known,
    /// A generic MLP in place of each run of missing layers.
    Unknown,
}

/// How the coalition trains.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// SGD steps on the labelled examples.
    pub steps: usize,
    /// SGD steps on observed pairs, per run.
    pub pair_steps: usize,
    /// Their normalised learning rate: the step is this times the outputs' width over the
    /// inputs' mean squared norm.
    pub pair_lr: f32,
    /// Width of a generic MLP's hidden layer.
    pub hidden: usize,
    /// The attacker's seed (initialisation, order).
    pub seed: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            steps: 600,
            pair_steps: 400,
            pair_lr: 0.5,
            hidden: 256,
            seed: 0xA77AC,
        }
    }
}

/// What the completed model does on held-out examples.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Completion {
    /// Share of the examples it classifies right.
    pub accuracy: f64,
    /// Share on which it agrees with the designer's model.
    pub fidelity: f64,
    /// Layers it had to train (0: it held them all).
    pub trained_layers: usize,
    /// Of which, layers fitted to the pairs it saw around them.
    pub fitted_layers: usize,
}

/// A run of consecutive layers the coalition lacks (the loss layer excluded).
#[derive(Debug, Clone)]
struct Run {
    first: usize,
    last: usize,
}

/// The layers' output widths (loss excluded), and the input's.
fn widths(spec: &ModelSpec, input: usize) -> Result<Vec<usize>, CompletionError> {
    let mut probe = Cascade::build(spec, Backend::Native, None)?;
    let shapes = probe.shapes(Tensor::zeros(spec.batch_shape(1, input)?))?;
    Ok(shapes
        .iter()
        .map(|s| s.last().copied().unwrap_or(0))
        .collect())
}

/// The runs of consecutive layers (the loss excluded) that `held` lacks, as (first, last).
pub fn missing_runs(layers: usize, held: &BTreeMap<usize, Vec<u8>>) -> Vec<(usize, usize)> {
    runs(layers, held)
        .iter()
        .map(|r| (r.first, r.last))
        .collect()
}

fn runs(layers: usize, held: &BTreeMap<usize, Vec<u8>>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for i in (0..layers.saturating_sub(1)).filter(|i| !held.contains_key(i)) {
        match runs.last_mut() {
            Some(run) if run.last + 1 == i => run.last = i,
            _ => runs.push(Run { first: i, last: i }),
        }
    }
    runs
}

fn layer(component: &str, config: toml::Table, lr: Option<f32>) -> LayerSpec {
    LayerSpec {
        component: component.into(),
        host: None,
        config,
        lr,
        momentum: lr.map(|_| 0.0),
        torch_modules: None,
        frozen: false,
    }
}

fn linear_config(inputs: usize, outputs: usize) -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("in_features".into(), toml::Value::Integer(inputs as i64));
    t.insert("out_features".into(), toml::Value::Integer(outputs as i64));
    t
}

/// The coalition's model: layers, where each of the spec's runs of missing layers went
/// (first index in the new model, one past the last), and the states to load.
struct Rebuilt {
    spec: ModelSpec,
    runs: Vec<(Run, usize, usize)>,
    states: Vec<Vec<u8>>,
}

fn rebuild(
    spec: &ModelSpec,
    knowledge: &Knowledge,
    arch: Architecture,
    widths: &[usize],
    input: usize,
    budget: &Budget,
) -> Rebuilt {
    let runs = runs(spec.layers.len(), &knowledge.held);
    let mut out = spec.clone();
    out.training.seed = budget.seed;
    out.layers.clear();
    let mut states = Vec::new();
    let mut placed = Vec::new();
    let last = spec.layers.len() - 1;
    let mut i = 0;
    while i < spec.layers.len() {
        let run = runs.iter().find(|r| r.first == i);
        match (run, arch) {
            (Some(run), Architecture::Unknown) => {
                let start = out.layers.len();
                let from = if run.first == 0 {
                    // The generic block takes the examples flat.
                    out.input_shape = None;
                    input
                } else {
                    widths[run.first - 1]
                };
                let to_loss = run.last + 1 == last;
                let to = widths[run.last];
                out.layers.push(layer(
                    "linear-relu",
                    linear_config(from, budget.hidden),
                    None,
                ));
                out.layers
                    .push(layer("linear", linear_config(budget.hidden, to), None));
                states.extend([Vec::new(), Vec::new()]);
                placed.push((run.clone(), start, out.layers.len()));
                i = run.last + 1;
                if to_loss {
                    // The generic block ends in logits: its own loss on them.
                    out.layers
                        .push(layer("softmax-cross-entropy", toml::Table::new(), None));
                    states.push(Vec::new());
                    i = spec.layers.len();
                }
            }
            (Some(run), Architecture::Known) => {
                let start = out.layers.len();
                for k in run.first..=run.last {
                    out.layers.push(spec.layers[k].clone());
                    states.push(Vec::new());
                }
                placed.push((run.clone(), start, out.layers.len()));
                i = run.last + 1;
            }
            (None, _) => {
                let mut kept = spec.layers[i].clone();
                if let Some(state) = knowledge.held.get(&i) {
                    // Frozen: what the coalition holds stays as it is.
                    kept.lr = Some(0.0);
                    kept.momentum = Some(0.0);
                    states.push(state.clone());
                } else {
                    states.push(Vec::new());
                }
                out.layers.push(kept);
                i += 1;
            }
        }
    }
    Rebuilt {
        spec: out,
        runs: placed,
        states,
    }
}

/// Trains the layers `start..end` of `model` alone to map `pairs.inputs` to `pairs.outputs`.
fn fit_pairs(
    model: &mut Cascade,
    spec: &ModelSpec,
    (start, end): (usize, usize),
    pairs: &Observed,
    budget: &Budget,
) -> Result<(), CompletionError> {
    let mut sub = spec.clone();
    sub.layers = spec.layers[start..end].to_vec();
    // A normalised step (as NLMS): the regression's gradient is averaged over every output
    // value, and it grows with the inputs' squared norm, which differs by orders of magnitude
    // between raw pixels and later features.
    let width = pairs.outputs.shape().last().copied().unwrap_or(1).max(1);
    let rows = pairs.inputs.shape().first().copied().unwrap_or(0).max(1);
    let square_norm = pairs.inputs.data().iter().map(|v| v * v).sum::<f32>() / rows as f32;
    for l in &mut sub.layers {
        l.lr = Some(budget.pair_lr * width as f32 / square_norm.max(1e-6));
    }
    sub.layers.push(layer("mse-loss", toml::Table::new(), None));
    let mut fit = Cascade::build(&sub, Backend::Native, None)?;
    let mut states = model.export_states()?[start..end].to_vec();
    states.push(Vec::new());
    fit.import_states(&states)?;
    let rows = pairs.inputs.shape().first().copied().unwrap_or(0);
    let (n_in, n_out) = (
        pairs.inputs.len() / rows.max(1),
        pairs.outputs.len() / rows.max(1),
    );
    let mut order = Order::new(rows, budget.seed ^ start as u64);
    for _ in 0..budget.pair_steps {
        let idx = order.next_batch(64);
        let pick = |t: &Tensor, w: usize| -> Result<Tensor, CompletionError> {
            let data = idx
                .iter()
                .flat_map(|&r| t.data()[r * w..(r + 1) * w].iter().copied())
                .collect();
            Tensor::new(vec![idx.len(), w], data).map_err(|e| CompletionError::Pairs(start, e))
        };
        fit.train_step(pick(&pairs.inputs, n_in)?, pick(&pairs.outputs, n_out)?)?;
    }
    let mut fitted = fit.export_states()?;
    fitted.pop();
    let mut all = vec![Vec::new(); spec.layers.len()];
    for (k, state) in fitted.into_iter().enumerate() {
        all[start + k] = state;
    }
    model.import_states(&all)?;
    Ok(())
}

/// A seeded order over `n` rows, reshuffled at each pass (as training epochs are).
struct Order {
    rows: Vec<usize>,
    at: usize,
    pass: usize,
    seed: u64,
}

impl Order {
    fn new(n: usize, seed: u64) -> Self {
        Order {
            rows: (0..n).collect(),
            at: n,
            pass: 0,
            seed,
        }
    }

    fn next_batch(&mut self, size: usize) -> Vec<usize> {
        let size = size.min(self.rows.len());
        if self.at + size > self.rows.len() {
            self.rows = DataOrder::Shuffled.epoch(self.seed, self.pass, self.rows.len());
            self.pass += 1;
            self.at = 0;
        }
        let batch = self.rows[self.at..self.at + size].to_vec();
        self.at += size;
        batch
    }
}

/// The classes `model` predicts for every example of `data` (examples of `input_shape`, as
/// the model's spec says).
pub fn predict(
    model: &mut Cascade,
    data: &Dataset,
    input_shape: Option<&[usize]>,
) -> Result<Vec<usize>, CompletionError> {
    let mut out = Vec::with_capacity(data.len());
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(500) {
        let (x, _) = batch(data, chunk, input_shape)?;
        let y = model.predict(x)?;
        let cols = y.shape().last().copied().unwrap_or(1);
        out.extend(argmax_rows(y.data(), cols));
    }
    Ok(out)
}

/// Completes the model from what the coalition knows and `labelled` examples, and measures
/// it on `eval` against the labels and against `reference` (the designer's predictions).
pub fn complete(
    spec: &ModelSpec,
    knowledge: &Knowledge,
    arch: Architecture,
    labelled: &Dataset,
    eval: &Dataset,
    reference: &[usize],
    budget: &Budget,
) -> Result<Completion, CompletionError> {
    if labelled.is_empty() {
        return Err(CompletionError::NoLabels);
    }
    let widths = widths(spec, labelled.pixels)?;
    let rebuilt = rebuild(spec, knowledge, arch, &widths, labelled.pixels, budget);
    let mut model = Cascade::build(&rebuilt.spec, Backend::Native, None)?;
    model.import_states(&rebuilt.states)?;
    let mut trained_layers = 0;
    let mut fitted = Vec::new();
    for (run, start, end) in &rebuilt.runs {
        trained_layers += end - start;
        if let Some(pairs) = knowledge.observed.get(&run.first) {
            fit_pairs(&mut model, &rebuilt.spec, (*start, *end), pairs, budget)?;
            fitted.push((*start, *end));
        }
    }
    if !fitted.is_empty() {
        // What the layers were seen to do is better evidence than a few labels: the runs
        // fitted to it stay as they are from here on.
        let states = model.export_states()?;
        let mut frozen = rebuilt.spec.clone();
        for &(start, end) in &fitted {
            for l in &mut frozen.layers[start..end] {
                l.lr = Some(0.0);
                l.momentum = Some(0.0);
            }
        }
        model = Cascade::build(&frozen, Backend::Native, None)?;
        model.import_states(&states)?;
    }
    let fitted_layers: usize = fitted.iter().map(|(s, e)| e - s).sum();
    if trained_layers > fitted_layers {
        let mut order = Order::new(labelled.len(), budget.seed);
        for _ in 0..budget.steps {
            let idx = order.next_batch(64);
            let (x, y) = batch(labelled, &idx, rebuilt.spec.input_shape.as_deref())?;
            model.train_step(x, y)?;
        }
    }
    let predicted = predict(&mut model, eval, rebuilt.spec.input_shape.as_deref())?;
    let share = |hits: usize| hits as f64 / predicted.len().max(1) as f64;
    Ok(Completion {
        accuracy: share(
            predicted
                .iter()
                .zip(&eval.labels)
                .filter(|(p, l)| **p == usize::from(**l))
                .count(),
        ),
        fidelity: share(
            predicted
                .iter()
                .zip(reference)
                .filter(|(p, r)| p == r)
                .count(),
        ),
        trained_layers,
        fitted_layers,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn runs_are_the_missing_layers_before_the_loss() {
        let held: BTreeMap<usize, Vec<u8>> = [(1, vec![]), (3, vec![])].into_iter().collect();
        let r = runs(6, &held);
        let r: Vec<(usize, usize)> = r.iter().map(|r| (r.first, r.last)).collect();
        assert_eq!(r, [(0, 0), (2, 2), (4, 4)]);
        assert!(runs(3, &[(0, vec![]), (1, vec![])].into_iter().collect()).is_empty());
        let r = runs(5, &BTreeMap::new());
        assert_eq!((r[0].first, r[0].last, r.len()), (0, 3, 1));
    }

    fn spec(text: &str) -> ModelSpec {
        ModelSpec::parse(text, std::env::temp_dir()).unwrap()
    }

    /// A layer seen from both sides is recovered: its outputs on new inputs come close.
    #[test]
    fn a_layer_seen_from_both_sides_is_fitted_to_what_it_did() {
        let teacher = spec(
            r#"
            name = "t"
            [training]
            seed = 5
            [[layer]]
            component = "linear"
            config = { in_features = 64, out_features = 10 }
            [[layer]]
            component = "mse-loss"
            "#,
        );
        let mut truth = Cascade::build(&teacher, Backend::Native, None).unwrap();
        let rows = |n: usize, salt: u64| {
            let data: Vec<f32> = (0..n * 64)
                .map(|i| {
                    let v = ((i as u64 * 2654435761 + salt) % 1000) as f32 / 1000.0;
                    (v - 0.3).max(0.0)
                })
                .collect();
            Tensor::new(vec![n, 64], data).unwrap()
        };
        let (seen, new) = (rows(256, 1), rows(128, 7));
        let pairs = Observed {
            outputs: truth.predict(seen.clone()).unwrap(),
            inputs: seen,
        };
        let mut student_spec = teacher.clone();
        student_spec.training.seed = 99;
        let mut student = Cascade::build(&student_spec, Backend::Native, None).unwrap();
        let error = |student: &mut Cascade, truth: &mut Cascade| {
            let (a, b) = (
                student.predict(new.clone()).unwrap(),
                truth.predict(new.clone()).unwrap(),
            );
            let mse: f32 = a
                .data()
                .iter()
                .zip(b.data())
                .map(|(x, y)| (x - y) * (x - y))
                .sum();
            let power: f32 = b.data().iter().map(|y| y * y).sum();
            mse / power
        };
        let before = error(&mut student, &mut truth);
        fit_pairs(
            &mut student,
            &student_spec,
            (0, 1),
            &pairs,
            &Budget::default(),
        )
        .unwrap();
        let after = error(&mut student, &mut truth);
        assert!(after < 0.01 && after < before / 20.0, "{before} -> {after}");
    }

    #[test]
    fn an_order_visits_every_row_once_a_pass() {
        let mut o = Order::new(10, 1);
        let mut seen: Vec<usize> = (0..5).flat_map(|_| o.next_batch(2)).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(Order::new(3, 1).next_batch(64).len(), 3);
    }
}
