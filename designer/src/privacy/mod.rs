//! `mixnn attack`: what colluding hosts can learn, measured. The designer trains the model
//! over host processes with audits on (everything each host saw in the clear, with times);
//! then coalitions of hosts attack it with nothing but their members' audits
//! ([`mixnn_designer::attack`]): label leakage from the gradients each host received, and
//! model completion from the layers a coalition holds, the tensors it saw around the others
//! and labelled examples of its own. The designer's side (its weights, its data order) only
//! scores the attacks. One line per measurement, a final JSON line, `report.json` and plots.

mod record;

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use mixnn_designer::{
    attack::{
        completion::{self, Architecture, Budget, Knowledge},
        inputs::{self, DecoderBudget, Reconstruction},
        labels::{self, LabelLeak},
        linking,
        views::HostView,
    },
    backend::Backend,
    cascade::Cascade,
    data::{Dataset, Splits},
    local_cluster::LocalCluster,
    pool,
    train::TrainOptions,
};
use mixnn_wire::setup::HopSetup;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use serde::Serialize;

use crate::bench::{Machine, plot};
use crate::{DataArgs, model_spec};
use record::{Recorded, Setting};

/// `mixnn attack` options.
#[derive(Debug, clap::Args)]
pub(crate) struct AttackArgs {
    /// Model spec [default: the paper's MLP].
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Epochs the designer trains.
    #[arg(long, default_value_t = 2, value_name = "N")]
    epochs: usize,
    /// The sessions to attack: default (5 actual hosts + 2 dummies), no-dummies,
    /// keep-first, keep-last (the designer keeps the last layers from the last weight layer
    /// on) and cover (cover traffic); comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "default,no-dummies,keep-first,keep-last,cover"
    )]
    settings: Vec<String>,
    /// Labelled examples the attackers have (drawn from training examples the designer
    /// did not use); comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    labels: Vec<usize>,
    /// Coalitions drawn at random for each size k (k = 0 and all hosts: one each).
    #[arg(long, default_value_t = 4, value_name = "N")]
    coalitions: usize,
    /// Held-out test examples (not in the designer's test pass) that completed models are
    /// scored on.
    #[arg(long, default_value_t = 2000, value_name = "N")]
    eval: usize,
    /// Public images the attackers train decoders on (training examples the designer did not
    /// use).
    #[arg(long, default_value_t = 2000, value_name = "N")]
    public: usize,
    /// Designers training at once for the linking attack (with and without cover).
    #[arg(long, default_value_t = 4, value_name = "N")]
    concurrent: usize,
    /// Host processes on loopback.
    #[arg(long, default_value_t = 8, value_name = "M")]
    hosts: usize,
    /// A small run for CI (about a minute): one epoch on a slice, the default and keep-last
    /// sessions, a few coalitions, 100 labels.
    #[arg(long)]
    quick: bool,
    /// Seed of the designer's training and of the attackers' draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where report.json and the plots go.
    #[arg(long, default_value = "bench-results/attack", value_name = "DIR")]
    out: PathBuf,
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
struct Row {
    setting: String,
    attack: &'static str,
    /// Coalition size (hosts), for completion.
    #[serde(skip_serializing_if = "Option::is_none")]
    k: Option<usize>,
    /// The coalition's positions (0 = the hop after the designer).
    #[serde(skip_serializing_if = "Option::is_none")]
    positions: Option<Vec<usize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n_labels: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    architecture: Option<Architecture>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fidelity: Option<f64>,
    /// Label leakage: the host's position and role.
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    leak_auc: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    leak: Option<LabelLeak>,
    /// Linking: the share of sessions matched right, and what a blind guess gets.
    #[serde(skip_serializing_if = "Option::is_none")]
    success: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chance: Option<f64>,
    /// Position: a host's estimate of the share of the cascade after it, and the truth.
    #[serde(skip_serializing_if = "Option::is_none")]
    estimate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    truth: Option<f64>,
    /// Input reconstruction at a position.
    #[serde(skip_serializing_if = "Option::is_none")]
    inputs: Option<Reconstruction>,
}

impl Row {
    fn new(setting: &str, attack: &'static str) -> Self {
        Row {
            setting: setting.to_owned(),
            attack,
            k: None,
            positions: None,
            n_labels: None,
            architecture: None,
            accuracy: None,
            fidelity: None,
            position: None,
            role: None,
            leak_auc: None,
            leak: None,
            success: None,
            chance: None,
            estimate: None,
            truth: None,
            inputs: None,
        }
    }
}

#[derive(Debug, Serialize)]
struct Controls {
    /// The empty coalition's completion equals training from scratch on the same labels.
    k0_matches_baseline: bool,
    /// The fidelity of a coalition of every host when the designer keeps nothing.
    all_hosts_fidelity: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    summary: bool,
    rows: Vec<Row>,
    controls: Controls,
    /// The designer's model on the evaluation examples (of the last session).
    designer_accuracy: f64,
    machine: Machine,
}

/// The data: the designer's training and test slices, the attackers' labelled pool (other
/// training examples) and the held-out evaluation set (other test examples).
struct Data {
    designer: Splits,
    pool: Dataset,
    eval: Dataset,
    /// Public images the attackers train decoders on (other training examples).
    public: Dataset,
}

fn slice(data: &Dataset, from: usize, n: usize) -> Dataset {
    let from = from.min(data.len());
    let to = (from + n).min(data.len());
    Dataset {
        images: data.images[from * data.pixels..to * data.pixels].to_vec(),
        labels: data.labels[from..to].to_vec(),
        pixels: data.pixels,
    }
}

pub(crate) fn run(mut args: AttackArgs) -> Result<()> {
    if args.quick {
        args.epochs = 1;
        args.settings = vec!["default".into(), "keep-last".into()];
        args.labels = vec![100];
        args.coalitions = 1;
        args.eval = 500;
        args.public = 500;
        // 100 steps: enough for a model worth taking (about 0.75 accuracy).
        args.data.train_limit.get_or_insert(6400);
        args.data.test_limit.get_or_insert(256);
    }
    let spec = model_spec(args.model.as_deref())?;
    let train_n = args.data.train_limit.unwrap_or(12_000);
    let test_n = args.data.test_limit.unwrap_or(1000);
    let all = crate::load_data(args.data.data.as_deref(), None, None)?;
    let max_labels = args.labels.iter().copied().max().unwrap_or(0);
    let data = Data {
        designer: Splits {
            train: slice(&all.train, 0, train_n),
            test: slice(&all.test, 0, test_n),
        },
        pool: slice(&all.train, train_n, max_labels),
        eval: slice(&all.test, test_n, args.eval),
        public: slice(&all.train, train_n + max_labels, args.public),
    };
    if data.pool.len() < max_labels
        || data.eval.len() < args.eval
        || data.public.len() < args.public
    {
        return Err(anyhow!(
            "the data set is too small for {train_n} + {max_labels} training and {test_n} + {} test examples",
            args.eval
        ));
    }
    let budget = if args.quick {
        Budget {
            steps: 300,
            pair_steps: 200,
            ..Budget::default()
        }
    } else {
        Budget::default()
    };
    let decoder = if args.quick {
        DecoderBudget {
            steps: 300,
            hidden: 256,
            ..DecoderBudget::default()
        }
    } else {
        DecoderBudget {
            steps: 1000,
            ..DecoderBudget::default()
        }
    };
    let options = TrainOptions {
        epochs: args.epochs,
        seed: args.seed,
        batch_size: spec.training.batch_size,
        test_batch_size: spec.training.batch_size,
        progress: false,
        order: Default::default(),
        input_shape: spec.input_shape.clone(),
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    println!(
        "attacking {} over {} host processes: the designer trains {} epoch(s) on {} examples; attackers hold {:?} labelled examples of their own",
        spec.name,
        args.hosts,
        args.epochs,
        data.designer.train.len(),
        args.labels
    );
    let cluster = LocalCluster::start_audited(&std::env::current_exe()?, args.hosts)?;
    let mut rows = Vec::new();
    let mut designer_accuracy = 0.0;
    let mut k0_matches = true;
    let mut all_hosts_fidelity = None;
    for name in &args.settings {
        let setting = Setting::named(name)?;
        let recorded = record::record(&cluster, &spec, &data.designer, &setting, &options)
            .with_context(|| format!("the {name} session"))?;
        println!(
            "session   {name}: {} hops ({}), audits read",
            recorded.views.len(),
            (0..recorded.views.len())
                .map(|k| recorded.role(k))
                .collect::<Vec<_>>()
                .join(" -> ")
        );
        rows.extend(label_rows(&recorded)?);
        rows.extend(position_rows(&recorded));
        rows.extend(input_rows(&recorded, &spec, &data, &decoder)?);
        let mut designer = Cascade::build(&spec, Backend::Native, None)?;
        designer.import_states(&recorded.states)?;
        let reference =
            completion::predict(&mut designer, &data.eval, spec.input_shape.as_deref())?;
        designer_accuracy = share(&reference, &data.eval);
        // The baseline: the attackers' labels alone, the model trained from scratch.
        let mut baseline = Vec::new();
        for &n_labels in &args.labels {
            let scratch = completion::complete(
                &spec,
                &Knowledge::default(),
                Architecture::Known,
                &slice(&data.pool, 0, n_labels),
                &data.eval,
                &reference,
                &budget,
            )?;
            println!(
                "scratch   {name} {n_labels} labels: accuracy {:.4}, fidelity {:.4} (the designer's model: accuracy {designer_accuracy:.4})",
                scratch.accuracy, scratch.fidelity
            );
            rows.push(Row {
                k: Some(0),
                n_labels: Some(n_labels),
                accuracy: Some(scratch.accuracy),
                fidelity: Some(scratch.fidelity),
                ..Row::new(name, "scratch")
            });
            baseline.push((n_labels, scratch));
        }
        let n = recorded.views.len();
        let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0xC0A1);
        for k in 0..=n {
            for members in coalitions(n, k, args.coalitions, &mut rng) {
                let mut coalition = vec![false; n];
                for &m in &members {
                    coalition[m] = true;
                }
                let knowledge = recorded.knowledge(&coalition);
                for &n_labels in &args.labels {
                    let labelled = slice(&data.pool, 0, n_labels);
                    for arch in [Architecture::Known, Architecture::Unknown] {
                        let got = completion::complete(
                            &spec, &knowledge, arch, &labelled, &data.eval, &reference, &budget,
                        )?;
                        if k == 0 && arch == Architecture::Known {
                            let scratch = baseline.iter().find(|(b, _)| *b == n_labels);
                            k0_matches &= scratch.is_some_and(|(_, s)| *s == got);
                        }
                        if k == n
                            && !setting.keep_first
                            && !setting.keep_last
                            && arch == Architecture::Known
                        {
                            all_hosts_fidelity = Some(got.fidelity);
                        }
                        println!(
                            "complete  {name} k={k} {members:?} {n_labels} labels, {:?} architecture: accuracy {:.4}, fidelity {:.4} ({} layers trained, {} of them fitted to what the coalition saw)",
                            arch, got.accuracy, got.fidelity, got.trained_layers, got.fitted_layers
                        );
                        rows.push(Row {
                            k: Some(k),
                            positions: Some(members.clone()),
                            n_labels: Some(n_labels),
                            architecture: Some(arch),
                            accuracy: Some(got.accuracy),
                            fidelity: Some(got.fidelity),
                            ..Row::new(name, "completion")
                        });
                    }
                }
            }
        }
    }
    // Linking: several designers at once on the same hosts, with and without cover.
    let linking_data = Splits {
        train: slice(&data.designer.train, 0, 3200),
        test: slice(&data.designer.test, 0, 128),
    };
    let linking_options = TrainOptions {
        epochs: 1,
        ..options.clone()
    };
    for name in ["default", "cover"] {
        let setting = Setting::named(name)?;
        let sessions = record::record_concurrent(
            &cluster,
            &spec,
            &linking_data,
            &setting,
            &linking_options,
            args.concurrent,
        )
        .with_context(|| format!("{} concurrent {name} sessions", args.concurrent))?;
        rows.push(linking_row(name, &sessions, args.hosts));
        // The timelines themselves, for a look at what the attack saw.
        let timelines: Vec<Vec<serde_json::Value>> = sessions
            .iter()
            .map(|chain| {
                chain
                    .iter()
                    .enumerate()
                    .map(|(p, v)| {
                        serde_json::json!({
                            "host": v.host,
                            "position": p,
                            "timeline": record::timeline(v),
                        })
                    })
                    .collect()
            })
            .collect();
        std::fs::write(
            args.out.join(format!("linking-{name}.json")),
            serde_json::to_vec(&timelines)?,
        )?;
    }
    let left = cluster.shutdown()?;
    if left > 0 {
        return Err(anyhow!("{left} host processes had to be killed"));
    }
    let report = Report {
        summary: true,
        rows,
        controls: Controls {
            k0_matches_baseline: k0_matches,
            all_hosts_fidelity,
        },
        designer_accuracy,
        machine: Machine::this(),
    };
    plots(&report, &args)?;
    let json = serde_json::to_string(&report)?;
    std::fs::write(args.out.join("report.json"), &json)?;
    println!("{json}");
    Ok(())
}

fn share(predicted: &[usize], data: &Dataset) -> f64 {
    let hits = predicted
        .iter()
        .zip(&data.labels)
        .filter(|(p, l)| **p == usize::from(**l))
        .count();
    hits as f64 / predicted.len().max(1) as f64
}

/// Up to `count` distinct coalitions of `k` of `n` positions, drawn at random (the only
/// one for k = 0 and k = n).
fn coalitions(n: usize, k: usize, count: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    if k == 0 || k == n {
        return vec![(0..k).collect()];
    }
    let mut drawn: Vec<Vec<usize>> = Vec::new();
    for _ in 0..count * 20 {
        if drawn.len() == count {
            break;
        }
        let mut positions: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            positions.swap(i, pool::below(rng, i + 1));
        }
        let mut members = positions[..k].to_vec();
        members.sort_unstable();
        if !drawn.contains(&members) {
            drawn.push(members);
        }
    }
    drawn
}

/// Input reconstruction at every position that receives test inputs: a decoder trained on
/// public images and their features through the true layers before the position (a
/// coalition holding every earlier host: the worst case), applied to what the host saw.
fn input_rows(
    recorded: &Recorded,
    spec: &mixnn_designer::spec::ModelSpec,
    data: &Data,
    budget: &DecoderBudget,
) -> Result<Vec<Row>> {
    let name = &recorded.setting.name;
    let images = |d: &Dataset, n: usize| {
        mixnn_layer_sdk::Tensor::new(vec![n, d.pixels], d.images[..n * d.pixels].to_vec())
    };
    let public = images(&data.public, data.public.len())?;
    let mut done: std::collections::BTreeMap<usize, Reconstruction> = Default::default();
    let mut rows = Vec::new();
    for k in 0..recorded.views.len() {
        let Some((seen, before)) = recorded.features(k) else {
            continue;
        };
        let rows_seen = seen.shape()[0];
        let truth = images(&data.designer.test, rows_seen)?;
        let got = match done.get(&before) {
            Some(r) => r.clone(),
            None => {
                let r = if before == 0 {
                    inputs::raw_inputs(&public, &truth)?
                } else {
                    let through = front(spec, &recorded.states, before, &public)?;
                    inputs::reconstruct((&through, &public), (&seen, &truth), budget)?
                };
                done.insert(before, r.clone());
                r
            }
        };
        println!(
            "inputs    {name} hop {k} ({}): rebuilds the raw inputs from what it sees with MSE {:.4}, SSIM {:.3} (the mean image: {:.4}, {:.3})",
            recorded.role(k),
            got.mse,
            got.ssim,
            got.baseline_mse,
            got.baseline_ssim
        );
        rows.push(Row {
            position: Some(k),
            role: Some(recorded.role(k)),
            inputs: Some(got),
            ..Row::new(name, "inputs")
        });
    }
    Ok(rows)
}

/// `images` through the first `layers` layers of the model, with the designer's `states`.
fn front(
    spec: &mixnn_designer::spec::ModelSpec,
    states: &[Vec<u8>],
    layers: usize,
    images: &mixnn_layer_sdk::Tensor,
) -> Result<mixnn_layer_sdk::Tensor> {
    let mut cut = spec.clone();
    cut.layers.truncate(layers);
    // A loss layer ends every model; this one passes its input through.
    let mut loss = spec.layers[spec.layers.len() - 1].clone();
    loss.component = "mse-loss".into();
    loss.config = Default::default();
    cut.layers.push(loss);
    let mut model = Cascade::build(&cut, Backend::Native, None)?;
    let mut kept = states[..layers].to_vec();
    kept.push(Vec::new());
    model.import_states(&kept)?;
    // The images come one per row; the model takes them in its own shape.
    let n = images.shape().first().copied().unwrap_or(0);
    let shape = spec.batch_shape(n, images.len() / n.max(1))?;
    let shaped = mixnn_layer_sdk::Tensor::new(shape, images.data().to_vec())?;
    Ok(model.predict(shaped)?)
}

/// What each host guesses of its position from its own timeline, beside the truth (the
/// share of the hops after it).
fn position_rows(recorded: &Recorded) -> Vec<Row> {
    let n = recorded.views.len();
    let name = &recorded.setting.name;
    let mut rows = Vec::new();
    for (k, view) in recorded.views.iter().enumerate() {
        let estimate = linking::position_estimate(&record::timeline(view));
        let truth = (n - 1 - k) as f64 / n as f64;
        println!(
            "position  {name} hop {k} ({}): estimates {} of the cascade after it (truth {truth:.3})",
            recorded.role(k),
            estimate.map_or("nothing".into(), |e| format!("{e:.3}"))
        );
        rows.push(Row {
            position: Some(k),
            role: Some(recorded.role(k)),
            estimate,
            truth: Some(truth),
            ..Row::new(name, "position")
        });
    }
    rows
}

/// Linking over concurrent sessions: for every ordered pair of hosts, each of the first's
/// sessions matched to one of the second's by timing alone; scored where the two are not
/// neighbours (neighbours know they share a session). The mean success over pairs, and the
/// mean chance.
fn linking_row(name: &str, sessions: &[Vec<HostView>], hosts: usize) -> Row {
    // Per host: (session, position, timeline).
    let mut by_host: Vec<Vec<(usize, usize, linking::Timeline)>> = vec![Vec::new(); hosts];
    for (s, chain) in sessions.iter().enumerate() {
        for (p, view) in chain.iter().enumerate() {
            if let Some(list) = by_host.get_mut(view.host) {
                list.push((s, p, record::timeline(view)));
            }
        }
    }
    let (mut successes, mut chances) = (Vec::new(), Vec::new());
    for a in 0..hosts {
        for b in (0..hosts).filter(|&b| b != a) {
            let (sa, sb) = (&by_host[a], &by_host[b]);
            if sa.is_empty() || sb.is_empty() {
                continue;
            }
            let at: Vec<_> = sa.iter().map(|x| x.2.clone()).collect();
            let bt: Vec<_> = sb.iter().map(|x| x.2.clone()).collect();
            let guess = linking::link(&at, &bt);
            let mut scored = (0usize, 0usize);
            for (i, (s, p, _)) in sa.iter().enumerate() {
                let truth = sb.iter().position(|(t, _, _)| t == s);
                if truth.is_some_and(|j| sb[j].1.abs_diff(*p) == 1) {
                    continue;
                }
                scored.1 += 1;
                scored.0 += usize::from(guess[i] == truth);
            }
            if scored.1 > 0 {
                successes.push(scored.0 as f64 / scored.1 as f64);
                chances.push(linking::chance(bt.len()));
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (success, chance) = (mean(&successes), mean(&chances));
    println!(
        "linking   {name}: {} sessions at once on {hosts} hosts; two non-adjacent hosts match their sessions by timing {success:.3} of the time (chance {chance:.3}; {} host pairs)",
        sessions.len(),
        successes.len()
    );
    Row {
        success: Some(success),
        chance: Some(chance),
        ..Row::new(name, "linking")
    }
}

/// Label leakage at every position: what the gradients it received say of the labels.
fn label_rows(recorded: &Recorded) -> Result<Vec<Row>> {
    let name = &recorded.setting.name;
    let mut rows = Vec::new();
    for k in 0..recorded.views.len() {
        let gradients = recorded.gradient_rows(k);
        if recorded.views[k].setup["flags"].as_u64().unwrap_or(0) & u64::from(HopSetup::LOSS) != 0 {
            // The loss hop opens the labels themselves.
            println!(
                "labels    {name} hop {k} ({}): the labels, sealed for it",
                recorded.role(k)
            );
            rows.push(Row {
                position: Some(k),
                role: Some(recorded.role(k)),
                leak_auc: Some(1.0),
                ..Row::new(name, "labels")
            });
            continue;
        }
        if gradients.is_empty() {
            continue;
        }
        let labels = &recorded.row_labels[..gradients.len().min(recorded.row_labels.len())];
        let leak = labels::measure(&gradients[..labels.len()], labels, 64, 10)
            .map_err(|e| anyhow!("label leakage at hop {k}: {e}"))?;
        println!(
            "labels    {name} hop {k} ({}): exact {:.3}, direction AUC {:.3}, norm AUC {:.3}, nearest-neighbour labels {:.3} over {} rows",
            recorded.role(k),
            leak.exact,
            leak.direction_auc,
            leak.norm_auc,
            leak.nearest_same,
            leak.rows
        );
        rows.push(Row {
            position: Some(k),
            role: Some(recorded.role(k)),
            leak_auc: Some(leak.direction_auc),
            leak: Some(leak),
            ..Row::new(name, "labels")
        });
    }
    Ok(rows)
}

/// Fidelity against k (one line per labels count and architecture, the default session),
/// and the direction leak AUC by position (one line per session).
fn plots(report: &Report, args: &AttackArgs) -> Result<()> {
    let setting = args.settings.first().cloned().unwrap_or_default();
    let mut series = Vec::new();
    for &n in &args.labels {
        for arch in [Architecture::Known, Architecture::Unknown] {
            let mut by_k: std::collections::BTreeMap<usize, Vec<f64>> = Default::default();
            for r in report.rows.iter().filter(|r| {
                r.attack == "completion"
                    && r.setting == setting
                    && r.n_labels == Some(n)
                    && r.architecture == Some(arch)
            }) {
                if let (Some(k), Some(f)) = (r.k, r.fidelity) {
                    by_k.entry(k).or_default().push(f);
                }
            }
            let points = by_k
                .into_iter()
                .map(|(k, f)| (k as f64, f.iter().sum::<f64>() / f.len() as f64))
                .collect();
            series.push((format!("{n} labels, {arch:?}"), points));
        }
    }
    plot::lines(
        &args.out.join("fidelity.svg"),
        &format!("fidelity of the completed model ({setting} session)"),
        ("colluding hosts k", "agreement with the designer's model"),
        &series,
        true,
    )?;
    let leaks: Vec<_> = args
        .settings
        .iter()
        .map(|s| {
            let points = report
                .rows
                .iter()
                .filter(|r| r.attack == "labels" && &r.setting == s)
                .filter_map(|r| Some((r.position? as f64, r.leak_auc?)))
                .collect();
            (s.clone(), points)
        })
        .collect();
    plot::lines(
        &args.out.join("leak.svg"),
        "label leakage by position (direction attack)",
        ("position (0 = after the designer)", "leak AUC"),
        &leaks,
        false,
    )
}
