//! `mixnn bench scale`: how the costs grow.
//!
//! 1. Time per batch against the cascade's length (5, 10, 20, 40 hops; the extra hops are
//!    dummies). The cascades are open together and step in turn, batch by batch, on the same
//!    data from the same weights, so noise falls on all alike; at the end each is tested and
//!    its weights compared with the 5-hop cascade's.
//! 2. Host selection against the pool's size: fetch the pool from a directory over QUIC,
//!    verify every descriptor, pick the hosts.
//! 3. A host's resident memory against its concurrent sessions.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use mixnn_designer::{
    backend::Backend,
    cascade::Cascade,
    local_cluster::LocalCluster,
    pool, progress,
    remote::{RemoteCascade, RemoteOptions},
    train::{self, Model},
};
use mixnn_host::{directory::Directory, directory_service::DirectoryServer};
use mixnn_transport::{Endpoint, TlsIdentity, directory_client};
use mixnn_wire::{
    crypto::OnionPrivateKey,
    descriptor::{Descriptor, IdentityKey},
};
use serde::Serialize;

use super::{Machine, median, plot, rss_mb};
use crate::{load_data, model_spec, run_in_sandbox_worker};

#[derive(Debug, clap::Args)]
pub(crate) struct ScaleArgs {
    /// Directory with the IDX files [default: $MIXNN_DATA, else /usr/share/datasets/fashion-mnist].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Cascade lengths (hops; at least 5, the paper's model's; the rest are dummies).
    #[arg(long, value_delimiter = ',', default_value = "5,10,20,40")]
    hops: Vec<usize>,
    /// Training batches each cascade runs.
    #[arg(long, default_value_t = 60, value_name = "N")]
    batches: usize,
    /// Pool sizes for host selection.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pools: Vec<usize>,
    /// Session counts at which to read the host's memory.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32")]
    sessions: Vec<usize>,
    /// Test examples for the accuracy check.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    test_limit: usize,
    /// Where to write report.json and the plots.
    #[arg(long, default_value = "bench-results/scale", value_name = "DIR")]
    out: PathBuf,
}

#[derive(Debug, Serialize)]
struct HopsRow {
    hops: usize,
    setup_s: f64,
    median_batch_ms: f64,
    p90_batch_ms: f64,
    test_acc: f64,
    weights_identical_to_5: bool,
}

#[derive(Debug, Serialize)]
struct PoolRow {
    descriptors: usize,
    bytes: usize,
    fetch_ms: f64,
    verify_ms: f64,
    pick_ms: f64,
    total_ms: f64,
}

#[derive(Debug, Serialize)]
struct MemoryRow {
    sessions: usize,
    rss_mb: f64,
}

/// A least-squares line `y = intercept + slope * x`, and how well it fits.
#[derive(Debug, Serialize)]
struct Fit {
    intercept: f64,
    slope: f64,
    r2: f64,
}

impl Fit {
    fn of(points: &[(f64, f64)]) -> Self {
        let n = points.len() as f64;
        let (sx, sy) = points
            .iter()
            .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
        let (mx, my) = (sx / n, sy / n);
        let sxx: f64 = points.iter().map(|&(x, _)| (x - mx).powi(2)).sum();
        let sxy: f64 = points.iter().map(|&(x, y)| (x - mx) * (y - my)).sum();
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        let intercept = my - slope * mx;
        let ss_tot: f64 = points.iter().map(|&(_, y)| (y - my).powi(2)).sum();
        let ss_res: f64 = points
            .iter()
            .map(|&(x, y)| (y - intercept - slope * x).powi(2))
            .sum();
        Fit {
            intercept,
            slope,
            r2: if ss_tot > 0.0 {
                1.0 - ss_res / ss_tot
            } else {
                1.0
            },
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    machine: Machine,
    batch_size: usize,
    batches: usize,
    hops: Vec<HopsRow>,
    /// Milliseconds per batch against hops.
    hops_fit: Fit,
    pools: Vec<PoolRow>,
    /// Milliseconds against descriptors.
    pool_fit: Fit,
    memory: Vec<MemoryRow>,
    /// Megabytes against sessions, from one session on (the first also compiles the
    /// components, which the host then keeps).
    memory_fit: Fit,
}

fn remote_options(cluster: &LocalCluster, dummies: usize) -> RemoteOptions {
    RemoteOptions {
        dummies,
        session_ttl: Duration::from_secs(3600),
        ..cluster.remote_options()
    }
}

pub(crate) fn run(args: ScaleArgs) -> Result<()> {
    if args.hops.iter().any(|&h| h < 5) {
        return Err(anyhow!("--hops: the paper's model needs at least 5 hops"));
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let exe = std::env::current_exe().context("finding this program to start the hosts")?;
    let hops = hop_growth(&args, &exe)?;
    let pools = pool_growth(&args.pools)?;
    let memory = memory_growth(&args.sessions, &exe)?;

    let fit = |points: Vec<(f64, f64)>| Fit::of(&points);
    let report = Report {
        bench: "scale",
        machine: Machine::this(),
        batch_size: 64,
        batches: args.batches,
        hops_fit: fit(hops
            .iter()
            .map(|r| (r.hops as f64, r.median_batch_ms))
            .collect()),
        pool_fit: fit(pools
            .iter()
            .map(|r| (r.descriptors as f64, r.total_ms))
            .collect()),
        // From the first session on: it alone also compiles the components (then cached).
        memory_fit: fit(memory
            .iter()
            .filter(|r| r.sessions > 0)
            .map(|r| (r.sessions as f64, r.rss_mb))
            .collect()),
        hops,
        pools,
        memory,
    };
    print(&report);
    let json = args.out.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    // File, title, axes, line, points.
    let plots = [
        (
            "hops.svg",
            "time per training batch vs cascade length",
            ("hops", "ms per batch (median)"),
            "cascade",
            report
                .hops
                .iter()
                .map(|r| (r.hops as f64, r.median_batch_ms))
                .collect::<Vec<_>>(),
        ),
        (
            "pool.svg",
            "host selection vs pool size",
            ("descriptors", "ms (fetch + verify + pick)"),
            "selection",
            report
                .pools
                .iter()
                .map(|r| (r.descriptors as f64, r.total_ms))
                .collect::<Vec<_>>(),
        ),
        (
            "memory.svg",
            "a host's resident memory vs concurrent sessions",
            ("sessions", "MB resident"),
            "host",
            report
                .memory
                .iter()
                .map(|r| (r.sessions as f64, r.rss_mb))
                .collect::<Vec<_>>(),
        ),
    ];
    for (file, title, axes, name, points) in plots {
        plot::lines(
            &args.out.join(file),
            title,
            axes,
            &[(name.to_owned(), points)],
            true,
        )?;
    }
    println!(
        "\nwrote {} and hops.svg, pool.svg, memory.svg beside it",
        json.display()
    );
    if let Some(r) = report.hops.iter().find(|r| !r.weights_identical_to_5) {
        return Err(anyhow!(
            "{} hops trained to other weights than 5 hops",
            r.hops
        ));
    }
    Ok(())
}

fn print(report: &Report) {
    println!(
        "\n{:>5}  {:>8}  {:>10}  {:>9}  {:>8}  weights = 5 hops'",
        "hops", "setup_s", "ms/batch", "p90 ms", "test_acc"
    );
    for r in &report.hops {
        println!(
            "{:>5}  {:>8.3}  {:>10.2}  {:>9.2}  {:>8.4}  {}",
            r.hops,
            r.setup_s,
            r.median_batch_ms,
            r.p90_batch_ms,
            r.test_acc,
            if r.weights_identical_to_5 {
                "bit-identical"
            } else {
                "DIFFERENT"
            }
        );
    }
    let f = &report.hops_fit;
    println!(
        "growth: {:.2} ms + {:.3} ms per hop (R² {:.4})",
        f.intercept, f.slope, f.r2
    );
    println!(
        "\n{:>11}  {:>9}  {:>9}  {:>9}  {:>8}  {:>9}",
        "descriptors", "bytes", "fetch ms", "verify ms", "pick ms", "total ms"
    );
    for r in &report.pools {
        println!(
            "{:>11}  {:>9}  {:>9.2}  {:>9.2}  {:>8.3}  {:>9.2}",
            r.descriptors, r.bytes, r.fetch_ms, r.verify_ms, r.pick_ms, r.total_ms
        );
    }
    let f = &report.pool_fit;
    println!(
        "growth: {:.2} ms + {:.2} µs per descriptor (R² {:.4})",
        f.intercept,
        f.slope * 1e3,
        f.r2
    );
    println!("\n{:>8}  {:>7}", "sessions", "RSS MB");
    for r in &report.memory {
        println!("{:>8}  {:>7.1}", r.sessions, r.rss_mb);
    }
    let f = &report.memory_fit;
    println!(
        "growth from the first session (which also compiles the components): {:.1} MB + \
         {:.2} MB per session (R² {:.4})",
        f.intercept, f.slope, f.r2
    );
}

/// Part 1: the cascades open together and step in turn.
fn hop_growth(args: &ScaleArgs, exe: &std::path::Path) -> Result<Vec<HopsRow>> {
    let mut sizes = args.hops.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let Some(&most) = sizes.last() else {
        return Ok(Vec::new());
    };
    let splits = load_data(
        args.data.as_deref(),
        Some(args.batches * 64),
        Some(args.test_limit),
    )?;
    println!("starting a directory and {most} hosts on loopback...");
    let cluster = LocalCluster::start(exe, most)?;
    let options: Vec<RemoteOptions> = sizes
        .iter()
        .map(|&h| remote_options(&cluster, h - 5))
        .collect();
    let batches = args.batches;
    let rows = run_in_sandbox_worker(move |sandbox| {
        let sandbox = sandbox.ok_or_else(|| anyhow!("no sandbox"))?;
        let spec = model_spec(None)?;
        let init = Cascade::build(&spec, Backend::Wasm, Some(sandbox))?.export_states()?;
        let input = spec.batch_shape(64, splits.train.pixels)?;
        let mut cascades = Vec::new();
        for (o, &h) in options.iter().zip(&sizes) {
            let c = RemoteCascade::connect_from(&spec, sandbox, o, &input, &init)?;
            println!(
                "{h} hops: set up in {:.0} ms",
                c.setup_time().as_secs_f64() * 1e3
            );
            cascades.push(c);
        }
        let order = mixnn_designer::order::DataOrder::Shuffled.epoch(1, 1, splits.train.len());
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); cascades.len()];
        let bar = progress::bar(
            true,
            order.len().div_ceil(64).min(batches),
            "batches, every cascade in turn [{bar:30}] {pos}/{len}, {elapsed} elapsed, eta {eta}",
        );
        for (b, chunk) in order.chunks(64).take(batches).enumerate() {
            let (x, y) = train::batch(&splits.train, chunk, spec.input_shape.as_deref())?;
            for k in 0..cascades.len() {
                let i = (k + b) % cascades.len();
                let started = Instant::now();
                cascades[i].train_step(x.clone(), y.clone())?;
                times[i].push(started.elapsed().as_secs_f64() * 1e3);
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let mut rows = Vec::new();
        let mut first_states = None;
        for ((mut c, ms), &h) in cascades.into_iter().zip(times).zip(&sizes) {
            let evaluation =
                train::evaluate(&mut c, &splits.test, 64, spec.input_shape.as_deref())?;
            let states = c.export_states()?;
            let setup_s = c.setup_time().as_secs_f64();
            c.close();
            let first = first_states.get_or_insert_with(|| states.clone());
            let mut sorted = ms.clone();
            sorted.sort_by(f64::total_cmp);
            let p90 = sorted
                .get((sorted.len() * 9 / 10).min(sorted.len().saturating_sub(1)))
                .copied()
                .unwrap_or(f64::NAN);
            rows.push(HopsRow {
                hops: h,
                setup_s,
                median_batch_ms: median(ms),
                p90_batch_ms: p90,
                test_acc: evaluation.confusion.accuracy(),
                weights_identical_to_5: *first == states,
            });
        }
        Ok(rows)
    });
    cluster.shutdown()?;
    rows
}

/// Part 2: a directory (in this process, over QUIC on loopback) serving `n` descriptors.
fn pool_growth(sizes: &[usize]) -> Result<Vec<PoolRow>> {
    if sizes.is_empty() {
        return Ok(Vec::new());
    }
    println!("\nhost selection: signing descriptors...");
    // One onion key for all (RSA key generation would dominate); each host its own identity,
    // and every descriptor is verified and its onion key parsed, as for real hosts.
    let onion = OnionPrivateKey::generate()?.public_key()?.der().to_vec();
    let now = mixnn_host::daemon::unix_now();
    let most = sizes.iter().copied().max().unwrap_or(0);
    let mut signed = Vec::with_capacity(most);
    for i in 0..most {
        let descriptor = Descriptor {
            identity: [0; 32],
            address: format!("10.{}.{}.{}:4433", i >> 16, (i >> 8) & 255, i & 255),
            onion_key: onion.clone(),
            fingerprint: made_up_fingerprint(i),
            published_at: now,
            metadata: [("region".to_owned(), format!("region-{}", i % 7))].into(),
        };
        signed.push(IdentityKey::generate()?.sign(descriptor)?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let temp = tempfile::tempdir()?;
    let mut rows = Vec::new();
    for &n in sizes {
        let mut directory = Directory::new();
        for s in &signed[..n] {
            directory.publish(s, now)?;
        }
        let path = temp.path().join(format!("directory-{n}.json"));
        directory.save(&path)?;
        let row = runtime.block_on(async {
            let server = DirectoryServer::bind(
                std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                TlsIdentity::generate()?,
                path,
                3600,
            )?;
            let (addr, fingerprint) = (server.local_addr()?, server.fingerprint());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let serving = tokio::spawn(server.serve(async {
                let _ = stopped.await;
            }));
            let endpoint = Endpoint::bind(
                std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                TlsIdentity::generate()?,
            )?;
            let (mut fetch, mut verify, mut pick, mut bytes) = (vec![], vec![], vec![], 0);
            for _ in 0..5 {
                let started = Instant::now();
                let pool = directory_client::fetch_pool(&endpoint, addr, fingerprint, n).await?;
                fetch.push(started.elapsed().as_secs_f64() * 1e3);
                bytes = pool.iter().map(|d| d.len() + 4).sum::<usize>() + 5;
                let started = Instant::now();
                let candidates = pool::verify_pool(&pool);
                verify.push(started.elapsed().as_secs_f64() * 1e3);
                if candidates.len() != n {
                    return Err(anyhow!("{} of {n} descriptors verified", candidates.len()));
                }
                let started = Instant::now();
                let chosen = pool::pick(candidates, 7).ok_or_else(|| anyhow!("pool too small"))?;
                pick.push(started.elapsed().as_secs_f64() * 1e3);
                drop(chosen);
            }
            let _ = stop.send(());
            let _ = serving.await;
            let (fetch_ms, verify_ms, pick_ms) = (median(fetch), median(verify), median(pick));
            Ok::<_, anyhow::Error>(PoolRow {
                descriptors: n,
                bytes,
                fetch_ms,
                verify_ms,
                pick_ms,
                total_ms: fetch_ms + verify_ms + pick_ms,
            })
        })?;
        println!(
            "{n} descriptors: fetch {:.1} ms, verify {:.1} ms, pick {:.2} ms",
            row.fetch_ms, row.verify_ms, row.pick_ms
        );
        rows.push(row);
    }
    Ok(rows)
}

/// A distinct made-up certificate fingerprint per host.
fn made_up_fingerprint(i: usize) -> [u8; 32] {
    let mut f = [0u8; 32];
    f[..8].copy_from_slice(&(i as u64).to_be_bytes());
    f
}

/// Part 3: sessions of the whole model on one host, opened one after another.
fn memory_growth(checkpoints: &[usize], exe: &std::path::Path) -> Result<Vec<MemoryRow>> {
    let Some(&most) = checkpoints.iter().max() else {
        return Ok(Vec::new());
    };
    println!("\nsessions per host: starting a directory and one host...");
    // Every session comes from this designer: one source.
    let limits = format!(
        "[limits]\nmax_sessions = {0}\nmax_sessions_per_source = {0}\n\
         max_connections_per_source = {1}\n",
        most.max(64),
        (2 * most + 16).max(128)
    );
    let cluster = LocalCluster::start_configured(exe, 1, &limits)?;
    let pid = cluster
        .host_pid(0)
        .ok_or_else(|| anyhow!("no host process"))?;
    let options = remote_options(&cluster, 0);
    let checkpoints: Vec<usize> = checkpoints.to_vec();
    let read = move || rss_mb(pid);
    let rows = run_in_sandbox_worker(move |sandbox| {
        let sandbox = sandbox.ok_or_else(|| anyhow!("no sandbox"))?;
        let spec = model_spec(None)?.on_one_host();
        let mut rows = vec![MemoryRow {
            sessions: 0,
            rss_mb: read().ok_or_else(|| anyhow!("cannot read the host's memory"))?,
        }];
        let mut sessions = Vec::new();
        // The paper's model on MNIST-sized examples.
        let input = spec.batch_shape(64, 784)?;
        let x = mixnn_layer_sdk::Tensor::zeros(input.clone());
        let y = mixnn_layer_sdk::Tensor::zeros(vec![64]);
        let bar = progress::bar(
            true,
            most,
            "sessions opened [{bar:30}] {pos}/{len}, {elapsed} elapsed, eta {eta}",
        );
        for k in 1..=most {
            let mut c = RemoteCascade::connect(&spec, sandbox, &options, &input)?;
            // One step, so that the session holds what training needs.
            c.train_step(x.clone(), y.clone())?;
            sessions.push(c);
            if checkpoints.contains(&k) {
                // The host's memory settles once the step's frames are freed.
                std::thread::sleep(Duration::from_millis(300));
                let rss = read().ok_or_else(|| anyhow!("cannot read the host's memory"))?;
                bar.suspend(|| println!("{k} sessions: {rss:.1} MB"));
                rows.push(MemoryRow {
                    sessions: k,
                    rss_mb: rss,
                });
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        for c in sessions {
            c.close();
        }
        Ok(rows)
    });
    cluster.shutdown()?;
    rows
}
