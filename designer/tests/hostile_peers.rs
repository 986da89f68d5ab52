//! Hostile designers and peers against a live host process: one test per bound a stranger
//! controls. In each, a bystander session (the paper's model on the same host) trains
//! throughout; the host refuses the attack and counts it, its peak resident memory grows by a
//! bounded amount while the attack names gigabytes, and at the end the bystander's weights
//! equal the same batches trained in this process, bit for bit.
//!
//! The attackers play designers and peers from other loopback addresses (127.0.0.2, ...), so
//! that limits per source can be told from limits per host; the hosts count a source as one
//! address (`source_prefix_v4 = 32`) for that reason.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use mixnn_designer::{
    backend::Backend,
    cascade::Cascade,
    data::Splits,
    local_cluster::LocalCluster,
    pool::Candidate,
    remote::{RemoteCascade, RemoteError, RemoteOptions},
    train::{self, Model},
};
use mixnn_host::daemon::{DaemonStats, unix_now};
use mixnn_sandbox::{Sandbox, SandboxConfig};
use mixnn_transport::{Endpoint, TlsIdentity};
use mixnn_wire::{
    crypto::{Entropy, Key, SystemEntropy},
    frame::{Op, WireTensor},
    report::Report,
    setup::{self, HopSetup, Peer},
    stream::{StreamHeader, StreamRefusal},
};

mod common;

use common::{
    mnist,
    one_hop::{self, BLOB_LEN, FRAME_LEN, OneHop},
    paper_spec,
};

/// What every test's host runs with besides its own limits: short timeouts, so that the
/// tests need not wait long, and sources of one address.
const BASE_LIMITS: &str = "source_prefix_v4 = 32\nheader_timeout_s = 2\nattach_timeout_s = 4\n";

/// A cluster of one host with `limits` (lines of its `[limits]` table, over
/// [`BASE_LIMITS`]) and `sandbox` (lines of its `[sandbox]` table).
fn host(limits: &str, sandbox: &str) -> LocalCluster {
    let key = |line: &str| line.split('=').next().unwrap_or("").trim().to_owned();
    let overridden: Vec<String> = limits.lines().map(key).collect();
    let base: String = BASE_LIMITS
        .lines()
        .filter(|l| !overridden.contains(&key(l)))
        .map(|l| format!("{l}\n"))
        .collect();
    let extra = format!("[limits]\n{base}{limits}\n[sandbox]\n{sandbox}\n");
    LocalCluster::start_configured(env!("CARGO_BIN_EXE_mixnn").as_ref(), 1, &extra).unwrap()
}

/// A line of `/proc/PID/status`, in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

/// Starts the kernel's high-water mark of `pid`'s resident memory afresh (at its resident
/// memory now, which it returns), so that no peak after it is missed.
fn reset_peak_rss_mib(pid: u32) -> f64 {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    status_mib(pid, "VmRSS:")
}

/// The peak resident memory of `pid` since the last reset, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// Waits until the host's counters satisfy `done` (they are written every second).
fn wait_for(
    cluster: &LocalCluster,
    what: &str,
    done: impl Fn(&DaemonStats) -> bool,
) -> DaemonStats {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(stats) = cluster.host_stats(0).filter(|s| done(s)) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {:?}",
            cluster.host_stats(0)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A QUIC endpoint on `127.0.0.N` with a certificate of its own.
fn stranger(n: u8) -> Endpoint {
    let ip = IpAddr::from([127, 0, 0, n]);
    Endpoint::bind(SocketAddr::new(ip, 0), TlsIdentity::generate().unwrap()).unwrap()
}

/// The host, as the directory serves it.
async fn candidate(cluster: &LocalCluster) -> Candidate {
    common::endpoint_and_pool(cluster).await.1.pop().unwrap()
}

/// A stream to the host, on a connection of its own.
struct Stream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    _connection: quinn::Connection,
}

/// A stream to the host, opened by `endpoint`.
async fn stream(endpoint: &Endpoint, host: &Candidate) -> Stream {
    let addr: SocketAddr = host.descriptor.address.parse().unwrap();
    let connection = endpoint
        .connect(addr, host.descriptor.fingerprint)
        .await
        .unwrap();
    let (send, recv) = connection.open_bi().await.unwrap();
    Stream {
        send,
        recv,
        _connection: connection,
    }
}

/// A setup for a one-hop identity session on `host`, valid but for what `change` does to it.
fn setup_for(host: &Candidate, change: impl FnOnce(&mut HopSetup)) -> HopSetup {
    let mut e = SystemEntropy;
    let mut id = || {
        let mut c = [0u8; 16];
        e.fill(&mut c);
        c
    };
    let mut setup = HopSetup {
        expires_at: unix_now() + 600,
        prev: Peer::Designer,
        next: Peer::Designer,
        circuit_in: id(),
        circuit_out: id(),
        link_in: Key::random(&mut SystemEntropy),
        link_out: Key::random(&mut SystemEntropy),
        blob_key: Key::random(&mut SystemEntropy),
        designer_key: Key::random(&mut SystemEntropy),
        flags: 0,
        frame_len: FRAME_LEN as u32,
        blob_len: BLOB_LEN as u32,
        layers: vec![one_hop::identity()],
    };
    change(&mut setup);
    let _ = host;
    setup
}

/// The op=0 message of `setup` for `host`, with `padding` bytes after its layer, as a
/// designer that does not check its setups builds it.
fn onion_of(host: &Candidate, setup: &HopSetup, padding: usize) -> Vec<u8> {
    setup::wrap_layer(
        &host.onion_key,
        &setup.encode(),
        vec![7; padding],
        &mut SystemEntropy,
    )
    .unwrap()
}

/// Sends a whole op=0 message on a stream of its own.
async fn send_setup(endpoint: &Endpoint, host: &Candidate, onion: &[u8]) -> Stream {
    let mut s = stream(endpoint, host).await;
    let len = onion.len() as u32;
    s.send
        .write_all(&StreamHeader::Setup { len }.encode())
        .await
        .unwrap();
    // The host may stop a refused stream before it is all written.
    let _ = s.send.write_all(onion).await;
    s
}

/// Waits until the host closes a stream: it refused what came on it.
async fn refused(mut s: Stream) {
    closed(&mut s.recv).await;
}

/// Waits until the host closes `recv`'s stream.
async fn closed(recv: &mut quinn::RecvStream) {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(30), recv.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Err(_)) | Ok(Ok(None))),
        "the host did not close the stream: {read:?}"
    );
}

/// A session that trains the paper's model (all its layers on the attacked host) batch after
/// batch until stopped, on its own thread.
struct Bystander {
    stop: Arc<AtomicBool>,
    batches: Arc<AtomicUsize>,
    thread: JoinHandle<Vec<Vec<u8>>>,
    splits: Splits,
}

const BYSTANDER_EXAMPLES: usize = 640;

fn bystander_batch(
    splits: &Splits,
    i: usize,
) -> (mixnn_layer_sdk::Tensor, mixnn_layer_sdk::Tensor) {
    let batches = BYSTANDER_EXAMPLES / 64;
    let start = (i % batches) * 64;
    let indices: Vec<usize> = (start..start + 64).collect();
    train::batch(&splits.train, &indices, None).unwrap()
}

impl Bystander {
    /// Sets the session up on the cluster's host and starts training.
    fn start(cluster: &LocalCluster) -> Self {
        let splits = mnist(BYSTANDER_EXAMPLES, 0);
        let (stop, batches) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        // An hour: within what every test's host grants.
        let options = RemoteOptions {
            session_ttl: Duration::from_secs(3600),
            ..cluster.remote_options()
        };
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = {
            let (stop, batches, splits) = (Arc::clone(&stop), Arc::clone(&batches), splits.clone());
            let sandbox = Arc::new(Sandbox::new(SandboxConfig::default()).unwrap());
            let worker = Arc::clone(&sandbox);
            sandbox
                .spawn_worker("bystander", move || {
                    let spec = paper_spec().on_one_host();
                    let input = [64, splits.train.pixels];
                    let mut session =
                        RemoteCascade::connect(&spec, &worker, &options, &input).unwrap();
                    ready_tx.send(()).unwrap();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let (x, y) = bystander_batch(&splits, i);
                        session.train_step(x, y).expect("the bystander trains on");
                        i += 1;
                        batches.store(i, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    let states = session.export_states().unwrap();
                    session.close();
                    states
                })
                .unwrap()
        };
        ready
            .recv_timeout(Duration::from_secs(60))
            .expect("the bystander's session is set up");
        let bystander = Bystander {
            stop,
            batches,
            thread,
            splits,
        };
        bystander.trains_on(5);
        bystander
    }

    /// Waits until it has trained `n` more batches.
    fn trains_on(&self, n: usize) {
        let from = self.batches.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.batches.load(Ordering::Relaxed) < from + n {
            assert!(Instant::now() < deadline, "the bystander stopped training");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops it, and checks its weights against the same batches trained in this process.
    fn finish(self) -> usize {
        self.trains_on(5);
        self.stop.store(true, Ordering::Relaxed);
        let remote = self.thread.join().unwrap();
        let batches = self.batches.load(Ordering::Relaxed);
        let splits = self.splits;
        let sandbox = Arc::new(Sandbox::new(SandboxConfig::default()).unwrap());
        let worker = Arc::clone(&sandbox);
        let local = sandbox
            .spawn_worker("in process", move || {
                let mut model =
                    Cascade::build(&paper_spec(), Backend::Wasm, Some(&worker)).unwrap();
                for i in 0..batches {
                    let (x, y) = bystander_batch(&splits, i);
                    model.train_step(x, y).unwrap();
                }
                model.export_states().unwrap()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(remote.len(), local.len());
        for (i, (a, b)) in remote.iter().zip(&local).enumerate() {
            assert!(
                a == b,
                "layer {i} of the bystander differs after {batches} batches"
            );
        }
        batches
    }
}

/// Runs `attack` against a host with `limits`, beside a bystander; checks that the host's
/// peak memory grew by less than `max_growth_mib`, that the bystander trained through it, and
/// that the host then takes a new session (unless the attack spent its setup rate), and
/// returns the host's counters.
fn under_attack(
    limits: &str,
    sandbox: &str,
    max_growth_mib: f64,
    attack: impl AsyncFnOnce(&LocalCluster, &Candidate),
    counted: impl Fn(&DaemonStats) -> bool,
) -> DaemonStats {
    let rate_spent = limits.contains("setups_per_minute_total");
    let cluster = host(limits, sandbox);
    let bystander = Bystander::start(&cluster);
    let pid = cluster.host_pid(0).unwrap();
    let before = reset_peak_rss_mib(pid);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let host = candidate(&cluster).await;
        attack(&cluster, &host).await;
    });
    let stats = wait_for(&cluster, "the attack was counted", counted);
    let growth = peak_rss_mib(pid) - before;
    println!("host memory: {before:.1} MiB before the attack, peak {growth:+.1} MiB during it");
    assert!(
        growth < max_growth_mib,
        "the host's peak memory grew by {growth:.1} MiB (at most {max_growth_mib} allowed)"
    );
    let batches = bystander.finish();
    println!("the bystander trained {batches} batches, bit for bit as in process");
    // The host still takes sessions.
    if !rate_spent {
        runtime.block_on(async {
            let host = candidate(&cluster).await;
            let endpoint = stranger(9);
            let mut session = OneHop::open(&endpoint, &host).await;
            let frame = session.cover();
            session.relays(&frame).await;
        });
    }
    drop(runtime);
    cluster.shutdown().unwrap();
    stats
}

#[test]
fn a_setup_naming_a_blob_longer_than_its_frames_is_refused_before_it_is_allocated() {
    // The attack once measured: a valid op=0 naming a 3 GB blob took a host from 20 MB to
    // 1.35 GB resident within 4 s.
    let stats = under_attack(
        "",
        "",
        32.0,
        async |_, host| {
            let endpoint = stranger(2);
            for blob_len in [3_000_000_000, 4_000_000_000, u32::MAX] {
                let setup = setup_for(host, |s| s.blob_len = blob_len);
                refused(send_setup(&endpoint, host, &onion_of(host, &setup, 0)).await).await;
            }
            // The frames themselves: more than a session may choose.
            let setup = setup_for(host, |s| s.frame_len = 1 << 30);
            refused(send_setup(&endpoint, host, &onion_of(host, &setup, 0)).await).await;
        },
        |s| s.setups_invalid >= 4,
    );
    assert_eq!(stats.setups_invalid, 4, "{stats:?}");
}

#[test]
fn sessions_longer_than_the_host_grants_are_refused() {
    let stats = under_attack(
        "max_session_lifetime_s = 7200\n",
        "",
        32.0,
        async |_, host| {
            let endpoint = stranger(2);
            // Far-future sessions would pin the slots and fill the replay cache.
            for lifetime in [30 * 24 * 3600, u64::MAX - unix_now(), 7300] {
                let setup = setup_for(host, |s| s.expires_at = unix_now().saturating_add(lifetime));
                refused(send_setup(&endpoint, host, &onion_of(host, &setup, 0)).await).await;
            }
            // Within the host's lifetime (the designer adds up to 300 s of jitter).
            let mut session = OneHop::open(&endpoint, host).await;
            let frame = session.cover();
            session.relays(&frame).await;
        },
        |s| s.setups_invalid >= 3 && s.setups_accepted >= 2,
    );
    assert_eq!(stats.setups_invalid, 3, "{stats:?}");
}

#[test]
fn setups_being_read_are_bounded_per_source_and_per_host_and_hold_only_what_arrived() {
    let stats = under_attack(
        // The held setups must outlive the test's opening of all the others, however loaded
        // the machine (4 s did not, once, on CI).
        "max_setups_reading = 6\nmax_setups_reading_per_source = 3\nattach_timeout_s = 12\n",
        "",
        48.0,
        async |_, host| {
            // Each announces 60 MiB, sends its own valid layer and then nothing more: the
            // host waits for the rest, holding only what came.
            let stall = async |endpoint: &Endpoint| {
                let setup = setup_for(host, |_| {});
                let layer = onion_of(host, &setup, 0);
                let mut s = stream(endpoint, host).await;
                let header = StreamHeader::Setup { len: 60 << 20 };
                s.send.write_all(&header.encode()).await.unwrap();
                s.send.write_all(&layer).await.unwrap();
                s
            };
            let (a, b, c) = (stranger(2), stranger(3), stranger(4));
            let mut held = Vec::new();
            for _ in 0..3 {
                held.push(stall(&a).await);
            }
            // The source's fourth and fifth are refused at once.
            for _ in 0..2 {
                refused(stall(&a).await).await;
            }
            for _ in 0..3 {
                held.push(stall(&b).await);
            }
            // The host's seventh, from a third source, too.
            refused(stall(&c).await).await;
            // The six held ones time out (attach_timeout_s).
            for s in held {
                refused(s).await;
            }
        },
        |s| s.setups_busy >= 3 && s.streams_timed_out >= 6,
    );
    assert_eq!(
        (stats.setups_busy, stats.streams_timed_out),
        (3, 6),
        "{stats:?}"
    );
}

#[test]
fn garbage_is_refused_after_the_one_block_only_the_hosts_key_opens() {
    let stats = under_attack(
        "",
        "",
        32.0,
        async |_, host| {
            let endpoint = stranger(2);
            let mut s = stream(&endpoint, host).await;
            let len = 64 << 20;
            let header = StreamHeader::Setup { len };
            s.send.write_all(&header.encode()).await.unwrap();
            // 64 MiB of random bytes: the host stops the stream after its first 256.
            let mut garbage = vec![0u8; len as usize];
            SystemEntropy.fill(&mut garbage);
            let written = s.send.write_all(&garbage).await;
            assert!(written.is_err(), "the host read 64 MiB of garbage");
            refused(s).await;
        },
        |s| s.setups_refused >= 1,
    );
    assert_eq!(stats.setups_refused, 1, "{stats:?}");
}

#[test]
fn setup_rates_are_limited_by_source_and_host_whatever_the_certificate() {
    let stats = under_attack(
        "setups_per_minute = 1000\nsetups_per_minute_per_source = 3\nsetups_per_minute_total = 5\n",
        "",
        32.0,
        async |_, host| {
            let garbage = vec![9u8; setup::HEAD_LEN];
            // A fresh certificate for every setup costs nothing; addresses cost.
            for _ in 0..5 {
                refused(send_setup(&stranger(2), host, &garbage).await).await;
            }
            // The bystander's setup took one of the host's five: one left for this source.
            for _ in 0..3 {
                refused(send_setup(&stranger(3), host, &garbage).await).await;
            }
        },
        |s| s.setups_rate_limited + s.setups_refused >= 8,
    );
    // 127.0.0.2: three pass (then fail to peel), two are over its rate; 127.0.0.3: one
    // passes, two are over the host's.
    assert_eq!(
        (stats.setups_refused, stats.setups_rate_limited),
        (4, 4),
        "{stats:?}"
    );
}

#[test]
fn connections_per_source_and_streams_per_connection_are_bounded_and_silent_streams_time_out() {
    let stats = under_attack(
        "max_connections_per_source = 4\n",
        "",
        32.0,
        async |_, host| {
            let endpoint = stranger(2);
            let addr: SocketAddr = host.descriptor.address.parse().unwrap();
            let fp = host.descriptor.fingerprint;
            let half_header = [StreamHeader::Setup { len: 1 }.kind().0];
            let mut kept = Vec::new();
            for _ in 0..10 {
                let connection = endpoint.connect(addr, fp).await.unwrap();
                // Half a header, then silence.
                if let Ok((mut send, recv)) = connection.open_bi().await {
                    let _ = send.write_all(&half_header).await;
                    kept.push((connection, send, recv));
                }
            }
            // The host closes what is over the source's quota.
            tokio::time::sleep(Duration::from_millis(500)).await;
            kept.retain(|(c, ..)| c.close_reason().is_none());
            assert_eq!(kept.len(), 4, "connections left open");
            // Four streams at once on a connection; a fifth waits.
            let connection = kept[0].0.clone();
            for _ in 0..3 {
                let (mut send, recv) = connection.open_bi().await.unwrap();
                send.write_all(&half_header).await.unwrap();
                kept.push((connection.clone(), send, recv));
            }
            let fifth =
                tokio::time::timeout(Duration::from_millis(300), connection.open_bi()).await;
            assert!(fifth.is_err(), "a fifth stream opened at once");
            // The half headers time out (header_timeout_s = 2).
            tokio::time::sleep(Duration::from_secs(3)).await;
        },
        |s| s.connections_refused >= 6 && s.streams_timed_out >= 7,
    );
    assert_eq!(stats.connections_refused, 6, "{stats:?}");
    assert_eq!(stats.streams_timed_out, 7, "{stats:?}");
}

#[test]
fn a_session_that_receives_nothing_ends_after_the_idle_timeout() {
    let stats = under_attack(
        "session_idle_s = 2\n",
        "",
        32.0,
        async |_, host| {
            let endpoint = stranger(2);
            let mut session = OneHop::open(&endpoint, host).await;
            // Silence: the host ends the session and says so.
            let started = Instant::now();
            let Report::Failure(why) = session.report().await else {
                panic!("no failure report")
            };
            assert!(why.contains("no frame for 2 s"), "{why}");
            assert!(started.elapsed() < Duration::from_secs(4));
        },
        |s| s.sessions_idle >= 1,
    );
    assert_eq!(stats.sessions_idle, 1, "{stats:?}");
}

#[test]
fn frame_bytes_are_bounded_per_host_and_a_flood_of_frames_fills_a_queue_not_the_memory() {
    const BIG: usize = 4 << 20;
    let stats = under_attack(
        "max_frame_bytes_total = 10485760\n",
        "",
        96.0,
        async |_, host| {
            let endpoint = stranger(2);
            // Two sessions of 4 MiB frames fit beside the bystander's 52 KB; a third does not.
            let mut flooded = OneHop::open_with(&endpoint, host, one_hop::identity(), BIG).await;
            let _second = OneHop::open_with(&endpoint, host, one_hop::identity(), BIG).await;
            let mut third = OneHop::start(&stranger(3), host, one_hop::identity(), BIG).await;
            closed(&mut third.first_recv).await;
            // 100 frames of 4 MiB that do not open: each is read, refused and dropped.
            let mut junk = vec![0u8; BIG];
            SystemEntropy.fill(&mut junk);
            for _ in 0..100 {
                flooded.send(&junk).await;
            }
            let Report::Failure(why) = flooded.report().await else {
                panic!("no report of the dropped frames")
            };
            assert!(why.contains("dropped a frame"), "{why}");
        },
        |s| s.frames_rejected >= 100 && s.sessions_refused_full >= 1,
    );
    assert_eq!(stats.sessions_refused_full, 1, "{stats:?}");
}

#[test]
fn a_component_cannot_take_more_than_the_memory_all_sessions_share() {
    let stats = under_attack(
        "",
        "max_total_memory_mib = 160\n",
        200.0,
        async |_, host| {
            let endpoint = stranger(2);
            // Twice: the first session's memory comes back when it ends.
            for _ in 0..2 {
                let bomb =
                    one_hop::layer(mixnn_components::HOSTILE, r#"{"behavior":"memory-bomb"}"#);
                let mut session = OneHop::open_with(&endpoint, host, bomb, 4096).await;
                let x = WireTensor {
                    shape: vec![1, 4],
                    data: vec![1.0; 4],
                };
                let frame = session.frame(Op::TEST, Some(x));
                session.send(&frame).await;
                let Report::Failure(why) = session.report().await else {
                    panic!("no failure report")
                };
                assert!(why.contains("memory for all sessions"), "{why}");
            }
        },
        |s| s.sessions_failed >= 2,
    );
    assert_eq!(stats.sessions_failed, 2, "{stats:?}");
}

#[test]
fn a_layer_that_turns_slow_on_the_network_thread_stops_at_its_budget() {
    let stats = under_attack(
        "",
        "",
        50.0,
        async |_, host| {
            let endpoint = stranger(3);
            // Cheap for 8 frames: the first few run on the session's worker, the rest where
            // they arrive, until the layer spins.
            let layer = one_hop::layer(
                mixnn_components::HOSTILE,
                r#"{"behavior":"turns-slow","after":8}"#,
            );
            let mut session = OneHop::open_with(&endpoint, host, layer, 4096).await;
            let x = WireTensor {
                shape: vec![1, 4],
                data: vec![1.0, 2.0, 3.0, 4.0],
            };
            for _ in 0..8 {
                let frame = session.frame(Op::TEST, Some(x.clone()));
                session.send(&frame).await;
                let out = session.receive().await;
                assert_eq!(out.tensor.unwrap().data, vec![2.0, 4.0, 6.0, 8.0]);
            }
            let started = Instant::now();
            let frame = session.frame(Op::TEST, Some(x));
            session.send(&frame).await;
            let Report::Failure(why) = session.report().await else {
                panic!("no failure report")
            };
            // Stopped by its budget (50 ms of CPU), long before the 10 s call timeout.
            assert!(why.contains("budget"), "{why}");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "stopped after {:?}",
                started.elapsed()
            );
        },
        |s| s.inline_over_budget >= 1,
    );
    assert_eq!(stats.inline_over_budget, 1, "{stats:?}");
    assert!(stats.frames_inline >= 4, "{stats:?}");
}

#[test]
fn a_designer_hears_which_hop_refused_its_setup_and_why() {
    let cluster = host("max_session_lifetime_s = 7200\n", "");
    // The designer's default session lasts a day; this host grants two hours.
    let options = cluster.remote_options();
    let sandbox = Arc::new(Sandbox::new(SandboxConfig::default()).unwrap());
    let worker = Arc::clone(&sandbox);
    let refused = sandbox
        .spawn_worker("designer", move || {
            let spec = paper_spec().on_one_host();
            RemoteCascade::connect(&spec, &worker, &options, &[64, 784]).map(|_| ())
        })
        .unwrap()
        .join()
        .unwrap();
    match refused {
        Err(RemoteError::Refused { hop: 0, step, why }) => {
            assert_eq!(why, StreamRefusal::OUT_OF_BOUNDS);
            assert_eq!(step, "setup");
        }
        other => panic!("{other:?}"),
    }
    let stats = wait_for(&cluster, "the refusal was counted", |s| {
        s.setups_invalid >= 1
    });
    assert_eq!(stats.setups_invalid, 1, "{stats:?}");
    cluster.shutdown().unwrap();
}

#[test]
fn one_source_cannot_hold_every_session_slot() {
    let stats = under_attack(
        "max_sessions_per_source = 2\n",
        "",
        32.0,
        async |_, host| {
            let endpoint = stranger(2);
            let _first = OneHop::open(&endpoint, host).await;
            let _second = OneHop::open(&endpoint, host).await;
            let mut third = OneHop::start(&endpoint, host, one_hop::identity(), FRAME_LEN).await;
            closed(&mut third.first_recv).await;
            // Another source still gets a session.
            let mut other = OneHop::open(&stranger(3), host).await;
            let frame = other.cover();
            other.relays(&frame).await;
        },
        |s| s.sessions_refused_full >= 1,
    );
    assert_eq!(stats.sessions_refused_full, 1, "{stats:?}");
}
