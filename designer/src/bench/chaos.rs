//! `mixnn bench chaos`: the paper's experiment over host processes while hosts of the cascade
//! are killed with SIGKILL at random moments (during training, the test pass, and the op=0 of
//! a recovery); the designer must notice each one, name it, recover, and end with weights bit
//! for bit those of the same training in this process. One line per event, a final JSON line
//! and report.json.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::ProgressBar;
use mixnn_designer::{
    backend::Backend,
    cascade::Cascade,
    local_cluster::LocalCluster,
    pool, progress,
    recovery::{Checkpoint, Event, RecoveryError, RecoveryOptions, Resilient},
    remote::RemoteOptions,
    train::{self, Model, TrainOptions},
};
use mixnn_layer_sdk::Tensor;
use serde::Serialize;

use super::{Machine, median, write_report};
use crate::{DataArgs, model_spec, run_in_sandbox_worker};

#[derive(Debug, clap::Args)]
pub(crate) struct ChaosArgs {
    /// Hosts of the cascade to kill, one after the other.
    #[arg(long, default_value_t = 10, value_name = "N")]
    kills: usize,
    /// Hosts of the first cascade that lie, each from a random frame on: the first skips its
    /// updates (at the first hop, which has weights), the others perturb their activations
    /// (anywhere); they are never the ones killed.
    #[arg(long, default_value_t = 0, value_name = "L")]
    liars: usize,
    /// Host processes [default: the cascade's hosts, one per kill and liar, and one spare;
    /// group testing of a liar draws a few more].
    #[arg(long, value_name = "M")]
    hosts: Option<usize>,
    /// Every this many kills, one lands in the op=0 of a recovery (0: none).
    #[arg(long, default_value_t = 4, value_name = "K")]
    setup_kill_every: usize,
    /// Epochs.
    #[arg(long, default_value_t = 1, value_name = "N")]
    epochs: usize,
    /// Dummy hosts in the cascade.
    #[arg(long, default_value_t = 2, value_name = "R")]
    dummies: usize,
    /// Batches between checkpoints [default: as many as keep them under 5% of the training
    /// time].
    #[arg(long, value_name = "K")]
    checkpoint_every: Option<usize>,
    #[command(flatten)]
    data: DataArgs,
    /// Where to write report.json.
    #[arg(long, default_value = "bench-results/chaos", value_name = "DIR")]
    out: PathBuf,
}

/// A liar, and what the designer made of it.
#[derive(Debug, Clone, Serialize)]
struct Liar {
    host: String,
    lie: String,
    /// It lies from its this-many-th forward or test frame on.
    from_frame: usize,
    /// Its position in the first cascade.
    position: usize,
    caught_after_batches: Option<u64>,
    named_hop: Option<usize>,
}

/// A kill, and what the designer made of it.
#[derive(Debug, Clone, Serialize)]
struct Kill {
    host: String,
    pid: u32,
    /// Steps (training batches and test batches) done when it happened.
    at_step: u64,
    /// Aimed at the op=0 of a recovery.
    during_recovery: bool,
    /// The step the designer was in when it noticed.
    step: Option<String>,
    /// The position the designer named.
    named_hop: Option<usize>,
    detect_s: Option<f64>,
    recovery_s: Option<f64>,
    #[serde(skip)]
    when: Instant,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    hosts: usize,
    cascade: Vec<String>,
    epochs: usize,
    kills: usize,
    recovered: usize,
    liars: usize,
    /// Liars caught and named.
    caught: usize,
    /// Audits run, and the share of the training time they took.
    audits: usize,
    audit_share: f64,
    /// Failures beyond one per kill (a dead host picked again from a stale pool, say).
    other_failures: usize,
    lost_batches: u64,
    repeated_batches: u64,
    weights_identical: bool,
    test_acc_identical: bool,
    detect_s_median: f64,
    recovery_s_median: f64,
    checkpoints: usize,
    checkpoint_s_total: f64,
    train_s: f64,
    kill_log: Vec<Kill>,
    liar_log: Vec<Liar>,
}

/// What the killer and the training thread share.
#[derive(Default)]
struct Shared {
    /// The current session's hosts.
    hosts: Vec<String>,
    /// Failures not yet followed by a recovery.
    recovering: bool,
    /// Failures seen so far.
    failures: usize,
}

/// A model that counts its steps, so that kills can aim at moments of the run (and people
/// can watch it on `bar`).
struct Counted<'m, 's> {
    inner: &'m mut Resilient<'s>,
    steps: Arc<AtomicU64>,
    bar: ProgressBar,
}

impl Model for Counted<'_, '_> {
    type Error = RecoveryError;

    fn mode(&self) -> String {
        self.inner.mode()
    }

    fn train_step(&mut self, input: Tensor, target: Tensor) -> Result<f32, RecoveryError> {
        let loss = self.inner.train_step(input, target);
        self.steps.fetch_add(1, Ordering::SeqCst);
        self.bar.inc(1);
        loss
    }

    fn predict(&mut self, input: Tensor) -> Result<Tensor, RecoveryError> {
        let out = self.inner.predict(input);
        self.steps.fetch_add(1, Ordering::SeqCst);
        self.bar.inc(1);
        out
    }
}

pub(crate) fn run(args: ChaosArgs) -> Result<()> {
    let mut spec = model_spec(None)?;
    spec.cascade.dummies = args.dummies;
    let splits = args.data.load()?;
    let positions = spec.hosts().len() + args.dummies;
    let hosts = args
        .hosts
        .unwrap_or(positions + args.kills + 4 * args.liars + 1);
    if args.liars > positions {
        bail!("{} liars do not fit a {positions}-hop cascade", args.liars);
    }
    if hosts < positions + args.kills {
        bail!(
            "{} kills of a {positions}-hop cascade need at least {} hosts (killed hosts do not \
             come back); --hosts is {hosts}",
            args.kills,
            positions + args.kills
        );
    }
    let exe = std::env::current_exe().context("finding the mixnn binary")?;
    println!("starting a directory and {hosts} hosts...");
    let per_epoch = splits.train.len().div_ceil(spec.training.batch_size)
        + splits.test.len().div_ceil(spec.training.batch_size);
    let total_steps = (per_epoch * args.epochs) as u64;
    // Liars are hosts 0..liars, each lying its own way from a random frame of the run on.
    let mut rng = pool::system_rng();
    let lies: Vec<(&str, usize)> = (0..args.liars)
        .map(|i| {
            let kind = if i == 0 {
                "skip-update"
            } else {
                "perturb-forward"
            };
            let from = 10 + pool::below(&mut rng, usize::try_from(total_steps / 2).unwrap_or(10));
            (kind, from)
        })
        .collect();
    let configs: Vec<String> = lies
        .iter()
        .map(|(kind, from)| format!("[faults]\nlie = \"{kind}\"\nlie_from = {from}\n"))
        .collect();
    let cluster =
        LocalCluster::start_each(&exe, hosts, |i| configs.get(i).cloned().unwrap_or_default())?;
    let liar_hosts: Vec<(String, [u8; 32])> = (0..args.liars)
        .map(|i| {
            let dir = cluster.host_dir(i).ok_or_else(|| anyhow!("no host {i}"))?;
            let keys = mixnn_host::keys::HostKeys::load(&dir.join("keys"))?;
            Ok((cluster.host_addrs[i].to_string(), keys.tls.fingerprint()))
        })
        .collect::<Result<_>>()?;
    // The first cascade: the first liar at the first hop (layer 0, with weights: dummies go
    // between actual hops), the others at random positions of their own.
    let mut first: Vec<Option<[u8; 32]>> = vec![None; positions];
    let mut liar_log = Vec::new();
    for (i, (address, fingerprint)) in liar_hosts.iter().enumerate() {
        let free: Vec<usize> = (0..positions).filter(|&p| first[p].is_none()).collect();
        let at = if i == 0 {
            0
        } else {
            free[pool::below(&mut rng, free.len())]
        };
        first[at] = Some(*fingerprint);
        liar_log.push(Liar {
            host: address.clone(),
            lie: lies[i].0.to_owned(),
            from_frame: lies[i].1,
            position: at,
            caught_after_batches: None,
            named_hop: None,
        });
    }
    let liar_addrs: Vec<String> = liar_hosts.iter().map(|(a, _)| a.clone()).collect();
    let pids: HashMap<String, u32> = (0..hosts)
        .filter_map(|i| Some((cluster.host_addrs[i].to_string(), cluster.host_pid(i)?)))
        .collect();
    let options = TrainOptions {
        epochs: args.epochs,
        seed: spec.training.seed,
        batch_size: spec.training.batch_size,
        test_batch_size: spec.training.batch_size,
        progress: false,
        order: Default::default(),
        input_shape: spec.input_shape.clone(),
    };
    let remote = RemoteOptions {
        dummies: args.dummies,
        ..cluster.remote_options()
    };
    let recovery = RecoveryOptions {
        checkpoint_every: args.checkpoint_every,
        max_recoveries: 2 * args.kills + 8,
        ..RecoveryOptions::default()
    };
    let (kills, setup_every) = (args.kills, args.setup_kill_every);
    let report = run_in_sandbox_worker(move |sandbox| {
        let sandbox = sandbox.ok_or_else(|| anyhow!("no sandbox"))?;
        println!("training in this process...");
        let mut local = Cascade::build(&spec, Backend::Wasm, Some(sandbox))?;
        let local_reports = train::train(&mut local, &splits, &options, |_| {})?;
        let local_states = local.export_states()?;
        let input = spec.batch_shape(options.batch_size, splits.train.pixels)?;
        let spinner = progress::spinner(true, crate::SETTING_UP);
        let model = Resilient::connect_on(
            &spec,
            sandbox,
            &remote,
            &input,
            Checkpoint::default(),
            recovery,
            first,
        );
        spinner.finish_and_clear();
        let mut model = model?;
        // Steps of training and testing; lines printed meanwhile go above it.
        let bar = progress::bar(
            true,
            usize::try_from(total_steps).unwrap_or(usize::MAX),
            "steps over the cascade [{bar:30}] {pos}/{len}, {elapsed} elapsed, eta {eta}",
        );
        let cascade = model.describe();
        println!("cascade: {}", cascade.join(" -> "));
        let shared = Arc::new(Mutex::new(Shared {
            hosts: model.hosts().iter().map(|h| h.address.clone()).collect(),
            ..Shared::default()
        }));
        let on_event = Arc::clone(&shared);
        let event_bar = bar.clone();
        model.on_event(move |event| {
            event_bar.suspend(|| crate::print_event(event));
            let mut s = lock(&on_event);
            match event {
                Event::Failed { .. } => {
                    s.recovering = true;
                    s.failures += 1;
                }
                Event::Recovered { hosts, .. } => {
                    s.recovering = false;
                    s.hosts.clone_from(hosts);
                }
                Event::Caught { .. } => {
                    s.recovering = true;
                    s.failures += 1;
                }
                Event::Checkpoint { .. } | Event::Audit { .. } => {}
            }
        });
        let steps = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let killer = {
            let (shared, steps, done) =
                (Arc::clone(&shared), Arc::clone(&steps), Arc::clone(&done));
            let bar = bar.clone();
            // Liars are caught, not killed.
            let pids: HashMap<String, u32> = pids
                .into_iter()
                .filter(|(a, _)| !liar_addrs.contains(a))
                .collect();
            std::thread::spawn(move || {
                killer(
                    kills,
                    setup_every,
                    total_steps,
                    &pids,
                    (&shared, &steps, &done),
                    &bar,
                )
            })
        };
        let started = Instant::now();
        let trained = train::train(
            &mut Counted {
                inner: &mut model,
                steps: Arc::clone(&steps),
                bar: bar.clone(),
            },
            &splits,
            &options,
            |_| {},
        );
        let train_s = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        done.store(true, Ordering::SeqCst);
        let kill_log = killer
            .join()
            .map_err(|_| anyhow!("the killer thread panicked"))?;
        let reports = trained?;
        let states = model.export_states()?;
        let events = model.events().to_vec();
        let batches_done = model.batches();
        model.close();
        let expected_batches =
            (splits.train.len().div_ceil(options.batch_size) * options.epochs) as u64;
        Ok(outcome(
            kill_log,
            &events,
            OutcomeFacts {
                liars: liar_log,
                hosts,
                cascade,
                epochs: options.epochs,
                weights_identical: states == local_states,
                test_acc_identical: reports
                    .iter()
                    .zip(&local_reports)
                    .all(|(a, b)| a.test_acc.to_bits() == b.test_acc.to_bits()),
                batches_done,
                expected_batches,
                train_s,
            },
        ))
    });
    cluster.shutdown()?;
    let report = report?;
    let path = write_report(&args.out, &report)?;
    println!(
        "{}",
        serde_json::json!({
            "kills": report.kills,
            "recovered": report.recovered,
            "liars": report.liars,
            "caught": report.caught,
            "audits": report.audits,
            "audit_share": report.audit_share,
            "lost_batches": report.lost_batches,
            "repeated_batches": report.repeated_batches,
            "weights_identical": report.weights_identical,
            "test_acc_identical": report.test_acc_identical,
            "other_failures": report.other_failures,
            "detect_s_median": report.detect_s_median,
            "recovery_s_median": report.recovery_s_median,
            "checkpoints": report.checkpoints,
            "checkpoint_share": report.checkpoint_s_total / report.train_s.max(1e-9),
            "train_s": report.train_s,
            "report": path,
        })
    );
    if report.kills < args.kills {
        bail!(
            "the run ended after {} of {} kills: give it more to do (--epochs)",
            report.kills,
            args.kills
        );
    }
    if report.recovered != report.kills
        || report.caught != report.liars
        || !report.weights_identical
    {
        bail!(
            "{} of {} kills recovered, {} of {} liars caught; weights {}",
            report.recovered,
            report.kills,
            report.caught,
            report.liars,
            if report.weights_identical {
                "identical"
            } else {
                "DIFFER"
            }
        );
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Kills `kills` hosts of the current cascade, one at a time: each at a random step of the
/// run once the last one is recovered, or (every `setup_every`th) in the op=0 of the
/// recovery from the one before.
fn killer(
    kills: usize,
    setup_every: usize,
    total_steps: u64,
    pids: &HashMap<String, u32>,
    (shared, steps, done): (&Mutex<Shared>, &AtomicU64, &AtomicBool),
    bar: &ProgressBar,
) -> Vec<Kill> {
    let mut rng = pool::system_rng();
    // Moments spread over the run: one random step in each of `kills` equal spans.
    let span = (total_steps / (kills as u64 + 1)).max(1);
    let mut log: Vec<Kill> = Vec::new();
    let mut killed: Vec<String> = Vec::new();
    for k in 0..kills {
        let in_setup = setup_every > 0 && k % setup_every == setup_every - 1 && k > 0;
        if in_setup {
            // The previous kill was just noticed: its recovery's op=0 is under way.
            std::thread::sleep(Duration::from_millis(
                20 + pool::below(&mut rng, 100) as u64,
            ));
        } else {
            let at = span * (k as u64 + 1)
                + pool::below(&mut rng, usize::try_from(span).unwrap_or(1)) as u64 / 2;
            while steps.load(Ordering::SeqCst) < at || lock(shared).recovering {
                if done.load(Ordering::SeqCst) {
                    return log;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let candidates: Vec<String> = lock(shared)
            .hosts
            .iter()
            .filter(|h| !killed.contains(h) && pids.contains_key(*h))
            .cloned()
            .collect();
        let Some(host) = candidates
            .get(pool::below(&mut rng, candidates.len()))
            .cloned()
        else {
            continue;
        };
        let Some(&pid) = pids.get(&host) else {
            continue;
        };
        let at_step = steps.load(Ordering::SeqCst);
        bar.suspend(|| {
            println!(
                "kill {}: SIGKILL to {host} (pid {pid}) at step {at_step}{}",
                k + 1,
                if in_setup { ", during a recovery" } else { "" }
            );
        });
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        killed.push(host.clone());
        log.push(Kill {
            host,
            pid,
            at_step,
            during_recovery: in_setup,
            step: None,
            named_hop: None,
            detect_s: None,
            recovery_s: None,
            when: Instant::now(),
        });
        // The next kill waits until this one is noticed.
        let failures = lock(shared).failures;
        let noticed = Instant::now();
        while lock(shared).failures == failures && noticed.elapsed() < Duration::from_secs(120) {
            if done.load(Ordering::SeqCst) {
                return log;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    log
}

struct OutcomeFacts {
    liars: Vec<Liar>,
    hosts: usize,
    cascade: Vec<String>,
    epochs: usize,
    weights_identical: bool,
    test_acc_identical: bool,
    batches_done: u64,
    expected_batches: u64,
    train_s: f64,
}

/// Matches every kill to the failure that named its host, and the recovery after it.
fn outcome(mut kills: Vec<Kill>, events: &[Event], facts: OutcomeFacts) -> Report {
    let mut matched = vec![false; events.len()];
    for kill in &mut kills {
        let failed = events.iter().enumerate().find(|(i, e)| {
            !matched[*i]
                && matches!(e, Event::Failed { host: Some(h), at, .. } if *h == kill.host && *at >= kill.when)
        });
        let Some((i, Event::Failed { hop, step, at, .. })) = failed else {
            continue;
        };
        matched[i] = true;
        kill.named_hop = *hop;
        kill.step = step.map(str::to_owned);
        kill.detect_s = Some(at.duration_since(kill.when).as_secs_f64());
        kill.recovery_s = events[i..].iter().find_map(|e| match e {
            Event::Recovered { seconds, .. } => Some(*seconds),
            _ => None,
        });
    }
    let failures = events
        .iter()
        .filter(|e| matches!(e, Event::Failed { .. }))
        .count();
    let recovered = kills.iter().filter(|k| k.recovery_s.is_some()).count();
    let (checkpoints, checkpoint_s_total) = events.iter().fold((0, 0.0), |(n, s), e| match e {
        Event::Checkpoint { seconds, .. } => (n + 1, s + seconds),
        _ => (n, s),
    });
    let mut liars = facts.liars;
    for liar in &mut liars {
        if let Some(Event::Caught { batches, hop, .. }) = events
            .iter()
            .find(|e| matches!(e, Event::Caught { host: Some(h), .. } if *h == liar.host))
        {
            liar.caught_after_batches = Some(*batches);
            liar.named_hop = *hop;
        }
    }
    let caught = liars
        .iter()
        .filter(|l| l.caught_after_batches.is_some())
        .count();
    let (audits, audit_s) = events.iter().fold((0, 0.0), |(n, s), e| match e {
        Event::Audit { seconds, .. } => (n + 1, s + seconds),
        _ => (n, s),
    });
    Report {
        machine: Machine::this(),
        liars: liars.len(),
        caught,
        liar_log: liars,
        audits,
        audit_share: audit_s / facts.train_s.max(1e-9),
        hosts: facts.hosts,
        cascade: facts.cascade,
        epochs: facts.epochs,
        kills: kills.len(),
        recovered,
        other_failures: failures.saturating_sub(recovered),
        lost_batches: facts.expected_batches.saturating_sub(facts.batches_done),
        repeated_batches: facts.batches_done.saturating_sub(facts.expected_batches),
        weights_identical: facts.weights_identical,
        test_acc_identical: facts.test_acc_identical,
        detect_s_median: median(kills.iter().filter_map(|k| k.detect_s).collect()),
        recovery_s_median: median(kills.iter().filter_map(|k| k.recovery_s).collect()),
        checkpoints,
        checkpoint_s_total,
        train_s: facts.train_s,
        kill_log: kills,
    }
}
