//! `mixnn bench deep`: a deep model's time per batch against the number of hosts it is spread
//! over.
//!
//! The model's layers that hosts run (all but the tail the designer keeps) are regrouped into
//! G contiguous hosts, for each G asked, as evenly as the spec's own hosts allow. The cascades
//! (no dummies: every hop is a host of the model) open together from the same initial weights
//! and step in turn, batch by batch, on the same data, beside the same batches in this
//! process, so noise falls on all alike. At the end each is tested, and its weights are
//! compared bit for bit with those trained in this process: spreading a model over more hosts
//! changes its time, never its result.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow};
use mixnn_designer::{
    backend::Backend,
    cascade::Cascade,
    local_cluster::LocalCluster,
    order::DataOrder,
    progress,
    remote::{RemoteCascade, RemoteOptions, plan::kept_tail},
    spec::ModelSpec,
    train::{self, Model},
};
use serde::Serialize;

use super::{Machine, median, plot, quantile, write_report};
use crate::{DataArgs, run_in_sandbox_worker};

#[derive(Debug, clap::Args)]
pub(crate) struct DeepArgs {
    /// Model spec (TOML).
    #[arg(long, value_name = "FILE", default_value = "models/vgg-fashion.toml")]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Numbers of hosts to spread the model over (each at most its spec's hosts; a host holds
    /// at most 16 layers, so VGG's 33 need at least 3).
    #[arg(long, value_delimiter = ',', default_value = "3,4,5,7,10")]
    hosts: Vec<usize>,
    /// Training batches each cascade runs.
    #[arg(long, default_value_t = 40, value_name = "N")]
    batches: usize,
    /// Where to write report.json and hosts.svg.
    #[arg(long, default_value = "bench-results/deep", value_name = "DIR")]
    out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Row {
    hosts: usize,
    /// Each host's layers.
    layout: Vec<String>,
    setup_s: f64,
    median_batch_ms: f64,
    p90_batch_ms: f64,
    /// Median time per batch over that in this process.
    vs_inproc: f64,
    test_acc: f64,
    weights_identical_to_inproc: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    machine: Machine,
    model: String,
    batch_size: usize,
    batches: usize,
    /// Layers with parameters (batch norms included).
    weight_layers: usize,
    inproc_median_batch_ms: f64,
    inproc_test_acc: f64,
    rows: Vec<Row>,
}

/// `spec` with the layers hosts run regrouped into `g` contiguous hosts, each taking whole
/// hosts of the spec, as evenly as they divide; the kept tail stays as it is.
fn regroup(spec: &ModelSpec, tail: usize, g: usize) -> ModelSpec {
    let groups = spec.hosts();
    let remote = groups.len() - tail;
    let mut out = spec.clone();
    for (k, group) in groups[..remote].iter().enumerate() {
        // Host k of the spec joins new host floor(k * g / remote).
        let host = k * g / remote;
        for &i in group {
            // A label no spec's tail would use: the tail's own labels stay apart.
            out.layers[i].host = Some(format!("bench-deep-host-{host}"));
        }
    }
    out
}

pub(crate) fn run(args: DeepArgs) -> Result<()> {
    let spec = ModelSpec::from_file(&args.model)?;
    let probe = Cascade::build(&spec, Backend::Native, None)?;
    let params: Vec<u64> = probe.infos().iter().map(|i| i.param_count).collect();
    let groups = spec.hosts();
    let tail = kept_tail(&groups, &params);
    let remote = groups.len() - tail;
    let mut sizes = args.hosts.clone();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.first() == Some(&0) || sizes.last().is_some_and(|&g| g > remote) {
        return Err(anyhow!(
            "--hosts: {} spreads over 1 to {remote} hosts",
            spec.name
        ));
    }
    let Some(&most) = sizes.last() else {
        return Err(anyhow!("--hosts: none given"));
    };
    let weight_layers = params.iter().filter(|&&p| p > 0).count();
    let splits = crate::load_data(
        args.data.data.as_deref(),
        Some(
            args.data
                .train_limit
                .unwrap_or(args.batches * 64)
                .min(args.batches * 64),
        ),
        Some(args.data.test_limit.unwrap_or(1000)),
    )?;
    println!(
        "{}: {weight_layers} layers with parameters; hosts run {remote} of its {} hosts' layers, the \
         designer keeps the last {tail}",
        spec.name,
        groups.len()
    );
    println!("starting a directory and {most} hosts on loopback...");
    let exe = std::env::current_exe()?;
    let cluster = LocalCluster::start(&exe, most)?;
    let options = RemoteOptions {
        dummies: 0,
        keep_last: true,
        session_ttl: Duration::from_secs(3600),
        ..cluster.remote_options()
    };
    let batches = args.batches;
    let name = spec.name.clone();
    let (inproc_ms, inproc_acc, rows) = run_in_sandbox_worker(move |sandbox| {
        let sandbox = sandbox.ok_or_else(|| anyhow!("no sandbox"))?;
        let mut local = Cascade::build(&spec, Backend::Wasm, Some(sandbox))?;
        let init = local.export_states()?;
        let input = spec.batch_shape(64, splits.train.pixels)?;
        let mut cascades = Vec::new();
        for &g in &sizes {
            let spec = regroup(&spec, tail, g);
            let spinner = progress::spinner(true, format!("{g} hosts: {}", crate::SETTING_UP));
            let c = RemoteCascade::connect_from(&spec, sandbox, &options, &input, &init);
            spinner.finish_and_clear();
            let c = c?;
            println!(
                "{g} hosts: set up in {:.0} ms: {}",
                c.setup_time().as_secs_f64() * 1e3,
                c.describe().join(" | ")
            );
            cascades.push((g, c));
        }
        let order = DataOrder::Shuffled.epoch(spec.training.seed, 1, splits.train.len());
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); cascades.len() + 1];
        let shape = spec.input_shape.as_deref();
        let bar = progress::bar(
            true,
            order.len().div_ceil(64).min(batches),
            "batches, every cascade and this process in turn [{bar:30}] {pos}/{len}, \
             {elapsed} elapsed, eta {eta}",
        );
        for (b, chunk) in order.chunks(64).take(batches).enumerate() {
            let (x, y) = train::batch(&splits.train, chunk, shape)?;
            // Turns rotate: the cascades and this process, each first in its turn.
            for k in 0..=cascades.len() {
                let i = (k + b) % (cascades.len() + 1);
                let started = Instant::now();
                match cascades.get_mut(i) {
                    Some((_, c)) => {
                        c.train_step(x.clone(), y.clone())?;
                    }
                    None => {
                        local.train_step(x.clone(), y.clone())?;
                    }
                }
                times[i].push(started.elapsed().as_secs_f64() * 1e3);
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let local_ms = median(times.pop().unwrap_or_default());
        let local_acc = train::evaluate(&mut local, &splits.test, 64, shape)?
            .confusion
            .accuracy();
        let local_states = local.export_states()?;
        let mut rows = Vec::new();
        for ((g, mut c), ms) in cascades.into_iter().zip(times) {
            let evaluation = train::evaluate(&mut c, &splits.test, 64, shape)?;
            let states = c.export_states()?;
            let (setup_s, layout) = (c.setup_time().as_secs_f64(), c.describe());
            c.close();
            let mut sorted = ms.clone();
            sorted.sort_by(f64::total_cmp);
            let p90 = quantile(&sorted, 0.9);
            let median_batch_ms = median(ms);
            rows.push(Row {
                hosts: g,
                layout,
                setup_s,
                median_batch_ms,
                p90_batch_ms: p90,
                vs_inproc: median_batch_ms / local_ms,
                test_acc: evaluation.confusion.accuracy(),
                weights_identical_to_inproc: states == local_states,
            });
        }
        Ok((local_ms, local_acc, rows))
    })?;
    cluster.shutdown()?;

    println!(
        "\n{:>5}  {:>8}  {:>10}  {:>9}  {:>10}  {:>8}  weights",
        "hosts", "setup_s", "ms/batch", "p90 ms", "vs inproc", "test_acc"
    );
    println!(
        "{:>5}  {:>8}  {:>10.2}  {:>9}  {:>10}  {:>8.4}  (in process, sandboxed)",
        "-", "-", inproc_ms, "-", "1.00x", inproc_acc
    );
    for r in &rows {
        println!(
            "{:>5}  {:>8.3}  {:>10.2}  {:>9.2}  {:>9.2}x  {:>8.4}  {}",
            r.hosts,
            r.setup_s,
            r.median_batch_ms,
            r.p90_batch_ms,
            r.vs_inproc,
            r.test_acc,
            if r.weights_identical_to_inproc {
                "bit-identical to in process"
            } else {
                "DIFFERENT"
            }
        );
    }
    let report = Report {
        bench: "deep",
        machine: Machine::this(),
        model: name,
        batch_size: 64,
        batches,
        weight_layers,
        inproc_median_batch_ms: inproc_ms,
        inproc_test_acc: inproc_acc,
        rows,
    };
    let json = write_report(&args.out, &report)?;
    plot::lines(
        &args.out.join("hosts.svg"),
        &format!("{}: time per training batch vs hosts", report.model),
        ("hosts", "ms per batch (median)"),
        &[
            (
                "over host processes".to_owned(),
                report
                    .rows
                    .iter()
                    .map(|r| (r.hosts as f64, r.median_batch_ms))
                    .collect(),
            ),
            (
                "in process".to_owned(),
                report
                    .rows
                    .iter()
                    .map(|r| (r.hosts as f64, inproc_ms))
                    .collect(),
            ),
        ],
        true,
    )?;
    println!(
        "{}",
        serde_json::json!({"summary": true, "inproc_median_batch_ms": inproc_ms, "rows": report.rows})
    );
    eprintln!("wrote {} and hosts.svg beside it", json.display());
    if let Some(r) = report.rows.iter().find(|r| !r.weights_identical_to_inproc) {
        return Err(anyhow!(
            "over {} hosts the model trained to other weights than in process",
            r.hosts
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regrouping_spreads_the_hosts_evenly_and_keeps_the_tail() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/vgg-fashion.toml");
        let Ok(spec) = ModelSpec::from_file(&path) else {
            panic!("the VGG spec parses");
        };
        let groups = spec.hosts();
        // The spec: 8 convolutions, 2 hidden Linear layers, then the tail of 3.
        assert_eq!(groups.len(), 13);
        for (g, sizes) in [
            (1, vec![10]),
            (2, vec![5, 5]),
            (3, vec![4, 3, 3]),
            (10, vec![1; 10]),
        ] {
            let regrouped = regroup(&spec, 3, g);
            let new = regrouped.hosts();
            assert_eq!(new.len(), g + 3, "{g} hosts");
            // Each new host takes whole hosts of the spec.
            let taken: Vec<usize> = new[..g]
                .iter()
                .map(|h| groups.iter().filter(|old| h.contains(&old[0])).count())
                .collect();
            assert_eq!(taken, sizes, "{g} hosts");
            assert_eq!(&new[g..], &groups[10..]);
        }
    }
}
