//! The mixnn wire format, sans IO: pure functions and state machines from bytes to typed
//! values, shared by the designer and the hosts, testable without sockets.
//!
//! - [`reader`]: the one bounded reader every parser uses.
//! - [`crypto`]: RSA-2048 OAEP-SHA256 as the onion KEM, HKDF, AES-256-GCM, AES-CTR
//!   keystreams, and the per-link cipher with implicit counters.
//! - [`descriptor`]: a host's signed descriptor (address, onion key, certificate fingerprint,
//!   metadata) for the directory.
//! - [`setup`]: the op=0 onion that ships each hop its layer, neighbours and keys.
//! - [`frame`]: the fixed-length frames of op=1/2/3 and cover traffic on each link.

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
//! - Still to do: the blob that travels with op=1 (labels sealed for the loss hop under its
//!   `designer_key`, wrapped in one AES-CTR layer per hop before it so that its bytes differ
//!   on every link, [`crypto::Key::xor_keystream`]), reports sealed for the designer (loss,
//!   test outputs of the `TEST_END` hop, failures), cover frames, and the host's session
//!   state machine on top of these types.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod crypto;
pub mod descriptor;
pub mod frame;
pub mod reader;
pub mod setup;
