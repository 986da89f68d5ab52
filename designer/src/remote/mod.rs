//! Training over remote hosts, split as quinn-proto is from quinn:
//!
//! - [`Plan`] and [`Placement`] ([`plan`]), pure: which layers each hop runs, the sizes of
//!   frames and blobs, which hosts take which positions;
//! - [`DesignerSession`] ([`session`]), sans IO: what the cascade owes the designer next and
//!   by when, the frames of its two links sealed and opened, failures named;
//! - a thin network shell ([`net`]): QUIC streams into the first hop and from the last, on a
//!   one-thread tokio runtime in the background;
//! - [`RemoteCascade`], which runs the layers the designer keeps (`keep_first`, `keep_last`)
//!   in its own sandbox around the session, and trains as a [`Model`].
//!
//! Every wait has a deadline, so a silent cascade becomes an error naming the step that failed.

use std::{
    net::SocketAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use mixnn_layer_sdk::{LayerInfo, Mode, Tensor};
use mixnn_sandbox::Sandbox;
use mixnn_transport::{Fingerprint, directory_client};
use mixnn_wire::{crypto::SystemEntropy, frame::WireTensor};

use crate::{
    backend::{Backend, LayerBackend},
    cascade::{CascadeError, build_layer},
    pool::Candidate,
    spec::ModelSpec,
    train::Model,
};

mod error;
mod net;
pub mod plan;
pub mod session;

pub use error::{End, LinkError, PeerFault, PlanError, RemoteError};
pub use net::fetch_pool;
pub use plan::{HostRef, Placement, Plan};
pub use session::{
    DEADLINE_FACTOR, DesignerSession, MAX_TESTS_IN_FLIGHT, MIN_DEADLINE, Opening, Outcome,
    SessionConfig, Transmit,
};

/// Where the directory is, and how to build the cascade.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// The directory's address.
    pub directory: SocketAddr,
    /// Its certificate's fingerprint.
    pub directory_fingerprint: Fingerprint,
    /// Dummy hosts interleaved between the actual ones.
    pub dummies: usize,
    /// Keep the first host's layers here.
    pub keep_first: bool,
    /// Keep the last layers here: from the last layer with parameters to the loss (see
    /// [`plan::kept_tail`]), so that no host receives a gradient that spells the labels out.
    pub keep_last: bool,
    /// Cover messages per second into the first hop (0: none). They go while the designer
    /// waits on the cascade (the session is woken for them); a designer busy elsewhere (its
    /// kept layers, an audit) sends none meanwhile and no burst after.
    pub cover_rate: f64,
    /// Longest wait for any answer of the cascade: for the setup and the first steps, and
    /// for every step unless `adaptive_deadline`.
    pub step_timeout: Duration,
    /// Once a few steps of a kind (forward, backward, test, export) have been timed, wait
    /// for the next one [`DEADLINE_FACTOR`] times their median, at least [`MIN_DEADLINE`]
    /// and at most `step_timeout`: a cascade that falls silent is noticed in seconds.
    pub adaptive_deadline: bool,
    /// How long hosts keep the session.
    pub session_ttl: Duration,
    /// The paper's own design (its Eq. (2) and (3)), for comparison: every forward and
    /// backward message carries a fresh onion whose layers each wrap a key to their hop's
    /// RSA-2048 key, which the hop must unwrap before it acts.
    pub per_message_rsa: bool,
    /// The loss hop turns each batch around itself ([`mixnn_wire::setup::HopSetup::LOSS_TURNS`]):
    /// it starts the backward pass as soon as it has the loss, and two links leave the
    /// critical path. Off, it waits for the designer's backward frame, as the paper's
    /// protocol does. Never with `per_message_rsa` (whose backward routes come from the
    /// designer) nor `keep_last` (the designer turns the batch around then).
    pub loss_turns: bool,
    /// The inputs are bytes scaled to [0, 1] (`k / 255`, as images from IDX files): they
    /// travel as bytes, and frames are sized for that, a quarter of `f32`. A batch that is
    /// not is refused.
    pub byte_inputs: bool,
    /// The most hosts taken from the directory: its answer is read no further.
    pub max_pool: usize,
    /// For benchmarks: a one-way delay on every frame the designer writes into its two links
    /// (a WAN's latency on loopback; the hosts' own is `link_delay_ms` in their `[faults]`).
    /// Zero: none, at no cost.
    pub link_delay: Duration,
    /// The layer whose output test passes give, by the spec's index (none: the model's
    /// output, the layer before the loss): a hop's last layer ([`plan::test_ends`]). That
    /// hop reports it sealed for the designer, and the hops after it pass the report on.
    pub test_end: Option<usize>,
}

impl RemoteOptions {
    /// The directory at `directory` (pinned to `fingerprint`), and defaults for the rest: no
    /// dummies, no kept layers, no cover traffic, a minute per step, sessions of a day (hosts
    /// grant 25 hours by default), inputs as bytes.
    pub fn new(directory: SocketAddr, fingerprint: Fingerprint) -> Self {
        RemoteOptions {
            directory,
            directory_fingerprint: fingerprint,
            dummies: 0,
            keep_first: false,
            keep_last: false,
            cover_rate: 0.0,
            step_timeout: Duration::from_secs(60),
            adaptive_deadline: true,
            session_ttl: Duration::from_secs(24 * 3600),
            per_message_rsa: false,
            loss_turns: true,
            byte_inputs: true,
            max_pool: directory_client::DEFAULT_MAX_POOL,
            link_delay: Duration::ZERO,
            test_end: None,
        }
    }
}

impl From<&RemoteOptions> for SessionConfig {
    fn from(options: &RemoteOptions) -> Self {
        SessionConfig {
            step_timeout: options.step_timeout,
            adaptive_deadline: options.adaptive_deadline,
            cover_period: (options.cover_rate > 0.0)
                .then(|| Duration::from_secs_f64(1.0 / options.cover_rate.max(1e-3))),
            session_ttl: options.session_ttl,
        }
    }
}

/// A layer the designer keeps.
struct LocalLayer {
    info: LayerInfo,
    backend: Box<dyn LayerBackend>,
}

/// A model trained over remote hosts: the session, its links, and the layers kept here.
pub struct RemoteCascade {
    session: DesignerSession<SystemEntropy>,
    net: Option<net::Net>,
    head: Vec<LocalLayer>,
    tail: Vec<LocalLayer>,
    layer_count: usize,
    /// The layer whose output a test pass gives ([`Plan::test_end`]).
    test_end: usize,
    /// Whether a hop gives it (else the kept tail runs up to it).
    remote_test_end: bool,
}

impl std::fmt::Debug for RemoteCascade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCascade")
            .field("hops", &self.session.describe())
            .finish_non_exhaustive()
    }
}

impl RemoteCascade {
    /// Builds a session for `spec` over hosts from the directory. `input_shape` is the shape
    /// of one batch of inputs (it sizes the frames); `sandbox` runs the layers the designer
    /// keeps. Call on one of the sandbox's workers.
    pub fn connect(
        spec: &ModelSpec,
        sandbox: &Sandbox,
        options: &RemoteOptions,
        input_shape: &[usize],
    ) -> Result<Self, RemoteError> {
        Self::connect_from(spec, sandbox, options, input_shape, &[])
    }

    /// As [`RemoteCascade::connect`], with the layers starting from `states` (by layer, as
    /// [`crate::cascade::Cascade::export_states`] gives them; a missing or empty one: the
    /// layer's own init). Each hop receives its layers' states in its op=0 layer, sealed for
    /// it alone.
    pub fn connect_from(
        spec: &ModelSpec,
        sandbox: &Sandbox,
        options: &RemoteOptions,
        input_shape: &[usize],
        states: &[Vec<u8>],
    ) -> Result<Self, RemoteError> {
        let plan = Plan::new(spec, sandbox, options, input_shape)?;
        Self::connect_planned(spec, sandbox, options, &plan, states, &Placement::default())
    }

    /// A session laid out by `plan` (from [`Plan::new`] with the same `spec` and `options`),
    /// its layers starting from `states`, on hosts of the pool as `placement` allows.
    pub fn connect_planned(
        spec: &ModelSpec,
        sandbox: &Sandbox,
        options: &RemoteOptions,
        plan: &Plan,
        states: &[Vec<u8>],
        placement: &Placement,
    ) -> Result<Self, RemoteError> {
        let chosen = placement.choose(fetch_pool(options)?, plan.len())?;
        Self::connect_on(spec, sandbox, options, plan, states, chosen)
    }

    /// As [`RemoteCascade::connect_planned`], on the hosts `chosen` (one per position of
    /// `plan`, first to last).
    pub fn connect_on(
        spec: &ModelSpec,
        sandbox: &Sandbox,
        options: &RemoteOptions,
        plan: &Plan,
        states: &[Vec<u8>],
        chosen: Vec<Candidate>,
    ) -> Result<Self, RemoteError> {
        let groups = spec.hosts();
        let local = |layers: &[usize]| -> Result<Vec<LocalLayer>, CascadeError> {
            layers
                .iter()
                .map(|&i| {
                    let (info, mut backend) = build_layer(spec, i, Backend::Wasm, Some(sandbox))?;
                    match states.get(i) {
                        Some(state) if !state.is_empty() => {
                            backend
                                .import_state(state)
                                .map_err(|source| CascadeError::Call {
                                    index: i,
                                    name: info.name.clone(),
                                    op: "import-state",
                                    source,
                                })?
                        }
                        _ => {}
                    }
                    Ok(LocalLayer { info, backend })
                })
                .collect()
        };
        let head = match groups.first() {
            Some(first) if plan.keep_first => local(first)?,
            _ => Vec::new(),
        };
        let tail = local(&plan.kept_tail(&groups))?;
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (session, opening) = DesignerSession::start(
            plan,
            plan.hop_layers(spec, states)?,
            chosen,
            SessionConfig::from(options),
            SystemEntropy,
            unix_now,
            Instant::now(),
        )?;
        let hosts = session.hosts();
        let net = net::Net::open(&hosts, opening, plan.frame_len, options.link_delay)?;
        let mut cascade = RemoteCascade {
            session,
            net: Some(net),
            head,
            tail,
            layer_count: spec.layers.len(),
            test_end: plan.test_end,
            remote_test_end: plan.remote_test_end,
        };
        cascade.drive()?;
        tracing::info!(
            hops = hosts.len(),
            frame_len = plan.frame_len,
            blob_len = plan.blob_len,
            "session set up"
        );
        Ok(cascade)
    }

    /// From connecting to the first hop to the last hop's acknowledgement (op=0 end to end).
    pub fn setup_time(&self) -> Duration {
        self.session.setup_time().unwrap_or_default()
    }

    /// The hosts of the cascade, first to last.
    pub fn hosts(&self) -> Vec<HostRef> {
        self.session.hosts()
    }

    /// The hops, first to last: each one's layers, or `dummy`.
    pub fn describe(&self) -> Vec<String> {
        self.session.describe()
    }

    /// Whether the loss hop turns batches around itself ([`RemoteOptions::loss_turns`]).
    pub fn loss_turns(&self) -> bool {
        self.session.loss_turns()
    }

    /// Sends what the session sealed.
    fn transmit(&mut self, transmit: Transmit) -> Result<(), RemoteError> {
        let end = transmit.end;
        let net = self.net.as_mut().ok_or(RemoteError::Failed)?;
        net.send(transmit)
            .map_err(|e| self.session.handle_link_error(end, e))
    }

    /// Runs the network until the step under way brings its outcome back (or fails).
    fn drive(&mut self) -> Result<Outcome, RemoteError> {
        loop {
            let wake = self.session.poll_timeout();
            let net = self.net.as_mut().ok_or(RemoteError::Failed)?;
            match net.next(wake) {
                net::Event::Frame(end, frame) => {
                    if let Some(outcome) = self.session.handle_frame(end, &frame, Instant::now())? {
                        return Ok(outcome);
                    }
                }
                net::Event::Broke(end, e) => return Err(self.session.handle_link_error(end, e)),
                net::Event::Timer => {
                    for transmit in self.session.handle_timeout(Instant::now())? {
                        self.transmit(transmit)?;
                    }
                }
            }
        }
    }

    /// An outcome the session never gives for the step under way.
    fn out_of_step(call: &'static str) -> RemoteError {
        RemoteError::OutOfTurn {
            call,
            state: "answered by another step's outcome",
        }
    }

    fn no_gradient(index: usize) -> RemoteError {
        RemoteError::Local(CascadeError::NoGradient(index))
    }

    fn local_call<R>(
        layer: &mut LocalLayer,
        index: usize,
        op: &'static str,
        f: impl FnOnce(&mut dyn LayerBackend) -> Result<R, crate::backend::LayerFailure>,
    ) -> Result<R, RemoteError> {
        f(layer.backend.as_mut()).map_err(|source| {
            RemoteError::Local(CascadeError::Call {
                index,
                name: layer.info.name.clone(),
                op,
                source,
            })
        })
    }

    /// Closes the session: the links finish, and the hops tear it down in turn.
    pub fn close(mut self) {
        if let Some(net) = self.net.take() {
            net.close();
        }
    }

    /// Every layer's state, in the spec's order (as
    /// [`crate::cascade::Cascade::export_states`]): the hops' states come sealed for the
    /// designer, the kept layers' from here.
    pub fn export_states(&mut self) -> Result<Vec<Vec<u8>>, RemoteError> {
        let mut states: Vec<Option<Vec<u8>>> = vec![None; self.layer_count];
        let tail_start = self.layer_count - self.tail.len();
        let kept = self.head.iter_mut().enumerate().chain(
            self.tail
                .iter_mut()
                .enumerate()
                .map(|(k, l)| (tail_start + k, l)),
        );
        for (i, layer) in kept {
            states[i] = Some(Self::local_call(layer, i, "export-state", |l| {
                l.export_state()
            })?);
        }
        for transmit in self.session.export(Instant::now())? {
            self.transmit(transmit)?;
        }
        let Outcome::States(remote) = self.drive()? else {
            return Err(Self::out_of_step("export"));
        };
        for (layer, state) in remote {
            if let Some(slot) = states.get_mut(layer) {
                *slot = Some(state);
            }
        }
        states
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                s.ok_or(RemoteError::Peer {
                    step: "export",
                    fault: PeerFault::MissingState(i),
                })
            })
            .collect()
    }
}

impl RemoteCascade {
    /// The backward pass through the layers the designer keeps before the cascade, from the
    /// first hop's `gradient` of its input.
    fn backward_head(&mut self, gradient: Option<WireTensor>) -> Result<(), RemoteError> {
        if self.head.is_empty() {
            return Ok(());
        }
        let gradient = gradient.ok_or(RemoteError::Peer {
            step: "backward",
            fault: PeerFault::NoTensor,
        })?;
        let mut g = Some(from_wire(gradient, "backward")?);
        for (i, layer) in self.head.iter_mut().enumerate().rev() {
            // The model's input needs no gradient.
            let grad_output = g.take().ok_or_else(|| Self::no_gradient(i + 1))?;
            g = Self::local_call(layer, i, "backward", |l| l.backward(grad_output, i > 0))?;
            Self::local_call(layer, i, "update", |l| l.update())?;
        }
        Ok(())
    }
}

fn to_wire(t: Tensor) -> Result<WireTensor, RemoteError> {
    let (shape, data) = t.into_parts();
    let shape = shape
        .into_iter()
        .map(|d| u32::try_from(d).map_err(|_| PlanError::Dimension(d)))
        .collect::<Result<_, _>>()?;
    Ok(WireTensor { shape, data })
}

/// A tensor a hop sent during `step`.
fn from_wire(t: WireTensor, step: &'static str) -> Result<Tensor, RemoteError> {
    Tensor::new(t.shape.into_iter().map(|d| d as usize).collect(), t.data).map_err(|e| {
        RemoteError::Peer {
            step,
            fault: PeerFault::BadTensor(e),
        }
    })
}

impl Model for RemoteCascade {
    type Error = RemoteError;

    fn mode(&self) -> String {
        "cascade".into()
    }

    fn train_step(&mut self, input: Tensor, target: Tensor) -> Result<f32, RemoteError> {
        let mut x = input;
        for (i, layer) in self.head.iter_mut().enumerate() {
            x = Self::local_call(layer, i, "forward", |l| l.forward(x, Mode::Train))?;
        }
        let sent = self
            .session
            .forward(to_wire(x)?, &to_wire(target.clone())?, Instant::now())?;
        self.transmit(sent)?;
        let (loss, gradient) = match self.drive()? {
            // The loss hop turned the batch around: both passes are done.
            Outcome::Trained { loss, gradient } => {
                self.backward_head(gradient)?;
                return Ok(loss);
            }
            Outcome::Loss(loss) => (loss, None),
            Outcome::Activation(y) => {
                let mut y = from_wire(y, "forward")?;
                let tail_start = self.layer_count - self.tail.len();
                let last = self.tail.len() - 1;
                for (k, layer) in self.tail[..last].iter_mut().enumerate() {
                    y = Self::local_call(layer, tail_start + k, "forward", |l| {
                        l.forward(y, Mode::Train)
                    })?;
                }
                let out = Self::local_call(&mut self.tail[last], tail_start + last, "loss", |l| {
                    l.loss(y, target)
                })?;
                let mut g = out.grad_input;
                for (k, layer) in self.tail[..last].iter_mut().enumerate().rev() {
                    let i = tail_start + k;
                    g = Self::local_call(layer, i, "backward", |l| l.backward(g, true))?
                        .ok_or_else(|| Self::no_gradient(i))?;
                }
                (out.loss, Some(to_wire(g)?))
            }
            _ => return Err(Self::out_of_step("forward")),
        };
        let sent = self.session.backward(gradient, Instant::now())?;
        self.transmit(sent)?;
        // The kept tail's updates while the cascade runs its backward pass.
        let tail_start = self.layer_count - self.tail.len();
        if let Some((_, before_loss)) = self.tail.split_last_mut() {
            for (k, layer) in before_loss.iter_mut().enumerate() {
                Self::local_call(layer, tail_start + k, "update", |l| l.update())?;
            }
        }
        let Outcome::Gradient(gradient) = self.drive()? else {
            return Err(Self::out_of_step("backward"));
        };
        self.backward_head(gradient)?;
        Ok(loss)
    }

    fn predict(&mut self, input: Tensor) -> Result<Tensor, RemoteError> {
        self.send_test(input)?;
        self.receive_test()
    }
}

impl RemoteCascade {
    /// The model's outputs (test mode; the test end's, [`RemoteOptions::test_end`]) for
    /// `inputs`, in order, with up to `in_flight` batches in the cascade at once (at most
    /// [`MAX_TESTS_IN_FLIGHT`]): while one hop works on a batch, the next hops work on
    /// earlier ones. `on_output` takes each batch's output as it comes back.
    pub fn predict_in_flight(
        &mut self,
        inputs: impl IntoIterator<Item = Tensor>,
        in_flight: usize,
        mut on_output: impl FnMut(usize, Tensor),
    ) -> Result<(), RemoteError> {
        let result = self.run_in_flight(
            inputs,
            in_flight.clamp(1, MAX_TESTS_IN_FLIGHT),
            &mut on_output,
        );
        // Outputs still under way would answer later calls out of turn: the session is over.
        if result.is_err() {
            self.session.abort();
        }
        result
    }

    fn run_in_flight(
        &mut self,
        inputs: impl IntoIterator<Item = Tensor>,
        in_flight: usize,
        on_output: &mut impl FnMut(usize, Tensor),
    ) -> Result<(), RemoteError> {
        let mut inputs = inputs.into_iter();
        let (mut sent, mut done) = (0, 0);
        loop {
            while sent - done < in_flight {
                let Some(x) = inputs.next() else { break };
                self.send_test(x)?;
                sent += 1;
            }
            if done == sent {
                return Ok(());
            }
            on_output(done, self.receive_test()?);
            done += 1;
        }
    }

    /// Sends a test batch through the kept head into the cascade.
    fn send_test(&mut self, input: Tensor) -> Result<(), RemoteError> {
        let mut x = input;
        for (i, layer) in self.head.iter_mut().enumerate() {
            x = Self::local_call(layer, i, "forward", |l| l.forward(x, Mode::Test))?;
        }
        let sent = self.session.test(to_wire(x)?, Instant::now())?;
        self.transmit(sent)
    }

    /// The next test output: the test end's, from a hop or through the kept tail up to it.
    fn receive_test(&mut self) -> Result<Tensor, RemoteError> {
        let Outcome::Output(y) = self.drive()? else {
            return Err(Self::out_of_step("test"));
        };
        let mut y = from_wire(y, "test")?;
        if self.remote_test_end {
            return Ok(y);
        }
        let (tail_start, end) = (self.layer_count - self.tail.len(), self.test_end);
        for (k, layer) in self
            .tail
            .iter_mut()
            .enumerate()
            .filter(|(k, l)| !l.info.is_loss && tail_start + k <= end)
        {
            y = Self::local_call(layer, tail_start + k, "forward", |l| {
                l.forward(y, Mode::Test)
            })?;
        }
        Ok(y)
    }
}
