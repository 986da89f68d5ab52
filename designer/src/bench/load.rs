//! `mixnn bench load`: many concurrent sessions on one host process. Each session trains a few
//! batches of the paper's model (all its layers on that host), in turn with the others, and
//! is checked bit for bit against the same batches trained in this process; the host's
//! resident memory is read idle, after the first session (which also compiles the
//! components), and with every session open.

use std::{path::PathBuf, time::Instant};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use mixnn_designer::{
    backend::Backend,
    cascade::Cascade,
    data::Splits,
    local_cluster::LocalCluster,
    remote::RemoteCascade,
    spec::ModelSpec,
    train::{self, Model},
};
use mixnn_layer_sdk::Tensor;
use serde::Serialize;

use super::{Machine, median, rss_mb, write_report};
use crate::{DataArgs, model_spec, run_in_sandbox_worker};

#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// Sessions open at once on the host.
    #[arg(long, default_value_t = 50, value_name = "N")]
    sessions: usize,
    /// Training batches each session runs (64 examples each).
    #[arg(long, default_value_t = 5, value_name = "B")]
    batches: usize,
    #[command(flatten)]
    data: DataArgs,
    /// Where to write report.json.
    #[arg(long, default_value = "bench-results/load", value_name = "DIR")]
    out: PathBuf,
}

/// One session's check.
#[derive(Debug, Serialize)]
struct Check {
    session: usize,
    setup_s: f64,
    first_loss: f32,
    last_loss: f32,
    identical: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    sessions: usize,
    batches: usize,
    correct: usize,
    host_idle_rss_mb: f64,
    host_rss_after_first_mb: f64,
    host_rss_mb: f64,
    /// From the second session on: the first also compiles the components, once per host.
    rss_mb_per_session: f64,
    median_setup_s: f64,
    median_batch_ms: f64,
    checks: Vec<Check>,
}

const BATCH: usize = 64;

/// Batch `b` of session `k` for `spec`: sessions start at different places in the data.
fn batch(spec: &ModelSpec, splits: &Splits, k: usize, b: usize) -> Result<(Tensor, Tensor)> {
    let batches = splits.train.len() / BATCH;
    if batches == 0 {
        bail!("the training set holds fewer than {BATCH} examples");
    }
    let start = ((k + b) % batches) * BATCH;
    let indices: Vec<usize> = (start..start + BATCH).collect();
    Ok(train::batch(
        &splits.train,
        &indices,
        spec.input_shape.as_deref(),
    )?)
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}, {elapsed} elapsed")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

pub(crate) fn run(args: LoadArgs) -> Result<()> {
    let n = args.sessions.max(1);
    let splits = args.data.load()?;
    // This host is ours: limits that take every session the bench opens, from one source
    // (loopback) with a fresh certificate each. Two connections per session.
    let limits = format!(
        "[limits]\nmax_sessions = {}\nmax_sessions_per_source = {0}\n\
         max_connections_per_source = {}\n\
         setups_per_minute_per_source = {}\nsetups_per_minute_total = {}\n",
        n.max(64),
        (2 * n + 16).max(128),
        n.max(120),
        n.max(300),
    );
    let exe = std::env::current_exe().context("finding the mixnn binary")?;
    println!("starting a directory and one host...");
    let cluster = LocalCluster::start_configured(&exe, 1, &limits)?;
    let pid = cluster
        .host_pid(0)
        .ok_or_else(|| anyhow!("no host process"))?;
    let rss = move || rss_mb(pid).ok_or_else(|| anyhow!("cannot read the host's memory"));
    let idle = rss()?;
    let options = cluster.remote_options();
    let batches = args.batches.max(1);
    let report = run_in_sandbox_worker(move |sandbox| {
        let sandbox = sandbox.ok_or_else(|| anyhow!("no sandbox"))?;
        let spec = model_spec(None)?.on_one_host();
        let input = spec.batch_shape(BATCH, splits.train.pixels)?;
        let setup_bar = bar(n, "opening sessions");
        let mut sessions = Vec::with_capacity(n);
        let mut setup_s = Vec::with_capacity(n);
        let mut after_first = idle;
        for k in 0..n {
            let started = Instant::now();
            let session = RemoteCascade::connect(&spec, sandbox, &options, &input)
                .with_context(|| format!("setting up session {k}"))?;
            setup_s.push(started.elapsed().as_secs_f64());
            sessions.push(session);
            if k == 0 {
                after_first = rss()?;
            }
            setup_bar.inc(1);
        }
        setup_bar.finish();
        let train_bar = bar(n * batches, "training, in turn");
        let mut losses = vec![Vec::with_capacity(batches); n];
        let mut batch_ms = Vec::with_capacity(n * batches);
        for b in 0..batches {
            for (k, session) in sessions.iter_mut().enumerate() {
                let (x, y) = batch(&spec, &splits, k, b)?;
                let started = Instant::now();
                let loss = session
                    .train_step(x, y)
                    .with_context(|| format!("session {k}, batch {b}"))?;
                batch_ms.push(started.elapsed().as_secs_f64() * 1e3);
                losses[k].push(loss);
                train_bar.inc(1);
            }
        }
        train_bar.finish();
        // Every session open and trained: the host at its fullest.
        let full = rss()?;
        let mut checks = Vec::with_capacity(n);
        let check_bar = bar(n, "checking against this process");
        for (k, mut session) in sessions.into_iter().enumerate() {
            let remote = session
                .export_states()
                .with_context(|| format!("session {k}: exporting its states"))?;
            session.close();
            let mut local = Cascade::build(&spec, Backend::Wasm, Some(sandbox))?;
            for b in 0..batches {
                let (x, y) = batch(&spec, &splits, k, b)?;
                local.train_step(x, y)?;
            }
            let identical = local.export_states()? == remote;
            checks.push(Check {
                session: k,
                setup_s: setup_s[k],
                first_loss: losses[k][0],
                last_loss: losses[k][batches - 1],
                identical,
            });
            check_bar.inc(1);
        }
        check_bar.finish_and_clear();
        Ok(Report {
            machine: Machine::this(),
            sessions: n,
            batches,
            correct: checks.iter().filter(|c| c.identical).count(),
            host_idle_rss_mb: idle,
            host_rss_after_first_mb: after_first,
            host_rss_mb: full,
            rss_mb_per_session: if n > 1 {
                (full - after_first) / (n - 1) as f64
            } else {
                full - idle
            },
            median_setup_s: median(setup_s),
            median_batch_ms: median(batch_ms),
            checks,
        })
    });
    cluster.shutdown()?;
    let report = report?;
    for c in &report.checks {
        println!(
            "session {:>3}: set up in {:.2} s, {} batches, loss {:.4} -> {:.4}, weights {}",
            c.session,
            c.setup_s,
            report.batches,
            c.first_loss,
            c.last_loss,
            if c.identical {
                "bit-identical to this process"
            } else {
                "DIFFER from this process"
            }
        );
    }
    println!(
        "host memory: {:.1} MB idle, {:.1} MB with one session, {:.1} MB with {} ({:.2} MB per \
         session after the first)",
        report.host_idle_rss_mb,
        report.host_rss_after_first_mb,
        report.host_rss_mb,
        report.sessions,
        report.rss_mb_per_session
    );
    let path = write_report(&args.out, &report)?;
    println!(
        "{}",
        serde_json::json!({
            "sessions": report.sessions,
            "correct": report.correct,
            "batches": report.batches,
            "host_rss_mb": report.host_rss_mb,
            "host_idle_rss_mb": report.host_idle_rss_mb,
            "rss_mb_per_session": report.rss_mb_per_session,
            "median_setup_s": report.median_setup_s,
            "median_batch_ms": report.median_batch_ms,
            "report": path,
        })
    );
    if report.correct != report.sessions {
        bail!(
            "{} of {} sessions trained differently from this process",
            report.sessions - report.correct,
            report.sessions
        );
    }
    Ok(())
}
