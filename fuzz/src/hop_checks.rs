//! The `hop` target: one sans-IO [`Hop`] of a real session, driven by a [`Scenario`].
//!
//! Three sessions are built once per process (with [`circuit::build`] and [`setup::peel`],
//! from deterministic entropy and the fixed onion key, so that their keys are the same in
//! every process and a crash replays): a cascade of three (a `linear-relu` first hop, an
//! `identity` dummy, a last hop with `linear`, `log-softmax` and `nll-loss`), a single hop
//! (`linear`, `softmax-cross-entropy`), and two hops with per-message routes. A scenario
//! picks one hop of them (its role), may change its setup ([`tweak`]), starts it in the
//! shared [`Sandbox`], and plays both of its neighbours with their own [`LinkEnd`]s (built
//! from the setup's circuit ids and link secrets: the hop is downstream of its prev and
//! upstream of its next, so the harness is upstream on the prev link and downstream on the
//! next). They send what [`Action`]s say: well-sealed frames of any operation with tensors
//! that fit or not (odd shapes, huge dims, NaN), random blobs or labels and export slots
//! sealed by the designer's own [`DesignerCircuit`], routes; garbage, replays, truncations,
//! tampered and lost frames.
//!
//! Checked on every frame, besides "no panic" (a layer's failure must come back as a
//! report, never as a panic of the host):
//! - every frame the hop sends has the session's frame length (P5), goes to the neighbour
//!   opposite the sender, opens at that neighbour's end, and carries a blob of the session's
//!   length or of the one it came with;
//! - a well-sealed frame in order is never rejected, and one frame in gives one frame out;
//!   a frame that is not (garbage, replay, tampered, cut) is never taken;
//! - only the first rejection of a session comes with a report, and a rejection does not
//!   fail the session; a failure always sends a report;
//! - once [`Hop::has_failed`] is true, every further [`Hop::on_frame`] is
//!   [`HopError::Failed`] (and [`Hop::fail_with`] sends nothing);
//! - a finished hop gives back all the sandbox memory its layers took;
//! - the layers' update after a backward pass, run as the daemon runs it ([`Hop::update`]
//!   once the frames are out) or left to the next frame (half the seeds each), never fails
//!   with honest layers.
//!
//! Components run on a worker of the sandbox ([`Sandbox::spawn_worker`]: its stack is sized
//! for them), which takes the inputs one by one; a panic there aborts the fuzzing process
//! (libFuzzer's hook) or fails the regression test.

use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};

use mixnn_components::{
    IDENTITY, LINEAR, LINEAR_RELU, LOG_SOFTMAX, NLL_LOSS, SOFTMAX_CROSS_ENTROPY,
};
use mixnn_host::hop::{Hop, HopError, Outgoing, Seen, Toward};
use mixnn_sandbox::{Sandbox, SandboxConfig};
use mixnn_wire::{
    blob::{self, Recipient},
    circuit::{self, DesignerCircuit, HopPlan, SessionParams},
    crypto::{Entropy, OnionPrivateKey},
    frame::{CIRCUIT_ID_LEN, FrameBody, LinkEnd, Op, Side as LinkSide, WireTensor, max_blob_len},
    route,
    setup::{self, Freshness, HopLayer, HopSetup, MIN_BLOB_LEN, Peer},
};

use crate::{
    fixtures::{ONION_KEY_PKCS8, onion_key, onion_public},
    hop_input::{
        Action, BlobSpec, LabelSpec, MAX_ACTIONS, ROLES, RouteSpec, Scenario, Send, Side,
        TensorSpec, Values, op_of, tweak,
    },
    input::FuzzEntropy,
};

/// Frame length of every session: small, so that an execution stays cheap, yet room for a
/// blob, a route through two hops and a few rows of activations.
pub const FRAME_LEN: usize = 2048;

/// Most values of a tensor the harness builds (a frame holds about 500 f32).
const MAX_VALUES: usize = 500;

/// Dims a shape byte of 200 or more stands for.
const HUGE_DIMS: [u32; 4] = [u32::MAX, 1 << 31, 1 << 20, 65_536];

/// Values a tensor of kind 4 draws from.
const SPECIAL_VALUES: [f32; 8] = [
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    -0.0,
    f32::MAX,
    f32::MIN,
    f32::MIN_POSITIVE,
    1e-45,
];

/// A hop of one of the sessions, and the widths of the tensors it takes.
struct Role {
    session: usize,
    hop: usize,
    /// Features of the activations it takes from its prev.
    features_in: u32,
    /// Features of the gradients it takes from its next.
    features_out: u32,
}

/// The roles, in the order of [`crate::hop_input::role`].
const ROLE_TABLE: [Role; ROLES] = [
    Role {
        session: 0,
        hop: 0,
        features_in: 4,
        features_out: 3,
    },
    Role {
        session: 0,
        hop: 1,
        features_in: 3,
        features_out: 3,
    },
    Role {
        session: 0,
        hop: 2,
        features_in: 3,
        features_out: 2,
    },
    Role {
        session: 1,
        hop: 0,
        features_in: 4,
        features_out: 3,
    },
    Role {
        session: 2,
        hop: 0,
        features_in: 4,
        features_out: 4,
    },
    Role {
        session: 2,
        hop: 1,
        features_in: 4,
        features_out: 2,
    },
    Role {
        session: 3,
        hop: 1,
        features_in: 3,
        features_out: 2,
    },
];

/// A session as the designer built it, and what each hop peeled.
struct SessionFixture {
    designer: DesignerCircuit,
    setups: Vec<HopSetup>,
    /// Classes of its loss layer.
    classes: u32,
}

/// What every execution shares.
struct Fixture {
    sandbox: Arc<Sandbox>,
    sessions: Vec<SessionFixture>,
    route_key: Arc<OnionPrivateKey>,
}

fn config(layer: &str) -> Vec<u8> {
    format!(r#"{{"seed": 7, "optimizer": {{"lr": 0.1, "momentum": 0.9}}, "layer": {layer}}}"#)
        .into_bytes()
}

type HopSpec = (Vec<(&'static [u8], Vec<u8>)>, u8);

fn session(hops: Vec<HopSpec>, seed: u64, classes: u32) -> SessionFixture {
    let plan: Vec<HopPlan<'_>> = hops
        .into_iter()
        .enumerate()
        .map(|(i, (layers, flags))| HopPlan {
            host: Peer::Host {
                address: format!("127.0.0.1:{}", 7000 + i),
                fingerprint: [u8::try_from(i).expect("few hops"); 32],
            },
            onion_key: onion_public(),
            layers: layers
                .into_iter()
                .map(|(component, config)| HopLayer {
                    component: component.to_vec(),
                    config,
                    state: Vec::new(),
                })
                .collect(),
            flags,
        })
        .collect();
    let n = plan.len();
    let params = SessionParams {
        // Virtual time: the hops peel at second 1.
        expires_at: 1000,
        frame_len: u32::try_from(FRAME_LEN).expect("small"),
        blob_len: u32::try_from(MIN_BLOB_LEN).expect("small"),
    };
    let mut entropy = FuzzEntropy::new(seed);
    let (mut onion, designer) =
        circuit::build(plan, params, &mut entropy).expect("the fixture session builds");
    let mut setups = Vec::with_capacity(n);
    for _ in 0..n {
        // Every hop has the fixed onion key: each peels the outermost layer left.
        let peeled = setup::peel(onion_key(), &onion, Freshness::at(1), &mut entropy)
            .expect("each hop peels its layer");
        onion = peeled.forward;
        setups.push(peeled.setup);
    }
    SessionFixture {
        designer,
        setups,
        classes,
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let linear =
            |i: u32, o: u32| config(&format!(r#"{{"in_features": {i}, "out_features": {o}}}"#));
        let sessions = vec![
            session(
                vec![
                    (vec![(LINEAR_RELU, linear(4, 3))], 0),
                    (vec![(IDENTITY, config("{}"))], 0),
                    (
                        vec![
                            (LINEAR, linear(3, 2)),
                            (LOG_SOFTMAX, config("{}")),
                            (NLL_LOSS, config("{}")),
                        ],
                        HopSetup::LOSS | HopSetup::TEST_END,
                    ),
                ],
                1,
                2,
            ),
            session(
                vec![(
                    vec![
                        (LINEAR, linear(4, 3)),
                        (SOFTMAX_CROSS_ENTROPY, config("{}")),
                    ],
                    HopSetup::LOSS | HopSetup::DROP_INPUT_GRAD,
                )],
                2,
                3,
            ),
            session(
                vec![
                    (vec![(IDENTITY, config("{}"))], HopSetup::PER_MESSAGE_RSA),
                    (
                        vec![(LINEAR, linear(4, 2))],
                        HopSetup::PER_MESSAGE_RSA | HopSetup::TEST_END,
                    ),
                ],
                3,
                2,
            ),
            session(
                vec![
                    (vec![(LINEAR_RELU, linear(4, 3))], 0),
                    (
                        vec![
                            (LINEAR, linear(3, 2)),
                            (LOG_SOFTMAX, config("{}")),
                            (NLL_LOSS, config("{}")),
                        ],
                        HopSetup::LOSS | HopSetup::LOSS_TURNS | HopSetup::TEST_END,
                    ),
                ],
                4,
                2,
            ),
        ];
        Fixture {
            sandbox: Arc::new(Sandbox::new(SandboxConfig::default()).expect("a sandbox")),
            sessions,
            route_key: Arc::new(
                OnionPrivateKey::from_pkcs8(ONION_KEY_PKCS8).expect("the fixture key"),
            ),
        }
    })
}

type Job = (Vec<u8>, mpsc::SyncSender<()>);

fn worker() -> &'static Mutex<mpsc::Sender<Job>> {
    static WORKER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    WORKER.get_or_init(|| {
        let fixture = fixture();
        let (jobs, inbox) = mpsc::channel::<Job>();
        fixture
            .sandbox
            .spawn_worker("fuzz-hop", move || {
                for (data, done) in inbox {
                    run(fixture, &Scenario::decode(&data));
                    let _ = done.send(());
                }
            })
            .expect("the hop worker starts");
        Mutex::new(jobs)
    })
}

/// Runs one input of the `hop` target (on the sandbox's worker; returns when it is done).
pub fn hop(data: &[u8]) {
    let (done, finished) = mpsc::sync_channel(1);
    worker()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send((data.to_vec(), done))
        .expect("the hop worker is gone: it panicked on an earlier input");
    finished
        .recv()
        .expect("the hop check panicked on this input (its message is above)");
}

/// Whether to print what each action did (`MIXNN_FUZZ_TRACE=1`): to see what an input does,
/// `MIXNN_FUZZ_TRACE=1 cargo fuzz run hop <file>`, or the regression test with `--nocapture`.
fn tracing() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("MIXNN_FUZZ_TRACE").is_some_and(|v| v == "1"))
}

fn describe(body: &FrameBody) -> String {
    format!(
        "op {} tensor {:?} blob {} route {}",
        body.op.0,
        body.tensor.as_ref().map(|t| &t.shape),
        body.blob.len(),
        body.route.len()
    )
}

fn toward(side: Side) -> Toward {
    match side {
        Side::Prev => Toward::Prev,
        Side::Next => Toward::Next,
    }
}

fn opposite(side: Side) -> Toward {
    match side {
        Side::Prev => Toward::Next,
        Side::Next => Toward::Prev,
    }
}

fn index(side: Side) -> usize {
    match side {
        Side::Prev => 0,
        Side::Next => 1,
    }
}

/// Whether a frame delivered should open.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Sealed right, in order: it opens (unless its sender lost a frame before).
    Valid {
        /// Its blob's length.
        blob_len: usize,
    },
    /// Garbage, replayed, tampered or cut: it must not open.
    Invalid,
}

fn values(spec: Values, count: usize) -> Vec<f32> {
    let mut entropy = FuzzEntropy::new(u64::from(spec.seed) << 8 | u64::from(spec.kind));
    (0..count)
        .map(|_| {
            let mut word = [0u8; 4];
            entropy.fill(&mut word);
            let r = u32::from_le_bytes(word);
            let [low, ..] = word;
            match spec.kind {
                0 => f32::from(low) / 255.0,
                1 => f32::from(i8::from_le_bytes([low])) / 16.0,
                2 => f32::from_bits(r),
                3 => f32::NAN,
                4 => SPECIAL_VALUES[usize::from(low) % SPECIAL_VALUES.len()],
                5 => 0.0,
                6 => {
                    if low & 1 == 0 {
                        1e30
                    } else {
                        -3e38
                    }
                }
                _ => f32::from(low % 4),
            }
        })
        .collect()
}

struct Run<'f> {
    session: &'f SessionFixture,
    role: &'static Role,
    /// The setup the hop started from (after the tweaks).
    setup: HopSetup,
    hop: Hop<FuzzEntropy>,
    /// The harness's end of the link with the hop's prev (upstream).
    prev: LinkEnd,
    /// Its end of the link with the hop's next (downstream).
    next: LinkEnd,
    /// The last well-sealed frame from each side.
    last: [Option<Vec<u8>>; 2],
    /// Whether each side lost a frame (then the hop rejects all it sends after).
    desynced: [bool; 2],
    /// The neighbours' and the designer's randomness.
    entropy: FuzzEntropy,
    rejections: usize,
    /// Whether the harness runs the layers' update after every frame, as the daemon does;
    /// else the next frame runs it.
    eager_updates: bool,
}

fn run(fixture: &Fixture, scenario: &Scenario) {
    let role = &ROLE_TABLE[usize::from(scenario.role) % ROLES];
    let session = &fixture.sessions[role.session];
    let mut setup = session.setups[role.hop].clone();
    let tweaks = scenario.tweaks;
    for (bit, flag) in [
        (tweak::LOSS, HopSetup::LOSS),
        (tweak::TEST_END, HopSetup::TEST_END),
        (tweak::DROP_INPUT_GRAD, HopSetup::DROP_INPUT_GRAD),
        (tweak::PER_MESSAGE_RSA, HopSetup::PER_MESSAGE_RSA),
    ] {
        if tweaks & bit != 0 {
            setup.flags ^= flag;
        }
    }
    if tweaks & tweak::BAD_CONFIG != 0 {
        setup.layers[0].config = b"{".to_vec();
    }
    if tweaks & tweak::BAD_STATE != 0 {
        setup.layers[0].state = b"not a safetensors file".to_vec();
    }
    let first = setup.prev == Peer::Designer;
    let seed = u64::from(scenario.seed);
    let (mut hop, started) = Hop::start(setup.clone(), &fixture.sandbox, FuzzEntropy::new(seed))
        .expect("a hop with a valid frame length starts (a failure comes as a report)");
    if tweaks & tweak::NO_ROUTE_KEY == 0 {
        hop.set_route_key(Arc::clone(&fixture.route_key));
    }
    if tweaks & tweak::OBSERVE != 0 {
        hop.observe(Box::new(|seen: Seen<'_>| match seen {
            Seen::Frame(_, body) | Seen::Sent(_, body) => {
                assert!(body.blob.len() <= max_blob_len(FRAME_LEN))
            }
            Seen::Sealed(payload) => assert!(payload.len() <= FRAME_LEN),
            Seen::State(_) => {}
        }));
    }
    let end = |circuit, secret, side| {
        LinkEnd::new(circuit, secret, side, FRAME_LEN).expect("the frame length is valid")
    };
    let mut run = Run {
        session,
        role,
        prev: end(setup.circuit_in, &setup.link_in, LinkSide::Upstream),
        next: end(setup.circuit_out, &setup.link_out, LinkSide::Downstream),
        setup,
        hop,
        last: [None, None],
        desynced: [false, false],
        entropy: FuzzEntropy::new(seed ^ 0x5eed_0fde_519e_3e00),
        rejections: 0,
        eager_updates: seed % 2 == 0,
    };
    // At start: a first hop says it is ready (a report if it is also last), any hop that
    // could not start says why; both go towards the next.
    let failed = run.hop.has_failed();
    assert_eq!(
        started.len(),
        usize::from(first || failed),
        "a hop started with {} frames to send",
        started.len()
    );
    let bodies = run.receive(&started, Toward::Next, None);
    if failed {
        assert_eq!(
            bodies.last().map(|b| b.op),
            Some(Op::REPORT),
            "a failure without its report"
        );
    }

    if tracing() {
        eprintln!(
            "role {} (session {} hop {}), flags {:#04x}, started: {started:?}, failed: {failed}",
            usize::from(scenario.role) % ROLES,
            role.session,
            role.hop,
            run.setup.flags
        );
    }
    for action in scenario.actions.iter().take(MAX_ACTIONS) {
        if tracing() && !matches!(action, Action::Send(_)) {
            eprintln!("{action:?}");
        }
        run.act(action);
    }
    drop(run);
    assert_eq!(
        fixture.sandbox.memory_in_use(),
        0,
        "a finished hop left sandbox memory taken"
    );
}

impl Run<'_> {
    fn end(&mut self, side: Side) -> &mut LinkEnd {
        match side {
            Side::Prev => &mut self.prev,
            Side::Next => &mut self.next,
        }
    }

    fn circuit(&self, side: Side) -> [u8; CIRCUIT_ID_LEN] {
        match side {
            Side::Prev => self.setup.circuit_in,
            Side::Next => self.setup.circuit_out,
        }
    }

    fn blob_len(&self) -> usize {
        self.setup.blob_len as usize
    }

    fn cover(&mut self) -> FrameBody {
        FrameBody {
            op: Op::COVER,
            tensor: None,
            blob: blob::random(self.blob_len(), &mut self.entropy),
            route: Vec::new(),
        }
    }

    fn act(&mut self, action: &Action) {
        match action {
            Action::Send(send) => self.send(send),
            Action::Garbage {
                from,
                size_code,
                size,
                circuit,
                fill,
            } => {
                let len = match size_code {
                    0 => FRAME_LEN,
                    1 => FRAME_LEN - 1,
                    2 => FRAME_LEN + 1,
                    3 => usize::from(*size) % 4096,
                    _ => 0,
                };
                let mut frame = vec![0u8; len];
                FuzzEntropy::new(u64::from(*fill)).fill(&mut frame);
                if *circuit && len >= CIRCUIT_ID_LEN {
                    frame[..CIRCUIT_ID_LEN].copy_from_slice(&self.circuit(*from));
                }
                self.deliver(*from, frame, Expect::Invalid);
            }
            Action::Replay { from } => {
                if let Some(frame) = self.last[index(*from)].clone() {
                    self.deliver(*from, frame, Expect::Invalid);
                }
            }
            Action::Cut { from, len } => {
                if let Some(mut frame) = self.last[index(*from)].clone() {
                    frame.resize(usize::from(*len) % (2 * FRAME_LEN + 1), 0);
                    self.deliver(*from, frame, Expect::Invalid);
                }
            }
            Action::Tamper { from, at, bit } => {
                let body = self.cover();
                let saved = self.end(*from).clone();
                let mut frame = self.end(*from).seal(&body).expect("a cover frame fits");
                // As if never sent: the hop's counter does not move on a frame it refuses.
                *self.end(*from) = saved;
                frame[usize::from(*at) % FRAME_LEN] ^= 1 << (bit % 8);
                self.deliver(*from, frame, Expect::Invalid);
            }
            Action::Drop { from } => {
                let body = self.cover();
                self.end(*from).seal(&body).expect("a cover frame fits");
                self.desynced[index(*from)] = true;
            }
            Action::FailWith { to } => {
                let was = self.hop.has_failed();
                let out = self
                    .hop
                    .fail_with(toward(*to), "the fuzzer's neighbour is gone");
                assert!(self.hop.has_failed());
                if was {
                    assert!(out.is_empty(), "a failed session failed again: {out:?}");
                } else {
                    assert_eq!(out.len(), 1, "fail_with sent {out:?}");
                    let bodies = self.receive(&out, toward(*to), None);
                    assert_eq!(bodies[0].op, Op::REPORT);
                }
            }
        }
    }

    fn send(&mut self, send: &Send) {
        let op = op_of(send.op);
        let tensor = self.tensor(&send.tensor, send.from);
        let Some(blob) = self.blob(&send.blob, send.from) else {
            return;
        };
        let route = self.route(send.route, op);
        let body = FrameBody {
            op,
            tensor,
            blob,
            route,
        };
        // A body that does not fit a frame is never sent (the sender's counter stays).
        let sealed = self.end(send.from).seal(&body);
        if tracing() {
            let note = if sealed.is_ok() {
                ""
            } else {
                " (does not fit: not sent)"
            };
            eprintln!("from {:?}: {}{note}", send.from, describe(&body));
        }
        let Ok(frame) = sealed else {
            return;
        };
        self.last[index(send.from)] = Some(frame.clone());
        self.deliver(
            send.from,
            frame,
            Expect::Valid {
                blob_len: body.blob.len(),
            },
        );
    }

    fn deliver(&mut self, from: Side, frame: Vec<u8>, expect: Expect) {
        let away = opposite(from);
        let failed_before = self.hop.has_failed();
        let result = self.hop.on_frame(toward(from), &frame);
        if tracing() {
            match &result {
                Ok(out) => eprintln!("  -> {out:?}"),
                Err(e) => eprintln!("  -> {e}"),
            }
        }
        if failed_before {
            assert!(
                matches!(result, Err(HopError::Failed)),
                "a failed session took a frame: {result:?}"
            );
            return;
        }
        let should_open = matches!(expect, Expect::Valid { .. }) && !self.desynced[index(from)];
        match result {
            Ok(mut out) => {
                assert!(should_open, "a frame that must not open was taken");
                // A loss hop that turns a batch around sends its gradient back at once (with
                // a fresh blob), before the loss.
                if out.len() == 2 && self.setup.flags & HopSetup::LOSS_TURNS != 0 {
                    let back = out.remove(0);
                    let body = self.receive(&[back], toward(from), None);
                    assert_eq!(body[0].op, Op::BACKWARD, "a turned batch's first frame");
                }
                assert_eq!(out.len(), 1, "one frame in, {} out: {out:?}", out.len());
                let incoming = match expect {
                    Expect::Valid { blob_len } => Some(blob_len),
                    Expect::Invalid => None,
                };
                let bodies = self.receive(&out, away, incoming);
                if self.hop.has_failed() {
                    assert_eq!(
                        bodies.last().map(|b| b.op),
                        Some(Op::REPORT),
                        "a failure without its report"
                    );
                }
            }
            Err(HopError::Rejected { error, report }) => {
                assert!(
                    !should_open,
                    "a well-sealed frame in order was rejected: {error}"
                );
                assert!(
                    !self.hop.has_failed(),
                    "a rejected frame failed the session"
                );
                self.rejections += 1;
                assert_eq!(
                    report.is_some(),
                    self.rejections == 1,
                    "rejection {} came with report {report:?}",
                    self.rejections
                );
                if let Some(report) = report {
                    let bodies = self.receive(&[report], away, None);
                    assert_eq!(bodies[0].op, Op::REPORT);
                }
            }
            Err(HopError::Failed) => panic!("HopError::Failed from a session that had not failed"),
            Err(error) => panic!("unexpected error: {error:?}"),
        }
        if self.eager_updates {
            let out = self.hop.update();
            assert!(out.is_empty(), "an honest layer's update failed: {out:?}");
        }
    }

    /// Opens what the hop sent, at the neighbours' ends, and checks it.
    fn receive(&mut self, out: &[Outgoing], to: Toward, incoming: Option<usize>) -> Vec<FrameBody> {
        let blob_len = self.blob_len();
        out.iter()
            .map(|o| {
                assert_eq!(o.frame.len(), FRAME_LEN, "P5: a frame of another length");
                assert_eq!(o.to, to, "a frame sent back to where it came from");
                let end = match o.to {
                    Toward::Prev => &mut self.prev,
                    Toward::Next => &mut self.next,
                };
                let body = end
                    .open(&o.frame)
                    .unwrap_or_else(|e| panic!("a frame the hop sent does not open: {e}"));
                if tracing() {
                    // What the designer reads of a report, where it is the next neighbour.
                    let n = self.session.setups.len();
                    let designer = &self.session.designer;
                    let report = match o.to {
                        _ if body.op != Op::REPORT => None,
                        Toward::Next if self.role.hop + 1 == n => {
                            Some(designer.open_from_last(&body.blob))
                        }
                        Toward::Prev if self.role.hop == 0 => {
                            Some(designer.open_from_first(&body.blob))
                        }
                        _ => None,
                    };
                    let report = report.map(|r| format!(": {r:?}")).unwrap_or_default();
                    eprintln!("  -> to {:?}: {}{report}", o.to, describe(&body));
                }
                assert!(
                    body.blob.len() == blob_len || Some(body.blob.len()) == incoming,
                    "a blob of {} bytes (the session's: {blob_len}, the frame's: {incoming:?})",
                    body.blob.len()
                );
                body
            })
            .collect()
    }

    fn tensor(&mut self, spec: &TensorSpec, from: Side) -> Option<WireTensor> {
        match spec {
            TensorSpec::None => None,
            TensorSpec::Fit { batch, values: v } => {
                let features = match from {
                    Side::Prev => self.role.features_in,
                    Side::Next => self.role.features_out,
                };
                let rows = 1 + u32::from(batch % 4);
                Some(WireTensor {
                    shape: vec![rows, features],
                    data: values(*v, (rows * features) as usize),
                })
            }
            TensorSpec::Shape { dims, values: v } => {
                let mut shape: Vec<u32> = dims
                    .iter()
                    .map(|&d| {
                        if d < 200 {
                            u32::from(d % 9)
                        } else {
                            HUGE_DIMS[usize::from(d) % HUGE_DIMS.len()]
                        }
                    })
                    .collect();
                let count = |shape: &[u32]| {
                    shape
                        .iter()
                        .try_fold(1usize, |a, &d| a.checked_mul(d as usize))
                };
                if count(&shape).is_none_or(|c| c > MAX_VALUES)
                    && let Some(last) = shape.last_mut()
                {
                    *last = 0;
                }
                // Still too many only if the dims before the zero overflow: the encoder
                // refuses that shape, and the frame is not sent.
                let n = count(&shape).unwrap_or(0).min(MAX_VALUES);
                Some(WireTensor {
                    shape,
                    data: values(*v, n),
                })
            }
        }
    }

    fn blob(&mut self, spec: &BlobSpec, from: Side) -> Option<Vec<u8>> {
        let hop = self.role.hop;
        let before = &self.session.setups[..hop];
        Some(match spec {
            BlobSpec::Random => blob::random(self.blob_len(), &mut self.entropy),
            BlobSpec::RandomLen(len) => blob::random(
                usize::from(*len) % (max_blob_len(FRAME_LEN) + 1),
                &mut self.entropy,
            ),
            BlobSpec::Labels(labels) => {
                let labels = match labels {
                    LabelSpec::Fit { batch, seed } => {
                        let rows = 1 + usize::from(batch % 4);
                        let classes = values(
                            Values {
                                kind: 2,
                                seed: *seed,
                            },
                            rows,
                        )
                        .into_iter()
                        .map(|v| (v.to_bits() % self.session.classes) as f32)
                        .collect();
                        WireTensor {
                            shape: vec![u32::try_from(rows).expect("small")],
                            data: classes,
                        }
                    }
                    LabelSpec::Tensor(spec) => self.tensor(spec, from)?,
                };
                let mut sealed = self
                    .session
                    .designer
                    .label_blob(&labels, &mut self.entropy)
                    .ok()?;
                for setup in before {
                    blob::layer(&setup.blob_key, &mut sealed).expect("a label blob layers");
                }
                sealed
            }
            BlobSpec::Export {
                target,
                count,
                pick,
            } => {
                let n = self.session.setups.len();
                let mut parts = vec![0; n];
                parts[(hop + usize::from(*target)) % n] = 1 + usize::from(count % 4);
                let blobs = self
                    .session
                    .designer
                    .export_blobs(&parts, &mut self.entropy)
                    .expect("export blobs seal");
                let mut picked = blobs[usize::from(*pick) % blobs.len()].clone();
                for setup in before {
                    blob::layer(&setup.blob_key, &mut picked).expect("an export blob layers");
                }
                picked
            }
            BlobSpec::Empty => Vec::new(),
            BlobSpec::Sealed(payload) => {
                let keys = &self.session.setups[hop];
                let mut sealed = blob::seal(
                    &keys.designer_key,
                    Recipient::Host,
                    payload,
                    self.blob_len(),
                    &mut self.entropy,
                )
                .ok()?;
                // The hop adds its layer on arrival, which removes this one.
                blob::unlayer(&keys.blob_key, &mut sealed).expect("a sealed blob unlayers");
                sealed
            }
        })
    }

    fn route(&mut self, spec: RouteSpec, op: Op) -> Vec<u8> {
        match spec {
            RouteSpec::Empty => Vec::new(),
            RouteSpec::Built { other_op } => {
                let keys = vec![onion_public(); self.session.setups.len()];
                let op = if other_op { Op(op.0 ^ 1) } else { op };
                route::build(&keys, op, &mut self.entropy).expect("a route builds")
            }
            RouteSpec::Random(len) => blob::random(usize::from(len) % 700, &mut self.entropy),
        }
    }
}
