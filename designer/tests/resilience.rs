//! Sessions that survive their hosts, over real host processes on loopback: a host killed
//! (`kill -9` from outside, or a host that sends itself SIGKILL at a chosen frame: during
//! op=0, a backward pass, an export and the test pass) is noticed within seconds, named by
//! its position, replaced by a fresh host from the pool while the others keep their places,
//! and the batches since the last checkpoint are replayed: the losses, the test outputs and
//! the final weights are bit for bit those of the same training in one process.
//!
//! Data: `$MIXNN_DATA`, else `../shared/data/mnist` beside the workspace (`common::mnist_dir`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::time::{Duration, Instant};

use mixnn_designer::{
    backend::Backend,
    cascade::Cascade,
    data::Splits,
    local_cluster::LocalCluster,
    recovery::{Checkpoint, Event, RecoveryOptions, Resilient},
    remote::RemoteOptions,
    train::{self, Model},
};
use mixnn_sandbox::Sandbox;

mod common;

use common::{mnist, on_worker, paper_spec};

const BATCH: usize = 64;
const BATCHES: usize = 12;
const CHECKPOINT_EVERY: usize = 4;

fn remote_options(cluster: &LocalCluster) -> RemoteOptions {
    RemoteOptions {
        session_ttl: Duration::from_secs(600),
        ..cluster.remote_options()
    }
}

/// What a run gives: every batch's loss, the test outputs, every layer's final state.
#[derive(Debug, PartialEq)]
struct Outcome {
    losses: Vec<u32>,
    outputs: Vec<Vec<u32>>,
    states: Vec<Vec<u8>>,
}

/// Trains `BATCHES` batches in order, calling `between(b)` before batch `b`, then runs the
/// test set in batches.
fn run<M: Model>(
    model: &mut M,
    data: &Splits,
    mut between: impl FnMut(usize),
) -> (Vec<u32>, Vec<Vec<u32>>)
where
    M::Error: std::fmt::Debug,
{
    let mut losses = Vec::new();
    for b in 0..BATCHES {
        between(b);
        let indices: Vec<usize> = (b * BATCH..(b + 1) * BATCH).collect();
        let (x, y) = train::batch(&data.train, &indices, None).unwrap();
        losses.push(model.train_step(x, y).unwrap().to_bits());
    }
    between(BATCHES);
    let mut outputs = Vec::new();
    for t in 0..data.test.len() / BATCH {
        let indices: Vec<usize> = (t * BATCH..(t + 1) * BATCH).collect();
        let (x, _) = train::batch(&data.test, &indices, None).unwrap();
        let out = model.predict(x).unwrap();
        outputs.push(out.data().iter().map(|v| v.to_bits()).collect());
    }
    (losses, outputs)
}

/// `got` is `expected` bit for bit, but for the losses of the batches `spoiled` (returned
/// before a lie was caught).
fn assert_identical(got: &Outcome, expected: &Outcome, spoiled: &[usize]) {
    assert_eq!(got.losses.len(), expected.losses.len());
    for (b, (g, e)) in got.losses.iter().zip(&expected.losses).enumerate() {
        if !spoiled.contains(&b) {
            assert_eq!(g, e, "the loss of batch {b}");
        }
    }
    assert_eq!(got.outputs, expected.outputs);
    assert!(got.states == expected.states, "the final states differ");
}

fn data() -> Splits {
    mnist(BATCH * BATCHES, 2 * BATCH)
}

/// The same training in this process.
fn in_process(sandbox: &Sandbox, data: &Splits) -> Outcome {
    let mut local = Cascade::build(&paper_spec(), Backend::Wasm, Some(sandbox)).unwrap();
    let (losses, outputs) = run(&mut local, data, |_| {});
    Outcome {
        losses,
        outputs,
        states: local.export_states().unwrap(),
    }
}

fn recovery() -> RecoveryOptions {
    RecoveryOptions {
        checkpoint_every: Some(CHECKPOINT_EVERY),
        ..RecoveryOptions::default()
    }
}

fn kill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_host_killed_mid_training_is_named_replaced_and_the_run_ends_bit_identical() {
    // The paper's cascade takes 5 hosts; one spare.
    let cluster = LocalCluster::start(env!("CARGO_BIN_EXE_mixnn").as_ref(), 6).unwrap();
    let remote = remote_options(&cluster);
    let addrs: Vec<String> = cluster.host_addrs.iter().map(ToString::to_string).collect();
    let pids: Vec<u32> = (0..addrs.len())
        .map(|i| cluster.host_pid(i).unwrap())
        .collect();
    let data = data();
    let (expected, got, events, victim, killed_at) = on_worker(move |sandbox| {
        let expected = in_process(sandbox, &data);
        let mut model = Resilient::connect(
            &paper_spec(),
            sandbox,
            &remote,
            &[BATCH, 784],
            Checkpoint::default(),
            recovery(),
        )
        .unwrap();
        // The third hop, killed after batch 6 (two batches past a checkpoint).
        let victim = 2;
        let host = model.hosts()[victim].address.clone();
        let index = addrs.iter().position(|a| *a == host).unwrap();
        let mut killed_at = None;
        let (losses, outputs) = run(&mut model, &data, |b| {
            if b == 6 {
                kill(pids[index]);
                killed_at = Some(Instant::now());
            }
        });
        let got = Outcome {
            losses,
            outputs,
            states: model.export_states().unwrap(),
        };
        assert!(!model.hosts().iter().any(|h| h.address == host));
        let events = model.events().to_vec();
        model.close();
        (expected, got, events, victim, killed_at.unwrap())
    });
    let failures: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Failed { .. }))
        .collect();
    assert_eq!(failures.len(), 1, "{events:?}");
    let Event::Failed { hop, at, error, .. } = failures[0] else {
        unreachable!()
    };
    assert_eq!(*hop, Some(victim), "{error}");
    let detect = at.duration_since(killed_at);
    eprintln!("killed hop {victim}: detected after {detect:?} ({error})");
    // The goal is 2 s (the links' idle timeout is 1.5 s); a loaded CI machine gets slack.
    assert!(detect < Duration::from_secs(5), "{detect:?}");
    let recovered: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Recovered { .. }))
        .collect();
    assert_eq!(recovered.len(), 1, "{events:?}");
    let Event::Recovered {
        replaced, replayed, ..
    } = recovered[0]
    else {
        unreachable!()
    };
    assert_eq!(replaced, &vec![victim]);
    assert_eq!(*replayed, 6 % CHECKPOINT_EVERY);
    assert_identical(&got, &expected, &[]);
}

#[test]
fn hosts_dying_during_setup_backward_export_and_test_are_each_replaced_bit_identically() {
    // Hosts 0-3 die on their first setup, third backward frame, first export frame and
    // first test frame; the first session is placed on them in that order, with host 4 last.
    // Hosts 5-8 are spares.
    let faults = [
        "[faults]\ndie_on = \"setup\"\n",
        "[faults]\ndie_on = \"backward\"\ndie_at = 3\n",
        "[faults]\ndie_on = \"export\"\n",
        "[faults]\ndie_on = \"test\"\n",
    ];
    let cluster = LocalCluster::start_each(env!("CARGO_BIN_EXE_mixnn").as_ref(), 9, |i| {
        faults.get(i).copied().unwrap_or_default().to_owned()
    })
    .unwrap();
    let remote = remote_options(&cluster);
    let dying: Vec<Option<[u8; 32]>> = (0..5)
        .map(|i| Some(host_fingerprint(&cluster, i)))
        .collect();
    let data = data();
    let (expected, got, events) = on_worker(move |sandbox| {
        let expected = in_process(sandbox, &data);
        let mut model = Resilient::connect_on(
            &paper_spec(),
            sandbox,
            &remote,
            &[BATCH, 784],
            Checkpoint::default(),
            recovery(),
            dying,
        )
        .unwrap();
        let (losses, outputs) = run(&mut model, &data, |_| {});
        let got = Outcome {
            losses,
            outputs,
            states: model.export_states().unwrap(),
        };
        let mut events = model.events().to_vec();
        model.close();
        events.retain(|e| !matches!(e, Event::Checkpoint { .. }));
        (expected, got, events)
    });
    eprintln!("{events:#?}");
    let failed: Vec<Option<usize>> = events
        .iter()
        .filter_map(|e| match e {
            Event::Failed { hop, .. } => Some(*hop),
            _ => None,
        })
        .collect();
    // Setup at position 0, backward at 1, export at 2, test at 3.
    assert_eq!(
        failed,
        vec![Some(0), Some(1), Some(2), Some(3)],
        "{events:#?}"
    );
    let replaced: Vec<Vec<usize>> = events
        .iter()
        .filter_map(|e| match e {
            Event::Recovered { replaced, .. } => Some(replaced.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(replaced, vec![vec![0], vec![1], vec![2], vec![3]]);
    assert_identical(&got, &expected, &[]);
}

/// Host `i`'s certificate fingerprint, from its keys.
#[test]
fn a_host_stopped_with_sigterm_ends_its_step_says_so_and_exits_and_the_run_ends_bit_identical() {
    // Host 0 sends itself SIGTERM as it handles its seventh forward frame (batch 6), in
    // the middle of that step; it sits at position 2. Hosts 5 and 6 are spares.
    let victim = 2;
    let mut cluster = LocalCluster::start_each(env!("CARGO_BIN_EXE_mixnn").as_ref(), 7, |i| {
        if i == 0 {
            "[faults]\ndie_on = \"forward\"\ndie_at = 7\ndie_by = \"term\"\n".to_owned()
        } else {
            String::new()
        }
    })
    .unwrap();
    let remote = remote_options(&cluster);
    let mut placement: Vec<Option<[u8; 32]>> = vec![None; 5];
    placement[victim] = Some(host_fingerprint(&cluster, 0));
    let data = data();
    let (expected, got, events) = on_worker(move |sandbox| {
        let expected = in_process(sandbox, &data);
        let mut model = Resilient::connect_on(
            &paper_spec(),
            sandbox,
            &remote,
            &[BATCH, 784],
            Checkpoint::default(),
            recovery(),
            placement,
        )
        .unwrap();
        let (losses, outputs) = run(&mut model, &data, |_| {});
        let got = Outcome {
            losses,
            outputs,
            states: model.export_states().unwrap(),
        };
        let mut events = model.events().to_vec();
        model.close();
        events.retain(|e| !matches!(e, Event::Checkpoint { .. }));
        (expected, got, events)
    });
    eprintln!("{events:#?}");
    // One failure, named: the host said why, at the end of its step (batch 6 was done).
    let failures: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Failed { .. }))
        .collect();
    assert_eq!(failures.len(), 1, "{events:#?}");
    let Event::Failed {
        hop,
        error,
        batches,
        ..
    } = failures[0]
    else {
        unreachable!()
    };
    assert_eq!(*hop, Some(victim), "{error}");
    assert!(error.contains("shutting down"), "{error}");
    // The step under way when the signal came (batch 6) was finished; under load the hop
    // may see the signal a step later, but always between steps.
    assert!(*batches >= 7, "{batches}");
    let replaced: Vec<Vec<usize>> = events
        .iter()
        .filter_map(|e| match e {
            Event::Recovered { replaced, .. } => Some(replaced.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(replaced, vec![vec![victim]]);
    assert_identical(&got, &expected, &[]);
    // The host left by itself, cleanly, and counted the session it drained.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = cluster.host_exit(0) {
            break status;
        }
        assert!(Instant::now() < deadline, "the host did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let stats = cluster.host_stats(0).unwrap();
    assert_eq!(stats.sessions_drained, 1, "{stats:?}");
    assert_eq!(stats.sessions_failed, 0, "{stats:?}");
}

fn host_fingerprint(cluster: &LocalCluster, i: usize) -> [u8; 32] {
    let keys =
        mixnn_host::keys::HostKeys::load(&cluster.host_dir(i).unwrap().join("keys")).unwrap();
    keys.tls.fingerprint()
}

/// `mixnn train` (a real designer process) over a local cluster.
fn mixnn_train(cluster: &LocalCluster, extra: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mixnn"));
    let data = common::mnist_dir();
    let model = common::workspace().join("models/paper-mlp.toml");
    let fingerprint = mixnn_transport::hex_fingerprint::format(&cluster.directory_fingerprint);
    cmd.arg("train")
        .arg("--model")
        .arg(model)
        .arg("--data")
        .arg(data)
        .args([
            "--train-limit",
            "3200",
            "--test-limit",
            "128",
            "--epochs",
            "2",
        ])
        .args(["--json", "--dummies", "0", "--directory"])
        .arg(cluster.directory_addr.to_string())
        .args(["--directory-fingerprint", &fingerprint])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    cmd
}

#[test]
fn a_designer_killed_mid_run_resumes_from_its_checkpoint_bit_identically() {
    let cluster = LocalCluster::start(env!("CARGO_BIN_EXE_mixnn").as_ref(), 5).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let (whole, resumed) = (
        dir.path().join("whole.safetensors"),
        dir.path().join("resumed.safetensors"),
    );
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    // Uninterrupted, over the same cluster.
    let status = mixnn_train(&cluster, &["--save-weights", &path(&whole)])
        .status()
        .unwrap();
    assert!(status.success());
    // Killed with SIGKILL after its second checkpoint (50 batches per epoch, one every 20),
    // so in the middle of the first epoch.
    let mut designer = mixnn_train(
        &cluster,
        &[
            "--checkpoint",
            &path(&checkpoints),
            "--checkpoint-every",
            "20",
        ],
    )
    .spawn()
    .unwrap();
    let file = Checkpoint::path(&checkpoints);
    let deadline = Instant::now() + Duration::from_secs(120);
    let killed_after = loop {
        if let Ok(c) = Checkpoint::read(&checkpoints)
            && c.batches >= 40
        {
            kill(designer.id());
            break c.batches;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint in {}",
            file.display()
        );
        assert!(
            designer.try_wait().unwrap().is_none(),
            "the designer ended before its kill"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = designer.wait();
    let at = Checkpoint::read(&checkpoints).unwrap().batches;
    assert!((40..100).contains(&at), "{at}");
    eprintln!("designer killed after checkpoint {killed_after}; resuming from batch {at}");
    let out = mixnn_train(
        &cluster,
        &[
            "--resume",
            &path(&checkpoints),
            "--save-weights",
            &path(&resumed),
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success());
    // The epochs it reports: the one it resumed in, and the next.
    let epochs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"epoch\""))
        .count();
    assert_eq!(epochs, if at >= 50 { 1 } else { 2 });
    assert!(
        std::fs::read(&whole).unwrap() == std::fs::read(&resumed).unwrap(),
        "the resumed run's weights differ from the uninterrupted run's"
    );
}

/// Trains and tests over a cluster whose host 0 lies as `lie` says (TOML of its `[faults]`),
/// the first session placed with host 0 at position `at` (and hosts 1-4 elsewhere); returns
/// the outcome and the events.
fn with_a_liar(lie: &'static str, at: usize) -> (Outcome, Outcome, Vec<Event>) {
    let cluster = LocalCluster::start_each(env!("CARGO_BIN_EXE_mixnn").as_ref(), 9, |i| {
        if i == 0 {
            format!("[faults]\n{lie}\n")
        } else {
            String::new()
        }
    })
    .unwrap();
    let remote = remote_options(&cluster);
    let mut first: Vec<Option<[u8; 32]>> = (1..5)
        .map(|i| Some(host_fingerprint(&cluster, i)))
        .collect();
    first.insert(at, Some(host_fingerprint(&cluster, 0)));
    let data = data();
    on_worker(move |sandbox| {
        let expected = in_process(sandbox, &data);
        let mut model = Resilient::connect_on(
            &paper_spec(),
            sandbox,
            &remote,
            &[BATCH, 784],
            Checkpoint::default(),
            RecoveryOptions {
                // Every window and test batch checked.
                audit_share: 1e9,
                ..recovery()
            },
            first,
        )
        .unwrap();
        let (losses, outputs) = run(&mut model, &data, |_| {});
        let got = Outcome {
            losses,
            outputs,
            states: model.export_states().unwrap(),
        };
        let events = model.events().to_vec();
        model.close();
        (expected, got, events)
    })
}

/// The one `Caught` event, its hop and probes.
fn caught(events: &[Event]) -> (Option<usize>, &'static str, usize) {
    let caught: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Caught {
                hop, by, probes, ..
            } => Some((*hop, *by, *probes)),
            _ => None,
        })
        .collect();
    assert_eq!(caught.len(), 1, "{events:#?}");
    caught[0]
}

#[test]
fn a_host_that_skips_its_updates_is_caught_by_an_audit_named_and_rolled_back() {
    // It lies from its sixth batch on: the audit of batches 5-8 catches it.
    let (expected, got, events) = with_a_liar("lie = \"skip-update\"\nlie_from = 6", 1);
    let (hop, by, probes) = caught(&events);
    eprintln!("skip-update caught by {by}, hop {hop:?}, {probes} probes");
    assert_eq!((hop, by), (Some(1), "audit"));
    // The losses of the batches it spoiled were returned before the audit: from batch 6
    // (index 5) to the audit's end they are the liar's; all later ones are honest.
    // The losses of batches 6-8 were the liar's, returned before the audit caught it.
    assert_identical(&got, &expected, &[5, 6, 7]);
}

#[test]
fn a_host_that_perturbs_its_activations_is_caught_and_named_by_group_testing() {
    let (expected, got, events) = with_a_liar("lie = \"perturb-forward\"\nlie_from = 6", 1);
    let (hop, by, probes) = caught(&events);
    eprintln!("perturb-forward caught by {by}, hop {hop:?}, {probes} probes");
    assert_eq!((hop, by), (Some(1), "audit"));
    assert!(probes >= 2, "{probes}");
    // The losses of batches 6-8 were the liar's, returned before the audit caught it.
    assert_identical(&got, &expected, &[5, 6, 7]);
}

#[test]
fn a_host_that_lies_about_the_loss_alone_is_caught_by_an_audit_of_the_losses() {
    // The log-softmax hop perturbs its output: NLL's gradient does not depend on it, so
    // every state is honest, but the losses the designer was told are not.
    let (expected, got, events) = with_a_liar("lie = \"perturb-forward\"\nlie_from = 6", 3);
    let (hop, by, probes) = caught(&events);
    eprintln!("loss liar caught by {by}, hop {hop:?}, {probes} probes");
    assert_eq!((hop, by), (Some(3), "audit"));
    // The losses of batches 6-8 were the liar's, returned before the audit caught it.
    assert_identical(&got, &expected, &[5, 6, 7]);
}

#[test]
fn a_host_that_lies_only_in_the_test_pass_is_caught_by_the_test_check() {
    // Twelve forward frames of training, then every test frame perturbed.
    let (expected, got, events) = with_a_liar("lie = \"perturb-forward\"\nlie_from = 13", 2);
    let (hop, by, probes) = caught(&events);
    eprintln!("test-pass liar caught by {by}, hop {hop:?}, {probes} probes");
    assert_eq!((hop, by), (Some(2), "test"));
    assert_identical(&got, &expected, &[]);
}
