//! One hop of one session, sans IO: frames in, frames out. A [`Hop`] holds the keys and link
//! ends its setup gave it and the sandboxed layers it runs, and turns each frame from a
//! neighbour into the frames it owes its neighbours. The daemon moves the bytes.
//!
//! Training alternates strictly: a forward frame, then its backward frame, then the next
//! forward (exact SGD, P9). Test, cover, report and export frames may come between batches.
//! A failure (a layer's error, a frame out of order) ends the session with a report sealed
//! for the designer; a frame that does not open is dropped, and the first one is reported.

use mixnn_sandbox::{
    CallBudget, LayerSession, Sandbox, SandboxError,
    wit::{LayerInfo, Mode, Tensor},
};
use mixnn_wire::{
    blob::{self, Recipient},
    crypto::{Entropy, Key, OnionPrivateKey},
    export::{self, ExportSlot},
    frame::{FrameBody, FrameError, LinkEnd, Op, Side, WireTensor},
    reader::put_lp32,
    report::{Neighbour, Report},
    route,
    setup::{HopSetup, Peer},
};

/// How a hop lies, for fault drills (a host's `[faults]`): a host that wants to cheat can
/// always do so; these let the designer's audits be tested against real cheating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lie {
    /// Adds 0.01 to the first value of every forward output (training and test).
    PerturbForward,
    /// Computes every backward honestly but keeps its weights (and momentum) as they were.
    SkipUpdate,
}

/// Which neighbour a frame comes from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toward {
    /// The previous hop (or the designer, for the first hop).
    Prev,
    /// The next hop (or the designer, for the last hop).
    Next,
}

/// Something a hop saw in the clear, shown to its observer ([`Hop::observe`]): all that a
/// curious host could keep.
#[derive(Debug, Clone, Copy)]
pub enum Seen<'a> {
    /// A frame opened from a neighbour (its blob as received).
    Frame(Toward, &'a FrameBody),
    /// A frame about to be sealed for a neighbour.
    Sent(Toward, &'a FrameBody),
    /// A payload the designer sealed for this hop: labels, or an export slot.
    Sealed(&'a [u8]),
    /// The state its layers hold (weights, optimizer), as taken for an export: every layer's,
    /// length-prefixed.
    State(&'a [u8]),
}

/// A callback shown everything a hop sees in the clear.
pub type Observer = Box<dyn FnMut(Seen<'_>) + Send>;

/// A frame to send. Sealed frames must go: the link's counter has moved past them, so a
/// frame dropped here breaks the link for every later frame.
#[must_use = "a sealed frame must be sent: its link's counter has moved past it"]
pub struct Outgoing {
    /// To whom.
    pub to: Toward,
    /// The sealed frame.
    pub frame: Vec<u8>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Outgoing({:?}, {} bytes)", self.to, self.frame.len())
    }
}

/// Why a frame was not processed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HopError {
    /// It does not open on its link: forged, tampered, replayed, reordered or mis-sized.
    /// The first rejection of a session comes with a report for the designer, to send.
    #[error("frame rejected: {error}")]
    Rejected {
        /// Why.
        error: FrameError,
        /// The report to send, if any.
        report: Option<Outgoing>,
    },
    /// The session has already failed.
    #[error("the session has failed")]
    Failed,
}

/// A hop's failure: what the designer is told.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{op}: {source}")]
    Layer {
        op: &'static str,
        source: SandboxError,
    },
    #[error("protocol: {0}")]
    Protocol(&'static str),
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// Outside the frames: a neighbour unreachable or gone, the session idle or over budget.
    #[error("{0}")]
    Outside(String),
}

fn layer_failure(op: &'static str) -> impl FnOnce(SandboxError) -> Failure {
    move |source| Failure::Layer { op, source }
}

struct Layer {
    session: LayerSession,
    info: LayerInfo,
}

struct Export {
    state: Vec<u8>,
    parts_left: u32,
}

/// One hop of one session.
pub struct Hop<E> {
    from_prev: LinkEnd,
    to_next: LinkEnd,
    next_is_designer: bool,
    blob_key: Key,
    designer_key: Key,
    flags: u8,
    blob_len: usize,
    frame_len: usize,
    layers: Vec<Layer>,
    /// Set once a forward frame waits for its backward frame; holds the loss gradient on the
    /// loss hop.
    pending: Option<Option<Tensor>>,
    /// Whether the layers owe their update since the last backward pass ([`Hop::update`]).
    owes_update: bool,
    /// A liar's states from before the backward pass, layer by layer (loss layers
    /// excepted), to put back after the update ([`Lie::SkipUpdate`]).
    skipped_update: Vec<Vec<u8>>,
    /// The state being exported, while parts of it are still to send.
    export: Option<Export>,
    failed: bool,
    /// The operation of the last frame that opened.
    last_op: Option<Op>,
    /// How it lies, from which forward or test frame on (1-based, counted by the shared
    /// counter: over all the host's sessions), in fault drills.
    lie: Option<(Lie, u64, std::sync::Arc<std::sync::atomic::AtomicU64>)>,
    /// Whether the frame in hand is past that point.
    lying_now: bool,
    reported_rejection: bool,
    entropy: E,
    observer: Option<Observer>,
    /// The host's onion key, for sessions with per-message routes ([`route`]).
    route_key: Option<std::sync::Arc<OnionPrivateKey>>,
}

impl<E> std::fmt::Debug for Hop<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hop")
            .field("layers", &self.layers.len())
            .field("flags", &self.flags)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<E: Entropy> Hop<E> {
    /// Starts a hop from its setup: loads and initialises its layers in `sandbox` (from the
    /// states the setup carries, if any). Returns the
    /// frames to send at once: readiness towards the designer if the hop is first, or a
    /// failure report if a layer would not start. Call on one of the sandbox's workers.
    #[must_use = "the frames returned must be sent"]
    pub fn start(
        setup: HopSetup,
        sandbox: &Sandbox,
        entropy: E,
    ) -> Result<(Self, Vec<Outgoing>), FrameError> {
        let frame_len = setup.frame_len as usize;
        let mut hop = Hop {
            from_prev: LinkEnd::new(
                setup.circuit_in,
                &setup.link_in,
                Side::Downstream,
                frame_len,
            )?,
            to_next: LinkEnd::new(
                setup.circuit_out,
                &setup.link_out,
                Side::Upstream,
                frame_len,
            )?,
            next_is_designer: setup.next == Peer::Designer,
            blob_key: setup.blob_key,
            designer_key: setup.designer_key,
            flags: setup.flags,
            blob_len: setup.blob_len as usize,
            frame_len,
            layers: Vec::with_capacity(setup.layers.len()),
            pending: None,
            owes_update: false,
            skipped_update: Vec::new(),
            export: None,
            failed: false,
            last_op: None,
            lie: None,
            lying_now: false,
            reported_rejection: false,
            entropy,
            observer: None,
            route_key: None,
        };
        let mut out = Vec::new();
        let loaded = setup.layers.iter().try_for_each(|layer| {
            let module = sandbox
                .load(&layer.component)
                .map_err(layer_failure("load"))?;
            let mut session = sandbox.start(&module).map_err(layer_failure("start"))?;
            let info = session.init(&layer.config).map_err(layer_failure("init"))?;
            if !layer.state.is_empty() {
                session
                    .import_state(&layer.state)
                    .map_err(layer_failure("import-state"))?;
            }
            hop.layers.push(Layer { session, info });
            Ok(())
        });
        let loaded = loaded.and_then(|()| hop.check_roles());
        match loaded {
            Err(failure) => hop.fail(Toward::Next, &failure, &mut out),
            Ok(()) if setup.prev == Peer::Designer => {
                let blob = blob::random(hop.blob_len, &mut hop.entropy);
                hop.send_ready(blob, &mut out)?;
            }
            Ok(()) => {}
        }
        Ok((hop, out))
    }

    fn check_roles(&self) -> Result<(), Failure> {
        let loss_layers = self.layers.iter().filter(|l| l.info.is_loss).count();
        let is_loss = self.flags & HopSetup::LOSS != 0;
        match (is_loss, loss_layers) {
            (true, 1) if self.layers.last().is_some_and(|l| l.info.is_loss) => {}
            (false, 0) => {}
            _ => {
                return Err(Failure::Protocol(
                    "the loss layer must be the last layer of the hop flagged for it",
                ));
            }
        }
        if self.turns() && (!is_loss || self.flags & HopSetup::PER_MESSAGE_RSA != 0) {
            return Err(Failure::Protocol(
                "only a loss hop without per-message routes turns batches around",
            ));
        }
        Ok(())
    }

    /// Whether this hop turns each batch around itself ([`HopSetup::LOSS_TURNS`]).
    fn turns(&self) -> bool {
        self.flags & HopSetup::LOSS_TURNS != 0
    }

    /// Ends the session for a reason outside the frames (a neighbour unreachable or gone),
    /// with a report towards the designer through `to`.
    #[must_use = "the failure report must be sent"]
    pub fn fail_with(&mut self, to: Toward, message: &str) -> Vec<Outgoing> {
        let mut out = Vec::new();
        if !self.failed {
            self.fail(to, &Failure::Outside(message.to_owned()), &mut out);
        }
        out
    }

    /// Ends the session because the link with `side` is gone (its host died, it cannot be
    /// reached, or the network between failed): a [`Report::LinkLost`] goes towards the
    /// designer through the other link, so the designer learns which host to replace.
    #[must_use = "the report must be sent"]
    pub fn lost(&mut self, side: Toward) -> Vec<Outgoing> {
        let mut out = Vec::new();
        if self.failed {
            return out;
        }
        tracing::debug!(?side, "session failed: a neighbour is gone");
        self.failed = true;
        let (to, neighbour) = match side {
            Toward::Prev => (Toward::Next, Neighbour::Prev),
            Toward::Next => (Toward::Prev, Neighbour::Next),
        };
        match self.report(to, &Report::LinkLost(neighbour)) {
            Ok(frame) => out.push(frame),
            Err(e) => {
                tracing::error!(error = %e, "a link-lost report did not fit its blob (a bug)")
            }
        }
        out
    }

    /// Gives the hop its host's onion key, which sessions flagged
    /// [`HopSetup::PER_MESSAGE_RSA`] need for every forward and backward frame.
    pub fn set_route_key(&mut self, key: std::sync::Arc<OnionPrivateKey>) {
        self.route_key = Some(key);
    }

    /// Shows `observer` everything this hop sees in the clear from now on (for audits: see
    /// [`crate::daemon`]'s `audit_dir`).
    pub fn observe(&mut self, observer: Observer) {
        self.observer = Some(observer);
    }

    fn saw(&mut self, seen: Seen<'_>) {
        if let Some(observer) = &mut self.observer {
            observer(seen);
        }
    }

    /// Makes the hop lie as `lie` says from its `from`th forward or test frame on
    /// (1-based): for fault drills only (see [`Lie`]).
    pub fn lie(
        &mut self,
        lie: Lie,
        from: u64,
        frames: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) {
        self.lie = Some((lie, from, frames));
    }

    /// Counts a forward or test frame towards the lie's start.
    fn count_frame(&mut self) {
        if let Some((_, from, frames)) = &self.lie {
            let seen = frames.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            self.lying_now = seen >= *from;
        }
    }

    fn lying(&self, how: Lie) -> bool {
        self.lying_now && self.lie.as_ref().is_some_and(|(lie, ..)| *lie == how)
    }

    /// The operation of the last frame that opened (what the hop is doing).
    pub fn last_op(&self) -> Option<Op> {
        self.last_op
    }

    /// Runs its layers' calls within `budget` from now on (None: their call timeout alone):
    /// for frames handled where other work waits.
    pub fn set_budget(&mut self, budget: Option<CallBudget>) {
        for layer in &mut self.layers {
            layer.session.set_budget(budget);
        }
    }

    /// Whether the hop is between two steps: no forward pass waits for its backward pass,
    /// no update is owed, no export is half sent. A host that leaves ends its sessions there,
    /// so that their designers lose no step.
    pub fn between_steps(&self) -> bool {
        self.pending.is_none() && !self.owes_update && self.export.is_none()
    }

    /// Whether the session has failed.
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// Whether the layers owe their update since the last backward pass: call
    /// [`Hop::update`] once the frames of that pass are on their way.
    pub fn owes_update(&self) -> bool {
        self.owes_update
    }

    /// Runs the update the layers owe since the last backward pass: their parameters'
    /// gradients and optimizer steps. A backward frame's gradient is sent before this work,
    /// which so leaves the critical path; [`Hop::on_frame`] runs it first if it is still
    /// owed. Returns the failure report to send if it fails.
    #[must_use = "the frames returned must be sent"]
    pub fn update(&mut self) -> Vec<Outgoing> {
        let mut out = Vec::new();
        if !std::mem::take(&mut self.owes_update) || self.failed {
            return out;
        }
        if let Err(failure) = self.update_layers() {
            // Towards the designer the way the backward pass went.
            self.fail(Toward::Prev, &failure, &mut out);
        }
        out
    }

    fn update_layers(&mut self) -> Result<(), Failure> {
        let mut kept = std::mem::take(&mut self.skipped_update).into_iter();
        for layer in self.layers.iter_mut().filter(|l| !l.info.is_loss) {
            layer.session.update().map_err(layer_failure("update"))?;
            // A liar puts back the state it had before the backward pass.
            if let Some(before) = kept.next() {
                layer
                    .session
                    .import_state(&before)
                    .map_err(layer_failure("import-state"))?;
            }
        }
        Ok(())
    }

    /// Handles one frame from a neighbour; returns the frames to send.
    #[must_use = "the frames returned must be sent"]
    pub fn on_frame(&mut self, from: Toward, frame: &[u8]) -> Result<Vec<Outgoing>, HopError> {
        if self.failed {
            return Err(HopError::Failed);
        }
        // Owed only if the shell did not run it after the last backward pass.
        let updated = self.update();
        if self.failed {
            return Ok(updated);
        }
        let link = match from {
            Toward::Prev => &mut self.from_prev,
            Toward::Next => &mut self.to_next,
        };
        let body = match link.open(frame) {
            Ok(body) => body,
            Err(error) => {
                // Told once, through the other neighbour: the sender may be the one at fault.
                let report = if self.reported_rejection {
                    None
                } else {
                    self.reported_rejection = true;
                    let away = match from {
                        Toward::Prev => Toward::Next,
                        Toward::Next => Toward::Prev,
                    };
                    let report = Report::failure(format!("dropped a frame: {error}"));
                    self.report(away, &report).ok()
                };
                return Err(HopError::Rejected { error, report });
            }
        };
        self.saw(Seen::Frame(from, &body));
        self.last_op = Some(body.op);
        // Empty: a failed update returned above.
        let mut out = updated;
        let toward_designer = match (from, body.op) {
            (Toward::Next, _) => Toward::Prev,
            _ => Toward::Next,
        };
        if let Err(failure) = self.handle(from, body, &mut out) {
            // Frames already sealed still go, before the report: the link's counter has moved
            // past them.
            self.fail(toward_designer, &failure, &mut out);
        }
        Ok(out)
    }

    fn handle(
        &mut self,
        from: Toward,
        mut body: FrameBody,
        out: &mut Vec<Outgoing>,
    ) -> Result<(), Failure> {
        blob::layer(&self.blob_key, &mut body.blob)
            .map_err(|_| Failure::Protocol("blob too short"))?;
        let routed = matches!(
            (from, body.op),
            (Toward::Prev, Op::FORWARD) | (Toward::Next, Op::BACKWARD)
        );
        if routed && self.flags & HopSetup::PER_MESSAGE_RSA != 0 {
            let key = self
                .route_key
                .as_ref()
                .ok_or(Failure::Protocol("no onion key for per-message routes"))?;
            body.route = route::peel(key, &body.route, body.op, &mut self.entropy)
                .map_err(|_| Failure::Protocol("a route layer that does not open"))?;
        }
        match (from, body.op) {
            (Toward::Prev, Op::READY) => self.send_ready(body.blob, out)?,
            (Toward::Prev, Op::FORWARD) => self.forward(body, out)?,
            (Toward::Next, Op::BACKWARD) => self.backward(body, out)?,
            (Toward::Prev, Op::TEST) => self.test(body, out)?,
            (Toward::Prev, Op::EXPORT) => self.export(body, out)?,
            (Toward::Prev, Op::COVER | Op::REPORT) => out.push(self.seal(Toward::Next, &body)?),
            (Toward::Next, Op::REPORT) => out.push(self.seal(Toward::Prev, &body)?),
            _ => return Err(Failure::Protocol("unexpected operation")),
        }
        Ok(())
    }

    fn send_ready(&mut self, blob: Vec<u8>, out: &mut Vec<Outgoing>) -> Result<(), FrameError> {
        if self.next_is_designer {
            out.push(self.report(Toward::Next, &Report::Ready)?);
        } else {
            out.push(self.frame(Toward::Next, Op::READY, None, blob)?);
        }
        Ok(())
    }

    fn forward(&mut self, body: FrameBody, out: &mut Vec<Outgoing>) -> Result<(), Failure> {
        if self.pending.is_some() {
            return Err(Failure::Protocol(
                "a forward frame before the last backward",
            ));
        }
        self.count_frame();
        let mut x = tensor(body.tensor)?;
        for layer in self.layers.iter_mut().filter(|l| !l.info.is_loss) {
            x = layer
                .session
                .forward(&x, Mode::Train)
                .map_err(layer_failure("forward"))?;
        }
        if self.lying(Lie::PerturbForward) {
            perturb(&mut x);
        }
        if self.layers.last().is_some_and(|l| l.info.is_loss) {
            let labels = blob::open(&self.designer_key, Recipient::Host, &body.blob)
                .map_err(|_| Failure::Protocol("labels that do not open"))?;
            self.saw(Seen::Sealed(&labels));
            let labels = WireTensor::decode(&mut mixnn_wire::reader::Reader::new(&labels))
                .map_err(|_| Failure::Protocol("malformed labels"))?;
            let target = Tensor {
                shape: labels.shape,
                data: labels.data,
            };
            let Some(loss_layer) = self.layers.last_mut() else {
                return Err(Failure::Protocol("no loss layer"));
            };
            let loss = loss_layer
                .session
                .loss(&x, &target)
                .map_err(layer_failure("loss"))?;
            if self.turns() {
                // The gradient first: it is on the critical path, the loss is not.
                let blob = blob::random(self.blob_len, &mut self.entropy);
                self.back_through(loss.grad_input, blob, Vec::new(), out)?;
            } else {
                self.pending = Some(Some(loss.grad_input));
            }
            out.push(self.report(Toward::Next, &Report::Loss(loss.loss))?);
        } else {
            self.pending = Some(None);
            let next = FrameBody {
                op: Op::FORWARD,
                tensor: Some(wire(x)),
                blob: body.blob,
                route: body.route,
            };
            out.push(self.seal(Toward::Next, &next)?);
        }
        Ok(())
    }

    fn backward(&mut self, body: FrameBody, out: &mut Vec<Outgoing>) -> Result<(), Failure> {
        let Some(pending) = self.pending.take() else {
            return Err(Failure::Protocol("a backward frame without its forward"));
        };
        let g = match pending {
            Some(loss_grad) => loss_grad,
            None => tensor(body.tensor)?,
        };
        self.back_through(g, body.blob, body.route, out)
    }

    /// Runs the layers' backward pass from `g`, the gradient of the hop's output, and sends
    /// the gradient of its input to the previous hop with `blob` and `route`.
    fn back_through(
        &mut self,
        g: Tensor,
        blob: Vec<u8>,
        route: Vec<u8>,
        out: &mut Vec<Outgoing>,
    ) -> Result<(), Failure> {
        let drop_input_grad = self.flags & HopSetup::DROP_INPUT_GRAD != 0;
        if self.lying(Lie::SkipUpdate) {
            // Taken now: between a backward pass and its update a layer takes no other call.
            for layer in self.layers.iter_mut().filter(|l| !l.info.is_loss) {
                let state = layer
                    .session
                    .export_state()
                    .map_err(layer_failure("export-state"))?;
                self.skipped_update.push(state);
            }
        }
        let mut g = Some(g);
        for (i, layer) in self.layers.iter_mut().enumerate().rev() {
            if layer.info.is_loss {
                continue;
            }
            let grad_output = g
                .take()
                .ok_or(Failure::Protocol("a layer returned no input gradient"))?;
            // The cascade's first hop returns no gradient of the raw inputs: none computed.
            let input_grad = !(i == 0 && drop_input_grad);
            g = layer
                .session
                .backward(&grad_output, input_grad)
                .map_err(layer_failure("backward"))?;
            self.owes_update = true;
        }
        let tensor = if drop_input_grad {
            None
        } else {
            Some(wire(g.ok_or(Failure::Protocol(
                "a layer returned no input gradient",
            ))?))
        };
        let prev = FrameBody {
            op: Op::BACKWARD,
            tensor,
            blob,
            route,
        };
        out.push(self.seal(Toward::Prev, &prev)?);
        Ok(())
    }

    fn test(&mut self, body: FrameBody, out: &mut Vec<Outgoing>) -> Result<(), Failure> {
        if self.pending.is_some() {
            return Err(Failure::Protocol("a test frame in the middle of a batch"));
        }
        // Past the test end the output travels sealed in the blob: relay it.
        let Some(input) = body.tensor else {
            out.push(self.seal(Toward::Next, &body)?);
            return Ok(());
        };
        self.count_frame();
        let mut x = tensor(Some(input))?;
        for layer in self.layers.iter_mut().filter(|l| !l.info.is_loss) {
            x = layer
                .session
                .forward(&x, Mode::Test)
                .map_err(layer_failure("test"))?;
        }
        if self.lying(Lie::PerturbForward) {
            perturb(&mut x);
        }
        if self.flags & HopSetup::TEST_END != 0 {
            let sealed = self.sealed_blob(&Report::Output(wire(x)), self.blob_len)?;
            out.push(self.frame(Toward::Next, Op::TEST, None, sealed)?);
        } else {
            out.push(self.frame(Toward::Next, Op::TEST, Some(wire(x)), body.blob)?);
        }
        Ok(())
    }

    /// Fills the EXPORT slots sealed for this hop with its state, sealed for the designer,
    /// and passes every EXPORT frame on alike ([`mixnn_wire::export`]).
    fn export(&mut self, mut body: FrameBody, out: &mut Vec<Outgoing>) -> Result<(), Failure> {
        if self.pending.is_some() {
            return Err(Failure::Protocol("an export in the middle of a batch"));
        }
        let opened = blob::open(&self.designer_key, Recipient::Host, &body.blob).ok();
        if let Some(bytes) = &opened {
            self.saw(Seen::Sealed(bytes));
        }
        let slot = opened
            .map(|bytes| ExportSlot::decode(&bytes))
            .transpose()
            .map_err(|_| Failure::Protocol("a malformed export slot"))?;
        if let Some(slot) = slot {
            let part = self.state_part(slot)?;
            let report = Report::State {
                index: slot.index,
                count: slot.count,
                bytes: part,
            };
            body.blob = self.sealed_blob(&report, body.blob.len())?;
        }
        out.push(self.seal(Toward::Next, &body)?);
        Ok(())
    }

    /// Part `slot.index` of this hop's state: every layer's, length-prefixed, cut in
    /// `slot.count` parts of [`export::part_len`]. The state is taken at the first slot of
    /// an export and dropped once every part is out.
    fn state_part(&mut self, slot: ExportSlot) -> Result<Vec<u8>, Failure> {
        if self.export.is_none() {
            let mut state = Vec::new();
            for layer in &mut self.layers {
                let bytes = layer
                    .session
                    .export_state()
                    .map_err(layer_failure("export-state"))?;
                put_lp32(&mut state, &bytes);
            }
            self.saw(Seen::State(&state));
            self.export = Some(Export {
                state,
                parts_left: slot.count,
            });
        }
        let Some(export) = &mut self.export else {
            return Err(Failure::Protocol("no state to export (a bug)"));
        };
        let part_len = export::part_len(self.frame_len);
        let needed = export::slots_for(export.state.len(), self.frame_len);
        if usize::try_from(slot.count).map_or(true, |count| count < needed) {
            return Err(Failure::Protocol(
                "the state needs more export slots than the designer sent",
            ));
        }
        let start = usize::try_from(slot.index)
            .unwrap_or(usize::MAX)
            .saturating_mul(part_len)
            .min(export.state.len());
        let end = start.saturating_add(part_len).min(export.state.len());
        let part = export.state[start..end].to_vec();
        export.parts_left = export.parts_left.saturating_sub(1);
        if export.parts_left == 0 {
            self.export = None;
        }
        Ok(part)
    }

    fn sealed_blob(&mut self, report: &Report, len: usize) -> Result<Vec<u8>, FrameError> {
        let payload = report.encode()?;
        blob::seal(
            &self.designer_key,
            Recipient::Designer,
            &payload,
            len,
            &mut self.entropy,
        )
        .map_err(|_| FrameError::TooLarge(payload.len()))
    }

    /// A report frame towards the designer through `to`.
    fn report(&mut self, to: Toward, report: &Report) -> Result<Outgoing, FrameError> {
        let blob = self.sealed_blob(report, self.blob_len)?;
        self.frame(to, Op::REPORT, None, blob)
    }

    /// A frame of `op` with `tensor` and `blob`, sealed for `to`.
    fn frame(
        &mut self,
        to: Toward,
        op: Op,
        tensor: Option<WireTensor>,
        blob: Vec<u8>,
    ) -> Result<Outgoing, FrameError> {
        self.seal(
            to,
            &FrameBody {
                op,
                tensor,
                blob,
                route: Vec::new(),
            },
        )
    }

    fn seal(&mut self, to: Toward, body: &FrameBody) -> Result<Outgoing, FrameError> {
        self.saw(Seen::Sent(to, body));
        let link = match to {
            Toward::Prev => &mut self.from_prev,
            Toward::Next => &mut self.to_next,
        };
        Ok(Outgoing {
            to,
            frame: link.seal(body)?,
        })
    }

    /// Ends the session with a report towards the designer through `to`, after the frames
    /// already in `out`. Every session's blobs hold any failure report
    /// ([`mixnn_wire::setup::MIN_BLOB_LEN`]), so sealing it fails only on a bug, which is
    /// logged; the frames in `out` go in any case.
    fn fail(&mut self, to: Toward, failure: &Failure, out: &mut Vec<Outgoing>) {
        // The designer's layers or a neighbour failed: theirs to hear, not the operator's.
        tracing::debug!(error = %failure, "session failed");
        self.failed = true;
        match self.report(to, &Report::failure(failure)) {
            Ok(frame) => out.push(frame),
            Err(e) => tracing::error!(error = %e, "a failure report did not fit its blob (a bug)"),
        }
    }
}

/// A lie too small to see in the loss at a glance.
fn perturb(x: &mut Tensor) {
    if let Some(v) = x.data.first_mut() {
        *v += 0.01;
    }
}

fn tensor(t: Option<WireTensor>) -> Result<Tensor, Failure> {
    let t = t.ok_or(Failure::Protocol("a frame without its tensor"))?;
    Ok(Tensor {
        shape: t.shape,
        data: t.data,
    })
}

fn wire(t: Tensor) -> WireTensor {
    WireTensor {
        shape: t.shape,
        data: t.data,
    }
}
