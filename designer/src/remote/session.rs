//! The designer's side of a session, sans IO, as quinn-proto is to quinn: frames in (with the
//! time they arrived), sealed frames out, timeouts as inputs, entropy owned and the clock
//! passed in. A [`DesignerSession`] knows what the cascade owes it next and by when, seals and
//! opens the frames of its two links, opens the hops' reports and turns a failure into an
//! error that names the step and, where it can tell, the hop. The network shell
//! ([`super::net`]) only moves bytes and wakes it at [`DesignerSession::poll_timeout`].
//!
//! Training alternates strictly, as on the hops: setup, then per batch a forward frame (its
//! loss or, with a kept tail, the last hop's output comes back), a backward frame (the first
//! hop's comes back); test and export steps go between batches.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use mixnn_wire::{
    circuit::{self, DesignerCircuit, HopPlan, SessionParams},
    crypto::{Entropy, OnionPublicKey},
    frame::{FrameBody, FrameError, LinkEnd, Op, WireTensor},
    reader::Reader,
    report::{Neighbour, Report},
    route,
    setup::{BuildError, HopLayer, HopSetup},
    stream::StreamHeader,
};

use super::{
    End, LinkError, PeerFault, PlanError, RemoteError,
    error::link_failed,
    plan::{HopInfo, HostRef, Plan},
};
use crate::pool::Candidate;

/// An adaptive deadline is this many times the median time of its kind of step.
pub const DEADLINE_FACTOR: u32 = 20;
/// The shortest adaptive deadline.
pub const MIN_DEADLINE: Duration = Duration::from_secs(2);
/// Steps of a kind timed before the deadline adapts, and the most kept.
const DEADLINE_SAMPLES: (usize, usize) = (5, 64);

/// How the designer's session waits and hides its traffic.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// Longest wait for any answer of the cascade (see [`super::RemoteOptions::step_timeout`]).
    pub step_timeout: Duration,
    /// Deadlines adapt to the measured steps (see [`super::RemoteOptions::adaptive_deadline`]).
    pub adaptive_deadline: bool,
    /// Time between cover messages into the first hop; none without cover traffic.
    pub cover_period: Option<Duration>,
    /// How long the hosts keep the session.
    pub session_ttl: Duration,
}

/// A step of the session, as errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Step {
    Setup,
    Forward,
    Backward,
    Test,
    Export,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Setup => "setup",
            Step::Forward => "forward",
            Step::Backward => "backward",
            Step::Test => "test",
            Step::Export => "export",
        }
    }
}

/// What the session is doing.
#[derive(Debug)]
enum State {
    /// The op=0 onion is out; the last hop's readiness is awaited.
    SettingUp,
    /// Between steps: nothing is owed either way.
    Idle,
    /// A forward frame is out; its loss (or the last hop's output) is awaited.
    Forward,
    /// A forward frame is out to a cascade whose loss hop turns the batch around: its loss
    /// (through the last hop) and the first hop's backward frame are awaited, in either order.
    Turning {
        loss: Option<f32>,
        gradient: Option<Option<WireTensor>>,
    },
    /// The forward pass came back: the designer owes the backward frame.
    Forwarded,
    /// A backward frame is out; the first hop's backward frame is awaited.
    Backward,
    /// Test frames are out (`pending` of them, at most [`MAX_TESTS_IN_FLIGHT`]); their
    /// outputs are awaited, in the order they went.
    Test { pending: usize },
    /// EXPORT frames are out; `left` of them are still to come back.
    Export {
        left: usize,
        parts: Vec<Vec<(u32, Vec<u8>)>>,
    },
    /// Something failed: the session takes no more frames or calls.
    Failed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::SettingUp => "setting up",
            State::Idle => "idle",
            State::Forward => "awaiting the forward pass",
            State::Turning { loss: None, .. } => "awaiting the loss and the backward pass",
            State::Turning { .. } => "awaiting the backward pass",
            State::Forwarded => "awaiting the designer's backward frame",
            State::Backward => "awaiting the backward pass",
            State::Test { .. } => "awaiting a test pass",
            State::Export { .. } => "awaiting the states",
            State::Failed => "failed",
        }
    }

    /// The step under way, whose answer is awaited.
    fn awaiting(&self) -> Option<Step> {
        match self {
            State::SettingUp => Some(Step::Setup),
            State::Forward | State::Turning { loss: None, .. } => Some(Step::Forward),
            State::Backward | State::Turning { .. } => Some(Step::Backward),
            State::Test { .. } => Some(Step::Test),
            State::Export { .. } => Some(Step::Export),
            State::Idle | State::Forwarded | State::Failed => None,
        }
    }

    /// The step errors name: the one under way, or the last one begun.
    fn step(&self) -> &'static str {
        match self {
            State::Forwarded => "backward",
            State::Idle => "between steps",
            State::Failed => "failed",
            other => other.awaiting().map_or("idle", Step::name),
        }
    }
}

/// A sealed frame for one of the designer's links. It must go, and in the order given: the
/// link's counter has moved past it.
#[must_use = "a sealed frame must be sent: its link's counter has moved past it"]
pub struct Transmit {
    /// Which link.
    pub end: End,
    /// The frame, the session's frame length.
    pub frame: Vec<u8>,
}

impl std::fmt::Debug for Transmit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Transmit({:?}, {} bytes)", self.end, self.frame.len())
    }
}

/// The first bytes of each of the designer's streams, to write once connected: the setup
/// header and the op=0 onion into the first hop, the attach header into the last.
#[must_use = "the setup must be written to the first hop and the attach to the last"]
pub struct Opening {
    /// Into the first hop.
    pub first: Vec<u8>,
    /// Into the last hop.
    pub last: Vec<u8>,
}

/// What a step brought back.
#[derive(Debug)]
pub enum Outcome {
    /// The setup: every hop is ready.
    Ready,
    /// The forward pass: the loss hop's loss.
    Loss(f32),
    /// The forward pass, with a kept tail: the last hop's output.
    Activation(WireTensor),
    /// The backward pass: the first hop's gradient of its input, if it returns one.
    Gradient(Option<WireTensor>),
    /// Both passes, from a cascade whose loss hop turns batches around: the loss, and the
    /// first hop's gradient of its input if it returns one.
    Trained {
        /// The loss hop's.
        loss: f32,
        /// The first hop's.
        gradient: Option<WireTensor>,
    },
    /// The test pass: the output.
    Output(WireTensor),
    /// The export: every remote layer's state, by the spec's layer index.
    States(Vec<(usize, Vec<u8>)>),
}

/// Test batches a session may have under way at once: enough to keep every hop of a long
/// cascade busy, few enough that the frames waiting in the links stay small.
pub const MAX_TESTS_IN_FLIGHT: usize = 32;

/// The state once one of `pending` test outputs is back.
fn after_test(pending: usize) -> State {
    match pending {
        0 | 1 => State::Idle,
        n => State::Test { pending: n - 1 },
    }
}

/// The designer's session with its cascade, sans IO.
pub struct DesignerSession<E> {
    circuit: DesignerCircuit,
    hops: Vec<HopInfo>,
    state: State,
    /// The loss runs on a hop (else the designer keeps it).
    remote_loss: bool,
    /// That hop turns batches around ([`HopSetup::LOSS_TURNS`]): the designer sends no
    /// backward frame.
    loss_turns: bool,
    frame_len: usize,
    /// The hops' onion keys, first to last, in sessions with per-message routes.
    route_keys: Option<Vec<OnionPublicKey>>,
    deadlines: Deadlines,
    /// The step under way, since when (or its last progress), and by when.
    waiting: Option<Wait>,
    /// Cover traffic: its period and when the next message is due.
    cover: Option<(Duration, Instant)>,
    started: Instant,
    setup_time: Option<Duration>,
    entropy: E,
}

impl<E> std::fmt::Debug for DesignerSession<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DesignerSession")
            .field("hops", &self.hops.len())
            .field("state", &self.state.name())
            .finish_non_exhaustive()
    }
}

impl<E: Entropy> DesignerSession<E> {
    /// A session laid out by `plan` on `hosts` (one per position, first to last), each hop's
    /// op=0 layer carrying `layers` (from [`Plan::hop_layers`]). Builds the onion; returns
    /// the session, awaiting readiness, and the bytes to open the two streams with. `unix_now`
    /// (seconds) dates the session's expiry; `now` starts the setup's deadline.
    pub fn start(
        plan: &Plan,
        layers: Vec<Vec<HopLayer>>,
        hosts: Vec<Candidate>,
        config: SessionConfig,
        mut entropy: E,
        unix_now: u64,
        now: Instant,
    ) -> Result<(Self, Opening), RemoteError> {
        if hosts.len() != plan.len() || layers.len() != plan.len() {
            return Err(PlanError::PoolTooSmall {
                needed: plan.len(),
                available: hosts.len().min(layers.len()),
            }
            .into());
        }
        let frame_len = plan.frame_len;
        let size = |len: usize| u32::try_from(len).map_err(|_| PlanError::FrameTooLarge(len));
        let params = SessionParams {
            expires_at: unix_now.saturating_add(config.session_ttl.as_secs()),
            frame_len: size(frame_len)?,
            blob_len: size(plan.blob_len)?,
        };
        let hop_plans = hosts
            .iter()
            .zip(layers)
            .zip(&plan.flags)
            .map(|((c, layers), &flags)| HopPlan {
                host: c.peer(),
                onion_key: &c.onion_key,
                layers,
                flags,
            })
            .collect();
        let (onion, circuit) =
            circuit::build(hop_plans, params, &mut entropy).map_err(PlanError::Build)?;
        // At most MAX_SETUP_LEN (the build's check), which a u32 holds.
        let len = u32::try_from(onion.len()).unwrap_or(u32::MAX);
        let mut first = StreamHeader::Setup { len }.encode().to_vec();
        first.extend_from_slice(&onion);
        let last = StreamHeader::Attach {
            circuit: circuit.last.circuit(),
        }
        .encode()
        .to_vec();
        let per_message = plan
            .flags
            .first()
            .is_some_and(|f| f & HopSetup::PER_MESSAGE_RSA != 0);
        let mut hops = plan.hops.clone();
        for (hop, c) in hops.iter_mut().zip(&hosts) {
            hop.host = Some(HostRef::from(c));
        }
        let mut session = DesignerSession {
            circuit,
            hops,
            state: State::SettingUp,
            remote_loss: !plan.keeps_last(),
            loss_turns: plan.flags.iter().any(|f| f & HopSetup::LOSS_TURNS != 0),
            frame_len,
            route_keys: per_message.then(|| hosts.into_iter().map(|c| c.onion_key).collect()),
            deadlines: Deadlines::new(config.step_timeout, config.adaptive_deadline),
            waiting: None,
            cover: config
                .cover_period
                .filter(|p| !p.is_zero())
                .map(|p| (p, now + p)),
            started: now,
            setup_time: None,
            entropy,
        };
        session.wait(Step::Setup, now);
        Ok((session, Opening { first, last }))
    }

    /// The hosts of the cascade, first to last.
    pub fn hosts(&self) -> Vec<HostRef> {
        self.hops.iter().filter_map(|h| h.host.clone()).collect()
    }

    /// The hops, first to last: each one's layers, or `dummy`.
    pub fn describe(&self) -> Vec<String> {
        self.hops.iter().map(|h| h.description.clone()).collect()
    }

    /// From the start to the last hop's readiness, once it came.
    pub fn setup_time(&self) -> Option<Duration> {
        self.setup_time
    }

    /// Whether the session has failed (it takes nothing more).
    pub fn has_failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }

    /// Sends a batch forward: `input` into the first hop, `labels` sealed for the loss hop
    /// (random bytes in their place if the designer keeps the loss).
    pub fn forward(
        &mut self,
        input: WireTensor,
        labels: &WireTensor,
        now: Instant,
    ) -> Result<Transmit, RemoteError> {
        self.ready_for("forward", |s| matches!(s, State::Idle))?;
        let blob = self
            .circuit
            .label_blob(labels, &mut self.entropy)
            .map_err(PlanError::Seal)?;
        let route = self.route(Op::FORWARD)?;
        let sent = self.seal(End::First, Op::FORWARD, Some(input), blob, route)?;
        self.state = if self.loss_turns {
            State::Turning {
                loss: None,
                gradient: None,
            }
        } else {
            State::Forward
        };
        self.wait(Step::Forward, now);
        Ok(sent)
    }

    /// Whether the loss hop turns batches around: the forward pass then brings back
    /// [`Outcome::Trained`], and the designer sends no backward frame.
    pub fn loss_turns(&self) -> bool {
        self.loss_turns
    }

    /// Sends the batch's backward frame into the last hop: the gradient of the last hop's
    /// output if the designer keeps the loss, else nothing (the loss hop holds its own).
    pub fn backward(
        &mut self,
        gradient: Option<WireTensor>,
        now: Instant,
    ) -> Result<Transmit, RemoteError> {
        self.ready_for("backward", |s| matches!(s, State::Forwarded))?;
        let blob = self.circuit.random_blob(&mut self.entropy);
        let route = self.route(Op::BACKWARD)?;
        let sent = self.seal(End::Last, Op::BACKWARD, gradient, blob, route)?;
        self.state = State::Backward;
        self.wait(Step::Backward, now);
        Ok(sent)
    }

    /// Sends a test batch: `input` into the first hop. Test batches may follow one another
    /// before their outputs are back (up to [`MAX_TESTS_IN_FLIGHT`]), so that the hops work on
    /// several at once; the outputs come back in order.
    pub fn test(&mut self, input: WireTensor, now: Instant) -> Result<Transmit, RemoteError> {
        self.ready_for("test", |s| match s {
            State::Idle => true,
            State::Test { pending } => *pending < MAX_TESTS_IN_FLIGHT,
            _ => false,
        })?;
        let blob = self.circuit.random_blob(&mut self.entropy);
        let sent = self.seal(End::First, Op::TEST, Some(input), blob, Vec::new())?;
        match &mut self.state {
            State::Test { pending } => *pending += 1,
            _ => {
                self.state = State::Test { pending: 1 };
                self.wait(Step::Test, now);
            }
        }
        Ok(sent)
    }

    /// Ends the session from the designer's side (its own layers failed mid-step, say): it
    /// takes no more frames or calls, so no later call can be answered by a stale frame.
    pub fn abort(&mut self) {
        self.state = State::Failed;
        self.waiting = None;
    }

    /// Test batches under way (sent, their outputs not yet back).
    pub fn tests_in_flight(&self) -> usize {
        match self.state {
            State::Test { pending } => pending,
            _ => 0,
        }
    }

    /// Asks every hop for its state, sealed for the designer: EXPORT frames into the first
    /// hop, each with a slot for one hop (or a decoy), in random order.
    pub fn export(&mut self, now: Instant) -> Result<Vec<Transmit>, RemoteError> {
        self.ready_for("export", |s| matches!(s, State::Idle))?;
        let slots: Vec<usize> = self.hops.iter().map(|h| h.export_parts).collect();
        let blobs = self
            .circuit
            .export_blobs(&slots, &mut self.entropy)
            .map_err(PlanError::Seal)?;
        let left = blobs.len();
        let sent = blobs
            .into_iter()
            .map(|blob| self.seal(End::First, Op::EXPORT, None, blob, Vec::new()))
            .collect::<Result<Vec<_>, _>>();
        // Frames sealed before the one that failed are lost with it: the link is past them.
        let sent = sent.map_err(|e| self.fail(e))?;
        self.state = State::Export {
            left,
            parts: vec![Vec::new(); self.hops.len()],
        };
        self.wait(Step::Export, now);
        Ok(sent)
    }

    /// When the session must next be woken ([`DesignerSession::handle_timeout`]): the
    /// deadline of the step under way, or the next cover message.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.has_failed() {
            return None;
        }
        let deadline = self.waiting.map(|w| w.deadline);
        let cover = self
            .cover
            .filter(|_| !matches!(self.state, State::SettingUp))
            .map(|(_, at)| at);
        deadline.into_iter().chain(cover).min()
    }

    /// The time is `now`: a step past its deadline fails, naming the step; a cover message
    /// that is due goes out (one, however late: a designer that was busy does not burst).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<Vec<Transmit>, RemoteError> {
        if self.has_failed() {
            return Err(RemoteError::Failed);
        }
        if let Some(w) = self.waiting
            && now >= w.deadline
        {
            return Err(self.fail(RemoteError::Timeout {
                timeout: w.timeout,
                step: w.step.name(),
            }));
        }
        let mut out = Vec::new();
        if let Some((period, at)) = self.cover
            && now >= at
            && !matches!(self.state, State::SettingUp)
        {
            let mut next = at + period;
            while next <= now {
                next += period;
            }
            self.cover = Some((period, next));
            let blob = mixnn_wire::blob::random(
                self.circuit.params().blob_len as usize,
                &mut self.entropy,
            );
            out.push(self.seal(End::First, Op::COVER, None, blob, Vec::new())?);
        }
        Ok(out)
    }

    /// One of the designer's links broke (its stream or connection failed): the session is
    /// over; the error names the step and the hop at its other end (or its refusal).
    pub fn handle_link_error(&mut self, end: End, error: LinkError) -> RemoteError {
        let step = self.state.step();
        let hop = self.hop_at(end);
        self.fail(link_failed(hop, step, end, error))
    }

    /// A frame arrived on `end` at `now`. Returns what the step under way brought back once
    /// it is complete; nothing for a cover message or a part of the export.
    pub fn handle_frame(
        &mut self,
        end: End,
        frame: &[u8],
        now: Instant,
    ) -> Result<Option<Outcome>, RemoteError> {
        if self.has_failed() {
            return Err(RemoteError::Failed);
        }
        let link: &mut LinkEnd = match end {
            End::First => &mut self.circuit.first,
            End::Last => &mut self.circuit.last,
        };
        let body = match link.open(frame) {
            Ok(body) => body,
            Err(e) => {
                let (hop, step) = (self.hop_at(end), self.state.step());
                return Err(self.fail(link_failed(hop, step, end, LinkError::Frame(e))));
            }
        };
        // Cover messages have done their job by arriving.
        if body.op == Op::COVER {
            return Ok(None);
        }
        // An output that comes back behind others took the gap since the last one, not a
        // crossing of the cascade: it must not teach the deadlines a crossing's time.
        let behind = matches!(self.state, State::Test { pending } if pending > 1);
        match self.on_body(end, body, now) {
            Ok(outcome) => {
                if behind && outcome.is_some() {
                    self.waiting = None;
                    self.wait(Step::Test, now);
                } else {
                    self.progress(now, outcome.is_some());
                }
                Ok(outcome)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn on_body(
        &mut self,
        end: End,
        body: FrameBody,
        now: Instant,
    ) -> Result<Option<Outcome>, RemoteError> {
        let step = self.state.step();
        // A report from anywhere: a failure ends the session, whatever is under way.
        let report = if body.op == Op::REPORT
            || (matches!(self.state, State::Test { .. })
                && body.op == Op::TEST
                && body.tensor.is_none())
        {
            Some(self.open(end, &body.blob, step)?)
        } else {
            None
        };
        match report {
            Some((hop, Report::Failure(message))) => return Err(self.hop_failed(hop, message)),
            Some((hop, Report::LinkLost(side))) => return Err(self.hop_lost(hop, side, step)),
            _ => {}
        }
        let want = match self.state {
            State::Backward => End::First,
            State::Turning { .. } if body.op == Op::BACKWARD => End::First,
            _ => End::Last,
        };
        if end != want {
            return Err(fault(step, PeerFault::WrongEnd));
        }
        let outcome = match (&mut self.state, report) {
            (State::SettingUp, Some((_, Report::Ready))) => {
                self.setup_time = Some(now.saturating_duration_since(self.started));
                (State::Idle, Outcome::Ready)
            }
            (State::Forward, Some((_, Report::Loss(loss)))) if self.remote_loss => {
                (State::Forwarded, Outcome::Loss(loss))
            }
            (State::Forward, None) if body.op == Op::FORWARD && !self.remote_loss => {
                let tensor = body.tensor.ok_or(fault(step, PeerFault::NoTensor))?;
                (State::Forwarded, Outcome::Activation(tensor))
            }
            (State::Backward, None) if body.op == Op::BACKWARD => {
                (State::Idle, Outcome::Gradient(body.tensor))
            }
            (State::Turning { loss, gradient }, Some((_, Report::Loss(l)))) if loss.is_none() => {
                match gradient.take() {
                    Some(gradient) => (State::Idle, Outcome::Trained { loss: l, gradient }),
                    None => {
                        *loss = Some(l);
                        return Ok(None);
                    }
                }
            }
            (State::Turning { loss, gradient }, None)
                if body.op == Op::BACKWARD && gradient.is_none() =>
            {
                match loss {
                    Some(loss) => (
                        State::Idle,
                        Outcome::Trained {
                            loss: *loss,
                            gradient: body.tensor,
                        },
                    ),
                    None => {
                        *gradient = Some(body.tensor);
                        return Ok(None);
                    }
                }
            }
            (State::Test { pending }, None) if body.op == Op::TEST => {
                let tensor = body.tensor.ok_or(fault(step, PeerFault::NoTensor))?;
                (after_test(*pending), Outcome::Output(tensor))
            }
            (State::Test { pending }, Some((_, Report::Output(tensor)))) => {
                (after_test(*pending), Outcome::Output(tensor))
            }
            (State::Export { left, parts }, None) if body.op == Op::EXPORT => {
                // A blob no hop sealed is a decoy.
                match self.circuit.open_from_last(&body.blob) {
                    Ok((hop, Report::State { index, bytes, .. })) => {
                        parts[hop].push((index, bytes))
                    }
                    Ok((hop, other)) => return Err(unexpected(hop, &other, step)),
                    Err(_) => {}
                }
                *left -= 1;
                if *left > 0 {
                    return Ok(None);
                }
                let parts = std::mem::take(parts);
                (State::Idle, Outcome::States(self.states(parts)?))
            }
            (_, Some((hop, report))) => return Err(unexpected(hop, &report, step)),
            (_, None) => return Err(fault(step, PeerFault::UnexpectedOp(body.op.0))),
        };
        self.state = outcome.0;
        Ok(Some(outcome.1))
    }

    /// The hops' exported parts, reassembled: each hop's layers' states in order.
    fn states(
        &self,
        parts: Vec<Vec<(u32, Vec<u8>)>>,
    ) -> Result<Vec<(usize, Vec<u8>)>, RemoteError> {
        let mut states = Vec::new();
        for (hop, mut chunks) in parts.into_iter().enumerate() {
            chunks.sort_by_key(|(i, _)| *i);
            let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, b)| b).collect();
            let mut r = Reader::new(&bytes);
            for &layer in &self.hops[hop].layers {
                let state = r
                    .take_lp32(bytes.len())
                    .map_err(|_| fault("export", PeerFault::BadState { hop }))?;
                states.push((layer, state.to_vec()));
            }
        }
        Ok(states)
    }

    /// Refuses a call out of turn.
    fn ready_for(
        &self,
        call: &'static str,
        ok: impl Fn(&State) -> bool,
    ) -> Result<(), RemoteError> {
        match &self.state {
            State::Failed => Err(RemoteError::Failed),
            s if ok(s) => Ok(()),
            s => Err(RemoteError::OutOfTurn {
                call,
                state: s.name(),
            }),
        }
    }

    fn seal(
        &mut self,
        end: End,
        op: Op,
        tensor: Option<WireTensor>,
        blob: Vec<u8>,
        route: Vec<u8>,
    ) -> Result<Transmit, RemoteError> {
        let body = FrameBody {
            op,
            tensor,
            blob,
            route,
        };
        let link = match end {
            End::First => &mut self.circuit.first,
            End::Last => &mut self.circuit.last,
        };
        // Nothing is sealed (no counter moves) for a body that does not fit.
        let frame = link.seal(&body).map_err(|e| match e {
            FrameError::TooLarge(needed) => PlanError::MessageTooLarge {
                needed,
                frame_len: self.frame_len,
            },
            e => PlanError::Seal(e),
        })?;
        Ok(Transmit { end, frame })
    }

    /// A fresh per-message onion for a frame of `op` (forward: first hop to last; backward:
    /// last to first), in sessions that use them; else nothing.
    fn route(&mut self, op: Op) -> Result<Vec<u8>, RemoteError> {
        let Some(keys) = &self.route_keys else {
            return Ok(Vec::new());
        };
        let mut order: Vec<&OnionPublicKey> = keys.iter().collect();
        if op == Op::BACKWARD {
            order.reverse();
        }
        route::build(&order, op, &mut self.entropy)
            .map_err(|e| PlanError::Build(BuildError::Crypto(e)).into())
    }

    /// Starts the deadline of `step`.
    fn wait(&mut self, step: Step, now: Instant) {
        let timeout = self.deadlines.of(step);
        self.waiting = Some(Wait {
            step,
            since: now,
            deadline: now + timeout,
            timeout,
        });
    }

    /// A frame of the step under way came at `now`: its time counts towards the deadlines
    /// (an export's, frame by frame), and the wait starts again unless the step is `done`.
    fn progress(&mut self, now: Instant, done: bool) {
        let Some(w) = self.waiting.take() else {
            return;
        };
        self.deadlines
            .took(w.step, now.saturating_duration_since(w.since));
        if !done {
            // A turning batch's loss ends its forward step and starts its backward one.
            self.wait(self.state.awaiting().unwrap_or(w.step), now);
        }
    }

    fn fail(&mut self, error: RemoteError) -> RemoteError {
        self.state = State::Failed;
        self.waiting = None;
        error
    }

    /// The hop at the other end of one of the designer's links.
    fn hop_at(&self, end: End) -> usize {
        match end {
            End::First => 0,
            End::Last => self.hops.len().saturating_sub(1),
        }
    }

    fn open(
        &self,
        end: End,
        blob: &[u8],
        step: &'static str,
    ) -> Result<(usize, Report), RemoteError> {
        match end {
            End::First => self.circuit.open_from_first(blob),
            End::Last => self.circuit.open_from_last(blob),
        }
        .map_err(|e| fault(step, PeerFault::Report(e)))
    }

    /// Hop `reporter` lost its link with its neighbour on `side`: that neighbour is gone (a
    /// report of the designer's own link, which it sees itself, names no hop past the ends).
    fn hop_lost(&self, reporter: usize, side: Neighbour, step: &'static str) -> RemoteError {
        let hop = match side {
            Neighbour::Prev => reporter.checked_sub(1),
            Neighbour::Next => Some(reporter + 1).filter(|&h| h < self.hops.len()),
        };
        match hop {
            Some(hop) => RemoteError::HopLost {
                step,
                hop,
                reported_by: reporter,
            },
            // Its link with the designer: the designer's side of it failed, or the report lies.
            None => RemoteError::LinkBroke {
                step,
                end: if side == Neighbour::Prev {
                    End::First
                } else {
                    End::Last
                },
                hop: reporter,
                source: LinkError::Closed,
            },
        }
    }

    fn hop_failed(&self, hop: usize, message: String) -> RemoteError {
        RemoteError::HopFailed {
            hop,
            what: self
                .hops
                .get(hop)
                .map_or_else(String::new, |h| h.description.clone()),
            message,
        }
    }
}

/// A step under way and its deadline.
#[derive(Debug, Clone, Copy)]
struct Wait {
    step: Step,
    since: Instant,
    deadline: Instant,
    timeout: Duration,
}

/// A protocol fault during `step`.
fn fault(step: &'static str, fault: PeerFault) -> RemoteError {
    RemoteError::Peer { step, fault }
}

fn unexpected(hop: usize, report: &Report, step: &'static str) -> RemoteError {
    let kind = match report {
        Report::Ready => "ready",
        Report::Loss(_) => "loss",
        Report::Output(_) => "output",
        Report::State { .. } => "state",
        Report::Failure(_) => "failure",
        Report::LinkLost(_) => "link-lost",
    };
    fault(step, PeerFault::UnexpectedReport { hop, kind })
}

/// How long the designer waits for the cascade's next answer, by kind of step.
#[derive(Debug)]
struct Deadlines {
    bound: Duration,
    adaptive: bool,
    recent: HashMap<Step, VecDeque<Duration>>,
}

impl Deadlines {
    fn new(bound: Duration, adaptive: bool) -> Self {
        Deadlines {
            bound,
            adaptive,
            recent: HashMap::new(),
        }
    }

    fn of(&self, step: Step) -> Duration {
        let Some(times) = self
            .recent
            .get(&step)
            .filter(|t| self.adaptive && t.len() >= DEADLINE_SAMPLES.0)
        else {
            return self.bound;
        };
        let mut sorted: Vec<Duration> = times.iter().copied().collect();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        (median * DEADLINE_FACTOR).clamp(MIN_DEADLINE.min(self.bound), self.bound)
    }

    fn took(&mut self, step: Step, time: Duration) {
        let times = self.recent.entry(step).or_default();
        if times.len() == DEADLINE_SAMPLES.1 {
            times.pop_front();
        }
        times.push_back(time);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_adapt_to_the_steps_once_a_few_are_timed() {
        let bound = Duration::from_secs(60);
        let mut deadlines = Deadlines::new(bound, true);
        let ms = Duration::from_millis;
        for _ in 0..DEADLINE_SAMPLES.0 - 1 {
            deadlines.took(Step::Forward, ms(10));
        }
        // Too few timed: the bound.
        assert_eq!(deadlines.of(Step::Forward), bound);
        deadlines.took(Step::Forward, ms(500));
        // The median (10 ms) times 20, but at least MIN_DEADLINE.
        assert_eq!(deadlines.of(Step::Forward), MIN_DEADLINE);
        for _ in 0..DEADLINE_SAMPLES.1 {
            deadlines.took(Step::Forward, ms(400));
        }
        assert_eq!(deadlines.of(Step::Forward), ms(400) * DEADLINE_FACTOR);
        for _ in 0..DEADLINE_SAMPLES.1 {
            deadlines.took(Step::Forward, Duration::from_secs(10));
        }
        // Never past the bound; other steps keep theirs.
        assert_eq!(deadlines.of(Step::Forward), bound);
        assert_eq!(deadlines.of(Step::Backward), bound);
        // A fixed deadline does not adapt.
        let mut fixed = Deadlines::new(bound, false);
        for _ in 0..DEADLINE_SAMPLES.1 {
            fixed.took(Step::Forward, ms(10));
        }
        assert_eq!(fixed.of(Step::Forward), bound);
    }
}
