//! The mixnn wire format, sans IO: pure functions and state machines from bytes to typed
//! values, shared by the designer and the hosts, testable without sockets.
//!
//! - [`reader`]: the one bounded reader every parser uses.
//! - [`crypto`]: RSA-2048 OAEP-SHA256 as the onion KEM, HKDF, AES-256-GCM, AES-CTR
//!   keystreams, and the per-link cipher with implicit counters.
//! - [`descriptor`]: a host's signed descriptor (address, onion key, certificate fingerprint,
//!   metadata) for the directory.
//! - [`directory`]: the directory's answers (the pool, sized to what the client takes).
//! - [`family`]: what a descriptor's reserved metadata proves: its operator (a certificate),
//!   an invitation from the directory, a proof of work.
//! - [`stream`]: the header that opens every QUIC stream.
//! - [`setup`]: the op=0 onion that ships each hop its layer, neighbours and keys.
//! - [`frame`]: the fixed-length frames of op=1/2/3 and cover traffic on each link.
//! - [`blob`]: the opaque part of every frame, re-layered at every hop; labels sealed for
//!   the loss hop and reports sealed for the designer travel in it.
//! - [`report`]: what hops tell the designer (ready, loss, test output, state, failure).
//! - [`circuit`]: the designer's side of a session: plan, onion, and its keys afterwards.
//! - [`export`]: collecting the hops' states in frames that look alike to every hop.
//! - [`route`]: the paper's per-message RSA onion, an option kept to measure its cost.

//!
//! # The protocol, and what is still to build on it
//!
//! A session starts with one op=0 onion ([`setup::build_onion`]) sent to the first hop; each
//! hop peels its layer ([`setup::peel`]), loads its component, and forwards the rest, padded
//! back to the same length, to its next hop; the last hop acknowledges to the designer. From
//! then on every link carries fixed-length frames ([`frame::LinkEnd`]) under the circuit id
//! and link secret that setup gave both of its ends. Decided so far:
//!
//! - Each link is one QUIC connection opened by its upstream end; forward frames go down it,
//!   backward frames come back up the same bidirectional stream. The designer opens the links
//!   to the first and to the last hop, so no hop needs the designer's address.
//! - Link nonces are implicit counters (nothing repeats across links, P3; replays and
//!   reordering fail to open, P7); an op=0 layer's replay tag goes into a host's replay cache
//!   until the session expires.
//! - Frames carry no sequence number (it would be the same on every link, P3): order is the
//!   link's counter, and a hop alternates forward and backward strictly.
//! - The session's frame length fits its largest tensor. Tensors whose values are all bytes
//!   over 255 (image pixels) travel as bytes, exactly ([`frame::WireTensor`]), and a first hop
//!   flagged [`setup::HopSetup::DROP_INPUT_GRAD`] returns no gradient of the raw inputs, so
//!   image batches do not set the length at four bytes a pixel.
//! - Every frame carries a blob of the session's blob length; every hop re-layers every blob
//!   it receives ([`blob::layer`]), so blobs differ on every link. Labels travel sealed for the
//!   loss hop, pre-layered by the designer; reports travel sealed for the designer, who
//!   removes the layers added after them ([`circuit::DesignerCircuit::open_from_last`]).
//! - Readiness: the first hop sends [`frame::Op::READY`] once its layers are loaded; each hop
//!   passes it on once its own are; the last hop turns it into a sealed `Ready` report.
//! - Dummies run the identity layer: indistinguishable to their neighbours by what they send,
//!   but the activations before and after a dummy are equal, so the hops on either side of a
//!   dummy could link their positions by content (a limit of the paper's design).

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod blob;
pub mod circuit;
pub mod crypto;
pub mod descriptor;
pub mod directory;
pub mod export;
pub mod family;
pub mod frame;
pub mod reader;
pub mod report;
pub mod route;
pub mod setup;
pub mod stream;
