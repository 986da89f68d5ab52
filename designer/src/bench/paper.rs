//! `mixnn bench paper`: the paper's experiment in several modes side by side, in one run.
//!
//! Every mode starts from the same weights (drawn once, then imported, as `--init-weights`
//! does) and sees the same batches in the same order. The modes take turns epoch by epoch,
//! and the first mode of each round rotates, so the machine's noise falls on all of them alike.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use mixnn_designer::{
    backend::Backend,
    cascade::Cascade,
    local_cluster::LocalCluster,
    remote::{RemoteCascade, RemoteOptions},
    train::{self, EpochReport, TrainOptions},
};
use serde::Serialize;

use super::{Machine, median, plot};
use crate::{DataArgs, model_spec, run_in_sandbox_worker};

/// The time per epoch of PyTorch on this machine (DESIGN.md section 6: 2.15, one thread)...
const PYTORCH_S: f64 = 0.32;
/// ...over this many training examples (a shorter run is compared with its share).
const PYTORCH_EXAMPLES: usize = 24_000;
/// PyTorch's test accuracy after epochs 1, 2, 3 of the paper's model on all of that slice.
const PYTORCH_ACCURACY: [f64; 3] = [0.886, 0.924, 0.933];

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
    /// PyTorch's seconds per epoch of 24,000 examples on this machine, for the ratio (scaled
    /// to the examples of the run).
    #[arg(long, default_value_t = PYTORCH_S, value_name = "SECONDS")]
    pytorch_s: f64,
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
    vs_pytorch: f64,
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
    /// PyTorch's seconds for an epoch of `train_examples`.
    pytorch_s: f64,
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
    };
    let cluster = if modes.iter().any(|m| m.remote()) {
        let exe = std::env::current_exe().context("finding this program to start the hosts")?;
        println!(
            "starting a directory and {} hosts on loopback...",
            args.hosts
        );
        Some(LocalCluster::start(&exe, args.hosts)?)
    } else {
        None
    };
    let remote = cluster.as_ref().map(|c| RemoteOptions {
        dummies: args.dummies,
        ..c.remote_options()
    });
    let run_modes = modes.clone();
    let epochs = args.epochs;
    let (model, train_examples, test_examples) =
        (spec.name.clone(), splits.train.len(), splits.test.len());
    let (batch_size, seed) = (options.batch_size, options.seed);
    let outcome = run_in_sandbox_worker(move |sandbox| {
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
                    let input = [options.batch_size, splits.train.pixels];
                    let c = RemoteCascade::connect_from(&spec, sandbox, &remote, &input, &init)?;
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
        for epoch in 1..=epochs {
            // Rotate who goes first, so that no mode always follows the same one.
            let n = run_modes.len();
            let mut this_epoch = Vec::new();
            for k in 0..n {
                let i = (k + epoch - 1) % n;
                let r = runners[i].epoch(&splits, &options, epoch)?;
                this_epoch.push((i, r));
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
                rows.push(row);
            }
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
        Ok((rows, states, setup_s))
    });
    let killed = match cluster {
        Some(c) => c.shutdown()?,
        None => 0,
    };
    let (rows, states, setup_s) = outcome?;
    if killed > 0 {
        tracing::warn!(killed, "host processes had to be killed");
    }
    let inproc_states = modes
        .iter()
        .position(|&m| m == Mode::Inproc)
        .map(|i| &states[i]);
    let pytorch_s = args.pytorch_s * train_examples as f64 / PYTORCH_EXAMPLES as f64;
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
                vs_pytorch: med / pytorch_s,
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
            "{:>8}  {:>14.3}  {:>8}  {:>8}  {:>9.2}  {:>9.4}  {:>8}  {}",
            s.mode.name(),
            s.median_train_s,
            opt(s.vs_native, 2),
            opt(s.vs_inproc, 2),
            s.vs_pytorch,
            s.final_acc,
            opt(s.setup_s, 3),
            s.weights_identical_to_inproc.map_or("-", |same| if same {
                "bit-identical"
            } else {
                "DIFFERENT"
            })
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
        pytorch_s,
        rows,
        summary,
    };
    let json = args.out.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let accuracy = args.out.join("accuracy.svg");
    let time = args.out.join("time.svg");
    // PyTorch's accuracy is known for the paper's model on the whole slice only.
    let reference = plot::Reference {
        accuracy: if report.model == "paper-mlp" && train_examples == PYTORCH_EXAMPLES {
            &PYTORCH_ACCURACY
        } else {
            &[]
        },
        seconds: pytorch_s,
    };
    plot::figure3(&report.rows, &modes, Some(reference), &accuracy, &time)?;
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
