//! Why a remote session failed: what the hosts did, apart from plans that cannot work,
//! misuse and local failures.

use std::time::Duration;

use mixnn_transport::{TransportError, directory_client::DirectoryClientError};
use mixnn_wire::{
    circuit::ReportError, frame::FrameError, setup::BuildError, stream::StreamRefusal,
};

use crate::cascade::CascadeError;

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
    /// A call out of turn (a backward pass before its forward pass, say): the caller's bug.
    #[error("{call} called while the session is {state}")]
    OutOfTurn {
        /// What was called.
        call: &'static str,
        /// What the session was doing.
        state: &'static str,
    },
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
            | RemoteError::Failed
            | RemoteError::OutOfTurn { .. } => false,
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
    /// A test pass cannot end at the layer asked for.
    #[error(
        "a test pass cannot end at layer {layer}: a host reports the output of its whole \
         group of layers, so the pass ends where a host's group ends, or at a layer the \
         designer keeps at the end (never at the loss, nor in the layers it keeps first); \
         here it can end at layer {}",
        list(.possible)
    )]
    TestEnd {
        /// The layer asked for.
        layer: usize,
        /// The layers it can end at.
        possible: Vec<usize>,
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

/// `0, 1 or 3`.
fn list(layers: &[usize]) -> String {
    let names: Vec<String> = layers.iter().map(usize::to_string).collect();
    match names.split_last() {
        None => "none".into(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
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
    pub(super) fn refusal(&self) -> Option<StreamRefusal> {
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

/// A broken link, as the designer reports it: the refusal of hop `hop` (the host at that
/// end) if it gave one.
pub(super) fn link_failed(
    hop: usize,
    step: &'static str,
    end: End,
    source: LinkError,
) -> RemoteError {
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
