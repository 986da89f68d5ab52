//! `mixnn bench paper`: the paper's experiment in several modes side by side, in one run.
//!
//! Every mode starts from the same weights (drawn once, then imported, as `--init-weights`
//! does) and sees the same batches in the same order. The modes take turns epoch by epoch,
//! and the first mode of each round rotates, so the machine's noise falls on all of them alike.

use std::{
    io::{BufRead, BufReader, Lines, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, anyhow};
use mixnn_designer::{
    backend::Backend,
    cascade::Cascade,
    local_cluster::LocalCluster,
    progress,
    remote::{RemoteCascade, RemoteOptions},
    train::{self, EpochReport, TrainOptions},
};
use serde::{Deserialize, Serialize};

use super::{Machine, median, plot};
use crate::{DataArgs, model_spec, run_in_sandbox_worker};

/// The fallback, when PyTorch cannot run here: its time per epoch once measured on this
/// machine (DESIGN.md section 6: 2.15, one thread)...
const PYTORCH_S: f64 = 0.32;
/// ...over this many training examples (a shorter run is compared with its share).
const PYTORCH_EXAMPLES: usize = 24_000;
/// The fallback's test accuracy after epochs 1, 2, 3 of the paper's model on all of that slice.
const PYTORCH_ACCURACY: [f64; 3] = [0.886, 0.924, 0.933];
/// The PyTorch reference (the paper's model), run with the Python that has torch.
const PYTORCH_SCRIPT: &str = include_str!("../../../scripts/pytorch_paper.py");
/// Where the reference's Python is named, if not by `--python`.
const PYTHON_ENV: &str = "MIXNN_PYTHON";

/// How a mode runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// Host processes over QUIC on loopback, all protections on.
    Cascade,
    /// As `cascade`, with the paper's per-message RSA: every forward and backward message
    /// carries a fresh onion whose layers each wrap a key with RSA-2048 OAEP.
    Paper,
    /// The same components in this process, through the host's sandbox.
    Inproc,
    /// The same layer code compiled natively.
    Native,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Cascade => "cascade",
            Mode::Paper => "paper",
            Mode::Inproc => "inproc",
            Mode::Native => "native",
        }
    }

    fn remote(self) -> bool {
        matches!(self, Mode::Cascade | Mode::Paper)
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct PaperArgs {
    /// Model spec (TOML) [default: the paper's MLP, models/paper-mlp.toml].
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Epochs.
    #[arg(long, default_value_t = 3, value_name = "N")]
    epochs: usize,
    /// The modes, in the order of the first round.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "cascade,paper,inproc,native"
    )]
    modes: Vec<Mode>,
    /// Host processes to start for the remote modes.
    #[arg(long, default_value_t = 8, value_name = "M")]
    hosts: usize,
    /// Dummy hosts in each remote cascade.
    #[arg(long, default_value_t = 2, value_name = "R")]
    dummies: usize,
    /// Seed of the initial weights and the shuffles [default: the spec's].
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Where to write report.json, accuracy.svg and time.svg.
    #[arg(long, default_value = "bench-results/paper", value_name = "DIR")]
    out: PathBuf,
    /// The Python that runs the PyTorch reference (scripts/pytorch_paper.py) in this run, its
    /// epochs taking turns with the modes' [default: $MIXNN_PYTHON, else the first of
    /// .venv/bin/python (here, then in the repository) and python3 that imports torch].
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Do not run PyTorch: compare with the fallback, --pytorch-s.
    #[arg(long, conflicts_with = "python")]
    no_pytorch: bool,
    /// The fallback when PyTorch is not run: its seconds per epoch of 24,000 examples,
    /// measured once on this machine (scaled to the examples of the run).
    #[arg(long, default_value_t = PYTORCH_S, value_name = "SECONDS")]
    pytorch_s: f64,
    /// A one-way delay on every link of the remote modes, in milliseconds: each host and the
    /// designer hold every frame they write this long (a WAN's latency, on loopback).
    #[arg(long, default_value_t = 0.0, value_name = "MS", value_parser = parse_delay_ms)]
    link_delay_ms: f64,
}

fn parse_delay_ms(s: &str) -> Result<f64, String> {
    let ms: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=10_000.0).contains(&ms) {
        Ok(ms)
    } else {
        Err("not between 0 and 10000 ms".into())
    }
}

/// PyTorch's epoch, as the reference script reports it.
#[derive(Debug, Clone, Deserialize, Serialize)]
struct TorchEpoch {
    epoch: usize,
    train_s: f64,
    test_acc: f64,
    train_loss: f64,
    test_s: f64,
}

/// The reference script's first line, once it has loaded the data.
#[derive(Debug, Deserialize)]
struct TorchReady {
    torch: String,
    threads: usize,
    train_examples: usize,
    test_examples: usize,
}

/// The PyTorch reference running beside the modes, one epoch per line written to it.
struct Torch {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    python: PathBuf,
    version: String,
    threads: usize,
}

/// Whether `python` can import torch.
fn has_torch(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import torch"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The Python to run the reference with: `explicit` or $MIXNN_PYTHON, which must import torch
/// (an error if not), else the first candidate that does (`Err` says which were tried).
fn find_python(explicit: Option<&Path>) -> Result<std::result::Result<PathBuf, String>> {
    let named = explicit.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(PYTHON_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    });
    if let Some(python) = named {
        return if has_torch(&python) {
            Ok(Ok(python))
        } else {
            Err(anyhow!(
                "{} cannot import torch (see README.md, Benchmarks, for the venv)",
                python.display()
            ))
        };
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        PathBuf::from(".venv/bin/python"),
        repo.join(".venv/bin/python"),
        PathBuf::from("python3"),
    ];
    Ok(candidates
        .iter()
        .find(|p| has_torch(p))
        .cloned()
        .ok_or_else(|| {
            let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            format!("no Python that imports torch (tried {})", tried.join(", "))
        }))
}

impl Torch {
    /// Starts the reference with `args`, and waits until it has loaded the `examples` (train,
    /// test) the modes train and test on.
    fn start(python: PathBuf, args: &[String], examples: (usize, usize)) -> Result<Self> {
        let mut child = Command::new(&python)
            .arg("-c")
            .arg(PYTORCH_SCRIPT)
            .args(args)
            .arg("--step")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", python.display()))?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let stdout = stdout.ok_or_else(|| anyhow!("{}: no stdout", python.display()))?;
        let mut torch = Torch {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            python,
            version: String::new(),
            threads: 0,
        };
        let ready: TorchReady = torch.line()?;
        tracing::debug!(?ready, "PyTorch ready");
        if (ready.train_examples, ready.test_examples) != examples {
            return Err(anyhow!(
                "the PyTorch reference loaded {} training and {} test examples, not {examples:?}",
                ready.train_examples,
                ready.test_examples
            ));
        }
        torch.version = ready.torch;
        torch.threads = ready.threads;
        Ok(torch)
    }

    /// The next line of the script's output, as `T`.
    fn line<T: for<'de> Deserialize<'de>>(&mut self) -> Result<T> {
        let line = self
            .lines
            .next()
            .ok_or_else(|| anyhow!("the PyTorch reference ended early"))?
            .context("reading the PyTorch reference")?;
        serde_json::from_str(&line).with_context(|| format!("the PyTorch reference said {line:?}"))
    }

    /// Runs one epoch.
    fn epoch(&mut self) -> Result<TorchEpoch> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("the PyTorch reference is closed"))?;
        stdin
            .write_all(b"\n")
            .and_then(|()| stdin.flush())
            .context("starting a PyTorch epoch")?;
        self.line()
    }

    /// Lets the script print its summary and end.
    fn close(mut self) {
        self.stdin = None;
        for line in self.lines.by_ref().map_while(|l| l.ok()) {
            tracing::debug!(%line, "PyTorch");
        }
        let _ = self.child.wait();
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        // A bench that failed half-way leaves no Python behind.
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What the "x PyTorch" ratios compare with.
#[derive(Debug, Serialize)]
struct PytorchReport {
    /// Run here, in this run; else the fallback constant (or `--pytorch-s`), scaled.
    measured: bool,
    /// Seconds per epoch of `train_examples`: the measured median, or the fallback (which
    /// exists for the paper's model only: none for another model not measured).
    median_train_s: Option<f64>,
    /// Why it was not measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    fallback_because: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    python: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    torch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threads: Option<usize>,
    /// Every epoch, as measured.
    rows: Vec<TorchEpoch>,
}

/// One mode's model.
enum Runner {
    Local(Cascade),
    Remote(Box<RemoteCascade>),
}

impl Runner {
    fn epoch(
        &mut self,
        data: &mixnn_designer::data::Splits,
        options: &TrainOptions,
        epoch: usize,
    ) -> Result<EpochReport> {
        Ok(match self {
            Runner::Local(c) => train::train_epoch(c, data, options, epoch)?,
            Runner::Remote(c) => train::train_epoch(c.as_mut(), data, options, epoch)?,
        })
    }

    fn states(&mut self) -> Result<Vec<Vec<u8>>> {
        Ok(match self {
            Runner::Local(c) => c.export_states()?,
            Runner::Remote(c) => c.export_states()?,
        })
    }
}

/// One epoch of one mode, as reported.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) epoch: usize,
    pub(crate) mode: Mode,
    pub(crate) test_acc: f64,
    pub(crate) train_loss: f64,
    pub(crate) train_s: f64,
    pub(crate) test_s: f64,
    /// `train_s` over native's in the same epoch.
    vs_native: Option<f64>,
    /// `train_s` over inproc's in the same epoch.
    vs_inproc: Option<f64>,
    /// `test_acc` minus inproc's in the same epoch.
    acc_minus_inproc: Option<f64>,
}

/// A mode over the whole run.
#[derive(Debug, Serialize)]
struct Summary {
    mode: Mode,
    median_train_s: f64,
    vs_native: Option<f64>,
    vs_inproc: Option<f64>,
    vs_pytorch: Option<f64>,
    final_acc: f64,
    /// op=0 end to end (remote modes).
    setup_s: Option<f64>,
    /// Final weights equal inproc's bit for bit.
    weights_identical_to_inproc: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    model: String,
    machine: Machine,
    epochs: usize,
    train_examples: usize,
    test_examples: usize,
    batch_size: usize,
    hosts: usize,
    dummies: usize,
    seed: u64,
    /// One-way delay added to every link of the remote modes, milliseconds.
    link_delay_ms: f64,
    /// What the "x PyTorch" ratios compare with.
    pytorch: PytorchReport,
    rows: Vec<Row>,
    summary: Vec<Summary>,
}

pub(crate) fn run(args: PaperArgs) -> Result<()> {
    // Each mode once, in the order given.
    let mut modes: Vec<Mode> = Vec::new();
    for &m in &args.modes {
        if !modes.contains(&m) {
            modes.push(m);
        }
    }
    if modes.is_empty() {
        return Err(anyhow!("--modes names no mode"));
    }
    let mut spec = model_spec(args.model.as_deref())?;
    if let Some(seed) = args.seed {
        spec.training.seed = seed;
    }
    let splits = args.data.load()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let options = TrainOptions {
        epochs: args.epochs,
        seed: spec.training.seed,
        batch_size: spec.training.batch_size,
        // Frames carry one training batch: every mode tests in batches of that size.
        test_batch_size: spec.training.batch_size,
        progress: false,
        order: Default::default(),
        input_shape: spec.input_shape.clone(),
    };
    // PyTorch first: when it cannot run, the fallback is known before the long part.
    let (torch, fallback_because) = if args.no_pytorch {
        (None, Some("--no-pytorch".to_owned()))
    } else if pytorch_model(&spec.name).is_none() {
        let why = format!(
            "the PyTorch script has the paper's MLP and LeNet-5, not {}",
            spec.name
        );
        (None, Some(why))
    } else {
        match find_python(args.python.as_deref())? {
            Ok(python) => {
                let dir = mixnn_designer::data::resolve_dir(args.data.data.as_deref())?;
                let t = &spec.training;
                let script_args = [
                    (
                        "--model",
                        pytorch_model(&spec.name).unwrap_or_default().to_owned(),
                    ),
                    ("--data", dir.to_string_lossy().into_owned()),
                    ("--train-limit", splits.train.len().to_string()),
                    ("--test-limit", splits.test.len().to_string()),
                    ("--epochs", args.epochs.to_string()),
                    ("--seed", t.seed.to_string()),
                    ("--batch-size", t.batch_size.to_string()),
                    ("--lr", t.lr.to_string()),
                    ("--momentum", t.momentum.to_string()),
                ]
                .into_iter()
                .flat_map(|(k, v)| [k.to_owned(), v])
                .collect::<Vec<_>>();
                println!(
                    "starting the PyTorch reference with {}...",
                    python.display()
                );
                (
                    Some(Torch::start(
                        python,
                        &script_args,
                        (splits.train.len(), splits.test.len()),
                    )?),
                    None,
                )
            }
            Err(why) => (None, Some(why)),
        }
    };
    let torch_info = torch
        .as_ref()
        .map(|t| (t.python.display().to_string(), t.version.clone(), t.threads));
    if let Some(why) = &fallback_because {
        if pytorch_model(&spec.name) == Some("paper-mlp") {
            println!("PyTorch is not measured ({why}): the ratios use the fallback, --pytorch-s");
        } else {
            println!("PyTorch is not measured ({why}): no ratios to PyTorch");
        }
    }
    let link_delay = Duration::from_secs_f64(args.link_delay_ms / 1e3);
    let cluster = if modes.iter().any(|m| m.remote()) {
        let exe = std::env::current_exe().context("finding this program to start the hosts")?;
        println!(
            "starting a directory and {} hosts on loopback{}...",
            args.hosts,
            if link_delay.is_zero() {
                String::new()
            } else {
                format!(", every link {} ms one way", args.link_delay_ms)
            }
        );
        Some(LocalCluster::start_with_link_delay(
            &exe, args.hosts, link_delay,
        )?)
    } else {
        None
    };
    let remote = cluster.as_ref().map(|c| RemoteOptions {
        dummies: args.dummies,
        link_delay,
        ..c.remote_options()
    });
    let run_modes = modes.clone();
    let epochs = args.epochs;
    let (model, train_examples, test_examples) =
        (spec.name.clone(), splits.train.len(), splits.test.len());
    let (batch_size, seed) = (options.batch_size, options.seed);
    let outcome = run_in_sandbox_worker(move |sandbox| {
        let mut torch = torch;
        let sandbox = sandbox.ok_or_else(|| anyhow!("no sandbox"))?;
        // The initial weights, drawn once.
        let init = Cascade::build(&spec, Backend::Wasm, Some(sandbox))?.export_states()?;
        let mut runners = Vec::new();
        let mut setup_s = Vec::new();
        for &mode in &run_modes {
            let runner = match mode {
                Mode::Inproc | Mode::Native => {
                    let backend = if mode == Mode::Native {
                        Backend::Native
                    } else {
                        Backend::Wasm
                    };
                    let mut c = Cascade::build(&spec, backend, Some(sandbox))?;
                    c.import_states(&init)?;
                    setup_s.push(None);
                    Runner::Local(c)
                }
                Mode::Cascade | Mode::Paper => {
                    let mut remote = remote.clone().ok_or_else(|| anyhow!("no cluster"))?;
                    remote.per_message_rsa = mode == Mode::Paper;
                    let input = spec.batch_shape(options.batch_size, splits.train.pixels)?;
                    let spinner =
                        progress::spinner(true, format!("{}: {}", mode.name(), crate::SETTING_UP));
                    let c = RemoteCascade::connect_from(&spec, sandbox, &remote, &input, &init);
                    spinner.finish_and_clear();
                    let c = c?;
                    println!(
                        "{}: session set up in {:.0} ms over {}",
                        mode.name(),
                        c.setup_time().as_secs_f64() * 1e3,
                        c.describe().join(" -> ")
                    );
                    setup_s.push(Some(c.setup_time().as_secs_f64()));
                    Runner::Remote(Box::new(c))
                }
            };
            runners.push(runner);
        }
        println!(
            "\n{:>5}  {:>8}  {:>8}  {:>9}  {:>8}  {:>8}  {:>8}",
            "epoch", "mode", "test_acc", "acc-inproc", "train_s", "x native", "x inproc"
        );
        let mut rows: Vec<Row> = Vec::new();
        let mut torch_rows: Vec<TorchEpoch> = Vec::new();
        let n = run_modes.len();
        let turns = n + usize::from(torch.is_some());
        // Advanced between turns only, outside what they time.
        let bar = progress::bar(
            true,
            epochs * turns,
            "{msg} [{bar:30}] {pos}/{len} epochs of modes, {elapsed} elapsed, eta {eta}",
        );
        for epoch in 1..=epochs {
            // Rotate who goes first, so that no mode always follows the same one; PyTorch
            // (turn `n`) takes its turn among them.
            let mut this_epoch = Vec::new();
            let mut torch_epoch = None;
            for k in 0..turns {
                let i = (k + epoch - 1) % turns;
                let name = run_modes.get(i).map_or("pytorch", |m| m.name());
                bar.set_message(format!("epoch {epoch}/{epochs}: {name}"));
                match &mut torch {
                    Some(t) if i == n => torch_epoch = Some(t.epoch()?),
                    _ => this_epoch.push((i, runners[i].epoch(&splits, &options, epoch)?)),
                }
                bar.inc(1);
            }
            this_epoch.sort_by_key(|(i, _)| *i);
            let find = |m: Mode| {
                this_epoch
                    .iter()
                    .find(|(i, _)| run_modes[*i] == m)
                    .map(|(_, r)| r.clone())
            };
            let (native, inproc) = (find(Mode::Native), find(Mode::Inproc));
            for (i, r) in &this_epoch {
                let row = Row {
                    epoch,
                    mode: run_modes[*i],
                    test_acc: r.test_acc,
                    train_loss: r.train_loss,
                    train_s: r.train_s,
                    test_s: r.test_s,
                    vs_native: native.as_ref().map(|n| r.train_s / n.train_s.max(1e-9)),
                    vs_inproc: inproc.as_ref().map(|n| r.train_s / n.train_s.max(1e-9)),
                    acc_minus_inproc: inproc.as_ref().map(|n| r.test_acc - n.test_acc),
                };
                let ratio = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2}"));
                bar.suspend(|| {
                    println!(
                        "{:>5}  {:>8}  {:>8.4}  {:>9}  {:>8.3}  {:>8}  {:>8}",
                        epoch,
                        row.mode.name(),
                        row.test_acc,
                        row.acc_minus_inproc
                            .map_or("-".to_owned(), |d| format!("{d:+.4}")),
                        row.train_s,
                        ratio(row.vs_native),
                        ratio(row.vs_inproc)
                    );
                });
                rows.push(row);
            }
            if let Some(t) = torch_epoch {
                let ratio = |base: &Option<EpochReport>| {
                    base.as_ref().map_or("-".to_owned(), |b| {
                        format!("{:.2}", t.train_s / b.train_s.max(1e-9))
                    })
                };
                bar.suspend(|| {
                    println!(
                        "{:>5}  {:>8}  {:>8.4}  {:>9}  {:>8.3}  {:>8}  {:>8}",
                        epoch,
                        "pytorch",
                        t.test_acc,
                        "-",
                        t.train_s,
                        ratio(&native),
                        ratio(&inproc)
                    );
                });
                torch_rows.push(t);
            }
        }
        bar.finish_and_clear();
        if let Some(t) = torch.take() {
            t.close();
        }
        let mut states = Vec::new();
        for runner in &mut runners {
            states.push(runner.states()?);
        }
        for runner in runners {
            if let Runner::Remote(c) = runner {
                c.close();
            }
        }
        Ok((rows, states, setup_s, torch_rows))
    });
    let killed = match cluster {
        Some(c) => c.shutdown()?,
        None => 0,
    };
    let (rows, states, setup_s, torch_rows) = outcome?;
    if killed > 0 {
        tracing::warn!(killed, "host processes had to be killed");
    }
    let inproc_states = modes
        .iter()
        .position(|&m| m == Mode::Inproc)
        .map(|i| &states[i]);
    let pytorch = match fallback_because {
        None => PytorchReport {
            measured: true,
            median_train_s: Some(median(torch_rows.iter().map(|r| r.train_s).collect())),
            fallback_because: None,
            python: torch_info.as_ref().map(|i| i.0.clone()),
            torch: torch_info.as_ref().map(|i| i.1.clone()),
            threads: torch_info.map(|i| i.2),
            rows: torch_rows,
        },
        Some(why) => PytorchReport {
            measured: false,
            median_train_s: (model == "paper-mlp")
                .then(|| args.pytorch_s * train_examples as f64 / PYTORCH_EXAMPLES as f64),
            fallback_because: Some(why),
            python: None,
            torch: None,
            threads: None,
            rows: Vec::new(),
        },
    };
    let pytorch_s = pytorch.median_train_s;
    let median_of = |m: Mode| {
        median(
            rows.iter()
                .filter(|r| r.mode == m)
                .map(|r| r.train_s)
                .collect(),
        )
    };
    let summary: Vec<Summary> = modes
        .iter()
        .enumerate()
        .map(|(i, &m)| {
            let med = median_of(m);
            let base = |b: Mode| modes.contains(&b).then(|| med / median_of(b).max(1e-9));
            Summary {
                mode: m,
                median_train_s: med,
                vs_native: base(Mode::Native),
                vs_inproc: base(Mode::Inproc),
                vs_pytorch: pytorch_s.map(|p| med / p),
                final_acc: rows
                    .iter()
                    .rfind(|r| r.mode == m)
                    .map_or(f64::NAN, |r| r.test_acc),
                setup_s: setup_s[i],
                weights_identical_to_inproc: inproc_states.map(|s| *s == states[i]),
            }
        })
        .collect();
    println!(
        "\n{:>8}  {:>14}  {:>8}  {:>8}  {:>9}  {:>9}  {:>8}  weights = inproc's",
        "mode", "median train_s", "x native", "x inproc", "x PyTorch", "final acc", "setup_s",
    );
    let opt = |x: Option<f64>, digits: usize| x.map_or("-".to_owned(), |x| format!("{x:.digits$}"));
    for s in &summary {
        println!(
            "{:>8}  {:>14.3}  {:>8}  {:>8}  {:>9}  {:>9.4}  {:>8}  {}",
            s.mode.name(),
            s.median_train_s,
            opt(s.vs_native, 2),
            opt(s.vs_inproc, 2),
            opt(s.vs_pytorch, 2),
            s.final_acc,
            opt(s.setup_s, 3),
            s.weights_identical_to_inproc.map_or("-", |same| if same {
                "bit-identical"
            } else {
                "DIFFERENT"
            })
        );
    }
    if pytorch.measured {
        println!(
            "{:>8}  {:>14.3}  (measured in this run: torch {}, {} thread(s), final acc {:.4})",
            "pytorch",
            pytorch_s.unwrap_or(f64::NAN),
            pytorch.torch.as_deref().unwrap_or("?"),
            pytorch.threads.unwrap_or(0),
            pytorch.rows.last().map_or(f64::NAN, |r| r.test_acc)
        );
    } else if let Some(pytorch_s) = pytorch_s {
        println!(
            "{:>8}  {:>14.3}  (NOT measured: the fallback, --pytorch-s {} s per 24,000 examples, \
             scaled; {})",
            "pytorch",
            pytorch_s,
            args.pytorch_s,
            pytorch.fallback_because.as_deref().unwrap_or("")
        );
    } else {
        println!(
            "{:>8}  {:>14}  (NOT measured, and no fallback for {model}: {})",
            "pytorch",
            "-",
            pytorch.fallback_because.as_deref().unwrap_or("")
        );
    }
    let report = Report {
        bench: "paper",
        model,
        machine: Machine::this(),
        epochs,
        train_examples,
        test_examples,
        batch_size,
        hosts: args.hosts,
        dummies: args.dummies,
        seed,
        link_delay_ms: args.link_delay_ms,
        pytorch,
        rows,
        summary,
    };
    let json = args.out.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let accuracy = args.out.join("accuracy.svg");
    let time = args.out.join("time.svg");
    // Measured, PyTorch's accuracy is this run's; the fallback's is known for the paper's
    // model on the whole slice only.
    let measured_acc: Vec<f64> = report.pytorch.rows.iter().map(|r| r.test_acc).collect();
    let reference = pytorch_s.map(|seconds| plot::Reference {
        accuracy: if report.pytorch.measured {
            &measured_acc
        } else if report.model == "paper-mlp" && train_examples == PYTORCH_EXAMPLES {
            &PYTORCH_ACCURACY
        } else {
            &[]
        },
        seconds,
    });
    plot::figure3(&report.rows, &modes, reference, &accuracy, &time)?;
    println!(
        "\nwrote {}, {} and {}",
        json.display(),
        accuracy.display(),
        time.display()
    );
    // The bench's claim: the cascade trains exactly as in process.
    for s in &report.summary {
        if s.mode.remote() && s.weights_identical_to_inproc == Some(false) {
            return Err(anyhow!(
                "{}: the final weights differ from inproc's",
                s.mode.name()
            ));
        }
    }
    Ok(())
}

/// The script's name for the model a spec names, if it has that model.
fn pytorch_model(spec_name: &str) -> Option<&'static str> {
    match spec_name {
        "paper-mlp" => Some("paper-mlp"),
        "lenet5-fashion" => Some("lenet5"),
        "vgg-fashion" => Some("vgg"),
        _ => None,
    }
}
