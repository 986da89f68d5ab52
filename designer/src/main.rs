//! `mixnn`: the designer's command line.

use std::{path::PathBuf, sync::Arc};

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand, ValueEnum};
use mixnn_designer::{
    backend::Backend,
    cascade::Cascade,
    data,
    spec::ModelSpec,
    train::{self, EpochReport, TrainOptions},
};
use mixnn_host::{Sandbox, SandboxConfig};

/// Train deep-learning models whose layers run as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "mixnn", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a model in this process and report test accuracy and time per epoch.
    Train(TrainArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Each layer as a WebAssembly component in the host's sandbox.
    Wasm,
    /// The same layer code compiled natively (the baseline).
    Native,
}

#[derive(Debug, clap::Args)]
struct TrainArgs {
    /// Model spec (TOML), e.g. models/paper-mlp.toml.
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// Directory with the IDX files [default: $MIXNN_DATA, else /usr/share/datasets/fashion-mnist].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Epochs [default: the spec's].
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// Seed of the initial weights and the shuffles [default: the spec's].
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// How the layers run.
    #[arg(long, value_enum, default_value_t = ModeArg::Wasm)]
    mode: ModeArg,
    /// Use only the first N training examples.
    #[arg(long, value_name = "N")]
    train_limit: Option<usize>,
    /// Use only the first N test examples.
    #[arg(long, value_name = "N")]
    test_limit: Option<usize>,
    /// Print one JSON object per epoch instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Train(args) => train_command(args),
    }
}

fn train_command(args: TrainArgs) -> Result<()> {
    let mut spec = ModelSpec::from_file(&args.model)?;
    if let Some(seed) = args.seed {
        spec.training.seed = seed;
    }
    let dir = data::resolve_dir(args.data.as_deref())?;
    let mut splits =
        data::load(&dir).with_context(|| format!("loading data from {}", dir.display()))?;
    if let Some(n) = args.train_limit {
        splits.train = splits.train.truncate(n);
    }
    if let Some(n) = args.test_limit {
        splits.test = splits.test.truncate(n);
    }
    let options = TrainOptions {
        epochs: args.epochs.unwrap_or(spec.training.epochs),
        seed: spec.training.seed,
        batch_size: spec.training.batch_size,
        test_batch_size: spec.training.test_batch_size,
        progress: !args.json,
    };
    let backend = match args.mode {
        ModeArg::Wasm => Backend::Wasm,
        ModeArg::Native => Backend::Native,
    };
    if !args.json {
        println!(
            "{}: {} layers on {} hosts, {} training / {} test examples, {} mode",
            spec.name,
            spec.layers.len(),
            spec.hosts().len(),
            splits.train.len(),
            splits.test.len(),
            backend.name()
        );
        println!(
            "{:>5}  {:>10}  {:>8}  {:>8}  {:>7}",
            "epoch", "train_loss", "test_acc", "train_s", "mode"
        );
    }
    let json = args.json;
    let print = move |r: &EpochReport| {
        if json {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        } else {
            println!(
                "{:>5}  {:>10.4}  {:>8.4}  {:>8.3}  {:>7}",
                r.epoch, r.train_loss, r.test_acc, r.train_s, r.mode
            );
        }
    };
    let reports = run_in_sandbox_worker(move |sandbox| {
        let mut cascade = Cascade::build(&spec, backend, sandbox)?;
        Ok(train::train(&mut cascade, &splits, &options, print)?)
    })?;
    if let Some(last) = reports.last().filter(|_| !json) {
        print_evaluation(last);
    }
    Ok(())
}

/// Runs `job` on a sandbox worker thread (whose stack suits calls into components).
fn run_in_sandbox_worker<R: Send + 'static>(
    job: impl FnOnce(Option<&Sandbox>) -> Result<R> + Send + 'static,
) -> Result<R> {
    let sandbox = Arc::new(Sandbox::new(SandboxConfig::default())?);
    let worker_sandbox = Arc::clone(&sandbox);
    sandbox
        .spawn_worker("mixnn-trainer", move || job(Some(&worker_sandbox)))?
        .join()
        .map_err(|_| anyhow!("the training thread panicked"))?
}

fn print_evaluation(report: &EpochReport) {
    let eval = &report.evaluation;
    println!("\nper class after epoch {}:", report.epoch);
    println!(
        "{:>5}  {:>9}  {:>6}  {:>6}  {:>7}",
        "class", "precision", "recall", "f1", "support"
    );
    for (c, m) in eval.per_class.iter().enumerate() {
        println!(
            "{c:>5}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}",
            m.precision, m.recall, m.f1, m.support
        );
    }
    println!("\nconfusion matrix (rows: true class, columns: predicted):");
    for row in &eval.confusion.counts {
        let cells: Vec<String> = row.iter().map(|c| format!("{c:>5}")).collect();
        println!("{}", cells.join(" "));
    }
}
