//! The designer's sans-IO session against real sans-IO hops, in virtual time, without
//! sockets: it trains bit for bit as one process does, names a dead hop from its neighbours'
//! reports, times out a silent cascade at its adapted deadline, keeps cover traffic to its
//! period, and refuses calls out of turn and tampered frames. Each frame takes a virtual
//! millisecond per link; nothing waits for real time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use mixnn_designer::{
    backend::Backend,
    cascade::Cascade,
    pool::Candidate,
    remote::{
        DesignerSession, End, LinkError, MAX_TESTS_IN_FLIGHT, MIN_DEADLINE, Outcome, Plan,
        RemoteError, RemoteOptions, SessionConfig, Transmit,
    },
    train,
};
use mixnn_host::hop::{Hop, Outgoing, Toward};
use mixnn_layer_sdk::Tensor;
use mixnn_sandbox::Sandbox;
use mixnn_transport::IDLE_TIMEOUT;
use mixnn_wire::{
    crypto::{OnionPrivateKey, SystemEntropy},
    descriptor::Descriptor,
    frame::WireTensor,
    setup::{Freshness, peel},
    stream::StreamHeader,
};

/// Virtual time a frame takes on one link.
const LINK: Duration = Duration::from_millis(1);
/// Virtual Unix time of the session.
const UNIX_NOW: u64 = 1_000_000;
const BATCH: usize = 16;

/// Where a frame goes.
#[derive(Debug, Clone, Copy)]
enum To {
    /// Hop `.0`, from its side `.1`.
    Hop(usize, Toward),
    Designer(End),
    /// Hop `.0` learns that its link on side `.1` is gone (what QUIC's idle timeout tells it).
    Lost(usize, Toward),
}

/// A cascade of sans-IO hops and the designer's session, with a virtual clock.
struct Sim {
    session: DesignerSession<SystemEntropy>,
    /// None once dead.
    hops: Vec<Option<Hop<SystemEntropy>>>,
    /// Hops that drop every frame and tell no one.
    silent: Vec<bool>,
    /// Frames and events in flight, with their time; taken in time order, then in order sent.
    queue: Vec<(Instant, u64, To, Vec<u8>)>,
    seq: u64,
    now: Instant,
    /// Cover messages the designer sent.
    covers: usize,
    /// Virtual time added to the designer's last link, both ways.
    slow_last: Duration,
}

impl Sim {
    /// The paper's model over `dummies` + 5 hops, starting from `states`; its loss hop turns
    /// batches around.
    fn start(sandbox: &Sandbox, states: &[Vec<u8>], dummies: usize, config: SessionConfig) -> Self {
        Self::start_with(sandbox, states, dummies, config, true)
    }

    /// As [`Sim::start`]; the loss hop turns batches around if `loss_turns`, else it waits
    /// for the designer's backward frame.
    fn start_with(
        sandbox: &Sandbox,
        states: &[Vec<u8>],
        dummies: usize,
        config: SessionConfig,
        loss_turns: bool,
    ) -> Self {
        let spec = common::paper_spec();
        let mut options = RemoteOptions::new(SocketAddr::from(([127, 0, 0, 1], 1)), [0; 32]);
        options.dummies = dummies;
        options.loss_turns = loss_turns;
        let plan = Plan::new(&spec, sandbox, &options, &[BATCH, 784]).unwrap();
        let keys: Vec<OnionPrivateKey> = (0..plan.len())
            .map(|_| OnionPrivateKey::generate().unwrap())
            .collect();
        let hosts = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let public = key.public_key().unwrap();
                Candidate {
                    descriptor: Descriptor {
                        identity: [i as u8; 32],
                        address: format!("127.0.0.1:{}", 7000 + i),
                        onion_key: public.der().to_vec(),
                        fingerprint: [i as u8; 32],
                        published_at: UNIX_NOW,
                        metadata: Default::default(),
                    },
                    onion_key: public,
                }
            })
            .collect();
        let now = Instant::now();
        let (session, opening) = DesignerSession::start(
            &plan,
            plan.hop_layers(&spec, states).unwrap(),
            hosts,
            config,
            SystemEntropy,
            UNIX_NOW,
            now,
        )
        .unwrap();
        // The first stream carries the setup header and the onion; the last, the attach.
        let header_len = StreamHeader::len_for(opening.first[0]).unwrap();
        let mut onion = opening.first[header_len..].to_vec();
        assert!(matches!(
            StreamHeader::decode(&opening.last).unwrap(),
            StreamHeader::Attach { .. }
        ));
        let mut sim = Sim {
            session,
            hops: Vec::new(),
            silent: vec![false; plan.len()],
            queue: Vec::new(),
            seq: 0,
            now,
            covers: 0,
            slow_last: Duration::ZERO,
        };
        for (i, key) in keys.iter().enumerate() {
            let peeled = peel(key, &onion, Freshness::at(UNIX_NOW), &mut SystemEntropy).unwrap();
            onion = peeled.forward;
            let (hop, out) = Hop::start(peeled.setup, sandbox, SystemEntropy).unwrap();
            sim.hops.push(Some(hop));
            sim.route(i, out);
        }
        assert!(matches!(sim.run().unwrap(), Outcome::Ready));
        sim
    }

    fn push(&mut self, at: Instant, to: To, frame: Vec<u8>) {
        self.seq += 1;
        self.queue.push((at, self.seq, to, frame));
    }

    /// Frames a hop sends, one link on.
    fn route(&mut self, hop: usize, out: Vec<Outgoing>) {
        let last = self.hops_len() - 1;
        for o in out {
            let to = match o.to {
                Toward::Next if hop == last => To::Designer(End::Last),
                Toward::Prev if hop == 0 => To::Designer(End::First),
                Toward::Next => To::Hop(hop + 1, Toward::Prev),
                Toward::Prev => To::Hop(hop - 1, Toward::Next),
            };
            let slow = if matches!(to, To::Designer(End::Last)) {
                self.slow_last
            } else {
                Duration::ZERO
            };
            self.push(self.now + LINK + slow, to, o.frame);
        }
    }

    fn hops_len(&self) -> usize {
        self.silent.len()
    }

    /// What the designer sealed, one link on.
    fn send(&mut self, transmits: impl IntoIterator<Item = Transmit>) {
        let last = self.hops_len() - 1;
        for t in transmits {
            let (to, slow) = match t.end {
                End::First => (To::Hop(0, Toward::Prev), Duration::ZERO),
                End::Last => (To::Hop(last, Toward::Next), self.slow_last),
            };
            self.push(self.now + LINK + slow, to, t.frame);
        }
    }

    /// When the next frame or event in flight is due.
    fn next_at(&self) -> Option<Instant> {
        self.queue.iter().map(|q| q.0).min()
    }

    /// Takes the next frame or event in flight (the earliest, then the first sent), moving
    /// the clock to it.
    fn pop(&mut self) -> Option<(To, Vec<u8>)> {
        let i = (0..self.queue.len()).min_by_key(|&i| (self.queue[i].0, self.queue[i].1))?;
        let (at, _, to, frame) = self.queue.swap_remove(i);
        self.now = self.now.max(at);
        Some((to, frame))
    }

    /// Runs frames and timeouts, in virtual time, until the step under way brings its outcome.
    fn run(&mut self) -> Result<Outcome, RemoteError> {
        loop {
            let wake = self.session.poll_timeout();
            match (self.next_at(), wake) {
                (Some(at), _) if wake.is_none_or(|w| at < w) => {
                    let (to, frame) = self.pop().expect("a frame in flight");
                    if let Some(outcome) = self.deliver(to, frame)? {
                        return Ok(outcome);
                    }
                }
                (_, Some(wake)) => {
                    self.now = self.now.max(wake);
                    let out = self.session.handle_timeout(self.now)?;
                    self.covers += out.len();
                    self.send(out);
                }
                (_, None) => panic!("nothing in flight and nothing awaited"),
            }
        }
    }

    fn deliver(&mut self, to: To, frame: Vec<u8>) -> Result<Option<Outcome>, RemoteError> {
        match to {
            To::Designer(end) => self.session.handle_frame(end, &frame, self.now),
            To::Hop(i, from) => {
                if self.silent[i] {
                    return Ok(None);
                }
                let Some(hop) = self.hops[i].as_mut() else {
                    return Ok(None);
                };
                let mut out = hop
                    .on_frame(from, &frame)
                    .unwrap_or_else(|e| panic!("hop {i}: {e}"));
                // As the daemon does: the layers' update once the frames are out.
                out.extend(hop.update());
                self.route(i, out);
                Ok(None)
            }
            To::Lost(i, side) => {
                if let Some(hop) = self.hops[i].as_mut() {
                    let out = hop.lost(side);
                    self.route(i, out);
                }
                Ok(None)
            }
        }
    }

    /// Hop `i` dies: its neighbours notice when their links to it go idle.
    fn kill(&mut self, i: usize) {
        self.hops[i] = None;
        let at = self.now + IDLE_TIMEOUT;
        if i > 0 {
            self.push(at, To::Lost(i - 1, Toward::Next), Vec::new());
        }
        if i + 1 < self.hops_len() {
            self.push(at, To::Lost(i + 1, Toward::Prev), Vec::new());
        }
    }

    /// Exports every hop's states.
    fn export(&mut self) -> Vec<(usize, Vec<u8>)> {
        let sent = self.session.export(self.now).unwrap();
        self.send(sent);
        let Outcome::States(states) = self.run().unwrap() else {
            panic!("an export answers with the states");
        };
        states
    }

    /// Delivers frames until one has reached hop `i`.
    fn run_until_hop(&mut self, i: usize) {
        while let Some((to, frame)) = self.pop() {
            let reached = matches!(to, To::Hop(h, _) if h == i);
            assert!(self.deliver(to, frame).unwrap().is_none());
            if reached {
                return;
            }
        }
        panic!("nothing reached hop {i}");
    }

    /// One training batch; the loss.
    fn train(&mut self, x: &Tensor, y: &Tensor) -> Result<f32, RemoteError> {
        let sent = self.session.forward(wire(x), &wire(y), self.now)?;
        self.send([sent]);
        let loss = match self.run()? {
            Outcome::Trained {
                loss,
                gradient: None,
            } => return Ok(loss),
            Outcome::Loss(loss) => loss,
            other => panic!("a forward pass answers with its loss, not {other:?}"),
        };
        let sent = self.session.backward(None, self.now)?;
        self.send([sent]);
        assert!(matches!(self.run()?, Outcome::Gradient(None)));
        Ok(loss)
    }
}

fn wire(t: &Tensor) -> WireTensor {
    WireTensor {
        shape: t.shape().iter().map(|&d| d as u32).collect(),
        data: t.data().to_vec(),
    }
}

fn config() -> SessionConfig {
    SessionConfig {
        step_timeout: Duration::from_secs(60),
        adaptive_deadline: true,
        cover_period: None,
        session_ttl: Duration::from_secs(3600),
    }
}

fn batches(n: usize) -> Vec<(Tensor, Tensor)> {
    let splits = common::mnist(n * BATCH, 0);
    (0..n)
        .map(|b| {
            let idx: Vec<usize> = (b * BATCH..(b + 1) * BATCH).collect();
            train::batch(&splits.train, &idx, None).unwrap()
        })
        .collect()
}

#[test]
fn the_session_trains_bit_for_bit_over_sans_io_hops_and_times_out_a_silent_one() {
    common::on_worker(|sandbox| {
        let spec = common::paper_spec();
        let mut local = Cascade::build(&spec, Backend::Wasm, Some(sandbox)).unwrap();
        let init = local.export_states().unwrap();
        let mut sim = Sim::start(sandbox, &init, 2, config());
        // The paper's five hosts and two dummies.
        assert_eq!(sim.session.hosts().len(), 7);
        let data = batches(7);
        for (x, y) in &data[..6] {
            let want = local.train_step(x.clone(), y.clone()).unwrap();
            let got = sim.train(x, y).unwrap();
            assert_eq!(got.to_bits(), want.to_bits());
        }
        // A test pass and the states, bit for bit.
        let (x, _) = &data[6];
        let want = local.predict(x.clone()).unwrap();
        let sent = sim.session.test(wire(x), sim.now).unwrap();
        sim.send([sent]);
        let Outcome::Output(got) = sim.run().unwrap() else {
            panic!("a test pass answers with its output");
        };
        assert_eq!(got.data, want.data());
        let states = sim.export();
        let want = local.export_states().unwrap();
        assert_eq!(states.len(), want.len());
        for (layer, state) in states {
            assert_eq!(state, want[layer], "layer {layer}");
        }
        // Six forward passes of a few virtual milliseconds: the next one is given the
        // shortest deadline, and a hop that falls silent is noticed then, in virtual time.
        sim.silent[3] = true;
        let (x, y) = &data[6];
        let sent_at = sim.now;
        let err = sim.train(x, y).unwrap_err();
        assert!(
            matches!(err, RemoteError::Timeout { step: "forward", timeout } if timeout == MIN_DEADLINE),
            "{err}"
        );
        assert_eq!(sim.now - sent_at, MIN_DEADLINE);
        assert!(err.is_hosts_fault() && err.failed_hop().is_none());
        // The session is over.
        assert!(matches!(
            sim.session.forward(wire(x), &wire(y), sim.now),
            Err(RemoteError::Failed)
        ));
    });
}

/// Inference keeps several test batches in the cascade at once: the hops work on different
/// batches at the same time, the outputs come back in order, bit for bit, and nothing else
/// may start before they are all back; past the limit a test is refused.
#[test]
fn test_batches_in_flight_come_back_in_order_bit_for_bit() {
    common::on_worker(|sandbox| {
        let spec = common::paper_spec();
        let mut local = Cascade::build(&spec, Backend::Wasm, Some(sandbox)).unwrap();
        let init = local.export_states().unwrap();
        let mut sim = Sim::start(sandbox, &init, 2, config());
        let data = batches(5);
        for (x, _) in &data {
            let sent = sim.session.test(wire(x), sim.now).unwrap();
            sim.send([sent]);
        }
        assert_eq!(sim.session.tests_in_flight(), 5);
        // Training waits for the tests.
        let (x, y) = &data[0];
        assert!(matches!(
            sim.session.forward(wire(x), &wire(y), sim.now),
            Err(RemoteError::OutOfTurn {
                call: "forward",
                ..
            })
        ));
        for (i, (x, _)) in data.iter().enumerate() {
            let Outcome::Output(got) = sim.run().unwrap() else {
                panic!("a test pass answers with its output");
            };
            assert_eq!(
                got.data,
                local.predict(x.clone()).unwrap().data(),
                "batch {i}"
            );
            assert_eq!(sim.session.tests_in_flight(), 4 - i);
        }
        // Idle again: training goes on, and matches.
        let want = local.train_step(x.clone(), y.clone()).unwrap();
        assert_eq!(sim.train(x, y).unwrap().to_bits(), want.to_bits());
        // The limit.
        for _ in 0..MAX_TESTS_IN_FLIGHT {
            let sent = sim.session.test(wire(x), sim.now).unwrap();
            sim.send([sent]);
        }
        assert!(matches!(
            sim.session.test(wire(x), sim.now),
            Err(RemoteError::OutOfTurn { call: "test", .. })
        ));
        // A designer that gives up on them (its own layers failed, say) ends the session: no
        // later call can be answered by one of their outputs.
        sim.session.abort();
        assert!(matches!(
            sim.session.test(wire(x), sim.now),
            Err(RemoteError::Failed)
        ));
    });
}

#[test]
fn a_loss_hop_that_turns_batches_around_trains_as_one_that_waits_for_the_designer() {
    common::on_worker(|sandbox| {
        let spec = common::paper_spec();
        let mut local = Cascade::build(&spec, Backend::Wasm, Some(sandbox)).unwrap();
        let init = local.export_states().unwrap();
        let data = batches(6);
        let mut waits = Sim::start_with(sandbox, &init, 1, config(), false);
        let mut turns = Sim::start_with(sandbox, &init, 1, config(), true);
        let hops = turns.hops_len() as u32;
        for (i, (x, y)) in data.iter().enumerate() {
            // From the third batch on, the loss comes back after the first hop's gradient,
            // which the session holds meanwhile.
            let slow = if i >= 2 {
                2 * hops * LINK
            } else {
                Duration::ZERO
            };
            turns.slow_last = slow;
            let want = local.train_step(x.clone(), y.clone()).unwrap();
            let (t0, w0) = (turns.now, waits.now);
            assert_eq!(turns.train(x, y).unwrap().to_bits(), want.to_bits());
            assert_eq!(waits.train(x, y).unwrap().to_bits(), want.to_bits());
            // Waiting, a batch crosses every link twice and the designer's last link twice
            // more; turning, it is done when both the gradient and the loss are back.
            assert_eq!(waits.now - w0, (2 * hops + 2) * LINK);
            let turned = (2 * hops * LINK).max((hops + 1) * LINK + slow);
            assert_eq!(turns.now - t0, turned, "batch {i}");
        }
        let want = local.export_states().unwrap();
        for sim in [&mut turns, &mut waits] {
            for (layer, state) in sim.export() {
                assert_eq!(state, want[layer], "layer {layer}");
            }
        }
        // A turning session takes no backward frame from the designer.
        assert!(matches!(
            turns.session.backward(None, turns.now),
            Err(RemoteError::OutOfTurn { .. })
        ));
    });
}

#[test]
fn a_dead_hop_is_named_by_its_neighbours_within_two_seconds() {
    common::on_worker(|sandbox| {
        let data = batches(2);
        // With the loss hop turning batches around, and (the second case) waiting for the
        // designer's backward frame.
        for (turns, dead, step) in [
            (true, 2, "forward"),
            (false, 0, "backward"),
            (true, 0, "backward"),
            (true, 4, "forward"),
        ] {
            let mut sim = Sim::start_with(sandbox, &[], 1, config(), turns);
            sim.train(&data[0].0, &data[0].1).unwrap();
            let (x, y) = &data[1];
            let started = sim.now;
            let err = if step == "forward" {
                sim.kill(dead);
                sim.train(x, y).unwrap_err()
            } else if turns {
                // The first hop dies once the batch has passed it.
                let sent = sim.session.forward(wire(x), &wire(y), sim.now).unwrap();
                sim.send([sent]);
                sim.run_until_hop(dead);
                sim.kill(dead);
                sim.run().unwrap_err()
            } else {
                let sent = sim.session.forward(wire(x), &wire(y), sim.now).unwrap();
                sim.send([sent]);
                assert!(matches!(sim.run().unwrap(), Outcome::Loss(_)));
                sim.kill(dead);
                let sent = sim.session.backward(None, sim.now).unwrap();
                sim.send([sent]);
                sim.run().unwrap_err()
            };
            // A neighbour reports the link it lost; the designer names the hop at its end.
            assert_eq!(err.failed_hop(), Some(dead), "{err}");
            assert_eq!(err.step(), Some(step), "{err}");
            assert!(
                matches!(err, RemoteError::HopLost { hop, reported_by, .. }
                    if hop == dead && reported_by.abs_diff(dead) == 1),
                "{err}"
            );
            let detected = sim.now - started;
            assert!(detected < Duration::from_secs(2), "{detected:?}");
            assert!(sim.session.has_failed());
        }
    });
}

#[test]
fn cover_keeps_its_period_calls_out_of_turn_are_refused_and_a_tampered_frame_ends_the_session() {
    common::on_worker(|sandbox| {
        let period = Duration::from_millis(100);
        let mut sim = Sim::start(
            sandbox,
            &[],
            0,
            SessionConfig {
                cover_period: Some(period),
                ..config()
            },
        );
        // A second of idling: ten cover messages, each through the cascade and dropped at
        // the designer.
        let until = sim.now + Duration::from_millis(1000);
        while let Some(wake) = sim.session.poll_timeout().filter(|&w| w <= until) {
            sim.now = wake;
            let out = sim.session.handle_timeout(sim.now).unwrap();
            sim.covers += out.len();
            sim.send(out);
            while let Some((to, frame)) = sim.pop() {
                assert!(sim.deliver(to, frame).unwrap().is_none());
            }
        }
        assert!((9..=10).contains(&sim.covers), "{}", sim.covers);
        // A designer that was busy for five seconds sends one, not fifty.
        sim.now += Duration::from_secs(5);
        let out = sim.session.handle_timeout(sim.now).unwrap();
        assert_eq!(out.len(), 1);
        // Sealed frames must go: the first hop would refuse every frame after a lost one.
        sim.send(out);
        while let Some((to, frame)) = sim.pop() {
            assert!(sim.deliver(to, frame).unwrap().is_none());
        }
        assert!(sim.session.poll_timeout().unwrap() > sim.now);

        // Out of turn: a backward frame without its forward pass, a second forward pass.
        let data = batches(1);
        let (x, y) = &data[0];
        let err = sim.session.backward(None, sim.now).unwrap_err();
        assert!(
            matches!(
                err,
                RemoteError::OutOfTurn {
                    call: "backward",
                    ..
                }
            ),
            "{err}"
        );
        let sent = sim.session.forward(wire(x), &wire(y), sim.now).unwrap();
        let err = sim.session.forward(wire(x), &wire(y), sim.now).unwrap_err();
        assert!(
            matches!(
                err,
                RemoteError::OutOfTurn {
                    call: "forward",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.is_hosts_fault());

        // The loss comes back tampered with: the link from the last hop broke.
        sim.send([sent]);
        let mut to_designer = None;
        while to_designer.is_none() {
            let (to, frame) = sim.pop().unwrap();
            match to {
                To::Designer(end) => to_designer = Some((end, frame)),
                to => assert!(sim.deliver(to, frame).unwrap().is_none()),
            }
        }
        let (end, mut frame) = to_designer.unwrap();
        assert_eq!(end, End::Last);
        let middle = frame.len() / 2;
        frame[middle] ^= 1;
        let err = sim.session.handle_frame(end, &frame, sim.now).unwrap_err();
        let last = sim.hops_len() - 1;
        assert!(
            matches!(
                err,
                RemoteError::LinkBroke { step: "forward", end: End::Last, hop, source: LinkError::Frame(_) }
                    if hop == last
            ),
            "{err}"
        );
        assert!(sim.session.has_failed());
        assert_eq!(sim.session.poll_timeout(), None);
    });
}
