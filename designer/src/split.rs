//! `mixnn split`: PrivyNet's choice of how many pretrained layers the designer keeps.
//!
//! The model is pretrained on a public data set (MNIST digits, say) or taken from a weights
//! file. For each candidate front (the first L hosts' layers, frozen with the pretrained
//! weights, kept by the designer) the rest of the model trains from its seeded init on the
//! private data set's features (Fashion-MNIST, say), and three things are measured:
//!
//! - **accuracy**: the rest's test accuracy after the epochs;
//! - **privacy loss**: how well the first host rebuilds the private images from the features
//!   it sees. The attacker knows the front (it is public, pretrained) and holds public images
//!   of the same distribution (the test set's): it trains a decoder from their features back
//!   to them ([`mixnn_designer::attack::inputs`]) and applies it to the private training
//!   images' features; the score is the SSIM of what it rebuilds (1: the images themselves);
//! - **local compute**: the designer's milliseconds per example through the front.
//!
//! The choice, as PrivyNet makes it: the best accuracy among the splits within the budget of
//! privacy loss and local compute.

use std::{path::PathBuf, str::FromStr, time::Instant};

use anyhow::{Context, Result, anyhow};
use mixnn_designer::{
    attack::inputs::{self, DecoderBudget},
    backend::Backend,
    cascade::Cascade,
    data::{Dataset, Splits},
    front::Split,
    order::DataOrder,
    spec::ModelSpec,
    train::{self, TrainOptions},
    weights::Layout,
};
use mixnn_layer_sdk::Tensor;
use serde::Serialize;

use crate::{DataArgs, bench, load_data};

/// Limits on what a split may cost: `ssim=S` (the largest reconstruction SSIM allowed) and
/// `local-ms=T` (the designer's most milliseconds per example), comma-separated.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Budget {
    ssim: Option<f64>,
    local_ms: Option<f64>,
}

impl FromStr for Budget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut budget = Budget::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected KEY=VALUE"))?;
            let value: f64 = value
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("{part:?}: not a non-negative number"))?;
            match key {
                "ssim" => budget.ssim = Some(value),
                "local-ms" => budget.local_ms = Some(value),
                _ => return Err(format!("{key:?}: the budget knows ssim and local-ms")),
            }
        }
        Ok(budget)
    }
}

impl Budget {
    fn admits(&self, row: &Row) -> bool {
        self.ssim.is_none_or(|s| row.ssim <= s)
            && self.local_ms.is_none_or(|t| row.local_ms_per_example <= t)
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct SplitArgs {
    /// Model spec (TOML); its `frozen` flags are ignored (each split sets its own).
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// The private data set, on which the rest trains and whose images the attacker rebuilds.
    #[command(flatten)]
    data: DataArgs,
    /// The public data set the model is pretrained on (a directory of IDX files, e.g. MNIST
    /// digits for Fashion-MNIST).
    #[arg(long, value_name = "DIR", required_unless_present = "pretrained")]
    pretrain_data: Option<PathBuf>,
    /// Use the pretrained weights in FILE (the whole model's) instead of pretraining.
    #[arg(long, value_name = "FILE", conflicts_with = "pretrain_data")]
    pretrained: Option<PathBuf>,
    /// Epochs of pretraining.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pretrain_epochs: usize,
    /// Epochs the rest of the model trains, for each split.
    #[arg(long, default_value_t = 1, value_name = "N")]
    epochs: usize,
    /// The largest front, in hosts (groups of layers) [default: every host before the last
    /// weight layer's].
    #[arg(long, value_name = "K")]
    max_front: Option<usize>,
    /// What a split may cost: `ssim=S` (reconstruction SSIM at most S) and/or `local-ms=T`
    /// (the designer's milliseconds per example at most T), comma-separated.
    #[arg(long, default_value = "ssim=0.6", value_name = "LIMITS")]
    budget: Budget,
    /// Private training images the attacker rebuilds.
    #[arg(long, default_value_t = 500, value_name = "N")]
    attack_examples: usize,
    /// Public images (of the test set) the attacker's decoder learns from.
    #[arg(long, default_value_t = 5000, value_name = "N")]
    public_examples: usize,
    /// SGD steps of the attacker's decoder.
    #[arg(long, default_value_t = 2000, value_name = "N")]
    decoder_steps: usize,
    /// A small version for CI: 6,000 examples to pretrain and train on, 1,000 to test, 300
    /// decoder steps, 200 attacked images.
    #[arg(long)]
    quick: bool,
    /// Where to write report.json, split.svg and the pretrained weights.
    #[arg(long, default_value = "bench-results/split", value_name = "DIR")]
    out: PathBuf,
}

/// One candidate split.
#[derive(Debug, Clone, Serialize)]
struct Row {
    /// Hosts (groups of layers) the designer keeps.
    front_hosts: usize,
    /// Layers it keeps.
    front_layers: usize,
    /// The layers kept, by component.
    kept: String,
    /// Values per example that leave the designer.
    features: usize,
    /// The rest's test accuracy after its epochs.
    test_acc: f64,
    /// SSIM of the attacker's reconstructions (1: the private images themselves).
    ssim: f64,
    /// Their mean squared error per pixel.
    mse: f64,
    /// SSIM of the mean public image, the attack's floor.
    baseline_ssim: f64,
    /// The designer's milliseconds per example through the front.
    local_ms_per_example: f64,
    /// Seconds the rest took to train.
    train_s: f64,
    /// Whether the split is within the budget.
    within_budget: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    machine: bench::Machine,
    model: String,
    budget: Budget,
    pretrain_examples: usize,
    pretrain_test_acc: Option<f64>,
    train_examples: usize,
    test_examples: usize,
    epochs: usize,
    attack_examples: usize,
    public_examples: usize,
    decoder_steps: usize,
    rows: Vec<Row>,
    /// The chosen number of front hosts, if any split fits the budget.
    choice: Option<usize>,
}

pub(crate) fn run(mut args: SplitArgs) -> Result<()> {
    if args.quick {
        args.data.train_limit = Some(args.data.train_limit.unwrap_or(6000).min(6000));
        args.data.test_limit = Some(args.data.test_limit.unwrap_or(1000).min(1000));
        args.decoder_steps = args.decoder_steps.min(300);
        args.attack_examples = args.attack_examples.min(200);
        args.public_examples = args.public_examples.min(1000);
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut spec = ModelSpec::from_file(&args.model)?;
    for layer in &mut spec.layers {
        layer.frozen = false;
    }
    let data = args.data.load()?;
    let mut whole = Cascade::build(&spec, Backend::Native, None)?;
    let layout = Layout::new(&spec, &whole.export_states()?)?;

    // Pretrained weights: from a file, or trained here on the public data set.
    let (pretrained, pretrain_examples, pretrain_test_acc) = match &args.pretrained {
        Some(path) => (
            layout
                .read(path)
                .with_context(|| format!("--pretrained {}", path.display()))?,
            0,
            None,
        ),
        None => {
            let dir = args.pretrain_data.as_deref();
            let limit = args.quick.then_some(6000);
            let public = load_data(dir, limit, args.data.test_limit)?;
            println!(
                "pretraining {} on {} public examples for {} epochs...",
                spec.name,
                public.train.len(),
                args.pretrain_epochs
            );
            let options = options(&spec, args.pretrain_epochs, spec.input_shape.clone());
            let reports = train::train(&mut whole, &public, &options, |r| {
                println!("  epoch {}: test accuracy {:.4}", r.epoch, r.test_acc);
            })?;
            let states = whole.export_states()?;
            let path = args.out.join("pretrained.safetensors");
            layout.write(&path, &states)?;
            println!("  saved {}", path.display());
            (
                states,
                public.train.len(),
                reports.last().map(|r| r.test_acc),
            )
        }
    };

    // The candidates: the first hosts' layers, up to the host before the last weight layer's.
    let groups = spec.hosts();
    let infos: Vec<u64> = whole.infos().iter().map(|i| i.param_count).collect();
    let last_weight_group = groups
        .iter()
        .rposition(|g| g.iter().any(|&i| infos[i] > 0))
        .ok_or_else(|| anyhow!("{}: the model has no weight layer", spec.name))?;
    let most = args
        .max_front
        .unwrap_or(last_weight_group)
        .min(last_weight_group);
    let attacked = args.attack_examples.min(data.train.len());
    let public = args.public_examples.min(data.test.len());
    if attacked == 0 || public == 0 {
        return Err(anyhow!("no examples to attack with or to attack"));
    }
    println!(
        "\n{:>5}  {:>6}  {:>8}  {:>8}  {:>6}  {:>8}  {:>8}  {:>7}  kept",
        "hosts", "layers", "features", "test_acc", "ssim", "floor", "local_ms", "train_s"
    );
    let mut rows = Vec::new();
    for front_hosts in 0..=most {
        let front_layers: usize = groups[..front_hosts].iter().map(Vec::len).sum();
        let row = measure(
            &spec,
            &data,
            &pretrained,
            front_layers,
            (attacked, public),
            &args,
        )
        .with_context(|| format!("the split after {front_hosts} hosts"))?;
        let row = Row {
            front_hosts,
            within_budget: false,
            ..row
        };
        let row = Row {
            within_budget: args.budget.admits(&row),
            ..row
        };
        println!(
            "{:>5}  {:>6}  {:>8}  {:>8.4}  {:>6.3}  {:>8.3}  {:>8.4}  {:>7.1}  {}",
            row.front_hosts,
            row.front_layers,
            row.features,
            row.test_acc,
            row.ssim,
            row.baseline_ssim,
            row.local_ms_per_example,
            row.train_s,
            if row.kept.is_empty() { "-" } else { &row.kept }
        );
        rows.push(row);
    }
    // The best accuracy within the budget; the smaller front on a tie.
    let choice = rows
        .iter()
        .filter(|r| r.within_budget)
        .fold(None::<&Row>, |best, r| match best {
            Some(b) if b.test_acc >= r.test_acc => Some(b),
            _ => Some(r),
        });
    match choice {
        Some(r) => println!(
            "\nchoice within {}: keep {} hosts ({} layers: {}); test accuracy {:.4}, \
             reconstruction SSIM {:.3}, {:.4} ms per example here.\ntrain it over a cascade: \
             set frozen = true on the first {} layers of {} and run mixnn train --front-weights \
             {}",
            budget_text(&args.budget),
            r.front_hosts,
            r.front_layers,
            if r.kept.is_empty() { "none" } else { &r.kept },
            r.test_acc,
            r.ssim,
            r.local_ms_per_example,
            r.front_layers,
            args.model.display(),
            args.pretrained
                .clone()
                .unwrap_or_else(|| args.out.join("pretrained.safetensors"))
                .display()
        ),
        None => println!(
            "\nno split fits the budget {}: loosen it or pretrain longer",
            budget_text(&args.budget)
        ),
    }
    let report = Report {
        bench: "split",
        machine: bench::Machine::this(),
        model: spec.name.clone(),
        budget: args.budget,
        pretrain_examples,
        pretrain_test_acc,
        train_examples: data.train.len(),
        test_examples: data.test.len(),
        epochs: args.epochs,
        attack_examples: attacked,
        public_examples: public,
        decoder_steps: args.decoder_steps,
        choice: choice.map(|r| r.front_hosts),
        rows,
    };
    let json = bench::write_report(&args.out, &report)?;
    bench::plot::lines(
        &args.out.join("split.svg"),
        "accuracy and privacy loss against the designer's front",
        (
            "hosts kept by the designer",
            "test accuracy / reconstruction SSIM",
        ),
        &[
            (
                "test accuracy".to_owned(),
                report
                    .rows
                    .iter()
                    .map(|r| (r.front_hosts as f64, r.test_acc))
                    .collect(),
            ),
            (
                "reconstruction SSIM".to_owned(),
                report
                    .rows
                    .iter()
                    .map(|r| (r.front_hosts as f64, r.ssim))
                    .collect(),
            ),
            (
                "SSIM of the mean image".to_owned(),
                report
                    .rows
                    .iter()
                    .map(|r| (r.front_hosts as f64, r.baseline_ssim))
                    .collect(),
            ),
        ],
        true,
    )?;
    println!(
        "{}",
        serde_json::json!({
            "summary": true,
            "choice": report.choice,
            "budget": report.budget,
            "rows": report.rows,
        })
    );
    eprintln!("wrote {} and split.svg beside it", json.display());
    Ok(())
}

fn budget_text(budget: &Budget) -> String {
    let mut parts = Vec::new();
    if let Some(s) = budget.ssim {
        parts.push(format!("SSIM <= {s}"));
    }
    if let Some(t) = budget.local_ms {
        parts.push(format!("{t} ms per example here"));
    }
    if parts.is_empty() {
        "(none)".to_owned()
    } else {
        parts.join(", ")
    }
}

fn options(spec: &ModelSpec, epochs: usize, input_shape: Option<Vec<usize>>) -> TrainOptions {
    TrainOptions {
        epochs,
        seed: spec.training.seed,
        batch_size: spec.training.batch_size,
        test_batch_size: spec.training.test_batch_size,
        progress: false,
        order: DataOrder::Shuffled,
        input_shape,
    }
}

/// The first `n` rows of a data set's values, as `[n, width]`.
fn rows(data: &[f32], n: usize, width: usize) -> Result<Tensor> {
    Ok(Tensor::new(vec![n, width], data[..n * width].to_vec())?)
}

/// Accuracy, privacy loss and local cost of keeping the first `front_layers` layers.
fn measure(
    spec: &ModelSpec,
    data: &Splits,
    pretrained: &[Vec<u8>],
    front_layers: usize,
    (attacked, public): (usize, usize),
    args: &SplitArgs,
) -> Result<Row> {
    let split = Split::at(spec, front_layers, data, Some(pretrained))?;
    let features = split.features.train.pixels;
    let mut rest = Cascade::build(&split.rest, Backend::Native, None)?;
    let started = Instant::now();
    let reports = train::train(
        &mut rest,
        &split.features,
        &options(&split.rest, args.epochs, split.rest.input_shape.clone()),
        |_| {},
    )?;
    let train_s = started.elapsed().as_secs_f64();
    let test_acc = reports.last().map_or(0.0, |r| r.test_acc);

    let pixels = data.train.pixels;
    let images = |d: &Dataset, n| rows(&d.images, n, pixels);
    let (private_images, public_images) =
        (images(&data.train, attacked)?, images(&data.test, public)?);
    let reconstruction = if front_layers == 0 {
        inputs::raw_inputs(&public_images, &private_images)?
    } else {
        let seen = |d: &Dataset, n| rows(&d.images, n, features);
        let (public_seen, private_seen) = (
            seen(&split.features.test, public)?,
            seen(&split.features.train, attacked)?,
        );
        // The attacker tunes its decoder: wide features (a convolution's) diverge at the
        // rate that suits narrow ones, so it tries smaller rates until one converges.
        let mut lr = DecoderBudget::default().lr;
        loop {
            let budget = DecoderBudget {
                steps: args.decoder_steps,
                lr,
                ..DecoderBudget::default()
            };
            match inputs::reconstruct(
                (&public_seen, &public_images),
                (&private_seen, &private_images),
                &budget,
            ) {
                Err(inputs::InputError::Diverged(_)) if lr > 1e-3 => lr /= 3.0,
                other => break other?,
            }
        }
    };
    let kept = spec.layers[..front_layers]
        .iter()
        .map(|l| l.component.as_str())
        .collect::<Vec<_>>()
        .join(" + ");
    Ok(Row {
        front_hosts: 0,
        front_layers,
        kept,
        features,
        test_acc,
        ssim: reconstruction.ssim,
        mse: reconstruction.mse,
        baseline_ssim: reconstruction.baseline_ssim,
        // Without a front the designer computes nothing (the time measured is batching).
        local_ms_per_example: if front_layers == 0 {
            0.0
        } else {
            split.local_s_per_example * 1e3
        },
        train_s,
        within_budget: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_and_refuse_nonsense() {
        let b: Budget = "ssim=0.3,local-ms=0.05".parse().unwrap_or_default();
        assert_eq!((b.ssim, b.local_ms), (Some(0.3), Some(0.05)));
        let b: Budget = "local-ms=1".parse().unwrap_or_default();
        assert_eq!((b.ssim, b.local_ms), (None, Some(1.0)));
        for bad in ["ssim", "ssim=-1", "ssim=x", "speed=3", "ssim=inf"] {
            assert!(bad.parse::<Budget>().is_err(), "{bad}");
        }
        let row = |ssim, local_ms_per_example| Row {
            front_hosts: 0,
            front_layers: 0,
            kept: String::new(),
            features: 1,
            test_acc: 0.5,
            ssim,
            mse: 0.0,
            baseline_ssim: 0.0,
            local_ms_per_example,
            train_s: 0.0,
            within_budget: false,
        };
        let b: Budget = "ssim=0.3,local-ms=0.05".parse().unwrap_or_default();
        assert!(b.admits(&row(0.3, 0.05)));
        assert!(!b.admits(&row(0.31, 0.0)));
        assert!(!b.admits(&row(0.0, 0.06)));
        assert!(Budget::default().admits(&row(1.0, 100.0)));
    }
}
