//! Training over remote hosts: the designer picks hosts from the directory's pool, interleaves
//! dummies, sends the op=0 onion to the first hop, attaches to the last hop, and then runs
//! every batch as a forward frame into the first hop and a backward frame into the last.
//! Layers it keeps (`keep_first`, `keep_last`) run here in its own sandbox.
//!
//! The network runs on a one-thread tokio runtime in the background (readers, writers, cover
//! traffic); the training loop calls in synchronously, and every wait has a deadline, so a
//! silent cascade becomes an error naming the step that failed.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use mixnn_layer_sdk::{InitConfig, LayerInfo, Mode, SgdConfig, Tensor};
use mixnn_sandbox::{Sandbox, SandboxError};
use mixnn_transport::{
    Endpoint, Fingerprint, TlsIdentity, TransportError,
    directory_client::{self as directory_service, DirectoryClientError},
};
use mixnn_wire::{
    blob::SEAL_OVERHEAD,
    circuit::{self, DesignerCircuit, HopPlan, ReportError, SessionParams},
    crypto::{OnionPublicKey, SystemEntropy},
    export,
    frame::{
        self, BODY_OVERHEAD, FrameBody, FrameError, LinkEnd, MIN_FRAME_LEN, Op, WireTensor,
        byte_tensor_len,
    },
    reader::Reader,
    report::{MAX_MESSAGE_LEN, Neighbour, Report},
    route,
    setup::{BuildError, CIRCUIT_ID_LEN, HopLayer, HopSetup},
    stream::{StreamHeader, StreamRefusal},
};
use tokio::sync::mpsc;

use crate::{
    backend::{Backend, LayerBackend},
    cascade::{Cascade, CascadeError, LoadError, build_layer, component_bytes},
    pool::{self, Candidate},
    spec::ModelSpec,
    train::Model,
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
    /// Keep the last host's layers (the loss) here.
    pub keep_last: bool,
    /// Cover messages per second (0: none).
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
    /// The inputs are bytes scaled to [0, 1] (`k / 255`, as images from IDX files): they
    /// travel as bytes, and frames are sized for that, a quarter of `f32`. A batch that is
    /// not is refused.
    pub byte_inputs: bool,
    /// The most hosts taken from the directory: its answer is read no further.
    pub max_pool: usize,
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
            byte_inputs: true,
            max_pool: directory_service::DEFAULT_MAX_POOL,
        }
    }
}

/// Why a remote cascade failed. What the hosts did (failed, refused, fell silent, broke a
/// link or the protocol) is kept apart from the caller's plan that cannot work, from the
/// caller's misuse of a failed session, and from local failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// A local layer or the spec failed.
    #[error(transparent)]
    Local(#[from] CascadeError),
    /// The session cannot be planned as asked.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The directory failed.
    #[error("directory: {0}")]
    Directory(#[from] DirectoryClientError),
    /// A host could not be reached.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A host closed the stream that set up or attached to the session, saying why.
    #[error("hop {hop} refused the {step}: {why}")]
    Refused {
        /// Its position (0 is the first).
        hop: usize,
        /// What it refused.
        step: &'static str,
        /// Its reason.
        why: StreamRefusal,
    },
    /// A link of the designer's broke.
    #[error("{step}: the link {end} (hop {hop}) broke: {source}")]
    LinkBroke {
        /// What was under way.
        step: &'static str,
        /// Which link.
        end: End,
        /// The hop at its other end.
        hop: usize,
        /// How.
        source: LinkError,
    },
    /// The cascade broke the protocol.
    #[error("{step}: {fault}")]
    Peer {
        /// What was under way.
        step: &'static str,
        /// What it did.
        fault: PeerFault,
    },
    /// The designer's network runtime could not start.
    #[error("starting the network runtime: {0}")]
    Runtime(std::io::Error),
    /// The session failed before: it takes no more calls.
    #[error("the session has failed")]
    Failed,
    /// A hop reported a failure.
    #[error("hop {hop} ({what}) failed: {message}")]
    HopFailed {
        /// Its position (0 is the first).
        hop: usize,
        /// Its layers.
        what: String,
        /// Its report.
        message: String,
    },
    /// A host of the cascade is gone (it died, cannot be reached, or the network to it
    /// failed), as its neighbour reported.
    #[error("{step}: hop {hop} is gone: hop {reported_by}, its neighbour, lost the link")]
    HopLost {
        /// What was under way.
        step: &'static str,
        /// Its position (0 is the first).
        hop: usize,
        /// The neighbour that reported it.
        reported_by: usize,
    },
    /// The designer could not reach a host it picked.
    #[error("setup: hop {hop} ({address}) cannot be reached: {source}")]
    Unreachable {
        /// Its position.
        hop: usize,
        /// The address it published.
        address: String,
        /// Why.
        source: TransportError,
    },
    /// The cascade did not answer in time.
    #[error("no answer from the cascade within {timeout:?} during {step}")]
    Timeout {
        /// The deadline.
        timeout: Duration,
        /// What was waited for.
        step: &'static str,
    },
}

impl RemoteError {
    /// The hop whose host failed, where the designer can tell: it failed and said so, it
    /// refused, it could not be reached, a neighbour lost it, or the designer's own link to
    /// it broke. None for a silent cascade (a deadline passed) and a broken protocol, where
    /// any host may be the one.
    pub fn failed_hop(&self) -> Option<usize> {
        match self {
            RemoteError::Refused { hop, .. }
            | RemoteError::LinkBroke { hop, .. }
            | RemoteError::HopLost { hop, .. }
            | RemoteError::Unreachable { hop, .. }
            | RemoteError::HopFailed { hop, .. } => Some(*hop),
            _ => None,
        }
    }

    /// The step that failed (setup, forward, backward, test, export), where one was under way.
    pub fn step(&self) -> Option<&'static str> {
        match self {
            RemoteError::Refused { step, .. }
            | RemoteError::LinkBroke { step, .. }
            | RemoteError::HopLost { step, .. }
            | RemoteError::Peer { step, .. }
            | RemoteError::Timeout { step, .. } => Some(step),
            RemoteError::Unreachable { .. } => Some("setup"),
            _ => None,
        }
    }

    /// Whether the hosts (or the network) failed, so that a session on other hosts may
    /// succeed; not a plan that cannot work, a local layer's failure, or misuse.
    pub fn is_hosts_fault(&self) -> bool {
        match self {
            RemoteError::Refused { .. }
            | RemoteError::LinkBroke { .. }
            | RemoteError::HopLost { .. }
            | RemoteError::Unreachable { .. }
            | RemoteError::HopFailed { .. }
            | RemoteError::Timeout { .. }
            | RemoteError::Peer { .. }
            | RemoteError::Directory(_) => true,
            RemoteError::Local(_)
            | RemoteError::Plan(_)
            | RemoteError::Transport(_)
            | RemoteError::Runtime(_)
            | RemoteError::Failed => false,
        }
    }
}

/// A session that cannot be planned as asked (the caller's or the pool's limits).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The designer keeps every layer.
    #[error("no layer left for the hosts")]
    NoLayerLeft,
    /// Dummies go between actual hosts.
    #[error("dummies go between actual hosts: the cascade needs at least two")]
    DummiesNeedTwoHosts,
    /// The pool is too small.
    #[error("the cascade needs {needed} hosts; the directory has {available} live ones")]
    PoolTooSmall {
        /// Hosts the cascade needs.
        needed: usize,
        /// Verified hosts in the pool.
        available: usize,
    },
    /// The frames would be longer than the wire allows.
    #[error("frames of {0} bytes are too large")]
    FrameTooLarge(usize),
    /// A message does not fit the session's frames.
    #[error(
        "a message of {needed} bytes does not fit the session's {frame_len}-byte frames \
         (with byte_inputs, every input must be a byte over 255)"
    )]
    MessageTooLarge {
        /// Bytes it needs.
        needed: usize,
        /// The session's frame length.
        frame_len: usize,
    },
    /// A tensor dimension does not fit the wire's `u32`.
    #[error("a dimension of {0} does not fit the wire")]
    Dimension(usize),
    /// The onion cannot be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A frame or blob cannot be sealed (a tensor that does not fit, say).
    #[error("sealing: {0}")]
    Seal(#[from] FrameError),
}

/// What a host did against the protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerFault {
    /// A report of a kind not expected now.
    #[error("hop {hop} sent an unexpected {kind} report")]
    UnexpectedReport {
        /// Who sealed it.
        hop: usize,
        /// Its kind.
        kind: &'static str,
    },
    /// A frame of an operation not expected now.
    #[error("an unexpected frame of op {0}")]
    UnexpectedOp(u8),
    /// A frame from the wrong end of the cascade.
    #[error("a frame from the wrong end of the cascade")]
    WrongEnd,
    /// A frame without the tensor it must carry.
    #[error("a frame without its tensor")]
    NoTensor,
    /// A tensor that does not hold together.
    #[error("a malformed tensor: {0}")]
    BadTensor(mixnn_layer_sdk::LayerError),
    /// A report that does not open or parse.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// A hop's exported state that does not parse.
    #[error("hop {hop} exported a malformed state")]
    BadState {
        /// The hop.
        hop: usize,
    },
    /// No hop exported this layer's state.
    #[error("no state for layer {0}")]
    MissingState(usize),
    /// A host's descriptor names an address that is not `ip:port`.
    #[error("the directory names {0:?}, which is not ip:port")]
    BadAddress(String),
}

/// How one of the designer's links broke.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// Its stream or connection failed.
    #[error(transparent)]
    Read(#[from] quinn::ReadExactError),
    /// A frame on it did not open: forged, tampered, replayed or reordered.
    #[error("a frame that does not open: {0}")]
    Frame(#[from] FrameError),
    /// Writing to it failed.
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
    /// Opening it failed.
    #[error(transparent)]
    Connection(#[from] quinn::ConnectionError),
    /// The designer closed it.
    #[error("closed")]
    Closed,
}

impl LinkError {
    /// The reason a host gave for closing the link, if it gave one.
    fn refusal(&self) -> Option<StreamRefusal> {
        let code = match self {
            LinkError::Read(quinn::ReadExactError::ReadError(quinn::ReadError::Reset(code)))
            | LinkError::Write(quinn::WriteError::Stopped(code)) => code,
            _ => return None,
        };
        Some(StreamRefusal(u32::try_from(code.into_inner()).unwrap_or(0)))
    }
}

/// Which of the designer's two links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The link to the first hop.
    First,
    /// The link from the last hop.
    Last,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            End::First => "to the first hop",
            End::Last => "from the last hop",
        })
    }
}

/// An adaptive deadline is this many times the median time of its kind of step.
pub const DEADLINE_FACTOR: u32 = 20;
/// The shortest adaptive deadline.
pub const MIN_DEADLINE: Duration = Duration::from_secs(2);
/// Steps of a kind timed before the deadline adapts, and the most kept.
const DEADLINE_SAMPLES: (usize, usize) = (5, 64);

/// How long the designer waits for the cascade's next answer, by kind of step.
#[derive(Debug)]
struct Deadlines {
    bound: Duration,
    adaptive: bool,
    recent: std::collections::HashMap<&'static str, std::collections::VecDeque<Duration>>,
}

impl Deadlines {
    fn new(options: &RemoteOptions) -> Self {
        Deadlines {
            bound: options.step_timeout,
            adaptive: options.adaptive_deadline,
            recent: Default::default(),
        }
    }

    fn of(&self, step: &'static str) -> Duration {
        let Some(times) = self
            .recent
            .get(step)
            .filter(|t| t.len() >= DEADLINE_SAMPLES.0)
        else {
            return self.bound;
        };
        if !self.adaptive {
            return self.bound;
        }
        let mut sorted: Vec<Duration> = times.iter().copied().collect();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        (median * DEADLINE_FACTOR).clamp(MIN_DEADLINE.min(self.bound), self.bound)
    }

    fn took(&mut self, step: &'static str, time: Duration) {
        let times = self.recent.entry(step).or_default();
        if times.len() == DEADLINE_SAMPLES.1 {
            times.pop_front();
        }
        times.push_back(time);
    }
}

/// One of the designer's links: frames go out through a writer task and come in through a
/// reader task, both sealing and opening with the link's one [`LinkEnd`].
struct Link {
    tx: Option<mpsc::Sender<FrameBody>>,
    rx: mpsc::Receiver<Result<FrameBody, LinkError>>,
    writer: Option<tokio::task::JoinHandle<()>>,
}

impl Link {
    fn start(
        end: LinkEnd,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        conn: quinn::Connection,
        frame_len: usize,
    ) -> Self {
        let end = Arc::new(Mutex::new(end));
        let (tx, mut out_rx) = mpsc::channel::<FrameBody>(16);
        let (in_tx, rx) = mpsc::channel(16);
        let writer_end = Arc::clone(&end);
        let writer = tokio::spawn(async move {
            let mut send = send;
            while let Some(body) = out_rx.recv().await {
                let frame = lock(&writer_end).seal(&body);
                match frame {
                    Ok(frame) if send.write_all(&frame).await.is_ok() => {}
                    _ => return,
                }
            }
            if send.finish().is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
            }
            conn.close(0u32.into(), b"session over");
        });
        tokio::spawn(async move {
            let mut recv = recv;
            loop {
                let mut frame = vec![0u8; frame_len];
                let got = match recv.read_exact(&mut frame).await {
                    Ok(()) => lock(&end).open(&frame).map_err(LinkError::Frame),
                    Err(e) => Err(LinkError::Read(e)),
                };
                let stop = got.is_err();
                // Cover messages have done their job by arriving.
                if matches!(&got, Ok(body) if body.op == Op::COVER) {
                    continue;
                }
                if in_tx.send(got).await.is_err() || stop {
                    return;
                }
            }
        });
        Link {
            tx: Some(tx),
            rx,
            writer: Some(writer),
        }
    }
}

/// A broken link, as the designer reports it: the refusal of hop `hop` (the host at that
/// end) if it gave one.
fn link_failed(hop: usize, step: &'static str, end: End, source: LinkError) -> RemoteError {
    match source.refusal() {
        Some(why) => RemoteError::Refused { hop, step, why },
        None => RemoteError::LinkBroke {
            step,
            end,
            hop,
            source,
        },
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A layer the designer keeps.
struct LocalLayer {
    info: LayerInfo,
    backend: Box<dyn LayerBackend>,
}

/// What the designer knows of each hop, for reports and for the states.
#[derive(Debug, Clone)]
struct HopInfo {
    /// The spec's layer indices it runs (empty for a dummy).
    layers: Vec<usize>,
    /// EXPORT frames its state takes.
    export_parts: usize,
    description: String,
    /// The host that runs it (set once the pool is picked).
    host: Option<HostRef>,
}

/// A host of the pool, as the designer names it in errors and excludes it after a failure.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostRef {
    /// The address it published.
    pub address: String,
    /// Its certificate's fingerprint (what identifies it).
    pub fingerprint: Fingerprint,
}

impl From<&Candidate> for HostRef {
    fn from(c: &Candidate) -> Self {
        HostRef {
            address: c.descriptor.address.clone(),
            fingerprint: c.descriptor.fingerprint,
        }
    }
}

impl std::fmt::Display for HostRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.address)
    }
}

/// A model trained over remote hosts.
pub struct RemoteCascade {
    runtime: tokio::runtime::Runtime,
    circuit: DesignerCircuit,
    first: Link,
    last: Link,
    head: Vec<LocalLayer>,
    tail: Vec<LocalLayer>,
    hops: Vec<HopInfo>,
    layer_count: usize,
    deadlines: Deadlines,
    /// Set once anything failed: the session is over.
    broken: bool,
    setup_time: Duration,
    /// The cover traffic task, which holds a sender of the first link.
    cover: Option<tokio::task::JoinHandle<()>>,
    /// The hops' onion keys, first to last, in sessions with per-message routes.
    route_keys: Option<Vec<OnionPublicKey>>,
}

impl std::fmt::Debug for RemoteCascade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hops: Vec<&str> = self.hops.iter().map(|h| h.description.as_str()).collect();
        f.debug_struct("RemoteCascade")
            .field("hops", &hops)
            .finish_non_exhaustive()
    }
}

/// The identity layer's config for dummies (any optimizer: it has no parameters).
fn dummy_config() -> Vec<u8> {
    InitConfig {
        seed: 0,
        optimizer: SgdConfig {
            lr: 0.0,
            momentum: 0.0,
        },
        layer: serde_json::Value::Object(serde_json::Map::new()),
    }
    .to_bytes()
}

/// The length of a dummy's state.
fn identity_state_len(sandbox: &Sandbox) -> Result<usize, CascadeError> {
    let failed = |e: SandboxError| CascadeError::Load {
        index: 0,
        component: "identity (dummy)".into(),
        source: LoadError::Sandbox(e),
    };
    let module = sandbox.load(mixnn_components::IDENTITY).map_err(failed)?;
    let mut layer = sandbox.start(&module).map_err(failed)?;
    layer.init(&dummy_config()).map_err(failed)?;
    Ok(layer.export_state().map_err(failed)?.len())
}

fn encoded_len(shape: &[usize]) -> usize {
    1 + 4 * shape.len() + 4 * shape.iter().product::<usize>()
}

/// A session's layout, decided before any host is picked: which layers each hop runs (and
/// where the dummies go), their roles, and the sizes of frames, blobs and exported states.
/// A session that replaces failed hosts keeps it, so the new hosts take the old positions.
#[derive(Debug, Clone)]
pub struct Plan {
    hops: Vec<HopInfo>,
    flags: Vec<u8>,
    frame_len: usize,
    blob_len: usize,
    keep_first: bool,
    keep_last: bool,
}

impl Plan {
    /// Lays out a session for `spec` with `options` (dummies in random gaps, kept layers),
    /// for batches of inputs of `input_shape` (it sizes the frames: the model runs once on a
    /// batch of zeros in `sandbox`).
    pub fn new(
        spec: &ModelSpec,
        sandbox: &Sandbox,
        options: &RemoteOptions,
        input_shape: &[usize],
    ) -> Result<Self, RemoteError> {
        let groups = spec.hosts();
        let keep_first = usize::from(options.keep_first);
        let keep_last = usize::from(options.keep_last);
        if groups.len() < keep_first + keep_last + 1 {
            return Err(PlanError::NoLayerLeft.into());
        }
        let remote_groups = &groups[keep_first..groups.len() - keep_last];
        let layer_count = spec.layers.len();
        // Sizes: run a fresh copy of the model once on a batch of zeros.
        let mut probe = Cascade::build(spec, Backend::Wasm, Some(sandbox))?;
        let zeros = Tensor::zeros(input_shape.to_vec());
        let outputs = probe.shapes(zeros.clone())?;
        let input_of = |layer: usize| -> Vec<usize> {
            if layer == 0 {
                input_shape.to_vec()
            } else {
                outputs[layer - 1].clone()
            }
        };
        let batch = input_shape.first().copied().unwrap_or(1);
        let test_end = layer_count.saturating_sub(2);
        let remote_test_end = remote_groups.iter().any(|g| g.contains(&test_end));
        // Tensors on the links: the input of every remote group, and of the kept tail.
        // The first hop's input may travel as bytes; unless the designer keeps layers before
        // it, the first hop returns no gradient of it (`DROP_INPUT_GRAD`).
        let byte_input = options.byte_inputs && !options.keep_first;
        let max_tensor = remote_groups
            .iter()
            .chain(groups.last().filter(|_| options.keep_last))
            .map(|g| match g[0] {
                0 if byte_input => byte_tensor_len(input_shape),
                first => encoded_len(&input_of(first)),
            })
            .max()
            .unwrap_or(0);
        let mut payload = (1 + MAX_MESSAGE_LEN + 8).max(encoded_len(&[batch]));
        if remote_test_end {
            payload = payload.max(1 + encoded_len(&outputs[test_end]));
        }
        let blob_len = SEAL_OVERHEAD + payload;
        // The paper's per-message onion travels beside the tensor: one layer per hop.
        let route_len = if options.per_message_rsa {
            route::len(remote_groups.len() + options.dummies)
        } else {
            0
        };
        let frame_len = (CIRCUIT_ID_LEN + 16 + BODY_OVERHEAD + max_tensor + blob_len + route_len)
            .max(MIN_FRAME_LEN);
        // The states' sizes once training has begun (optimizers allocate on the first step),
        // which size the export ([`export`]).
        let batch_labels = Tensor::zeros(vec![batch]);
        probe.train_step(zeros, batch_labels)?;
        let state_lens: Vec<usize> = probe.export_states()?.iter().map(|s| 4 + s.len()).collect();
        let dummy_state_len = 4 + identity_state_len(sandbox)?;

        // The cascade: actual hops in order, dummies in random gaps between them.
        let actual = remote_groups.len();
        let route_flag = if options.per_message_rsa {
            HopSetup::PER_MESSAGE_RSA
        } else {
            0
        };
        if options.dummies > 0 && actual < 2 {
            return Err(PlanError::DummiesNeedTwoHosts.into());
        }
        let mut rng = pool::system_rng();
        let mut after: Vec<usize> = vec![0; actual];
        for _ in 0..options.dummies {
            after[pool::below(&mut rng, actual - 1)] += 1;
        }
        let mut hops = Vec::new();
        let mut flags = Vec::new();
        for (g, group) in remote_groups.iter().enumerate() {
            let names: Vec<&str> = group
                .iter()
                .map(|&i| spec.layers[i].component.as_str())
                .collect();
            hops.push(HopInfo {
                export_parts: export::slots_for(
                    group.iter().map(|&i| state_lens[i]).sum(),
                    frame_len,
                ),
                layers: group.clone(),
                description: format!(
                    "layers {}: {}",
                    group
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    names.join(" + ")
                ),
                host: None,
            });
            let loss = !options.keep_last && g + 1 == actual;
            flags.push(
                if loss { HopSetup::LOSS } else { 0 }
                    | if g == 0 && !options.keep_first {
                        HopSetup::DROP_INPUT_GRAD
                    } else {
                        0
                    }
                    | route_flag
                    | if remote_test_end && group.contains(&test_end) {
                        HopSetup::TEST_END
                    } else {
                        0
                    },
            );
            for _ in 0..after[g] {
                hops.push(HopInfo {
                    export_parts: export::slots_for(dummy_state_len, frame_len),
                    layers: Vec::new(),
                    description: "dummy".into(),
                    host: None,
                });
                flags.push(route_flag);
            }
        }
        Ok(Plan {
            hops,
            flags,
            frame_len,
            blob_len,
            keep_first: options.keep_first,
            keep_last: options.keep_last,
        })
    }

    /// Hops in the cascade (actual and dummies).
    pub fn len(&self) -> usize {
        self.hops.len()
    }

    /// Whether the plan has no hop (never: a plan has at least one).
    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// The hops, first to last: each one's layers, or `dummy`.
    pub fn describe(&self) -> Vec<String> {
        self.hops.iter().map(|h| h.description.clone()).collect()
    }

    /// The hop that runs layer `layer` of the spec, if a host runs it.
    pub fn hop_of(&self, layer: usize) -> Option<usize> {
        self.hops.iter().position(|h| h.layers.contains(&layer))
    }
}

/// Which hosts a session may use: at each position, a host it must take if the pool still
/// has it (the survivors of a failed session), and hosts it must never take (those that
/// failed).
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// By position: the host to keep there, or none for a fresh pick.
    pub keep: Vec<Option<Fingerprint>>,
    /// Hosts never picked.
    pub exclude: std::collections::HashSet<Fingerprint>,
}

impl Placement {
    /// The hosts of `pool` for every position of a cascade of `n` hops: kept ones where the
    /// pool has them, the rest picked at random among hosts neither kept nor excluded.
    pub fn choose(&self, pool: Vec<Candidate>, n: usize) -> Result<Vec<Candidate>, PlanError> {
        let mut kept: Vec<Option<Candidate>> = (0..n).map(|_| None).collect();
        let mut rest = Vec::new();
        for c in pool {
            let fp = c.descriptor.fingerprint;
            if self.exclude.contains(&fp) {
                continue;
            }
            match self.keep.iter().position(|k| *k == Some(fp)) {
                Some(at) if at < n && kept[at].is_none() => kept[at] = Some(c),
                _ => rest.push(c),
            }
        }
        let needed = kept.iter().filter(|k| k.is_none()).count();
        let available = rest.len();
        let mut fresh = pool::pick(rest, needed)
            .ok_or(PlanError::PoolTooSmall {
                needed: n,
                available: available + n - needed,
            })?
            .into_iter();
        Ok(kept
            .into_iter()
            .filter_map(|k| k.or_else(|| fresh.next()))
            .collect())
    }
}

/// The directory's pool, every descriptor verified (those that do not verify are dropped).
pub fn fetch_pool(options: &RemoteOptions) -> Result<Vec<Candidate>, RemoteError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RemoteError::Runtime)?;
    runtime.block_on(async {
        let endpoint = Endpoint::bind(
            SocketAddr::from(([0, 0, 0, 0], 0)),
            TlsIdentity::generate()?,
        )?;
        let signed = directory_service::fetch_pool(
            &endpoint,
            options.directory,
            options.directory_fingerprint,
            options.max_pool,
        )
        .await?;
        endpoint.close();
        Ok(pool::verify_pool(&signed))
    })
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
    /// [`Cascade::export_states`] gives them; a missing or empty one: the layer's own init).
    /// Each hop receives its layers' states in its op=0 layer, sealed for it alone.
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
        if chosen.len() != plan.len() {
            return Err(PlanError::PoolTooSmall {
                needed: plan.len(),
                available: chosen.len(),
            }
            .into());
        }
        let state_of = |i: usize| states.get(i).cloned().unwrap_or_default();
        let groups = spec.hosts();
        let layer_count = spec.layers.len();
        let local = |group: Option<&Vec<usize>>| -> Result<Vec<LocalLayer>, CascadeError> {
            group
                .into_iter()
                .flatten()
                .map(|&i| {
                    let (info, mut backend) = build_layer(spec, i, Backend::Wasm, Some(sandbox))?;
                    let state = state_of(i);
                    if !state.is_empty() {
                        backend
                            .import_state(&state)
                            .map_err(|source| CascadeError::Call {
                                index: i,
                                name: info.name.clone(),
                                op: "import-state",
                                source,
                            })?;
                    }
                    Ok(LocalLayer { info, backend })
                })
                .collect()
        };
        let head = local(groups.first().filter(|_| plan.keep_first))?;
        let tail = local(groups.last().filter(|_| plan.keep_last))?;
        let (frame_len, blob_len) = (plan.frame_len, plan.blob_len);
        let mut hops = plan.hops.clone();
        let flags = plan.flags.clone();
        let hop_layers = hops
            .iter()
            .map(|hop| {
                if hop.layers.is_empty() {
                    return Ok(vec![HopLayer {
                        component: mixnn_components::IDENTITY.to_vec(),
                        config: dummy_config(),
                        state: Vec::new(),
                    }]);
                }
                hop.layers
                    .iter()
                    .map(|&i| {
                        Ok(HopLayer {
                            component: component_bytes(spec, i)?,
                            config: spec.init_config(i)?.to_bytes(),
                            state: state_of(i),
                        })
                    })
                    .collect::<Result<Vec<_>, CascadeError>>()
            })
            .collect::<Result<Vec<_>, CascadeError>>()?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(RemoteError::Runtime)?;
        let n = hops.len();
        let setup_started = std::time::Instant::now();
        let (refs, onion, circuit, first, last, keys) = runtime.block_on(async {
            let endpoint = Endpoint::bind(
                SocketAddr::from(([0, 0, 0, 0], 0)),
                TlsIdentity::generate()?,
            )?;
            let plan = chosen
                .iter()
                .zip(hop_layers)
                .zip(&flags)
                .map(|((c, layers), &flags)| HopPlan {
                    host: c.peer(),
                    onion_key: &c.onion_key,
                    layers,
                    flags,
                })
                .collect();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let params = SessionParams {
                expires_at: now + options.session_ttl.as_secs(),
                frame_len: u32::try_from(frame_len)
                    .map_err(|_| PlanError::FrameTooLarge(frame_len))?,
                blob_len: u32::try_from(blob_len)
                    .map_err(|_| PlanError::FrameTooLarge(blob_len))?,
            };
            let (onion, circuit) =
                circuit::build(plan, params, &mut SystemEntropy).map_err(PlanError::Build)?;
            let connect = |c: &Candidate, hop: usize, end: End| {
                let endpoint = endpoint.clone();
                let address = c.descriptor.address.clone();
                let fingerprint = c.descriptor.fingerprint;
                async move {
                    let addr: SocketAddr = address.parse().map_err(|_| RemoteError::Peer {
                        step: "setup",
                        fault: PeerFault::BadAddress(address.clone()),
                    })?;
                    let conn = endpoint
                        .connect(addr, fingerprint)
                        .await
                        .map_err(|source| RemoteError::Unreachable {
                            hop,
                            address: address.clone(),
                            source,
                        })?;
                    let (send, recv) = conn
                        .open_bi()
                        .await
                        .map_err(|e| link_failed(hop, "setup", end, e.into()))?;
                    Ok::<_, RemoteError>((conn, send, recv))
                }
            };
            // A host that refuses the setup or the attach stops the stream, saying why.
            let sent = |hop: usize, step: &'static str, end: End| {
                move |e: quinn::WriteError| link_failed(hop, step, end, e.into())
            };
            let (first_conn, mut first_send, first_recv) =
                connect(&chosen[0], 0, End::First).await?;
            // At most MAX_SETUP_LEN (the build's check), which a u32 holds.
            let len = u32::try_from(onion.len()).unwrap_or(u32::MAX);
            first_send
                .write_all(&StreamHeader::Setup { len }.encode())
                .await
                .map_err(sent(0, "setup", End::First))?;
            first_send
                .write_all(&onion)
                .await
                .map_err(sent(0, "setup", End::First))?;
            let (last_conn, mut last_send, last_recv) =
                connect(&chosen[n - 1], n - 1, End::Last).await?;
            let attach = StreamHeader::Attach {
                circuit: circuit.last.circuit(),
            };
            last_send.write_all(&attach.encode()).await.map_err(sent(
                n - 1,
                "attach",
                End::Last,
            ))?;
            let refs: Vec<HostRef> = chosen.iter().map(HostRef::from).collect();
            let keys: Vec<OnionPublicKey> = chosen.into_iter().map(|c| c.onion_key).collect();
            Ok::<_, RemoteError>((
                refs,
                onion.len(),
                circuit,
                (first_conn, first_send, first_recv),
                (last_conn, last_send, last_recv),
                keys,
            ))
        })?;
        for (hop, host) in hops.iter_mut().zip(refs) {
            hop.host = Some(host);
        }
        tracing::info!(
            hops = n,
            onion_bytes = onion,
            frame_len,
            blob_len,
            "session set up"
        );
        let (first_link, last_link) = {
            let _guard = runtime.enter();
            let first_end = circuit.first.clone();
            let last_end = circuit.last.clone();
            (
                Link::start(first_end, first.1, first.2, first.0, frame_len),
                Link::start(last_end, last.1, last.2, last.0, frame_len),
            )
        };
        let mut cascade = RemoteCascade {
            runtime,
            circuit,
            first: first_link,
            last: last_link,
            head,
            tail,
            hops,
            layer_count,
            deadlines: Deadlines::new(options),
            broken: false,
            setup_time: Duration::ZERO,
            cover: None,
            route_keys: options.per_message_rsa.then_some(keys),
        };
        match cascade.receive("setup")? {
            (End::Last, body) if body.op == Op::REPORT => {
                match cascade.report(End::Last, &body, "setup")? {
                    (_, Report::Ready) => {}
                    (hop, other) => return Err(cascade.unexpected(hop, &other, "setup")),
                }
            }
            (_, body) => {
                return Err(cascade.fault("setup", PeerFault::UnexpectedOp(body.op.0)));
            }
        }
        cascade.setup_time = setup_started.elapsed();
        if options.cover_rate > 0.0 {
            cascade.start_cover(options.cover_rate);
        }
        Ok(cascade)
    }

    fn start_cover(&mut self, rate: f64) {
        let Some(tx) = self.first.tx.clone() else {
            return;
        };
        let blob_len = self.circuit.params().blob_len as usize;
        let period = Duration::from_secs_f64(1.0 / rate.max(1e-3));
        self.cover = Some(self.runtime.spawn(async move {
            let mut ticks = tokio::time::interval(period);
            loop {
                ticks.tick().await;
                let body = FrameBody {
                    op: Op::COVER,
                    tensor: None,
                    blob: mixnn_wire::blob::random(blob_len, &mut SystemEntropy),
                    route: Vec::new(),
                };
                if tx.send(body).await.is_err() {
                    return;
                }
            }
        }));
    }

    /// From connecting to the first hop to the last hop's acknowledgement (op=0 end to end).
    pub fn setup_time(&self) -> Duration {
        self.setup_time
    }

    /// The hosts of the cascade, first to last.
    pub fn hosts(&self) -> Vec<HostRef> {
        self.hops.iter().filter_map(|h| h.host.clone()).collect()
    }

    /// The hops, first to last: each one's layers, or `dummy`.
    pub fn describe(&self) -> Vec<String> {
        self.hops.iter().map(|h| h.description.clone()).collect()
    }

    fn send(&mut self, end: End, body: FrameBody) -> Result<(), RemoteError> {
        let frame_len = self.circuit.params().frame_len as usize;
        let needed = body.encoded_len();
        if needed > frame::capacity(frame_len) {
            return Err(PlanError::MessageTooLarge { needed, frame_len }.into());
        }
        let link = match end {
            End::First => &self.first,
            End::Last => &self.last,
        };
        let tx = link.tx.clone().ok_or(RemoteError::Failed)?;
        // A closed queue: its writer stopped, on a write that failed (the reader says why).
        self.runtime
            .block_on(tx.send(body))
            .map_err(|_| RemoteError::LinkBroke {
                step: "sending",
                end,
                hop: self.hop_at(end),
                source: LinkError::Closed,
            })
    }

    /// The next frame from either link (failure reports become errors).
    fn receive(&mut self, step: &'static str) -> Result<(End, FrameBody), RemoteError> {
        if self.broken {
            return Err(RemoteError::Failed);
        }
        let timeout = self.deadlines.of(step);
        let waited = std::time::Instant::now();
        let (first, last) = (&mut self.first.rx, &mut self.last.rx);
        let got = self.runtime.block_on(async {
            tokio::time::timeout(timeout, async {
                tokio::select! {
                    f = first.recv() => (End::First, f),
                    f = last.recv() => (End::Last, f),
                }
            })
            .await
        });
        let result = match got {
            Err(_) => Err(RemoteError::Timeout { timeout, step }),
            Ok((end, None)) => Err(RemoteError::LinkBroke {
                step,
                end,
                hop: self.hop_at(end),
                source: LinkError::Closed,
            }),
            Ok((end, Some(Err(e)))) => Err(link_failed(self.hop_at(end), step, end, e)),
            Ok((end, Some(Ok(body)))) if body.op == Op::REPORT => {
                // A failure from anywhere ends the session.
                match self.open(end, &body, step) {
                    Ok((hop, Report::Failure(message))) => Err(self.hop_failed(hop, message)),
                    Ok((hop, Report::LinkLost(side))) => Err(self.hop_lost(hop, side, step)),
                    _ => Ok((end, body)),
                }
            }
            Ok((end, Some(Ok(body)))) => Ok((end, body)),
        };
        match &result {
            Ok(_) => self.deadlines.took(step, waited.elapsed()),
            Err(_) => self.broken = true,
        }
        result
    }

    fn open(
        &self,
        end: End,
        body: &FrameBody,
        step: &'static str,
    ) -> Result<(usize, Report), RemoteError> {
        match end {
            End::First => self.circuit.open_from_first(&body.blob),
            End::Last => self.circuit.open_from_last(&body.blob),
        }
        .map_err(|e| RemoteError::Peer {
            step,
            fault: PeerFault::Report(e),
        })
    }

    fn report(
        &mut self,
        end: End,
        body: &FrameBody,
        step: &'static str,
    ) -> Result<(usize, Report), RemoteError> {
        let opened = self.open(end, body, step);
        if opened.is_err() {
            self.broken = true;
        }
        opened
    }

    /// A protocol fault during `step`: the session is over.
    fn fault(&mut self, step: &'static str, fault: PeerFault) -> RemoteError {
        self.broken = true;
        RemoteError::Peer { step, fault }
    }

    /// The hop at the other end of one of the designer's links.
    fn hop_at(&self, end: End) -> usize {
        match end {
            End::First => 0,
            End::Last => self.hops.len().saturating_sub(1),
        }
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

    fn unexpected(&mut self, hop: usize, report: &Report, step: &'static str) -> RemoteError {
        let kind = match report {
            Report::Ready => "ready",
            Report::Loss(_) => "loss",
            Report::Output(_) => "output",
            Report::State { .. } => "state",
            Report::Failure(_) => "failure",
            Report::LinkLost(_) => "link-lost",
        };
        self.fault(step, PeerFault::UnexpectedReport { hop, kind })
    }

    fn expect(&mut self, want: End, step: &'static str) -> Result<FrameBody, RemoteError> {
        let (end, body) = self.receive(step)?;
        if end != want {
            return Err(self.fault(step, PeerFault::WrongEnd));
        }
        Ok(body)
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

    /// A fresh per-message onion for a frame of `op` (forward: first hop to last; backward:
    /// last to first), in sessions that use them; else nothing.
    fn route(&self, op: Op) -> Result<Vec<u8>, RemoteError> {
        let Some(keys) = &self.route_keys else {
            return Ok(Vec::new());
        };
        let mut order: Vec<&OnionPublicKey> = keys.iter().collect();
        if op == Op::BACKWARD {
            order.reverse();
        }
        route::build(&order, op, &mut SystemEntropy)
            .map_err(|e| PlanError::Build(BuildError::Crypto(e)).into())
    }

    /// Closes the session: the links finish, and the hops tear it down in turn.
    pub fn close(mut self) {
        if let Some(cover) = self.cover.take() {
            cover.abort();
        }
        self.first.tx = None;
        self.last.tx = None;
        // The writers finish their streams once their queues are empty.
        let writers: Vec<_> = [self.first.writer.take(), self.last.writer.take()]
            .into_iter()
            .flatten()
            .collect();
        self.runtime.block_on(async {
            for writer in writers {
                let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
            }
        });
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }

    /// Every layer's state, in the spec's order (as [`Cascade::export_states`]): the hops'
    /// states come sealed for the designer, the kept layers' from here.
    pub fn export_states(&mut self) -> Result<Vec<Vec<u8>>, RemoteError> {
        let mut states: Vec<Option<Vec<u8>>> = vec![None; self.layer_count];
        let head_start = 0;
        let tail_start = self.layer_count - self.tail.len();
        for (k, layer) in self.head.iter_mut().enumerate() {
            states[head_start + k] = Some(Self::local_call(
                layer,
                head_start + k,
                "export-state",
                |l| l.export_state(),
            )?);
        }
        for (k, layer) in self.tail.iter_mut().enumerate() {
            states[tail_start + k] = Some(Self::local_call(
                layer,
                tail_start + k,
                "export-state",
                |l| l.export_state(),
            )?);
        }
        let slots: Vec<usize> = self.hops.iter().map(|h| h.export_parts).collect();
        let blobs = self
            .circuit
            .export_blobs(&slots, &mut SystemEntropy)
            .map_err(PlanError::Seal)?;
        let frames = blobs.len();
        for blob in blobs {
            self.send(
                End::First,
                FrameBody {
                    op: Op::EXPORT,
                    tensor: None,
                    blob,
                    route: Vec::new(),
                },
            )?;
        }
        let mut parts: Vec<Vec<(u32, Vec<u8>)>> = vec![Vec::new(); self.hops.len()];
        for _ in 0..frames {
            let body = self.expect(End::Last, "export")?;
            if body.op != Op::EXPORT {
                let (hop, report) = self.report(End::Last, &body, "export")?;
                return Err(self.unexpected(hop, &report, "export"));
            }
            // A blob no hop sealed is a decoy.
            match self.circuit.open_from_last(&body.blob) {
                Ok((hop, Report::State { index, bytes, .. })) => parts[hop].push((index, bytes)),
                Ok((hop, other)) => return Err(self.unexpected(hop, &other, "export")),
                Err(_) => {}
            }
        }
        for (hop, mut chunks) in parts.into_iter().enumerate() {
            chunks.sort_by_key(|(i, _)| *i);
            let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, b)| b).collect();
            let mut r = Reader::new(&bytes);
            for &layer in &self.hops[hop].layers {
                let state = r
                    .take_lp32(bytes.len())
                    .map_err(|_| self_fault("export", PeerFault::BadState { hop }))?;
                states[layer] = Some(state.to_vec());
            }
        }
        states
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.ok_or_else(|| self_fault("export", PeerFault::MissingState(i))))
            .collect()
    }
}

/// A protocol fault during `step`.
fn self_fault(step: &'static str, fault: PeerFault) -> RemoteError {
    RemoteError::Peer { step, fault }
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
fn from_wire(t: Option<WireTensor>, step: &'static str) -> Result<Tensor, RemoteError> {
    let t = t.ok_or_else(|| self_fault(step, PeerFault::NoTensor))?;
    Tensor::new(t.shape.into_iter().map(|d| d as usize).collect(), t.data)
        .map_err(|e| self_fault(step, PeerFault::BadTensor(e)))
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
        let blob = if self.tail.is_empty() {
            self.circuit
                .label_blob(&to_wire(target.clone())?, &mut SystemEntropy)
                .map_err(PlanError::Seal)?
        } else {
            self.circuit.random_blob(&mut SystemEntropy)
        };
        self.send(
            End::First,
            FrameBody {
                op: Op::FORWARD,
                tensor: Some(to_wire(x)?),
                blob,
                route: self.route(Op::FORWARD)?,
            },
        )?;
        let body = self.expect(End::Last, "forward")?;
        let (loss, grad) = if self.tail.is_empty() {
            match self.report(End::Last, &body, "forward")? {
                (_, Report::Loss(loss)) => (loss, None),
                (hop, other) => return Err(self.unexpected(hop, &other, "forward")),
            }
        } else {
            let mut y = from_wire(body.tensor, "forward")?;
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
                g = Self::local_call(layer, tail_start + k, "backward", |l| l.backward(g))?;
            }
            (out.loss, Some(to_wire(g)?))
        };
        let blob = self.circuit.random_blob(&mut SystemEntropy);
        self.send(
            End::Last,
            FrameBody {
                op: Op::BACKWARD,
                tensor: grad,
                blob,
                route: self.route(Op::BACKWARD)?,
            },
        )?;
        let body = self.expect(End::First, "backward")?;
        if body.op != Op::BACKWARD {
            return Err(self.fault("backward", PeerFault::UnexpectedOp(body.op.0)));
        }
        if !self.head.is_empty() {
            let mut g = from_wire(body.tensor, "backward")?;
            for (i, layer) in self.head.iter_mut().enumerate().rev() {
                g = Self::local_call(layer, i, "backward", |l| l.backward(g))?;
            }
        }
        Ok(loss)
    }

    fn predict(&mut self, input: Tensor) -> Result<Tensor, RemoteError> {
        let mut x = input;
        for (i, layer) in self.head.iter_mut().enumerate() {
            x = Self::local_call(layer, i, "forward", |l| l.forward(x, Mode::Test))?;
        }
        let blob = self.circuit.random_blob(&mut SystemEntropy);
        self.send(
            End::First,
            FrameBody {
                op: Op::TEST,
                tensor: Some(to_wire(x)?),
                blob,
                route: Vec::new(),
            },
        )?;
        let body = self.expect(End::Last, "test")?;
        let mut y = match body.tensor {
            Some(t) => from_wire(Some(t), "test")?,
            None => match self.report(End::Last, &body, "test")? {
                (_, Report::Output(t)) => from_wire(Some(t), "test")?,
                (hop, other) => return Err(self.unexpected(hop, &other, "test")),
            },
        };
        let tail_start = self.layer_count - self.tail.len();
        for (k, layer) in self
            .tail
            .iter_mut()
            .enumerate()
            .filter(|(_, l)| !l.info.is_loss)
        {
            y = Self::local_call(layer, tail_start + k, "forward", |l| {
                l.forward(y, Mode::Test)
            })?;
        }
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use mixnn_wire::crypto::OnionPrivateKey;

    use super::*;

    /// A pool of `n` candidates, fingerprints `[i; 32]` (one onion key for all: the pick does
    /// not look at it).
    fn pool(n: u8) -> Vec<Candidate> {
        let der = OnionPrivateKey::generate()
            .unwrap()
            .public_key()
            .unwrap()
            .der()
            .to_vec();
        (0..n)
            .map(|i| Candidate {
                descriptor: mixnn_wire::descriptor::Descriptor {
                    identity: [i; 32],
                    address: format!("127.0.0.1:{}", 7000 + u16::from(i)),
                    onion_key: Vec::new(),
                    fingerprint: [i; 32],
                    published_at: 0,
                    metadata: Default::default(),
                },
                onion_key: OnionPublicKey::from_der(&der).unwrap(),
            })
            .collect()
    }

    fn fingerprints(chosen: &[Candidate]) -> Vec<u8> {
        chosen.iter().map(|c| c.descriptor.fingerprint[0]).collect()
    }

    #[test]
    fn a_placement_keeps_survivors_in_place_and_never_picks_the_excluded() {
        // Survivors at positions 0, 1, 3; position 2 failed (host 2, excluded); host 9, at
        // position 4, has left the pool.
        let placement = Placement {
            keep: vec![
                Some([0; 32]),
                Some([1; 32]),
                None,
                Some([3; 32]),
                Some([9; 32]),
            ],
            exclude: [[2; 32]].into_iter().collect(),
        };
        for _ in 0..20 {
            let chosen = fingerprints(&placement.choose(pool(6), 5).unwrap());
            assert_eq!(chosen[0..2], [0, 1]);
            assert_eq!(chosen[3], 3);
            // Positions 2 and 4 from the rest: hosts 4 and 5.
            let mut fresh = [chosen[2], chosen[4]];
            fresh.sort_unstable();
            assert_eq!(fresh, [4, 5], "{chosen:?}");
        }
        // Not enough hosts once the excluded are out.
        let err = placement.choose(pool(4), 5).unwrap_err();
        assert!(
            matches!(err, PlanError::PoolTooSmall { needed: 5, .. }),
            "{err}"
        );
        // No placement: distinct hosts at random.
        let chosen = fingerprints(&Placement::default().choose(pool(8), 8).unwrap());
        let mut sorted = chosen.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..8).collect::<Vec<u8>>());
    }

    #[test]
    fn deadlines_adapt_to_the_steps_once_a_few_are_timed() {
        let mut options = RemoteOptions::new(SocketAddr::from(([127, 0, 0, 1], 1)), [0; 32]);
        options.step_timeout = Duration::from_secs(60);
        let mut deadlines = Deadlines::new(&options);
        let ms = Duration::from_millis;
        for _ in 0..DEADLINE_SAMPLES.0 - 1 {
            deadlines.took("forward", ms(10));
        }
        // Too few timed: the bound.
        assert_eq!(deadlines.of("forward"), Duration::from_secs(60));
        deadlines.took("forward", ms(500));
        // The median (10 ms) times 20, but at least MIN_DEADLINE.
        assert_eq!(deadlines.of("forward"), MIN_DEADLINE);
        for _ in 0..DEADLINE_SAMPLES.1 {
            deadlines.took("forward", ms(400));
        }
        assert_eq!(deadlines.of("forward"), ms(400) * DEADLINE_FACTOR);
        for _ in 0..DEADLINE_SAMPLES.1 {
            deadlines.took("forward", Duration::from_secs(10));
        }
        // Never past the bound; other steps keep theirs.
        assert_eq!(deadlines.of("forward"), Duration::from_secs(60));
        assert_eq!(deadlines.of("backward"), Duration::from_secs(60));
        // A fixed deadline does not adapt.
        options.adaptive_deadline = false;
        let mut fixed = Deadlines::new(&options);
        for _ in 0..DEADLINE_SAMPLES.1 {
            fixed.took("forward", ms(10));
        }
        assert_eq!(fixed.of("forward"), Duration::from_secs(60));
    }
}
