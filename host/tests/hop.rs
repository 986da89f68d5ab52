//! A session's hops driven frame by frame without sockets: the designer's circuit, three hops
//! (one a dummy, one holding three layers with the loss) and the same layers called directly
//! must agree bit for bit, and each hop sees only what it should.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use mixnn_components::{IDENTITY, LINEAR, LINEAR_RELU, LOG_SOFTMAX, NLL_LOSS};
use mixnn_host::hop::{Hop, Outgoing, Toward};
use mixnn_sandbox::{
    LayerSession, Sandbox, SandboxConfig,
    wit::{Mode, Tensor},
};
use std::sync::Arc;

use mixnn_wire::{
    circuit::{self, DesignerCircuit, HopPlan, SessionParams},
    crypto::{OnionPrivateKey, OnionPublicKey, SystemEntropy},
    export,
    frame::{FrameBody, Op, WireTensor},
    report::{Neighbour, Report},
    route,
    setup::{Freshness, HopLayer, HopSetup, MIN_BLOB_LEN, Peer, peel},
};

fn config(seed: u64, layer: &str) -> Vec<u8> {
    format!(r#"{{"seed": {seed}, "optimizer": {{"lr": 0.1, "momentum": 0.9}}, "layer": {layer}}}"#)
        .into_bytes()
}

/// The hops' layers, their init drawing from `seed`.
fn layers_seeded(seed: u64) -> Vec<Vec<(&'static [u8], Vec<u8>)>> {
    let config = |layer: &str| config(seed, layer);
    vec![
        vec![(
            LINEAR_RELU,
            config(r#"{"in_features": 6, "out_features": 5}"#),
        )],
        vec![(IDENTITY, config("{}"))],
        vec![
            (LINEAR, config(r#"{"in_features": 5, "out_features": 3}"#)),
            (LOG_SOFTMAX, config("{}")),
            (NLL_LOSS, config("{}")),
        ],
    ]
}

fn layers() -> Vec<Vec<(&'static [u8], Vec<u8>)>> {
    layers_seeded(5)
}

/// Which hop runs each of the five layers.
const HOP_OF_LAYER: [usize; 5] = [0, 1, 2, 2, 2];

/// The same layers called directly, without hops.
fn direct_layers(sandbox: &Sandbox, seed: u64) -> Vec<LayerSession> {
    layers_seeded(seed)
        .into_iter()
        .flatten()
        .map(|(c, config)| {
            let mut session = sandbox.start(&sandbox.load(c).unwrap()).unwrap();
            session.init(&config).unwrap();
            session
        })
        .collect()
}

/// Runs `f` on a worker of a fresh sandbox (components run only there).
fn on_worker(f: impl FnOnce(&Sandbox) + Send + 'static) {
    let sandbox = std::sync::Arc::new(Sandbox::new(SandboxConfig::default()).unwrap());
    let sandbox2 = std::sync::Arc::clone(&sandbox);
    sandbox
        .spawn_worker("test", move || f(&sandbox2))
        .unwrap()
        .join()
        .unwrap();
}

struct Session {
    designer: DesignerCircuit,
    hops: Vec<Hop<SystemEntropy>>,
    /// What each hop decrypted at setup.
    setups: Vec<HopSetup>,
    /// The hops' onion keys (SPKI DER), in sessions with per-message onions.
    routes: Option<Vec<Vec<u8>>>,
    /// What hops 1 and 2 sent as they started (nothing, unless they failed).
    later: Vec<Vec<Outgoing>>,
    /// Whether the hops' updates are left to their next frame, instead of run as the daemon
    /// runs them, once a hop's frames are out.
    lazy_updates: bool,
}

/// Sets up a session whose layers start from `states` (by layer; empty: their own init).
fn start(sandbox: &Sandbox, states: &[Vec<u8>]) -> (Session, Vec<Outgoing>) {
    start_with(sandbox, states, false, [0; 3])
}

/// As [`start`]; with `routes`, forward and backward frames carry per-message onions; each
/// hop's flags have `extra`'s too.
fn start_with(
    sandbox: &Sandbox,
    states: &[Vec<u8>],
    routes: bool,
    extra: [u8; 3],
) -> (Session, Vec<Outgoing>) {
    let keys: Vec<Arc<OnionPrivateKey>> = (0..3)
        .map(|_| Arc::new(OnionPrivateKey::generate().unwrap()))
        .collect();
    let route_flag = if routes { HopSetup::PER_MESSAGE_RSA } else { 0 };
    let publics: Vec<_> = keys.iter().map(|k| k.public_key().unwrap()).collect();
    let plan = layers()
        .into_iter()
        .enumerate()
        .map(|(i, layers)| HopPlan {
            host: Peer::Host {
                address: format!("127.0.0.1:{}", 7000 + i),
                fingerprint: [i as u8; 32],
            },
            onion_key: &publics[i],
            layers: layers
                .into_iter()
                .enumerate()
                .map(|(k, (c, config))| {
                    let layer = HOP_OF_LAYER.iter().position(|&h| h == i).unwrap() + k;
                    HopLayer {
                        component: c.to_vec(),
                        config,
                        state: states.get(layer).cloned().unwrap_or_default(),
                    }
                })
                .collect(),
            flags: if i == 2 { HopSetup::LOSS } else { 0 } | route_flag | extra[i],
        })
        .collect();
    let params = SessionParams {
        // Virtual time: the hops peel at second 1.
        expires_at: 1000,
        frame_len: if routes { 2048 } else { 1024 },
        blob_len: MIN_BLOB_LEN as u32,
    };
    let (mut onion, designer) = circuit::build(plan, params, &mut SystemEntropy).unwrap();
    let mut hops = Vec::new();
    let mut setups = Vec::new();
    let mut first_out = Vec::new();
    for key in &keys {
        let peeled = peel(key, &onion, Freshness::at(1), &mut SystemEntropy).unwrap();
        onion = peeled.forward;
        setups.push(peeled.setup.clone());
        let (mut hop, out) = Hop::start(peeled.setup, sandbox, SystemEntropy).unwrap();
        hop.set_route_key(Arc::clone(key));
        hops.push(hop);
        first_out.push(out);
    }
    // Only the first hop speaks at once, unless another one fails to start.
    if extra == [0; 3] {
        assert!(first_out[1].is_empty() && first_out[2].is_empty());
    }
    let mut first_out = first_out.into_iter();
    let out = first_out.next().unwrap();
    let later = first_out.collect();
    (
        Session {
            designer,
            hops,
            setups,
            routes: routes.then(|| publics.iter().map(|k| k.der().to_vec()).collect()),
            later,
            lazy_updates: false,
        },
        out,
    )
}

impl Session {
    /// Delivers frames hop to hop until some reach the designer; returns those, with the side
    /// they came out of.
    fn run(&mut self, from_hop: usize, mut pending: Vec<Outgoing>) -> Vec<(Toward, Vec<u8>)> {
        pending.reverse();
        let mut at = vec![from_hop; pending.len()];
        let mut to_designer = Vec::new();
        while let Some(o) = pending.pop() {
            let hop = at.pop().unwrap();
            let (target, from) = match o.to {
                Toward::Next if hop + 1 == self.hops.len() => {
                    to_designer.push((Toward::Next, o.frame));
                    continue;
                }
                Toward::Prev if hop == 0 => {
                    to_designer.push((Toward::Prev, o.frame));
                    continue;
                }
                Toward::Next => (hop + 1, Toward::Prev),
                Toward::Prev => (hop - 1, Toward::Next),
            };
            let mut out = self.hops[target]
                .on_frame(from, &o.frame)
                .unwrap_or_else(|e| panic!("hop {target} from {from:?}: {e:?}"));
            out.extend(self.update(target));
            // Keep order: earlier frames first.
            for o in out.into_iter().rev() {
                pending.push(o);
                at.push(target);
            }
        }
        to_designer
    }

    /// As the daemon does once hop `i`'s frames are out: its layers' update (unless lazy).
    fn update(&mut self, i: usize) -> Vec<Outgoing> {
        if self.lazy_updates {
            Vec::new()
        } else {
            self.hops[i].update()
        }
    }

    /// `body` with a fresh per-message onion, in sessions that use them.
    fn routed(&self, body: &FrameBody) -> FrameBody {
        let mut body = body.clone();
        if let Some(ders) = &self.routes {
            let keys: Vec<OnionPublicKey> = ders
                .iter()
                .map(|d| OnionPublicKey::from_der(d).unwrap())
                .collect();
            let mut order: Vec<&OnionPublicKey> = keys.iter().collect();
            if body.op == Op::BACKWARD {
                order.reverse();
            }
            if matches!(body.op, Op::FORWARD | Op::BACKWARD) {
                body.route = route::build(&order, body.op, &mut SystemEntropy).unwrap();
            }
        }
        body
    }

    fn send_first(&mut self, body: &FrameBody) -> Vec<(Toward, Vec<u8>)> {
        let frame = self.designer.first.seal(&self.routed(body)).unwrap();
        let mut out = self.hops[0].on_frame(Toward::Prev, &frame).unwrap();
        out.extend(self.update(0));
        self.run(0, out)
    }

    fn send_last(&mut self, body: &FrameBody) -> Vec<(Toward, Vec<u8>)> {
        let frame = self.designer.last.seal(&self.routed(body)).unwrap();
        let last = self.hops.len() - 1;
        let mut out = self.hops[last].on_frame(Toward::Next, &frame).unwrap();
        out.extend(self.update(last));
        self.run(last, out)
    }

    fn report_from_last(&mut self, frame: &[u8]) -> (usize, Report) {
        let body = self.designer.last.open(frame).unwrap();
        assert_eq!(body.op, Op::REPORT);
        self.designer.open_from_last(&body.blob).unwrap()
    }
}

fn batch(step: usize) -> (WireTensor, WireTensor) {
    let x = (0..24)
        .map(|i| ((i * 7 + step * 3) % 11) as f32 / 11.0)
        .collect();
    let y = (0..4).map(|i| ((i + step) % 3) as f32).collect();
    (
        WireTensor {
            shape: vec![4, 6],
            data: x,
        },
        WireTensor {
            shape: vec![4],
            data: y,
        },
    )
}

/// Sends batch `x` with labels `y` into the first hop; what came out towards the designer.
fn send_batch(s: &mut Session, x: &WireTensor, y: &WireTensor) -> Vec<(Toward, Vec<u8>)> {
    let blob = s.designer.label_blob(y, &mut SystemEntropy).unwrap();
    s.send_first(&FrameBody {
        op: Op::FORWARD,
        tensor: Some(x.clone()),
        blob,
        route: Vec::new(),
    })
}

/// The same training step on `direct`: forward, loss, backward. The loss and the gradient
/// of the input.
fn direct_step(direct: &mut [LayerSession], x: &WireTensor, y: &WireTensor) -> (f32, Tensor) {
    let mut t = Tensor {
        shape: x.shape.clone(),
        data: x.data.clone(),
    };
    for layer in &mut direct[..4] {
        t = layer.forward(&t, Mode::Train).unwrap();
    }
    let target = Tensor {
        shape: y.shape.clone(),
        data: y.data.clone(),
    };
    let loss = direct[4].loss(&t, &target).unwrap();
    let mut g = loss.grad_input;
    for layer in direct[..4].iter_mut().rev() {
        g = backward_step(layer, &g);
    }
    (loss.loss, g)
}

/// A layer's backward pass and its update: the gradient of its input.
fn backward_step(layer: &mut LayerSession, g: &Tensor) -> Tensor {
    let g = layer.backward(g, true).unwrap().unwrap();
    layer.update().unwrap();
    g
}

/// One training step through the session; checks the loss and the input gradient against
/// the same step on `direct`.
fn train_step_like_direct(s: &mut Session, direct: &mut [LayerSession], step: usize) {
    let (x, y) = batch(step);
    let out = send_batch(s, &x, &y);
    assert_eq!(out.len(), 1);
    let (hop, report) = s.report_from_last(&out[0].1);
    let (loss, g) = direct_step(direct, &x, &y);
    assert_eq!((hop, report), (2, Report::Loss(loss)), "step {step}");
    let blob = s.designer.random_blob(&mut SystemEntropy);
    let out = s.send_last(&FrameBody {
        op: Op::BACKWARD,
        tensor: None,
        blob,
        route: Vec::new(),
    });
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, Toward::Prev);
    let back = s.designer.first.open(&out[0].1).unwrap();
    assert_eq!(back.op, Op::BACKWARD);
    assert_eq!(
        back.tensor.unwrap().data,
        g.data,
        "input gradient, step {step}"
    );
}

#[test]
fn hops_start_from_the_states_their_setup_carries() {
    on_worker(|sandbox| {
        // States unlike the hops' own init (another seed), with momentum from one step.
        let mut direct = direct_layers(sandbox, 6);
        let mut scratch = direct_layers(sandbox, 6);
        let (x, _) = batch(0);
        let mut t = Tensor {
            shape: x.shape,
            data: x.data,
        };
        for layer in &mut scratch[..4] {
            t = layer.forward(&t, Mode::Train).unwrap();
        }
        for layer in scratch[..4].iter_mut().rev() {
            t = backward_step(layer, &t);
        }
        let states: Vec<Vec<u8>> = scratch
            .iter_mut()
            .map(|l| l.export_state().unwrap())
            .collect();
        for (layer, state) in direct.iter_mut().zip(&states) {
            layer.import_state(state).unwrap();
        }
        let (mut s, ready) = start(sandbox, &states);
        let out = s.run(0, ready);
        assert_eq!(s.report_from_last(&out[0].1), (2, Report::Ready));
        for step in 1..3 {
            train_step_like_direct(&mut s, &mut direct, step);
        }

        // A state that does not fit its layer (the 5x3 linear's, for the 6x5 one) fails the
        // setup, and the failure reaches the designer.
        let mut wrong = vec![Vec::new(); 5];
        wrong[0] = states[2].clone();
        let (mut s, out) = start(sandbox, &wrong);
        let out = s.run(0, out);
        assert_eq!(out.len(), 1);
        match s.report_from_last(&out[0].1) {
            (0, Report::Failure(message)) => {
                assert!(
                    message.contains("import-state") && message.contains("shape"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn a_loss_hop_that_turns_batches_around_sends_the_gradient_at_once_and_takes_no_backward_frame() {
    on_worker(|sandbox| {
        let (mut s, ready) = start_with(sandbox, &[], false, [0, 0, HopSetup::LOSS_TURNS]);
        let out = s.run(0, ready);
        assert_eq!(s.report_from_last(&out[0].1), (2, Report::Ready));
        let mut direct = direct_layers(sandbox, 5);
        for step in 0..3 {
            let (x, y) = batch(step);
            let out = send_batch(&mut s, &x, &y);
            // The gradient out of the first hop, then the loss out of the last.
            assert_eq!(out.len(), 2, "step {step}");
            let sides: Vec<Toward> = out.iter().map(|o| o.0).collect();
            assert_eq!(sides, [Toward::Prev, Toward::Next]);
            let (loss, g) = direct_step(&mut direct, &x, &y);
            assert_eq!(s.report_from_last(&out[1].1), (2, Report::Loss(loss)));
            let back = s.designer.first.open(&out[0].1).unwrap();
            assert_eq!(back.op, Op::BACKWARD);
            assert_eq!(back.tensor.unwrap().data, g.data, "step {step}");
        }
        // A backward frame from the designer has no batch to go with: the session ends, and
        // the designer hears why.
        let blob = s.designer.random_blob(&mut SystemEntropy);
        let out = s.send_last(&FrameBody {
            op: Op::BACKWARD,
            tensor: None,
            blob,
            route: Vec::new(),
        });
        assert_eq!(out[0].0, Toward::Prev);
        let body = s.designer.first.open(&out[0].1).unwrap();
        assert_eq!(body.op, Op::REPORT);
        match s.designer.open_from_first(&body.blob).unwrap() {
            (2, Report::Failure(message)) => assert!(message.contains("backward"), "{message}"),
            other => panic!("{other:?}"),
        }

        // Only a loss hop, and only without per-message routes, may turn batches around.
        for (routes, extra, hop) in [
            (false, [HopSetup::LOSS_TURNS, 0, 0], 0),
            (true, [0, 0, HopSetup::LOSS_TURNS], 2),
        ] {
            let (mut s, out) = start_with(sandbox, &[], routes, extra);
            let out = if hop == 0 {
                s.run(0, out)
            } else {
                let later = std::mem::take(&mut s.later[hop - 1]);
                s.run(hop, later)
            };
            match s.report_from_last(&out[0].1) {
                (h, Report::Failure(message)) if h == hop => {
                    assert!(message.contains("turns"), "{message}")
                }
                other => panic!("{other:?}"),
            }
        }
    });
}

#[test]
fn hops_send_the_gradient_before_their_update_which_the_next_frame_runs_if_still_owed() {
    on_worker(|sandbox| {
        // The first hop returns no gradient of the raw inputs, the loss hop turns batches.
        let flags = [HopSetup::DROP_INPUT_GRAD, 0, HopSetup::LOSS_TURNS];
        let (mut s, ready) = start_with(sandbox, &[], false, flags);
        s.lazy_updates = true;
        let out = s.run(0, ready);
        assert_eq!(s.report_from_last(&out[0].1), (2, Report::Ready));
        let mut direct = direct_layers(sandbox, 5);
        assert!(!s.hops.iter().any(Hop::owes_update));
        for step in 0..4 {
            let (x, y) = batch(step);
            let out = send_batch(&mut s, &x, &y);
            assert_eq!(out.len(), 2, "step {step}");
            // Every hop sent its gradient on and still owes its update; the next batch's
            // frames run it first, so the losses follow direct training's exactly.
            assert!(s.hops.iter().all(Hop::owes_update), "step {step}");
            let (loss, _) = direct_step(&mut direct, &x, &y);
            assert_eq!(s.report_from_last(&out[1].1), (2, Report::Loss(loss)));
            let back = s.designer.first.open(&out[0].1).unwrap();
            assert_eq!((back.op, back.tensor), (Op::BACKWARD, None));
        }
        // Run, an update is done: nothing owed, nothing sent.
        for i in 0..3 {
            assert!(s.hops[i].update().is_empty());
            assert!(!s.hops[i].owes_update());
            assert!(s.hops[i].update().is_empty());
        }
    });
}

#[test]
fn a_hop_that_loses_a_neighbour_reports_it_to_the_designer_through_the_other_side() {
    on_worker(|sandbox| {
        let (mut s, ready) = start(sandbox, &[]);
        let out = s.run(0, ready);
        assert_eq!(s.report_from_last(&out[0].1), (2, Report::Ready));
        // The middle hop loses its next neighbour (hop 2 died): the report goes back through
        // hop 0, which relays it; the designer opens it as hop 1's, naming its next.
        let lost = s.hops[1].lost(Toward::Next);
        assert!(s.hops[1].has_failed());
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].to, Toward::Prev);
        let out = s.run(1, lost);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Toward::Prev);
        let body = s.designer.first.open(&out[0].1).unwrap();
        assert_eq!(body.op, Op::REPORT);
        assert_eq!(
            s.designer.open_from_first(&body.blob).unwrap(),
            (1, Report::LinkLost(Neighbour::Next))
        );
        // A failed hop reports once: losing the other link too says nothing more.
        assert!(s.hops[1].lost(Toward::Prev).is_empty());
        // The first hop losing its previous neighbour (the designer's link) reports forward.
        let lost = s.hops[0].lost(Toward::Prev);
        assert_eq!(lost[0].to, Toward::Next);
    });
}

#[test]
fn per_message_onions_are_peeled_by_every_hop_and_required() {
    on_worker(|sandbox| {
        let (mut s, ready) = start_with(sandbox, &[], true, [0; 3]);
        let out = s.run(0, ready);
        assert_eq!(s.report_from_last(&out[0].1), (2, Report::Ready));
        // Every hop, dummy included, unwraps its layer of each forward and backward frame.
        let mut direct = direct_layers(sandbox, 5);
        for step in 0..2 {
            train_step_like_direct(&mut s, &mut direct, step);
        }
        // A forward frame without its onion ends the session at the first hop, and the
        // designer hears why.
        let (x, y) = batch(5);
        let blob = s.designer.label_blob(&y, &mut SystemEntropy).unwrap();
        let frame = s
            .designer
            .first
            .seal(&FrameBody {
                op: Op::FORWARD,
                tensor: Some(x),
                blob,
                route: Vec::new(),
            })
            .unwrap();
        let out = s.hops[0].on_frame(Toward::Prev, &frame).unwrap();
        let out = s.run(0, out);
        match s.report_from_last(&out[0].1) {
            (0, Report::Failure(message)) => assert!(message.contains("route"), "{message}"),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn a_session_trains_exactly_like_direct_calls_and_hops_see_only_their_part() {
    on_worker(run);
}

fn run(sandbox: &Sandbox) {
    let (mut s, ready) = start(sandbox, &[]);
    assert_eq!(s.setups[0].link_out, s.setups[1].link_in);
    assert_eq!(s.setups[0].circuit_out, s.setups[1].circuit_in);
    // Readiness travels hop to hop and comes out of the last as a sealed report.
    let out = s.run(0, ready);
    assert_eq!(out.len(), 1);
    assert_eq!(s.report_from_last(&out[0].1), (2, Report::Ready));

    let mut direct = direct_layers(sandbox, 5);
    for step in 0..3 {
        train_step_like_direct(&mut s, &mut direct, step);
    }

    // A test pass: the last hop's non-loss output comes back in the tensor.
    let (x, _) = batch(9);
    let out = s.send_first(&FrameBody {
        op: Op::TEST,
        tensor: Some(x.clone()),
        blob: s.designer.random_blob(&mut SystemEntropy),
        route: Vec::new(),
    });
    let body = s.designer.last.open(&out[0].1).unwrap();
    let mut t = Tensor {
        shape: x.shape,
        data: x.data,
    };
    for layer in &mut direct[..4] {
        t = layer.forward(&t, Mode::Test).unwrap();
    }
    assert_eq!(body.tensor.unwrap().data, t.data);

    // Export: every hop's state, sealed for the designer in the slots sent for it, equals
    // the direct layers' state. Hop 0 gets one slot more than it needs (an empty part).
    let mut want: Vec<Vec<u8>> = vec![Vec::new(); 3];
    for (i, layer) in direct.iter_mut().enumerate() {
        let hop = HOP_OF_LAYER[i];
        let state = layer.export_state().unwrap();
        want[hop].extend((state.len() as u32).to_be_bytes());
        want[hop].extend(state);
    }
    let mut parts: Vec<usize> = want
        .iter()
        .map(|w| export::slots_for(w.len(), 1024))
        .collect();
    parts[0] += 1;
    let blobs = s.designer.export_blobs(&parts, &mut SystemEntropy).unwrap();
    let blobs_sent = blobs.len();
    assert!(blobs_sent.is_power_of_two() && blobs_sent >= parts.iter().sum());
    let mut got: Vec<Vec<(u32, Vec<u8>)>> = vec![Vec::new(); 3];
    let mut decoys = 0;
    for blob in blobs {
        let out = s.send_first(&FrameBody {
            op: Op::EXPORT,
            tensor: None,
            blob,
            route: Vec::new(),
        });
        assert_eq!(out.len(), 1, "one frame in, one frame out");
        let body = s.designer.last.open(&out[0].1).unwrap();
        assert_eq!(body.op, Op::EXPORT);
        assert_eq!(body.blob.len(), export::blob_len(1024));
        match s.designer.open_from_last(&body.blob) {
            Ok((
                hop,
                Report::State {
                    index,
                    count,
                    bytes,
                },
            )) => {
                assert_eq!(count as usize, parts[hop]);
                got[hop].push((index, bytes));
            }
            Ok(other) => panic!("{other:?}"),
            Err(_) => decoys += 1,
        }
    }
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), parts);
    assert_eq!(decoys + parts.iter().sum::<usize>(), blobs_sent);
    let states: Vec<Vec<u8>> = got
        .into_iter()
        .map(|mut p| {
            p.sort_by_key(|(i, _)| *i);
            p.into_iter().flat_map(|(_, b)| b).collect()
        })
        .collect();
    // The dummy's identity has no parameters, but its state still travels.
    assert_eq!(states, want);

    // What each hop decrypted: its own layers, its two neighbours, nothing else (P1/P2).
    for (i, setup) in s.setups.iter().enumerate() {
        let want_prev = if i == 0 { Peer::Designer } else { host(i - 1) };
        let want_next = if i == 2 { Peer::Designer } else { host(i + 1) };
        assert_eq!(
            (setup.prev.clone(), setup.next.clone()),
            (want_prev, want_next)
        );
        let own: Vec<&[u8]> = layers()[i].iter().map(|(c, _)| *c).collect();
        let got: Vec<&[u8]> = setup
            .layers
            .iter()
            .map(|l| l.component.as_slice())
            .collect();
        assert_eq!(got, own);
    }
}

fn host(i: usize) -> Peer {
    Peer::Host {
        address: format!("127.0.0.1:{}", 7000 + i),
        fingerprint: [i as u8; 32],
    }
}
