//! `mixnn demo`: a directory and hosts on loopback, the model trained over a random cascade of
//! them and in this process with the same seed, side by side.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use mixnn_designer::{
    backend::Backend,
    cascade::Cascade,
    local_cluster::LocalCluster,
    pool, progress,
    recovery::{Checkpoint, Event, RecoveryOptions, Resilient},
    remote::{RemoteOptions, plan::kept_tail},
    train::{self, EpochReport, TrainOptions},
};

use mixnn_host::daemon::DaemonStats;
use serde::Serialize;

use crate::{DemoArgs, model_spec, print_evaluation, run_in_sandbox_worker};

struct Outcome {
    inproc: Vec<EpochReport>,
    cascade: Vec<EpochReport>,
    hops: Vec<String>,
    identical: bool,
    events: Vec<Event>,
}

pub(crate) fn run(args: DemoArgs) -> Result<()> {
    let mut spec = model_spec(args.model.as_deref())?;
    if let Some(seed) = args.seed {
        spec.training.seed = seed;
    }
    let splits = args.data.load()?;
    let groups = spec.hosts();
    // The layers kept at the end, for the count of hosts needed: the standard layers tell
    // their parameters natively; a custom component's model keeps at least its loss.
    let kept_tail = if args.cascade.keep_last() {
        Cascade::build(&spec, Backend::Native, None).map_or(1, |probe| {
            let params: Vec<u64> = probe.infos().iter().map(|i| i.param_count).collect();
            kept_tail(&groups, &params)
        })
    } else {
        0
    };
    let actual = groups
        .len()
        .saturating_sub(usize::from(args.cascade.keep_first) + kept_tail);
    let needed = actual + args.cascade.dummies + usize::from(args.kill_host_after.is_some());
    if args.hosts < needed {
        return Err(anyhow!(
            "the cascade needs {needed} hosts ({actual} actual + {} dummies{}); --hosts is {}",
            args.cascade.dummies,
            if args.kill_host_after.is_some() {
                " + a spare for the one killed"
            } else {
                ""
            },
            args.hosts
        ));
    }
    let exe = std::env::current_exe().context("finding this program to start the hosts")?;
    if !args.json {
        println!(
            "starting a directory and {} hosts on loopback (each its own process and keys)...",
            args.hosts
        );
    }
    let spinner = progress::spinner(
        !args.json,
        format!(
            "starting a directory and {} hosts, waiting for them to register",
            args.hosts
        ),
    );
    let cluster = LocalCluster::start(&exe, args.hosts);
    spinner.finish_and_clear();
    let cluster = cluster?;
    if !args.json {
        println!(
            "directory at {}, hosts at {}",
            cluster.directory_addr,
            cluster
                .host_addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let options = TrainOptions {
        epochs: args.epochs,
        seed: spec.training.seed,
        batch_size: spec.training.batch_size,
        // Frames carry one training batch: both modes test in batches of that size.
        test_batch_size: spec.training.batch_size,
        progress: !args.json,
        order: args.order.order(splits.train.len())?,
        input_shape: spec.input_shape.clone(),
    };
    options.order.check(options.epochs, splits.train.len())?;
    let remote = RemoteOptions {
        dummies: args.cascade.dummies,
        keep_first: args.cascade.keep_first,
        keep_last: args.cascade.keep_last(),
        cover_rate: args.cascade.cover_rate,
        ..cluster.remote_options()
    };
    let json = args.json;
    let kill_after = args.kill_host_after.map(Duration::from_secs_f64);
    let pids: Vec<(String, u32)> = (0..args.hosts)
        .filter_map(|i| Some((cluster.host_addrs[i].to_string(), cluster.host_pid(i)?)))
        .collect();
    let outcome = run_in_sandbox_worker(move |sandbox| {
        let sandbox = sandbox.ok_or_else(|| anyhow!("no sandbox"))?;
        let print = |r: &EpochReport| {
            if json {
                println!("{}", serde_json::to_string(r).unwrap_or_default());
            }
        };
        if !json {
            println!("training in this process (wasm)...");
        }
        let mut local = Cascade::build(&spec, Backend::Wasm, Some(sandbox))?;
        let inproc = train::train(&mut local, &splits, &options, print)?;
        let local_states = local.export_states()?;
        let input = spec.batch_shape(options.batch_size, splits.train.pixels)?;
        let spinner = progress::spinner(!json, crate::SETTING_UP);
        let cascade = Resilient::connect(
            &spec,
            sandbox,
            &remote,
            &input,
            Checkpoint::default(),
            RecoveryOptions::default(),
        );
        spinner.finish_and_clear();
        let mut cascade = cascade?;
        cascade.on_event(crate::print_event);
        let hops = cascade.describe();
        if let Some(after) = kill_after {
            kill_later(after, &cascade, &pids, json);
        }
        if !json {
            println!(
                "session set up in {:.0} ms (op=0 through {} hops); training over the cascade: {}",
                cascade.setup_time().as_secs_f64() * 1e3,
                hops.len(),
                hops.join(" -> ")
            );
        }
        let reports = train::train(&mut cascade, &splits, &options, print)?;
        let remote_states = cascade.export_states()?;
        let events = cascade.events().to_vec();
        cascade.close();
        Ok(Outcome {
            inproc,
            cascade: reports,
            hops,
            identical: local_states == remote_states,
            events,
        })
    });
    // The hosts' counters of the session (written every second).
    std::thread::sleep(Duration::from_millis(1200));
    let hosts: Vec<DaemonStats> = (0..args.hosts)
        .filter_map(|i| cluster.host_stats(i))
        .collect();
    let killed = cluster.shutdown()?;
    let outcome = outcome?;
    let split = TimeSplit::of(&outcome.cascade, &hosts);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "summary": true,
                "hops": outcome.hops,
                "weights_identical": outcome.identical,
                "recoveries": outcome.events.iter().filter(|e| matches!(e, Event::Recovered { .. })).count(),
                "time_split": split,
                "processes_killed": killed,
            })
        );
    } else {
        print_comparison(&outcome);
        split.print();
        if let Some(last) = outcome.cascade.last() {
            print_evaluation(last);
        }
        println!(
            "\nall {} processes stopped{}; temporary files removed",
            args.hosts + 1,
            if killed == 0 {
                " cleanly".to_owned()
            } else {
                format!(" ({killed} had to be killed)")
            }
        );
    }
    if !outcome.identical {
        return Err(anyhow!(
            "the cascade's final weights differ from the in-process run's"
        ));
    }
    Ok(())
}

/// Kills one of the cascade's hosts, at random, with SIGKILL `after` training starts.
fn kill_later(after: Duration, cascade: &Resilient<'_>, pids: &[(String, u32)], json: bool) {
    let hosts = cascade.hosts();
    let position = pool::below(&mut pool::system_rng(), hosts.len());
    let Some(host) = hosts.get(position) else {
        return;
    };
    let Some(&(_, pid)) = pids.iter().find(|(a, _)| *a == host.address) else {
        return;
    };
    let address = host.address.clone();
    std::thread::spawn(move || {
        std::thread::sleep(after);
        if !json {
            eprintln!("killing hop {position} ({address}, pid {pid}) with SIGKILL");
        }
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    });
}

fn print_comparison(o: &Outcome) {
    println!(
        "\n{:>5}  {:>12}  {:>12}  {:>8}  {:>10}  {:>10}  {:>6}",
        "epoch", "inproc_acc", "cascade_acc", "diff", "inproc_s", "cascade_s", "ratio"
    );
    for (a, b) in o.inproc.iter().zip(&o.cascade) {
        println!(
            "{:>5}  {:>12.4}  {:>12.4}  {:>8.4}  {:>10.3}  {:>10.3}  {:>5.1}x",
            a.epoch,
            a.test_acc,
            b.test_acc,
            b.test_acc - a.test_acc,
            a.train_s,
            b.train_s,
            b.train_s / a.train_s.max(1e-9)
        );
    }
    println!(
        "final weights of every layer: {}",
        if o.identical {
            "bit-identical in both modes"
        } else {
            "DIFFERENT"
        }
    );
}

/// Where the cascade's wall time went, from the hosts' counters: inside the layers, in the
/// hops' own work on frames (opening, parsing, sealing), and the rest (the network, queues,
/// and the designer's side).
#[derive(Debug, Serialize)]
struct TimeSplit {
    wall_s: f64,
    frames: u64,
    layers_s: f64,
    hop_crypto_s: f64,
    network_and_waiting_s: f64,
}

impl TimeSplit {
    fn of(cascade: &[EpochReport], hosts: &[DaemonStats]) -> Self {
        let wall_s: f64 = cascade.iter().map(|r| r.train_s + r.test_s).sum();
        let sum = |f: fn(&DaemonStats) -> u64| hosts.iter().map(f).sum::<u64>();
        let layers_s = sum(|h| h.layer_us) as f64 / 1e6;
        let frame_s = sum(|h| h.frame_us) as f64 / 1e6;
        TimeSplit {
            wall_s,
            frames: sum(|h| h.frames_processed),
            layers_s,
            hop_crypto_s: (frame_s - layers_s).max(0.0),
            network_and_waiting_s: (wall_s - frame_s).max(0.0),
        }
    }

    fn print(&self) {
        let share = |s: f64| 100.0 * s / self.wall_s.max(1e-9);
        println!(
            "where the cascade's {:.2} s went ({} frames through the hosts): layers {:.2} s \
             ({:.0}%), hops' crypto and framing {:.2} s ({:.0}%), network, queues and the \
             designer {:.2} s ({:.0}%)",
            self.wall_s,
            self.frames,
            self.layers_s,
            share(self.layers_s),
            self.hop_crypto_s,
            share(self.hop_crypto_s),
            self.network_and_waiting_s,
            share(self.network_and_waiting_s),
        );
    }
}
