//! `mixnn`: the designer's command line.

use std::{path::PathBuf, sync::Arc};

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand, ValueEnum};
use mixnn_designer::order::DataOrder;
use mixnn_designer::recovery::{Checkpoint, Event, RecoveryOptions, Resilient};
use mixnn_designer::remote::RemoteOptions;
use mixnn_designer::{
    backend::Backend,
    cascade::Cascade,
    data, fetch,
    spec::ModelSpec,
    train::{self, EpochReport, TrainOptions},
    weights::Layout,
};
use mixnn_sandbox::{Sandbox, SandboxConfig};
use mixnn_transport::{directory_client, hex_fingerprint};

#[cfg(feature = "local-hosts")]
mod bench;
#[cfg(feature = "local-hosts")]
mod demo;
#[cfg(feature = "local-hosts")]
mod predict;
#[cfg(feature = "local-hosts")]
mod privacy;
#[cfg(feature = "local-hosts")]
mod split;

/// Train deep-learning models whose layers run as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "mixnn", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a model and report test accuracy and time per epoch: in this process, or over
    /// remote hosts with `--directory`.
    Train(TrainArgs),
    /// Start a directory and hosts as processes on loopback, train the model over a random
    /// cascade of them and in this process with the same seed, and compare accuracy, time and
    /// the final weights. Everything stops and is removed at the end.
    #[cfg(feature = "local-hosts")]
    Demo(DemoArgs),
    /// Benchmarks, measured side by side in one run.
    #[cfg(feature = "local-hosts")]
    #[command(subcommand)]
    Bench(BenchCommand),
    /// What colluding hosts can learn, measured: train over host processes with audits on,
    /// then attack with nothing but coalitions' audits (label leakage from gradients, model
    /// completion from held layers and a few labels); one line per measurement, a final
    /// JSON line, report.json and plots.
    #[cfg(feature = "local-hosts")]
    Attack(privacy::AttackArgs),
    /// Deploy a trained model onto a fresh cascade (from a directory, or host processes
    /// started here) and run it on new inputs (IDX files or a folder of PNG images), several
    /// batches in flight; predictions as JSON lines or CSV, metrics when labels are known, a
    /// final JSON line.
    #[cfg(feature = "local-hosts")]
    Predict(predict::PredictArgs),
    /// PrivyNet's split: pretrain the model on public data (or take its weights), then for
    /// each number of first hosts the designer could keep frozen, train the rest on the
    /// private data's features and measure its accuracy, how well the next host rebuilds the
    /// private images (a decoder trained on public images) and the designer's compute; print
    /// the table and the best split within the budget; a final JSON line, report.json and a
    /// plot.
    #[cfg(feature = "local-hosts")]
    Split(split::SplitArgs),
    /// Data sets: download MNIST or Fashion-MNIST into a cache, which commands given no
    /// `--data` read (after $MIXNN_DATA and Debian's Fashion-MNIST).
    #[command(subcommand)]
    Data(DataCommand),
    /// Run a host daemon (as `mixnn-host run`; used by `demo`).
    #[cfg(feature = "local-hosts")]
    #[command(hide = true)]
    ServeHost {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        stop_on_stdin_eof: bool,
    },
    /// Run a directory (as `mixnn-host directory`; used by `demo`).
    #[cfg(feature = "local-hosts")]
    #[command(hide = true)]
    ServeDirectory {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        state: PathBuf,
        #[arg(long)]
        keys: PathBuf,
        #[arg(long, default_value_t = 120)]
        max_age_s: u64,
        #[arg(long)]
        stop_on_stdin_eof: bool,
    },
    /// A relay of `bench floor`'s rings: passes messages on until its stdin closes.
    #[cfg(feature = "local-hosts")]
    #[command(hide = true)]
    FloorRelay {
        #[arg(long, value_enum)]
        transport: bench::floor::Transport,
        #[arg(long)]
        frame_bytes: usize,
    },
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Download a data set's four IDX files (gzip-compressed, MNIST's layout) from its public
    /// mirrors into the cache, DIR/NAME under the cache's root. Each file is checked against
    /// its published SHA-256 before it takes its place (a corrupted, truncated or oversized
    /// download leaves nothing behind); files already there and intact are kept. Commands
    /// given no --data then use the cache, MNIST if it is there, else Fashion-MNIST (unless
    /// $MIXNN_DATA is set or /usr/share/datasets/fashion-mnist exists: they come first).
    Fetch(FetchArgs),
}

/// `mixnn data fetch`.
#[derive(Debug, clap::Args)]
struct FetchArgs {
    /// The data set.
    #[arg(value_enum, value_name = "NAME")]
    name: SourceArg,
    /// The cache's root directory [default: $MIXNN_CACHE, else $XDG_CACHE_HOME/mixnn, else
    /// ~/.cache/mixnn].
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Download from this base URL (the file names are appended) instead of the data set's
    /// usual mirrors; repeat it for fallbacks, tried in order [default: $MIXNN_MIRROR, base
    /// URLs separated by spaces or commas, else the usual mirrors].
    #[arg(long, value_name = "URL")]
    mirror: Vec<String>,
    /// Give up on a mirror after this many seconds without a byte from it.
    #[arg(long, value_name = "SECONDS", default_value_t = fetch::STALL_TIMEOUT.as_secs())]
    stall_timeout: u64,
}

/// A data set `mixnn data fetch` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SourceArg {
    /// MNIST's handwritten digits.
    Mnist,
    /// Zalando's Fashion-MNIST.
    FashionMnist,
}

impl From<SourceArg> for fetch::Source {
    fn from(arg: SourceArg) -> Self {
        match arg {
            SourceArg::Mnist => fetch::Source::Mnist,
            SourceArg::FashionMnist => fetch::Source::FashionMnist,
        }
    }
}

#[cfg(feature = "local-hosts")]
#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The paper's experiment (DESIGN.md section 6) in several modes, epoch by epoch in turn,
    /// from the same initial weights and in the same order: a table per epoch, a summary of
    /// medians and ratios, a JSON report and the paper's Figure 3 (accuracy.svg, time.svg).
    Paper(bench::paper::PaperArgs),
    /// How the costs grow: time per batch against the cascade's length (its extra hops
    /// dummies), host selection against the pool's size, and a host's memory against its
    /// concurrent sessions; tables, a JSON report and plots.
    Scale(bench::scale::ScaleArgs),
    /// Many sessions at once on one host process: each trains a few batches of the paper's
    /// model there and is checked bit for bit against the same batches in this process; the
    /// host's memory idle, with one session and with all; one line per check, a final JSON
    /// line and report.json.
    Load(bench::load::LoadArgs),
    /// The paper's experiment while hosts of the cascade are killed with SIGKILL at random
    /// moments (training, the test pass, a recovery's op=0): each must be noticed, named and
    /// recovered from, and the weights must end bit for bit as in this process; one line per
    /// event, a final JSON line and report.json.
    Chaos(bench::chaos::ChaosArgs),
    /// The floor of a link on this machine, beside the cascade's cost per link: a ring of
    /// plain UDP relay processes and one over QUIC (mixnn's own transport) passing a message
    /// of the session's frame length, each process touching every byte, and a training
    /// session over host processes timed beside the same model in this process; one line per
    /// measurement (medians and quartiles over rounds), a final JSON line and report.json.
    Floor(bench::floor::FloorArgs),
    /// A deep model (VGG-style by default) spread over 1 to all of its hosts: time per batch
    /// against the number of hosts, beside the same batches in this process, each cascade's
    /// weights compared bit for bit with this process's; a table, a final JSON line,
    /// report.json and a plot.
    Deep(bench::deep::DeepArgs),
}

/// Over remote hosts: where the directory is and how to build the cascade (defaults: the
/// spec's `[cascade]` table).
#[derive(Debug, clap::Args)]
pub(crate) struct CascadeArgs {
    /// Train over hosts from the directory at ADDR (host:port).
    #[arg(long, value_name = "ADDR")]
    pub(crate) directory: Option<std::net::SocketAddr>,
    /// The directory's certificate fingerprint (64 hex digits), as it prints at start.
    #[arg(long, value_name = "HEX", requires = "directory")]
    pub(crate) directory_fingerprint: Option<String>,
    /// Dummy hosts interleaved at random between the actual ones.
    #[arg(long, value_name = "R")]
    dummies: Option<usize>,
    /// Keep the first host's layers on the designer: raw inputs never leave it.
    #[arg(long)]
    keep_first: bool,
    /// Keep the last layers on the designer, from the last weight layer to the loss (the
    /// default, unless the spec's `[cascade]` says `keep_last = false`): no host sees the
    /// labels or a gradient that spells them out, and all hosts together lack the last weight
    /// layer (what earlier gradients still leak is measured by `mixnn attack`).
    #[arg(long, overrides_with = "no_keep_last")]
    keep_last: bool,
    /// Let hosts run the last layers too, as the paper does: the hosts after the last weight
    /// layer then read every label off the gradients they receive.
    #[arg(long)]
    no_keep_last: bool,
    /// Cover messages per second looped through the cascade.
    #[arg(long, value_name = "PER_SECOND")]
    cover_rate: Option<f64>,
    /// Seconds to wait for any answer of the cascade before giving up on it. By default
    /// the wait adapts: 60 s for the setup and the first steps, then 20 times the median of
    /// the last steps of the same kind (at least 2 s). Given, it is fixed.
    #[arg(long, value_name = "SECONDS")]
    step_timeout: Option<u64>,
    /// The most hosts to take from the directory: a larger pool is refused, and the
    /// directory's answer is read no further than this many descriptors.
    #[arg(long, default_value_t = directory_client::DEFAULT_MAX_POOL, value_name = "N")]
    max_pool: usize,
}

impl CascadeArgs {
    pub(crate) fn options(
        &self,
        spec: &ModelSpec,
        directory: std::net::SocketAddr,
        fingerprint: [u8; 32],
    ) -> RemoteOptions {
        let s = &spec.cascade;
        RemoteOptions {
            dummies: self.dummies.unwrap_or(s.dummies),
            keep_first: self.keep_first || s.keep_first,
            keep_last: !self.no_keep_last && (self.keep_last || s.keep_last),
            cover_rate: self.cover_rate.unwrap_or(s.cover_rate),
            step_timeout: std::time::Duration::from_secs(self.step_timeout.unwrap_or(60).max(1)),
            adaptive_deadline: self.step_timeout.is_none(),
            max_pool: self.max_pool,
            ..RemoteOptions::new(directory, fingerprint)
        }
    }
}

#[cfg(feature = "local-hosts")]
#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Model spec (TOML) [default: the paper's MLP, models/paper-mlp.toml].
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Host processes to start.
    #[arg(long, default_value_t = 8, value_name = "M")]
    hosts: usize,
    /// Epochs.
    #[arg(long, default_value_t = 3, value_name = "N")]
    epochs: usize,
    /// Seed of the initial weights and the shuffles [default: the spec's].
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Print one JSON line per epoch and mode instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    order: OrderArgs,
    #[command(flatten)]
    cascade: DemoCascadeArgs,
    /// Kill one of the cascade's hosts (at random, with SIGKILL) SECONDS after training
    /// starts, to watch the session recover: it needs a spare host.
    #[arg(long, value_name = "SECONDS")]
    kill_host_after: Option<f64>,
}

/// The data set, and how much of it to use.
#[derive(Debug, clap::Args)]
pub(crate) struct DataArgs {
    /// Directory with the IDX files [default: $MIXNN_DATA, else /usr/share/datasets/fashion-mnist,
    /// else the cache of `mixnn data fetch`: MNIST, else Fashion-MNIST].
    #[arg(long, value_name = "DIR")]
    pub(crate) data: Option<PathBuf>,
    /// Use only the first N training examples.
    #[arg(long, value_name = "N")]
    pub(crate) train_limit: Option<usize>,
    /// Use only the first N test examples.
    #[arg(long, value_name = "N")]
    pub(crate) test_limit: Option<usize>,
}

impl DataArgs {
    /// The data set, cut as asked.
    pub(crate) fn load(&self) -> Result<data::Splits> {
        load_data(self.data.as_deref(), self.train_limit, self.test_limit)
    }
}

/// The order of the training examples.
#[derive(Debug, clap::Args)]
struct OrderArgs {
    /// How each epoch orders the training examples: a shuffle seeded by the seed and the
    /// epoch, or the data set's own order.
    #[arg(long, value_enum, default_value_t = ShuffleArg::Seeded)]
    shuffle: ShuffleArg,
    /// Each epoch's order from FILE: one line per epoch, a permutation of the training
    /// examples' indices separated by spaces or commas (NumPy's `savetxt(..., fmt="%d")` of
    /// an [epochs, n] array).
    #[arg(long, value_name = "FILE", conflicts_with = "shuffle")]
    order: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ShuffleArg {
    /// A Fisher-Yates shuffle seeded by the seed and the epoch.
    Seeded,
    /// No shuffle: the data set's order.
    None,
}

impl OrderArgs {
    /// The order for `n` training examples.
    fn order(&self, n: usize) -> Result<DataOrder> {
        Ok(match (&self.order, self.shuffle) {
            (Some(path), _) => DataOrder::from_file(path, n)?,
            (None, ShuffleArg::Seeded) => DataOrder::Shuffled,
            (None, ShuffleArg::None) => DataOrder::Sequential,
        })
    }
}

/// The cascade's shape in the demo.
#[cfg(feature = "local-hosts")]
#[derive(Debug, clap::Args)]
struct DemoCascadeArgs {
    /// Dummy hosts interleaved at random between the actual ones.
    #[arg(long, default_value_t = 2, value_name = "R")]
    dummies: usize,
    /// Keep the first host's layers on the designer.
    #[arg(long)]
    keep_first: bool,
    /// Keep the last layers on the designer, from the last weight layer to the loss (the
    /// default): no host sees the labels or a gradient that spells them out.
    #[arg(long, overrides_with = "no_keep_last")]
    keep_last: bool,
    /// Let hosts run the last layers too, as the paper does: the hosts after the last weight
    /// layer then read every label off the gradients they receive.
    #[arg(long)]
    no_keep_last: bool,
    /// Cover messages per second.
    #[arg(long, default_value_t = 0.0, value_name = "PER_SECOND")]
    cover_rate: f64,
}

#[cfg(feature = "local-hosts")]
impl DemoCascadeArgs {
    /// Whether the designer keeps the last layers: unless `--no-keep-last` came last.
    fn keep_last(&self) -> bool {
        self.keep_last || !self.no_keep_last
    }
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
    #[command(flatten)]
    data: DataArgs,
    /// Epochs [default: the spec's].
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// Seed of the initial weights and the shuffles [default: the spec's].
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// How the layers run.
    #[arg(long, value_enum, default_value_t = ModeArg::Wasm)]
    mode: ModeArg,
    /// Print one JSON object per epoch instead of a table.
    #[arg(long)]
    json: bool,
    /// Start from the weights in FILE instead of the seeded init: safetensors, named as
    /// PyTorch's `state_dict` of an `nn.Sequential` of the layers (`0.weight`, `0.bias`, ...;
    /// weights `[out, in]`, F32), as `--save-weights` writes.
    #[arg(long, value_name = "FILE")]
    init_weights: Option<PathBuf>,
    /// The pretrained weights of the model's frozen layers (`frozen = true`: the designer
    /// keeps them and sends only their features) from FILE, a weights file of the whole model
    /// (as `--save-weights` or `mixnn split` writes); the other layers start from the seeded
    /// init, or from `--init-weights`.
    #[arg(long, value_name = "FILE")]
    front_weights: Option<PathBuf>,
    /// Save the trained weights to FILE (safetensors, the names of `--init-weights`), which
    /// PyTorch loads with `model.load_state_dict(safetensors.torch.load_file(FILE))`.
    #[arg(long, value_name = "FILE")]
    save_weights: Option<PathBuf>,
    #[command(flatten)]
    order: OrderArgs,
    #[command(flatten)]
    cascade: CascadeArgs,
    #[command(flatten)]
    recovery: RecoveryArgs,
}

/// Over remote hosts: checkpoints, and recovery from hosts that fail.
#[derive(Debug, clap::Args)]
struct RecoveryArgs {
    /// Keep the latest checkpoint (every layer's state, momentum included, and the batches
    /// done) in DIR, written atomically, so that `--resume DIR` can go on after the designer
    /// itself stopped.
    #[arg(long, value_name = "DIR")]
    checkpoint: Option<PathBuf>,
    /// Go on from the checkpoint in DIR (with the same spec, data, seed and order), and keep
    /// checkpointing there: the result is bit for bit that of a run that never stopped.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["checkpoint", "init_weights"])]
    resume: Option<PathBuf>,
    /// Batches between checkpoints [default: as many as keep them under 5% of the training
    /// time, from their measured cost].
    #[arg(long, value_name = "K")]
    checkpoint_every: Option<usize>,
    /// Host failures survived before giving up.
    #[arg(long, default_value_t = 16, value_name = "N")]
    max_recoveries: usize,
}

impl RecoveryArgs {
    fn options(&self) -> RecoveryOptions {
        RecoveryOptions {
            checkpoint_every: self.checkpoint_every,
            max_recoveries: self.max_recoveries,
            checkpoint_dir: self.resume.clone().or_else(|| self.checkpoint.clone()),
            ..RecoveryOptions::default()
        }
    }
}

/// Prints what a resilient session went through, as it happens.
pub(crate) fn print_event(event: &Event) {
    match event {
        Event::Failed {
            batches,
            hop,
            host,
            error,
            ..
        } => eprintln!(
            "after {batches} batches: {}{error}; recovering",
            match (hop, host) {
                (Some(hop), Some(host)) => format!("hop {hop} ({host}) failed: "),
                _ => String::new(),
            }
        ),
        Event::Recovered {
            replaced,
            hosts,
            replayed,
            seconds,
        } => eprintln!(
            "recovered in {seconds:.2} s: {} on fresh hosts, {replayed} batches replayed from \
             the last checkpoint",
            if replaced.is_empty() {
                "no position".to_owned()
            } else {
                replaced
                    .iter()
                    .map(|&p| format!("hop {p} ({})", hosts.get(p).map_or("?", String::as_str)))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        Event::Caught {
            batches,
            by,
            hop,
            host,
            probes,
            ..
        } => eprintln!(
            "after {batches} batches: {} lied (caught by {}{}); rolling back to the last \
             checkpoint without it",
            match (hop, host) {
                (Some(hop), Some(host)) => format!("hop {hop} ({host})"),
                _ => "a hop that could not be named".to_owned(),
            },
            if *by == "audit" {
                "an audit of its state"
            } else {
                "a check of the test outputs"
            },
            if *probes > 0 {
                format!(", named after {probes} probe sessions")
            } else {
                String::new()
            }
        ),
        Event::Checkpoint { .. } | Event::Audit { .. } => {}
    }
}

#[global_allocator]
static GLOBAL: mixnn_alloc::Allocator = mixnn_alloc::Allocator;

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Train(args) => train_command(args),
        Command::Data(DataCommand::Fetch(args)) => fetch_command(args),
        #[cfg(feature = "local-hosts")]
        Command::Demo(args) => demo::run(args),
        #[cfg(feature = "local-hosts")]
        Command::Bench(BenchCommand::Paper(args)) => bench::paper::run(args),
        #[cfg(feature = "local-hosts")]
        Command::Attack(args) => privacy::run(args),
        #[cfg(feature = "local-hosts")]
        Command::Predict(args) => predict::run(args),
        #[cfg(feature = "local-hosts")]
        Command::Split(args) => split::run(args),
        #[cfg(feature = "local-hosts")]
        Command::Bench(BenchCommand::Scale(args)) => bench::scale::run(args),
        #[cfg(feature = "local-hosts")]
        Command::Bench(BenchCommand::Load(args)) => bench::load::run(args),
        #[cfg(feature = "local-hosts")]
        Command::Bench(BenchCommand::Chaos(args)) => bench::chaos::run(args),
        #[cfg(feature = "local-hosts")]
        Command::Bench(BenchCommand::Floor(args)) => bench::floor::run(args),
        #[cfg(feature = "local-hosts")]
        Command::Bench(BenchCommand::Deep(args)) => bench::deep::run(args),
        #[cfg(feature = "local-hosts")]
        Command::FloorRelay {
            transport,
            frame_bytes,
        } => bench::floor::relay(transport, frame_bytes),
        #[cfg(feature = "local-hosts")]
        Command::ServeHost {
            config,
            stop_on_stdin_eof,
        } => {
            mixnn_alloc::for_many_sessions();
            Ok(mixnn_host::serve::host(&config, stop_on_stdin_eof)?)
        }
        #[cfg(feature = "local-hosts")]
        Command::ServeDirectory {
            listen,
            state,
            keys,
            max_age_s,
            stop_on_stdin_eof,
        } => Ok(mixnn_host::serve::directory(
            listen,
            state,
            &keys,
            max_age_s,
            stop_on_stdin_eof,
        )?),
    }
}

fn fetch_command(args: FetchArgs) -> Result<()> {
    let source = fetch::Source::from(args.name);
    let root = fetch::cache_root(args.cache.as_deref())?;
    let mut options = fetch::FetchOptions::for_source(source);
    if !args.mirror.is_empty() {
        options.mirrors = args.mirror;
    }
    options.stall_timeout = std::time::Duration::from_secs(args.stall_timeout.max(1));
    options.progress = true;
    let (dir, files) = fetch::fetch_source(source, &root, &options)?;
    for file in &files {
        let name = file
            .path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        match &file.from {
            Some(url) => println!("{name}: {} bytes from {url}, SHA-256 verified", file.bytes),
            None => println!(
                "{name}: {} bytes, already in the cache, SHA-256 verified",
                file.bytes
            ),
        }
    }
    println!("{} is in {}", source.title(), dir.display());
    match data::resolve_dir(None) {
        Ok(found) if found == dir => println!("commands given no --data use it"),
        Ok(found) => println!(
            "commands given no --data use {} first: pass --data {} for this one",
            found.display(),
            dir.display()
        ),
        Err(_) => println!("pass --data {} to use it", dir.display()),
    }
    Ok(())
}

fn train_command(args: TrainArgs) -> Result<()> {
    let mut spec = ModelSpec::from_file(&args.model)?;
    if let Some(seed) = args.seed {
        spec.training.seed = seed;
    }
    let splits = args.data.load()?;
    let options = TrainOptions {
        epochs: args.epochs.unwrap_or(spec.training.epochs),
        seed: spec.training.seed,
        batch_size: spec.training.batch_size,
        test_batch_size: spec.training.test_batch_size,
        progress: !args.json,
        order: args.order.order(splits.train.len())?,
        input_shape: spec.input_shape.clone(),
    };
    options.order.check(options.epochs, splits.train.len())?;
    let backend = match args.mode {
        ModeArg::Wasm => Backend::Wasm,
        ModeArg::Native => Backend::Native,
    };
    if !args.json {
        let frozen = spec.frozen_front();
        // The hosts' groups of layers the front leaves.
        let groups = spec.hosts().iter().filter(|g| g[0] >= frozen).count();
        println!(
            "{}: {} layers in {groups} hosts' groups{}, {} training / {} test examples, {}",
            spec.name,
            spec.layers.len(),
            match frozen {
                0 => String::new(),
                n => format!(" after the first {n}, frozen and kept here"),
            },
            splits.train.len(),
            splits.test.len(),
            if args.cascade.directory.is_some() {
                "over a cascade of hosts".to_owned()
            } else {
                format!("{} mode, in this process", backend.name())
            }
        );
        println!(
            "{:>5}  {:>10}  {:>8}  {:>8}  {:>8}  {:>7}",
            "epoch", "train_loss", "test_acc", "macro_f1", "train_s", "mode"
        );
    }
    let json = args.json;
    let print = move |r: &EpochReport| {
        if json {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        } else {
            println!(
                "{:>5}  {:>10.4}  {:>8.4}  {:>8.4}  {:>8.3}  {:>7}",
                r.epoch, r.train_loss, r.test_acc, r.evaluation.macro_avg.f1, r.train_s, r.mode
            );
        }
    };
    let remote = match (args.cascade.directory, &args.cascade.directory_fingerprint) {
        (Some(addr), Some(hex)) => Some(
            args.cascade.options(
                &spec,
                addr,
                hex_fingerprint::parse(hex)
                    .ok_or_else(|| anyhow!("--directory-fingerprint takes 64 hex digits"))?,
            ),
        ),
        (Some(_), None) => return Err(anyhow!("--directory needs --directory-fingerprint")),
        _ => None,
    };
    if let Some(path) = &args.save_weights {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            return Err(anyhow!(
                "--save-weights {}: no such directory",
                path.display()
            ));
        }
    }
    let (init_weights, save_weights) = (args.init_weights, args.save_weights);
    let front_weights = args.front_weights;
    let (recovery, resume) = (args.recovery.options(), args.recovery.resume.clone());
    let reports = run_in_sandbox_worker(move |sandbox| {
        let sandbox = sandbox.ok_or_else(|| anyhow!("no sandbox"))?;
        let part = Part::prepare(
            &spec,
            splits,
            (init_weights.as_deref(), front_weights.as_deref()),
            (backend, sandbox),
        )?;
        let options = TrainOptions {
            input_shape: part.spec.input_shape.clone(),
            ..options
        };
        match remote {
            None => {
                let mut cascade = Cascade::build(&part.spec, backend, Some(sandbox))?;
                if let Some(states) = &part.init {
                    cascade.import_states(states)?;
                }
                let reports = train::train(&mut cascade, &part.data, &options, print)?;
                if let Some(path) = &save_weights {
                    save(&spec, path, &part.whole(cascade.export_states()?)?)?;
                }
                Ok(reports)
            }
            Some(remote) => {
                // Features are not bytes over 255: they travel as floats.
                let remote = RemoteOptions {
                    byte_inputs: remote.byte_inputs && part.front.is_none(),
                    ..remote
                };
                // Frames are sized for one training batch: test with batches of that size too.
                let options = TrainOptions {
                    test_batch_size: options.batch_size,
                    ..options
                };
                let input = part
                    .spec
                    .batch_shape(options.batch_size, part.data.train.pixels)?;
                let start = match (&part.init, &resume) {
                    (_, Some(dir)) => {
                        let checkpoint = Checkpoint::read(dir)?;
                        if !json {
                            println!(
                                "resuming from {} after {} batches",
                                Checkpoint::path(dir).display(),
                                checkpoint.batches
                            );
                        }
                        checkpoint
                    }
                    (Some(states), None) => Checkpoint::start(states.clone()),
                    (None, None) => Checkpoint::default(),
                };
                let done = start.batches;
                let spinner = mixnn_designer::progress::spinner(!json, SETTING_UP);
                let cascade =
                    Resilient::connect(&part.spec, sandbox, &remote, &input, start, recovery);
                spinner.finish_and_clear();
                let mut cascade = cascade?;
                cascade.on_event(print_event);
                tracing::info!(hops = ?cascade.describe(), "cascade ready");
                let reports = train::train_from(&mut cascade, &part.data, &options, done, print)?;
                let states = cascade.export_states()?;
                if let Some(path) = &save_weights {
                    save(&spec, path, &part.whole(states)?)?;
                }
                cascade.close();
                Ok(reports)
            }
        }
    })?;
    if let Some(last) = reports.last().filter(|_| !json) {
        print_evaluation(last);
    }
    Ok(())
}

/// The part of a model that trains, and what it trains on: the whole model on the data, or,
/// when the spec freezes its first layers, the rest of it on their features (PrivyNet's
/// split: the designer keeps the front, see [`mixnn_designer::front`]).
struct Part {
    /// The model that trains.
    spec: ModelSpec,
    /// Its data.
    data: data::Splits,
    /// Its layers' states to start from, if not the seeded init.
    init: Option<Vec<Vec<u8>>>,
    /// The frozen front, if any.
    front: Option<mixnn_designer::front::Front>,
}

impl Part {
    /// The part of `spec` that trains; `weights` are the files of `--init-weights` (every
    /// layer) and `--front-weights` (the frozen layers only).
    fn prepare(
        spec: &ModelSpec,
        data: data::Splits,
        weights: (Option<&std::path::Path>, Option<&std::path::Path>),
        (backend, sandbox): (Backend, &Sandbox),
    ) -> Result<Self> {
        let frozen = spec.frozen_front();
        // The model's layout, from a fresh copy of it here.
        let layout = match weights {
            (None, None) => None,
            _ => {
                let mut probe = Cascade::build(spec, backend, Some(sandbox))?;
                Some(Layout::new(spec, &probe.export_states()?)?)
            }
        };
        let read = |path: Option<&std::path::Path>, flag: &str| match (path, &layout) {
            (Some(path), Some(layout)) => layout
                .read(path)
                .with_context(|| format!("{flag} {}", path.display()))
                .map(Some),
            _ => Ok(None),
        };
        let (states, front_states) = (
            read(weights.0, "--init-weights")?,
            read(weights.1, "--front-weights")?,
        );
        if frozen == 0 {
            if weights.1.is_some() {
                return Err(anyhow!(
                    "--front-weights: the model freezes no layer (frozen = true)"
                ));
            }
            return Ok(Part {
                spec: spec.clone(),
                data,
                init: states,
                front: None,
            });
        }
        let Some(front_states) = front_states.or_else(|| states.clone()) else {
            return Err(anyhow!(
                "the model's first {frozen} layers are frozen: give their pretrained weights \
                 with --front-weights (or all layers' with --init-weights)"
            ));
        };
        let started = std::time::Instant::now();
        let split = mixnn_designer::front::Split::new(spec, &data, Some(&front_states))?;
        tracing::info!(
            layers = frozen,
            features = ?split.rest.input_shape,
            seconds = started.elapsed().as_secs_f64(),
            "the frozen front's features computed here"
        );
        Ok(Part {
            spec: split.rest,
            data: split.features,
            init: states.map(|s| s[frozen..].to_vec()),
            front: Some(split.front),
        })
    }

    /// Every layer's state of the whole model, from the trained part's.
    fn whole(mut self, trained: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        let mut states = match &mut self.front {
            Some(front) => front.export_states()?,
            None => Vec::new(),
        };
        states.extend(trained);
        Ok(states)
    }
}

/// The model spec at `path`, or the paper's model (models/paper-mlp.toml, built in).
#[cfg(feature = "local-hosts")]
pub(crate) fn model_spec(path: Option<&std::path::Path>) -> Result<ModelSpec> {
    const PAPER_MODEL: &str = include_str!("../../models/paper-mlp.toml");
    Ok(match path {
        Some(path) => ModelSpec::from_file(path)?,
        None => ModelSpec::parse(PAPER_MODEL, std::env::current_dir()?)?,
    })
}

/// Writes the layers' `states` to a weights file.
fn save(spec: &ModelSpec, path: &std::path::Path, states: &[Vec<u8>]) -> Result<()> {
    Layout::new(spec, states)?
        .write(path, states)
        .with_context(|| format!("--save-weights {}", path.display()))?;
    tracing::info!(path = %path.display(), "weights saved");
    Ok(())
}

/// The data set in `dir` (or the default one), cut to the first examples if asked.
pub(crate) fn load_data(
    dir: Option<&std::path::Path>,
    train_limit: Option<usize>,
    test_limit: Option<usize>,
) -> Result<data::Splits> {
    let dir = data::resolve_dir(dir)?;
    let mut splits =
        data::load(&dir).with_context(|| format!("loading data from {}", dir.display()))?;
    if let Some(n) = train_limit {
        splits.train = splits.train.truncate(n);
    }
    if let Some(n) = test_limit {
        splits.test = splits.test.truncate(n);
    }
    Ok(splits)
}

/// Runs `job` on a sandbox worker thread (whose stack suits calls into components).
pub(crate) fn run_in_sandbox_worker<R: Send + 'static>(
    job: impl FnOnce(Option<&Sandbox>) -> Result<R> + Send + 'static,
) -> Result<R> {
    let sandbox = Arc::new(Sandbox::new(SandboxConfig::default())?);
    let worker_sandbox = Arc::clone(&sandbox);
    sandbox
        .spawn_worker("mixnn-trainer", move || job(Some(&worker_sandbox)))?
        .join()
        .map_err(|_| anyhow!("the training thread panicked"))?
}

/// What the spinner of a cascade's setup says.
pub(crate) const SETTING_UP: &str = "op=0: setting up the cascade, each host compiling its layers";

/// The last test pass's metrics for people: the per-class table (with macro averages), and
/// the confusion matrix where it stays readable.
pub(crate) fn print_evaluation(report: &EpochReport) {
    let eval = &report.evaluation;
    println!("\nper class after epoch {}:", report.epoch);
    print!("{}", eval.table());
    match eval.confusion_table() {
        Some(table) => {
            println!("\nconfusion matrix (rows: true class, columns: predicted):");
            print!("{table}");
        }
        None => println!(
            "(the confusion matrix of {} classes is in the --json lines only: printed up to {})",
            eval.confusion.classes(),
            mixnn_designer::metrics::PRINTED_CONFUSION_CLASSES
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("mixnn").chain(args.iter().copied())).unwrap()
    }

    /// The designer keeps the last layers unless told otherwise, and the flag given last wins.
    #[test]
    fn the_last_layers_stay_with_the_designer_by_default() {
        let spec = |table: &str| {
            let text = format!(
                "name = \"m\"\n[[layer]]\ncomponent = \"linear\"\nconfig = {{ in_features = 2, out_features = 2 }}\n[[layer]]\ncomponent = \"nll-loss\"\n{table}"
            );
            ModelSpec::parse(&text, PathBuf::from(".")).unwrap()
        };
        let keeps = |args: &[&str], spec: &ModelSpec| {
            let mut all = vec![
                "train",
                "--model",
                "m.toml",
                "--directory",
                "127.0.0.1:7000",
            ];
            all.extend_from_slice(args);
            let Command::Train(train) = parse(&all).command else {
                unreachable!("a train command")
            };
            train
                .cascade
                .options(spec, "127.0.0.1:7000".parse().unwrap(), [0; 32])
                .keep_last
        };
        let default = spec("");
        let off = spec("[cascade]\nkeep_last = false\n");
        assert!(keeps(&[], &default));
        assert!(!keeps(&["--no-keep-last"], &default));
        assert!(keeps(&["--no-keep-last", "--keep-last"], &default));
        assert!(!keeps(&[], &off));
        assert!(keeps(&["--keep-last"], &off));
        assert!(!keeps(&["--keep-last", "--no-keep-last"], &off));

        #[cfg(feature = "local-hosts")]
        for (args, kept) in [
            (&[][..], true),
            (&["--no-keep-last"][..], false),
            (&["--no-keep-last", "--keep-last"][..], true),
        ] {
            let mut all = vec!["demo"];
            all.extend_from_slice(args);
            let Command::Demo(demo) = parse(&all).command else {
                unreachable!("a demo command")
            };
            assert_eq!(demo.cascade.keep_last(), kept, "{args:?}");
        }
    }
}
