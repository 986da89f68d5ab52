//! `mixnn bench floor`: what one link of the critical path costs at least on this machine,
//! beside what the cascade pays, in one run. Three kinds of measurement, taken in turn round
//! after round (the first kind rotating) so that the machine's noise falls on all alike:
//!
//! - `udp`: a ring of relay processes and this one passing one message of the session's frame
//!   length in plain UDP datagrams, each node touching every byte;
//! - `quic`: the same ring over `mixnn_transport::Endpoint` (its transport configuration,
//!   whatever it is now), one long-lived stream per link, a one-thread runtime per process as
//!   the hosts run;
//! - `cascade`: a real training session over host processes, each batch timed beside the same
//!   batch trained in this process through the sandbox; per link, the difference over the
//!   links a batch crosses.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use mixnn_designer::{
    local_cluster::LocalCluster,
    remote::{Plan, RemoteOptions},
};
use mixnn_host::daemon::DaemonStats;

use super::{Machine, median, write_report};
use crate::{DataArgs, model_spec, run_in_sandbox_worker};
use report::{CascadeReport, Report, Stat, print_lines};

mod cascade;
mod report;
mod ring;

pub(crate) use ring::{Transport, relay};

use cascade::CascadeRun;
use ring::{QuicRing, Relays, UdpRing};

/// A kind of measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// A ring of plain UDP relay processes.
    Udp,
    /// A ring of QUIC relay processes (mixnn_transport::Endpoint).
    Quic,
    /// A training session over host processes, beside the same model in this process.
    Cascade,
}

#[derive(Debug, clap::Args)]
pub(crate) struct FloorArgs {
    /// Relay processes in each ring; this process closes it, so a lap crosses RELAYS + 1
    /// links.
    #[arg(long, default_value_t = 8, value_name = "N")]
    relays: usize,
    /// Bytes of the message the rings pass round [default: the frame length of the model's
    /// session, as the designer sizes it]. Over UDP, a message larger than 65,499 bytes
    /// travels as several datagrams.
    #[arg(long, value_name = "BYTES")]
    frame_bytes: Option<usize>,
    /// Rounds: each measures every kind once, in turn.
    #[arg(long, default_value_t = 7, value_name = "R")]
    rounds: usize,
    /// Laps of each ring per round.
    #[arg(long, default_value_t = 2000, value_name = "L")]
    laps: usize,
    /// Laps of each ring before the first round, untimed.
    #[arg(long, default_value_t = 200, value_name = "L")]
    warmup_laps: usize,
    /// Training batches per round over the cascade (and as many in this process).
    #[arg(long, default_value_t = 50, value_name = "B")]
    batches: usize,
    /// Batches of each before the first round, untimed.
    #[arg(long, default_value_t = 10, value_name = "B")]
    warmup_batches: usize,
    /// Host processes to start for the cascade.
    #[arg(long, default_value_t = 8, value_name = "M")]
    hosts: usize,
    /// Dummy hosts in the cascade.
    #[arg(long, default_value_t = 2, value_name = "D")]
    dummies: usize,
    /// The loss hop waits for the designer's backward frame, as in the paper's protocol,
    /// instead of turning each batch around itself: what turning saves, side by side.
    #[arg(long)]
    loss_waits: bool,
    /// Model spec (TOML) [default: the paper's MLP, models/paper-mlp.toml].
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// The kinds of measurement, in the order of the first round.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "udp,quic,cascade"
    )]
    kinds: Vec<Kind>,
    /// Where to write report.json.
    #[arg(long, default_value = "bench-results/floor", value_name = "DIR")]
    out: PathBuf,
}

/// The median of a round's times, in microseconds.
fn median_us(times: &[std::time::Duration]) -> f64 {
    median(times.iter().map(|t| t.as_secs_f64() * 1e6).collect())
}

/// The rings and the session, as set up.
struct Setup {
    udp: Option<(UdpRing, Relays)>,
    quic: Option<(QuicRing, Relays)>,
    cascade: Option<CascadeRun>,
}

/// Sums a field of the hosts' counters, after minus before.
fn counted(before: &[DaemonStats], after: &[DaemonStats], f: fn(&DaemonStats) -> u64) -> u64 {
    let sum = |s: &[DaemonStats]| s.iter().map(f).sum::<u64>();
    sum(after).saturating_sub(sum(before))
}

/// Every host's counters, as last written (a second apart: wait for the latest).
fn host_counters(cluster: &LocalCluster, hosts: usize) -> Vec<DaemonStats> {
    std::thread::sleep(std::time::Duration::from_millis(1200));
    (0..hosts)
        .map(|i| cluster.host_stats(i).unwrap_or_default())
        .collect()
}

pub(crate) fn run(args: FloorArgs) -> Result<()> {
    let mut kinds: Vec<Kind> = Vec::new();
    for &k in &args.kinds {
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    if kinds.is_empty() || args.rounds == 0 || args.laps == 0 || args.batches == 0 {
        bail!("nothing to measure: --kinds, --rounds, --laps and --batches must be non-zero");
    }
    if args.relays == 0 {
        bail!("--relays must be at least 1");
    }
    if args.frame_bytes == Some(0) {
        bail!("--frame-bytes must be at least 1");
    }
    let with_cascade = kinds.contains(&Kind::Cascade);
    let spec = model_spec(args.model.as_deref())?;
    let splits = if with_cascade || args.frame_bytes.is_none() {
        Some(args.data.load()?)
    } else {
        None
    };
    let exe = std::env::current_exe().context("finding this program to start the relays")?;
    let cluster = if with_cascade {
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
        loss_turns: !args.loss_waits,
        ..c.remote_options()
    });
    let batch_size = spec.training.batch_size;
    let model = spec.name.clone();
    let (relays, rounds, laps, batches) = (args.relays, args.rounds, args.laps, args.batches);
    let (warmup_laps, warmup_batches, hosts) = (args.warmup_laps, args.warmup_batches, args.hosts);
    let frame_flag = args.frame_bytes;
    let order = kinds.clone();
    let outcome = run_in_sandbox_worker(move |sandbox| {
        let sandbox = sandbox.ok_or_else(|| anyhow!("no sandbox"))?;
        let (bytes, from) = match (frame_flag, &splits) {
            (Some(b), _) => (b, "--frame-bytes".to_owned()),
            (None, Some(s)) => {
                // The plan never contacts the directory: any address sizes the same frames.
                let options = remote.clone().unwrap_or_else(|| {
                    RemoteOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), [0; 32])
                });
                let input = spec.batch_shape(batch_size, s.train.pixels)?;
                let plan = Plan::new(&spec, sandbox, &options, &input)?;
                (plan.frame_len(), "session".to_owned())
            }
            (None, None) => bail!("no data to size the session's frames"),
        };
        println!(
            "message: {bytes} bytes ({}); {} relays and this process in each ring, {} links a lap",
            if from == "session" {
                format!(
                    "the frame length of a {} session, batches of {batch_size}",
                    spec.name
                )
            } else {
                "--frame-bytes".to_owned()
            },
            relays,
            relays + 1
        );
        let mut setup = Setup {
            udp: None,
            quic: None,
            cascade: None,
        };
        for &kind in &order {
            match kind {
                Kind::Udp => {
                    let (socket, _) = UdpRing::bind()?;
                    let mut r = Relays::start(&exe, Transport::Udp, relays, bytes)?;
                    let ring = UdpRing::close(socket, &mut r, bytes)?;
                    setup.udp = Some((ring, r));
                }
                Kind::Quic => {
                    let mut r = Relays::start(&exe, Transport::Quic, relays, bytes)?;
                    let ring = QuicRing::start(&mut r, bytes)?;
                    setup.quic = Some((ring, r));
                }
                Kind::Cascade => {
                    let (options, splits) =
                        remote.as_ref().zip(splits.as_ref()).context("no cluster")?;
                    let spinner = mixnn_designer::progress::spinner(true, crate::SETTING_UP);
                    let run =
                        CascadeRun::connect(&spec, sandbox, options, &splits.train, batch_size);
                    spinner.finish_and_clear();
                    let run = run?;
                    println!(
                        "cascade: session set up in {:.0} ms over {}",
                        run.setup_s * 1e3,
                        run.hops.join(" -> ")
                    );
                    setup.cascade = Some(run);
                }
            }
        }
        // Warm-up, untimed.
        if let Some((ring, _)) = &mut setup.udp {
            ring.laps(warmup_laps.max(1))?;
        }
        if let Some((ring, _)) = &mut setup.quic {
            ring.laps(warmup_laps.max(1))?;
        }
        if let Some(run) = &mut setup.cascade {
            run.batches(warmup_batches.max(1))?;
        }
        let before = cluster.as_ref().map(|c| host_counters(c, hosts));
        let bar = ProgressBar::new((rounds * order.len()) as u64);
        bar.set_style(
            ProgressStyle::with_template("round {msg} [{bar:30}] {pos}/{len}, {elapsed} elapsed")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        let (mut udp, mut quic) = (Vec::new(), Vec::new());
        let mut cascade_rounds: Vec<(f64, f64)> = Vec::new();
        let mut cascade_all = Vec::new();
        for round in 0..rounds {
            bar.set_message(format!("{}/{rounds}", round + 1));
            for k in 0..order.len() {
                match order[(k + round) % order.len()] {
                    Kind::Udp => {
                        if let Some((ring, _)) = &mut setup.udp {
                            udp.push(median_us(&ring.laps(laps)?) / (relays + 1) as f64);
                        }
                    }
                    Kind::Quic => {
                        if let Some((ring, _)) = &mut setup.quic {
                            quic.push(median_us(&ring.laps(laps)?) / (relays + 1) as f64);
                        }
                    }
                    Kind::Cascade => {
                        if let Some(run) = &mut setup.cascade {
                            let times = run.batches(batches)?;
                            let c: Vec<f64> = times.iter().map(|t| t.cascade_us).collect();
                            let i: Vec<f64> = times.iter().map(|t| t.inproc_us).collect();
                            cascade_all.extend_from_slice(&c);
                            cascade_rounds.push((median(c), median(i)));
                        }
                    }
                }
                bar.inc(1);
            }
            tracing::info!(round, ?udp, ?quic, ?cascade_rounds, "round done");
        }
        bar.finish_and_clear();
        let after = cluster.as_ref().map(|c| host_counters(c, hosts));
        let udp_lost = setup.udp.as_ref().map_or(0, |(r, _)| r.lost);
        let cascade = setup.cascade.take().map(|run| {
            let links = run.links_per_batch();
            let timed = (rounds * batches) as f64;
            let (host_layer, hop_work, handoffs, inline) = match (&before, &after) {
                (Some(b), Some(a)) if counted(b, a, |s| s.frames_processed) > 0 => (
                    Some(counted(b, a, |s| s.layer_us) as f64 / timed),
                    Some(
                        counted(b, a, |s| s.frame_us).saturating_sub(counted(b, a, |s| s.layer_us))
                            as f64
                            / timed,
                    ),
                    Some(counted(b, a, |s| s.handoff_us) as f64 / timed),
                    Some(
                        counted(b, a, |s| s.frames_inline) as f64
                            / counted(b, a, |s| s.frames_processed) as f64,
                    ),
                ),
                _ => (None, None, None, None),
            };
            let batch_median = median(cascade_all.clone());
            CascadeReport {
                us_per_link: Stat::of(
                    cascade_rounds
                        .iter()
                        .map(|(c, i)| (c - i) / links as f64)
                        .collect(),
                ),
                batch_us: Stat::of(cascade_rounds.iter().map(|r| r.0).collect()),
                inproc_batch_us: Stat::of(cascade_rounds.iter().map(|r| r.1).collect()),
                links_per_batch: links,
                loss_turns: run.loss_turns,
                hops: run.hops.clone(),
                setup_s: run.setup_s,
                host_layer_us_per_batch: host_layer,
                hop_work_us_per_batch: hop_work,
                host_handoff_us_per_batch: handoffs,
                frames_inline_share: inline,
                us_per_link_from_counters: host_layer.map(|l| (batch_median - l) / links as f64),
            }
        });
        // Rings, relays and the session end here; the cluster after.
        drop(setup);
        if let Some(cluster) = cluster {
            let killed = cluster.shutdown()?;
            if killed > 0 {
                tracing::warn!(killed, "host processes had to be killed");
            }
        }
        let stat = |v: Vec<f64>| (!v.is_empty()).then(|| Stat::of(v));
        Ok(Report {
            bench: "floor",
            udp_us_per_link: None,
            quic_us_per_link: None,
            cascade_us_per_link: None,
            cascade_over_quic: None,
            frame_bytes: bytes,
            frame_bytes_from: from,
            processes: relays + 1,
            relays,
            links_per_lap: relays + 1,
            udp_datagrams_per_message: ring::datagrams_for(bytes),
            udp_lost,
            rounds,
            laps,
            batches,
            model,
            udp: stat(udp),
            quic: stat(quic),
            cascade,
            machine: Machine::this(),
        })
    });
    let mut report = outcome?;
    report.udp_us_per_link = report.udp.as_ref().map(|s| s.median);
    report.quic_us_per_link = report.quic.as_ref().map(|s| s.median);
    report.cascade_us_per_link = report.cascade.as_ref().map(|c| c.us_per_link.median);
    report.cascade_over_quic = report
        .cascade_us_per_link
        .zip(report.quic_us_per_link)
        .map(|(c, q)| c / q.max(1e-9));
    print_lines(&report);
    let path = write_report(&args.out, &report)?;
    println!("{}", serde_json::to_string(&report)?);
    tracing::info!(path = %path.display(), "report written");
    Ok(())
}
