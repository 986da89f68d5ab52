//! Training that survives its hosts: a [`Resilient`] cascade checkpoints every hop's state
//! (weights and momentum, exported sealed for the designer) every few batches, keeps the
//! batches since, and when a host fails (dies, refuses, falls silent, breaks the protocol)
//! sets up a new session from the checkpoint and replays those batches. The model is
//! deterministic, so the result is bit for bit the one of a run that never failed: no batch
//! is lost, none counts twice.
//!
//! Which hosts the new session uses is a privacy choice. Every host that ever ran a layer
//! has seen its weights, so a new session keeps the hosts that did not fail at their
//! positions and draws fresh ones only where a host failed (and never a host that failed
//! before): each failure shows one layer (or a dummy's nothing) to one more host. A whole new
//! cascade would show every layer to a new host, and an adversary who can make hosts fail
//! would get a fresh draw of every position each time. Only when the designer cannot tell
//! which host failed (a cascade that falls silent, or one that breaks the protocol) is the
//! whole cascade drawn anew, excluding nobody: any of them may be at fault.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use mixnn_layer_sdk::Tensor;
use mixnn_sandbox::Sandbox;
use mixnn_transport::Fingerprint;
use rand_core::Rng;
use serde::Serialize;

use crate::{
    backend::Backend,
    cascade::{Cascade, CascadeError},
    remote::{HostRef, Placement, Plan, RemoteCascade, RemoteError, RemoteOptions, fetch_pool},
    spec::ModelSpec,
    train::Model,
};

/// Bytes of replayable batches the designer keeps at most: it checkpoints when they would be
/// more, whatever the interval.
pub const MAX_REPLAY_BYTES: usize = 64 << 20;

/// How a [`Resilient`] cascade checkpoints and recovers.
#[derive(Debug, Clone)]
pub struct RecoveryOptions {
    /// Batches between checkpoints; `None`: as many as keep checkpoints under
    /// [`RecoveryOptions::checkpoint_share`] of the training time, from their measured cost.
    pub checkpoint_every: Option<usize>,
    /// The share of training time checkpoints may take, when their interval is chosen here.
    pub checkpoint_share: f64,
    /// Failures survived before giving up.
    pub max_recoveries: usize,
    /// Where the latest checkpoint is written (atomically), if anywhere.
    pub checkpoint_dir: Option<PathBuf>,
    /// The share of training time audits may take (0: none). An audit recomputes the window
    /// since the last checkpoint in this process and compares every layer's state bit for
    /// bit; windows are audited at random, each as likely as this share allows (all of them
    /// while the cascade is that much slower than this process).
    pub audit_share: f64,
}

impl Default for RecoveryOptions {
    fn default() -> Self {
        RecoveryOptions {
            checkpoint_every: None,
            checkpoint_share: 0.05,
            max_recoveries: 16,
            checkpoint_dir: None,
            audit_share: 0.10,
        }
    }
}

/// What happened to a resilient session, as it happened.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Every layer's state was collected.
    Checkpoint {
        /// Training batches done when it was taken.
        batches: u64,
        /// What it took.
        seconds: f64,
        /// Batches until the next one.
        next_in: usize,
    },
    /// The session failed; a recovery follows unless this was the last straw.
    Failed {
        /// Training batches done when it failed.
        batches: u64,
        /// The step under way (setup, forward, backward, test, export), where known.
        step: Option<&'static str>,
        /// The failed hop's position, where the designer can tell.
        hop: Option<usize>,
        /// Its host.
        host: Option<String>,
        /// The error.
        error: String,
        /// When the designer knew (for measuring detection).
        #[serde(skip)]
        at: Instant,
    },
    /// A window between two checkpoints was recomputed in this process and compared.
    Audit {
        /// Training batches done at its end.
        batches: u64,
        /// Batches it covered.
        window: usize,
        /// What it took.
        seconds: f64,
        /// Whether every layer's state was bit for bit the recomputed one.
        passed: bool,
    },
    /// A host computed something other than its layer: an audit (or a test-pass check)
    /// disagreed, and the designer rolls back to the last checkpoint without it.
    Caught {
        /// Training batches done when it was caught.
        batches: u64,
        /// What disagreed: "audit" (states) or "test" (a test batch's outputs).
        by: &'static str,
        /// The lying hop's position, where the designer could tell.
        hop: Option<usize>,
        /// Its host.
        host: Option<String>,
        /// The layers whose states differed.
        layers: Vec<usize>,
        /// Extra sessions it took to name the hop.
        probes: usize,
    },
    /// A new session runs from the last checkpoint, caught up with the batches since.
    Recovered {
        /// The positions that got a new host.
        replaced: Vec<usize>,
        /// The hosts of the new session, first to last.
        hosts: Vec<String>,
        /// Batches replayed.
        replayed: usize,
        /// From the failure to the session caught up.
        seconds: f64,
    },
}

/// Why a resilient session gave up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// A failure that another session would not cure (a plan that cannot work, a local
    /// layer's failure).
    #[error(transparent)]
    Session(RemoteError),
    /// Too many failures.
    #[error("gave up after {recoveries} recoveries; the last failure: {last}")]
    GaveUp {
        /// Recoveries made.
        recoveries: usize,
        /// The last failure.
        last: RemoteError,
    },
    /// Hosts kept lying.
    #[error("gave up after {recoveries} recoveries: hosts kept lying")]
    Lied {
        /// Recoveries made.
        recoveries: usize,
    },
    /// A file that is not a checkpoint.
    #[error("{0} is not a mixnn checkpoint")]
    NotACheckpoint(PathBuf),
    /// The checkpoint could not be written or read.
    #[error("the checkpoint {path}: {source}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl From<CascadeError> for RecoveryError {
    fn from(e: CascadeError) -> Self {
        RecoveryError::Session(RemoteError::Local(e))
    }
}

/// Every layer's state after some batches: where a session (or a resumed designer)
/// starts from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checkpoint {
    /// Training batches done (over all epochs).
    pub batches: u64,
    /// Every layer's state, in the spec's order (empty: the layers' own init).
    pub states: Vec<Vec<u8>>,
}

impl Checkpoint {
    /// The layers' own init, before any batch.
    pub fn start(states: Vec<Vec<u8>>) -> Self {
        Checkpoint { batches: 0, states }
    }
}

/// A batch kept for replay.
struct Batch {
    input: Tensor,
    target: Tensor,
    /// The loss the cascade reported for it (the last time it ran).
    loss: f32,
}

impl Batch {
    fn bytes(&self) -> usize {
        4 * (self.input.data().len() + self.target.data().len())
    }
}

/// A cascade over remote hosts that recovers from their failures (see the module's docs).
pub struct Resilient<'s> {
    spec: ModelSpec,
    sandbox: &'s Sandbox,
    remote: RemoteOptions,
    options: RecoveryOptions,
    plan: Plan,
    session: Option<RemoteCascade>,
    /// The hosts of the session (or of the last one tried), first to last.
    hosts: Vec<HostRef>,
    /// The hosts of the last session that worked (what a recovery's replacements are
    /// counted against).
    last_good: Vec<HostRef>,
    /// Where the next session's hosts go: kept survivors, excluded failures.
    placement: Placement,
    /// Every layer's state at the last checkpoint.
    checkpoint: Checkpoint,
    since: Vec<Batch>,
    since_bytes: usize,
    /// Training batches done, over all epochs (the checkpoint's and those since).
    batches: u64,
    interval: usize,
    batch_time: Duration,
    recoveries: usize,
    /// When the current failure was noticed and the batches to replay, during a recovery.
    failed_at: Option<Instant>,
    /// Sessions that failed to start in a row (a directory down, hosts that keep failing):
    /// the next try waits [`backoff`] of it.
    failed_starts: u32,
    /// This process's time per batch, from the audits (zero before the first).
    local_batch_time: Duration,
    /// For the test pass: this process's copy of the model at its start, and its time per
    /// test batch, here and over the cascade.
    test_copy: Option<Cascade>,
    test_times: (Duration, Duration),
    rng: rand_chacha::ChaCha20Rng,
    events: Vec<Event>,
    on_event: Box<dyn FnMut(&Event) + 's>,
}

impl std::fmt::Debug for Resilient<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resilient")
            .field("hosts", &self.hosts)
            .field("batches", &self.batches)
            .field("recoveries", &self.recoveries)
            .finish_non_exhaustive()
    }
}

impl<'s> Resilient<'s> {
    /// A resilient session for `spec` from `start` (see [`RemoteCascade::connect_from`] for
    /// the other arguments); it sets up its first session at once.
    pub fn connect(
        spec: &ModelSpec,
        sandbox: &'s Sandbox,
        remote: &RemoteOptions,
        input_shape: &[usize],
        start: Checkpoint,
        options: RecoveryOptions,
    ) -> Result<Self, RecoveryError> {
        Self::connect_on(
            spec,
            sandbox,
            remote,
            input_shape,
            start,
            options,
            Vec::new(),
        )
    }

    /// As [`Resilient::connect`], the first session on the hosts `first` (by position; a
    /// host the pool lacks, a position given none, or a missing one is picked at random).
    pub fn connect_on(
        spec: &ModelSpec,
        sandbox: &'s Sandbox,
        remote: &RemoteOptions,
        input_shape: &[usize],
        start: Checkpoint,
        options: RecoveryOptions,
        first: Vec<Option<Fingerprint>>,
    ) -> Result<Self, RecoveryError> {
        let plan = Plan::new(spec, sandbox, remote, input_shape).map_err(RecoveryError::Session)?;
        let interval = options.checkpoint_every.unwrap_or(INITIAL_INTERVAL).max(1);
        let mut resilient = Resilient {
            spec: spec.clone(),
            sandbox,
            remote: remote.clone(),
            options,
            plan,
            session: None,
            hosts: Vec::new(),
            last_good: Vec::new(),
            placement: Placement {
                keep: first,
                exclude: HashSet::new(),
            },
            batches: start.batches,
            checkpoint: start,
            since: Vec::new(),
            since_bytes: 0,
            interval,
            batch_time: Duration::ZERO,
            recoveries: 0,
            failed_at: None,
            failed_starts: 0,
            local_batch_time: Duration::ZERO,
            test_copy: None,
            test_times: (Duration::ZERO, Duration::ZERO),
            rng: crate::pool::system_rng(),
            events: Vec::new(),
            on_event: Box::new(|_| {}),
        };
        resilient.session()?;
        Ok(resilient)
    }

    /// Calls `f` with every event as it happens (besides keeping it for
    /// [`Resilient::events`]).
    pub fn on_event(&mut self, f: impl FnMut(&Event) + 's) {
        self.on_event = Box::new(f);
    }

    /// Everything that happened so far.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The hosts of the current session, first to last.
    pub fn hosts(&self) -> &[HostRef] {
        &self.hosts
    }

    /// The hops, first to last: each one's layers, or `dummy`.
    pub fn describe(&self) -> Vec<String> {
        self.plan.describe()
    }

    /// The current session's setup time.
    pub fn setup_time(&self) -> Duration {
        self.session
            .as_ref()
            .map_or(Duration::ZERO, RemoteCascade::setup_time)
    }

    /// Every layer's state (as [`RemoteCascade::export_states`]); it becomes the checkpoint.
    pub fn export_states(&mut self) -> Result<Vec<Vec<u8>>, RecoveryError> {
        self.take_checkpoint()?;
        Ok(self.checkpoint.states.clone())
    }

    /// Training batches done so far, over all epochs.
    pub fn batches(&self) -> u64 {
        self.batches
    }

    /// Ends the session.
    pub fn close(mut self) {
        if let Some(session) = self.session.take() {
            session.close();
        }
    }

    fn emit(&mut self, event: Event) {
        (self.on_event)(&event);
        self.events.push(event);
    }

    /// The live session: a new one from the checkpoint, caught up, if there is none.
    fn session(&mut self) -> Result<&mut RemoteCascade, RecoveryError> {
        while self.session.is_none() {
            if let Some(wait) = backoff(self.failed_starts) {
                tracing::info!(
                    ?wait,
                    tries = self.failed_starts,
                    "waiting before the next try"
                );
                std::thread::sleep(wait);
            }
            match self.start_session() {
                Ok(session) => {
                    self.failed_starts = 0;
                    self.session = Some(session);
                }
                Err(e) => {
                    self.failed_starts += 1;
                    self.failed(e)?;
                }
            }
        }
        self.session
            .as_mut()
            .ok_or(RecoveryError::Session(RemoteError::Failed))
    }

    /// Sets up a session from the checkpoint on hosts the placement allows, and replays the
    /// batches since.
    fn start_session(&mut self) -> Result<RemoteCascade, RemoteError> {
        let pool = fetch_pool(&self.remote)?;
        let chosen = self.placement.choose(pool, self.plan.len())?;
        let hosts: Vec<HostRef> = chosen.iter().map(HostRef::from).collect();
        if self.last_good.is_empty() {
            // The first session: its replacements are counted against its first try.
            self.last_good.clone_from(&hosts);
        }
        self.hosts = hosts;
        let mut session = RemoteCascade::connect_on(
            &self.spec,
            self.sandbox,
            &self.remote,
            &self.plan,
            &self.checkpoint.states,
            chosen,
        )?;
        for batch in &mut self.since {
            batch.loss = session.train_step(batch.input.clone(), batch.target.clone())?;
        }
        let replaced: Vec<usize> = (0..self.hosts.len())
            .filter(|&i| self.last_good.get(i) != self.hosts.get(i))
            .collect();
        self.last_good.clone_from(&self.hosts);
        if let Some(at) = self.failed_at.take() {
            let event = Event::Recovered {
                replaced,
                hosts: self.hosts.iter().map(|h| h.address.clone()).collect(),
                replayed: self.since.len(),
                seconds: at.elapsed().as_secs_f64(),
            };
            tracing::info!(?event, "recovered");
            self.emit(event);
        }
        Ok(session)
    }

    /// A failure of the session: gives up, or readies the placement of the next one.
    fn failed(&mut self, error: RemoteError) -> Result<(), RecoveryError> {
        let at = Instant::now();
        self.session = None;
        if !error.is_hosts_fault() {
            return Err(RecoveryError::Session(error));
        }
        let hop = error.failed_hop().filter(|&h| h < self.hosts.len());
        let host = hop.map(|h| self.hosts[h].clone());
        tracing::info!(%error, ?hop, host = ?host.as_ref().map(|h| &h.address), "session failed");
        self.emit(Event::Failed {
            batches: self.batches,
            step: error.step(),
            hop,
            host: host.as_ref().map(|h| h.address.clone()),
            error: error.to_string(),
            at,
        });
        if self.recoveries >= self.options.max_recoveries {
            return Err(RecoveryError::GaveUp {
                recoveries: self.recoveries,
                last: error,
            });
        }
        self.recoveries += 1;
        self.failed_at.get_or_insert(at);
        self.replace(host.as_ref());
        Ok(())
    }

    /// Readies the next session's placement: survivors stay and `culprit` never comes back;
    /// with no culprit, any host may be at fault: a whole new draw.
    fn replace(&mut self, culprit: Option<&HostRef>) {
        self.placement.keep = match culprit {
            Some(culprit) => {
                self.placement.exclude.insert(culprit.fingerprint);
                self.hosts
                    .iter()
                    .map(|h| (h != culprit).then_some(h.fingerprint))
                    .collect()
            }
            None => Vec::new(),
        };
    }

    /// Collects every layer's state; on a failure, recovers and tries again.
    fn take_checkpoint(&mut self) -> Result<(), RecoveryError> {
        if self.since.is_empty() && !self.checkpoint.states.is_empty() {
            // Nothing trained since the last one.
            return Ok(());
        }
        loop {
            let started = Instant::now();
            let exported = self.session()?.export_states();
            match exported {
                Ok(states) => {
                    let seconds = started.elapsed();
                    if !self.audit(&states)? {
                        continue;
                    }
                    self.checkpoint = Checkpoint {
                        batches: self.batches,
                        states,
                    };
                    self.since.clear();
                    self.since_bytes = 0;
                    if let Some(dir) = &self.options.checkpoint_dir {
                        self.checkpoint.write(dir)?;
                    }
                    if self.options.checkpoint_every.is_none() && !self.batch_time.is_zero() {
                        // Checkpoints under their share of training time.
                        self.interval =
                            interval_for(seconds, self.batch_time, self.options.checkpoint_share);
                    }
                    let event = Event::Checkpoint {
                        batches: self.batches,
                        seconds: seconds.as_secs_f64(),
                        next_in: self.interval,
                    };
                    tracing::debug!(?event, "checkpoint");
                    self.emit(event);
                    return Ok(());
                }
                Err(e) => self.failed(e)?,
            }
        }
    }
}

impl Resilient<'_> {
    /// Recoveries made so far.
    pub fn recoveries(&self) -> usize {
        self.recoveries
    }

    /// Test passes over `inputs`, up to `in_flight` batches in the cascade at once (as
    /// [`RemoteCascade::predict_in_flight`]), surviving the hosts as training does: on a
    /// failure the batches not yet answered go again, in order, to a new session placed as
    /// after any failure and deployed from the same states (a test pass changes none, so the
    /// checkpoint is still every layer's state). `on_output(i, y)` takes batch `i`'s output,
    /// each batch once and in order. No test-pass check here: the caller compares, if at all.
    pub fn predict_in_flight(
        &mut self,
        inputs: &[Tensor],
        in_flight: usize,
        mut on_output: impl FnMut(usize, Tensor),
    ) -> Result<(), RecoveryError> {
        self.test_copy = None;
        let mut done = 0;
        while done < inputs.len() {
            let start = done;
            let result = self.session()?.predict_in_flight(
                inputs[start..].iter().cloned(),
                in_flight,
                |i, y| {
                    on_output(start + i, y);
                    done = start + i + 1;
                },
            );
            match result {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::info!(
                        answered = done,
                        again = inputs.len() - done,
                        "test pass failed"
                    );
                    self.failed(e)?;
                }
            }
        }
        Ok(())
    }
}

impl Resilient<'_> {
    /// Whether to check this window (or test batch): as often as the audit share allows,
    /// given what a check costs here against what the cascade takes for the same work.
    fn draw(&mut self, local: Duration, cascade: Duration) -> bool {
        let share = self.options.audit_share;
        if share <= 0.0 {
            return false;
        }
        if local.is_zero() {
            return true;
        }
        let q = (share * cascade.as_secs_f64() / local.as_secs_f64()).min(1.0);
        // 53 random bits as a uniform number in [0, 1).
        ((self.rng.next_u64() >> 11) as f64) / ((1u64 << 53) as f64) < q
    }

    /// This process's copy of the model from `states`.
    fn local_copy(&self, states: &[Vec<u8>]) -> Result<Cascade, RecoveryError> {
        let mut local = Cascade::build(&self.spec, Backend::Wasm, Some(self.sandbox))?;
        local.import_states(states)?;
        Ok(local)
    }

    /// The states `batches` of training give from `start`, computed here.
    fn recompute(
        &self,
        start: &[Vec<u8>],
        batches: &[Batch],
    ) -> Result<(Vec<Vec<u8>>, Vec<f32>), RecoveryError> {
        let mut local = self.local_copy(start)?;
        let mut losses = Vec::with_capacity(batches.len());
        for batch in batches {
            losses.push(local.train_step(batch.input.clone(), batch.target.clone())?);
        }
        Ok((local.export_states()?, losses))
    }

    /// Audits the window since the checkpoint, if drawn, against the cascade's `states`
    /// after it. False if a hop lied: the session is dropped, the liar (where it can be
    /// named) excluded, and the window is to be replayed from the checkpoint.
    fn audit(&mut self, states: &[Vec<u8>]) -> Result<bool, RecoveryError> {
        let window = self.since.len();
        let cascade_time = self.batch_time * u32::try_from(window).unwrap_or(u32::MAX);
        let local_time = self.local_batch_time * u32::try_from(window).unwrap_or(u32::MAX);
        if window == 0 || !self.draw(local_time, cascade_time) {
            return Ok(true);
        }
        let started = Instant::now();
        let (honest, losses) = self.recompute(&self.checkpoint.states, &self.since)?;
        let seconds = started.elapsed();
        self.local_batch_time = seconds / u32::try_from(window).unwrap_or(u32::MAX);
        let differ = differing(&honest, states);
        // A loss the cascade reported that is not the batch's: a lie on the way forward
        // that left the gradients alone (after the last layer with weights, say).
        let wrong_loss = self
            .since
            .iter()
            .zip(&losses)
            .position(|(b, l)| b.loss.to_bits() != l.to_bits());
        let passed = differ.is_empty() && wrong_loss.is_none();
        self.emit(Event::Audit {
            batches: self.batches,
            window,
            seconds: seconds.as_secs_f64(),
            passed,
        });
        if !passed {
            // Probes replay one batch: the first whose loss was wrong (a liar may lie only
            // about some), else the window's first; from the honest states before it.
            let j = wrong_loss.unwrap_or(0);
            let start = if j == 0 {
                self.checkpoint.states.clone()
            } else {
                self.recompute(&self.checkpoint.states, &self.since[..j])?.0
            };
            let (honest, loss) = self.recompute(&start, &self.since[j..=j])?;
            let batch = &self.since[j];
            let check = Check::Train {
                start,
                input: batch.input.clone(),
                target: batch.target.clone(),
                honest,
                loss: loss.first().copied().unwrap_or(f32::NAN),
            };
            self.caught("audit", differ, check)?;
        }
        Ok(passed)
    }

    /// A hop lied: names it where it can (by `check`), and readies a session without it.
    fn caught(
        &mut self,
        by: &'static str,
        layers: Vec<usize>,
        check: Check,
    ) -> Result<(), RecoveryError> {
        let (hop, probes) = match self.one_hop(&layers) {
            Some(hop) => (Some(hop), 0),
            None => self.localize(&check)?,
        };
        let host = hop.and_then(|h| self.hosts.get(h).cloned());
        let event = Event::Caught {
            batches: self.batches,
            by,
            hop,
            host: host.as_ref().map(|h| h.address.clone()),
            layers,
            probes,
        };
        tracing::info!(?event, "a host lied");
        self.emit(event);
        self.session = None;
        if self.recoveries >= self.options.max_recoveries {
            return Err(RecoveryError::Lied {
                recoveries: self.recoveries,
            });
        }
        self.recoveries += 1;
        self.failed_at.get_or_insert_with(Instant::now);
        self.replace(host.as_ref());
        Ok(())
    }

    /// Which hop lied, by running `check` on sessions from the checkpoint: first on the same
    /// hosts (a hop that lies about its own update then shows alone among the layers); then
    /// group testing, with half the suspects on fresh hosts each time (a hop that lies about
    /// what it passes on spoils every layer after one batch). Returns the hop and the
    /// sessions it took.
    fn localize(&mut self, check: &Check) -> Result<(Option<usize>, usize), RecoveryError> {
        self.session = None;
        let all: Vec<usize> = (0..self.hosts.len()).collect();
        let Some(found) = self.probe(&all, &[], check)? else {
            return Ok((None, 1));
        };
        let mut probes = 1;
        match found {
            // A liar that lies only now and then: not this time.
            Found::Same => return Ok((None, probes)),
            Found::Layers(layers) => {
                if let Some(hop) = self.one_hop(&layers) {
                    return Ok((Some(hop), probes));
                }
            }
            Found::Output => {}
        }
        let mut suspects = all;
        while suspects.len() > 1 {
            let (fresh, rest) = suspects.split_at(suspects.len() / 2);
            let Some(found) = self.probe(rest, fresh, check)? else {
                return Ok((None, probes + 1));
            };
            probes += 1;
            suspects = if matches!(found, Found::Same) {
                fresh.to_vec()
            } else {
                rest.to_vec()
            };
        }
        Ok((suspects.first().copied(), probes))
    }

    /// The hop that runs every layer in `layers`, if one does.
    fn one_hop(&self, layers: &[usize]) -> Option<usize> {
        let hops: HashSet<Option<usize>> = layers.iter().map(|&l| self.plan.hop_of(l)).collect();
        match hops.into_iter().collect::<Vec<_>>()[..] {
            [Some(hop)] => Some(hop),
            _ => None,
        }
    }

    /// Runs `check` on a session from the checkpoint with the hosts at `keep` kept and those
    /// at `fresh` replaced (by hosts never in this cascade); none if the probe itself failed.
    fn probe(
        &mut self,
        keep: &[usize],
        fresh: &[usize],
        check: &Check,
    ) -> Result<Option<Found>, RecoveryError> {
        let mut placement = Placement {
            keep: (0..self.hosts.len())
                .map(|i| keep.contains(&i).then(|| self.hosts[i].fingerprint))
                .collect(),
            exclude: self.placement.exclude.clone(),
        };
        for &i in fresh {
            placement.exclude.insert(self.hosts[i].fingerprint);
        }
        let run = || -> Result<Found, RemoteError> {
            let chosen = placement.choose(fetch_pool(&self.remote)?, self.plan.len())?;
            let mut session = RemoteCascade::connect_on(
                &self.spec,
                self.sandbox,
                &self.remote,
                &self.plan,
                check.start(),
                chosen,
            )?;
            let found = match check {
                Check::Train {
                    start: _,
                    input,
                    target,
                    honest,
                    loss,
                } => {
                    let got = session.train_step(input.clone(), target.clone())?;
                    let layers = differing(honest, &session.export_states()?);
                    if !layers.is_empty() {
                        Found::Layers(layers)
                    } else if got.to_bits() != loss.to_bits() {
                        Found::Output
                    } else {
                        Found::Same
                    }
                }
                Check::Test { input, honest, .. } => {
                    if same_bits(&session.predict(input.clone())?, honest) {
                        Found::Same
                    } else {
                        Found::Output
                    }
                }
            };
            session.close();
            Ok(found)
        };
        match run() {
            Ok(found) => Ok(Some(found)),
            Err(e) if e.is_hosts_fault() => {
                tracing::info!(error = %e, "a probe failed");
                Ok(None)
            }
            Err(e) => Err(RecoveryError::Session(e)),
        }
    }
}

/// What a probe runs, and the honest result, computed here.
enum Check {
    /// One training batch from `start`; every layer's state after it, and its loss.
    Train {
        start: Vec<Vec<u8>>,
        input: Tensor,
        target: Tensor,
        honest: Vec<Vec<u8>>,
        loss: f32,
    },
    /// One test batch at `start`; its outputs.
    Test {
        start: Vec<Vec<u8>>,
        input: Tensor,
        honest: Tensor,
    },
}

impl Check {
    /// The states the probe's session starts from.
    fn start(&self) -> &[Vec<u8>] {
        match self {
            Check::Train { start, .. } | Check::Test { start, .. } => start,
        }
    }
}

/// What a probe found.
enum Found {
    /// The honest result.
    Same,
    /// These layers' states differ.
    Layers(Vec<usize>),
    /// The outputs (or the loss) differ.
    Output,
}

/// Whether two tensors hold the same bits.
fn same_bits(a: &Tensor, b: &Tensor) -> bool {
    a.shape() == b.shape()
        && a.data()
            .iter()
            .zip(b.data())
            .all(|(x, y)| x.to_bits() == y.to_bits())
}

/// The layers whose states differ.
fn differing(a: &[Vec<u8>], b: &[Vec<u8>]) -> Vec<usize> {
    (0..a.len().max(b.len()))
        .filter(|&i| a.get(i) != b.get(i))
        .collect()
}

/// Batches between checkpoints that each take `checkpoint` so that they cost `share` of the
/// training time at `batch` per batch.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn interval_for(checkpoint: Duration, batch: Duration, share: f64) -> usize {
    let batches = checkpoint.as_secs_f64() / (share.max(1e-3) * batch.as_secs_f64().max(1e-9));
    // Clamped first, so the cast neither truncates nor wraps.
    batches
        .ceil()
        .clamp(MIN_INTERVAL as f64, MAX_INTERVAL as f64) as usize
}

/// Batches before the first measured checkpoint.
const INITIAL_INTERVAL: usize = 32;
/// Bounds of a measured interval.
const MIN_INTERVAL: usize = 8;
const MAX_INTERVAL: usize = 100_000;

impl Model for Resilient<'_> {
    type Error = RecoveryError;

    fn mode(&self) -> String {
        "cascade".into()
    }

    fn train_step(&mut self, input: Tensor, target: Tensor) -> Result<f32, RecoveryError> {
        // A test pass is over.
        self.test_copy = None;
        loop {
            let started = Instant::now();
            let step = self.session()?.train_step(input.clone(), target.clone());
            match step {
                Ok(loss) => {
                    // A moving average of the batch time, for the checkpoint interval.
                    let took = started.elapsed();
                    self.batch_time = if self.batch_time.is_zero() {
                        took
                    } else {
                        (self.batch_time * 7 + took) / 8
                    };
                    self.batches += 1;
                    let batch = Batch {
                        input,
                        target,
                        loss,
                    };
                    self.since_bytes += batch.bytes();
                    self.since.push(batch);
                    if self.since.len() >= self.interval || self.since_bytes >= MAX_REPLAY_BYTES {
                        self.take_checkpoint()?;
                    }
                    return Ok(loss);
                }
                Err(e) => self.failed(e)?,
            }
        }
    }

    /// The cascade's output, checked at random against this process's copy of the model
    /// as the test pass began (the paper's check in the test phase): as often as the audit
    /// share allows.
    fn predict(&mut self, input: Tensor) -> Result<Tensor, RecoveryError> {
        if self.test_copy.is_none() && self.options.audit_share > 0.0 {
            // The states the test pass runs on, audited as any checkpoint.
            self.take_checkpoint()?;
            self.test_copy = Some(self.local_copy(&self.checkpoint.states)?);
        }
        loop {
            let started = Instant::now();
            let out = match self.session()?.predict(input.clone()) {
                Ok(out) => out,
                Err(e) => {
                    self.failed(e)?;
                    continue;
                }
            };
            self.test_times.1 = started.elapsed();
            if !self.draw(self.test_times.0, self.test_times.1) {
                return Ok(out);
            }
            let started = Instant::now();
            let honest = match self.test_copy.as_mut() {
                Some(copy) => copy.predict_to(input.clone(), self.plan.test_end())?,
                None => return Ok(out),
            };
            self.test_times.0 = started.elapsed();
            if same_bits(&out, &honest) {
                return Ok(out);
            }
            self.caught(
                "test",
                Vec::new(),
                Check::Test {
                    start: self.checkpoint.states.clone(),
                    input: input.clone(),
                    honest,
                },
            )?;
        }
    }
}

const CHECKPOINT_MAGIC: &[u8; 8] = b"MIXNNCK1";

/// The first wait after a session failed to start, doubled at each failure after it.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// The longest wait: sixteen recoveries ride out a directory down for about 1.5 minutes.
const BACKOFF_MAX: Duration = Duration::from_secs(8);

/// How long to wait before a new session after `failed_starts` failed to start in a row:
/// none after a session that ran (recovery stays quick), then exponentially longer.
fn backoff(failed_starts: u32) -> Option<Duration> {
    let doublings = failed_starts.checked_sub(1)?.min(16);
    Some((BACKOFF_FIRST * 2u32.pow(doublings)).min(BACKOFF_MAX))
}

impl Checkpoint {
    /// Its file in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("checkpoint.mixnn")
    }

    /// Writes it to `dir` atomically: a temporary file, synced, renamed over the last one.
    pub fn write(&self, dir: &Path) -> Result<(), RecoveryError> {
        let path = Self::path(dir);
        let failed = |source| RecoveryError::Checkpoint {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(failed)?;
        let mut bytes =
            Vec::with_capacity(24 + self.states.iter().map(|s| 8 + s.len()).sum::<usize>());
        bytes.extend_from_slice(CHECKPOINT_MAGIC);
        bytes.extend_from_slice(&self.batches.to_le_bytes());
        bytes.extend_from_slice(&(self.states.len() as u64).to_le_bytes());
        for state in &self.states {
            bytes.extend_from_slice(&(state.len() as u64).to_le_bytes());
            bytes.extend_from_slice(state);
        }
        let tmp = dir.join("checkpoint.mixnn.tmp");
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp).map_err(failed)?;
            file.write_all(&bytes).map_err(failed)?;
            file.sync_all().map_err(failed)?;
        }
        std::fs::rename(&tmp, &path).map_err(failed)
    }

    /// The checkpoint in `dir`, as [`Checkpoint::write`] left it.
    pub fn read(dir: &Path) -> Result<Self, RecoveryError> {
        let path = Self::path(dir);
        let bytes = std::fs::read(&path).map_err(|source| RecoveryError::Checkpoint {
            path: path.clone(),
            source,
        })?;
        Self::decode(&bytes).ok_or(RecoveryError::NotACheckpoint(path))
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = mixnn_wire::reader::Reader::new(bytes);
        if r.take(8).ok()? != CHECKPOINT_MAGIC {
            return None;
        }
        let batches = r.take_array().ok().map(u64::from_le_bytes)?;
        let count = r.take_array().ok().map(u64::from_le_bytes)?;
        let mut states = Vec::new();
        for _ in 0..count {
            let len = usize::try_from(r.take_array().ok().map(u64::from_le_bytes)?).ok()?;
            states.push(r.take(len).ok()?.to_vec());
        }
        r.should_be_exhausted().ok()?;
        Some(Checkpoint { batches, states })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_starts_back_off_exponentially_to_a_bound() {
        let waits: Vec<Option<Duration>> = (0..7).map(backoff).collect();
        let ms = |m| Some(Duration::from_millis(m));
        assert_eq!(
            waits,
            [
                None,
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(8000)
            ]
        );
        assert_eq!(backoff(u32::MAX), Some(BACKOFF_MAX));
    }

    #[test]
    fn checkpoints_round_trip_through_their_file_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint {
            batches: 77,
            states: vec![vec![1, 2, 3], Vec::new(), vec![9; 1000]],
        };
        checkpoint.write(dir.path()).unwrap();
        assert_eq!(Checkpoint::read(dir.path()).unwrap(), checkpoint);
        let bytes = std::fs::read(Checkpoint::path(dir.path())).unwrap();
        for cut in [0, 7, 8, 16, 23, bytes.len() - 1] {
            assert!(Checkpoint::decode(&bytes[..cut]).is_none(), "{cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(Checkpoint::decode(&long).is_none());
        // A count that promises more states than there are bytes.
        let mut lying = bytes[..16].to_vec();
        lying.extend(u64::MAX.to_le_bytes());
        assert!(Checkpoint::decode(&lying).is_none());
    }

    #[test]
    fn the_interval_keeps_checkpoints_under_their_share() {
        let ms = Duration::from_millis;
        assert_eq!(interval_for(ms(100), ms(10), 0.05), 200);
        assert_eq!(interval_for(ms(1), ms(10), 0.05), MIN_INTERVAL);
        assert_eq!(interval_for(ms(100_000), ms(1), 0.05), MAX_INTERVAL);
    }
}
