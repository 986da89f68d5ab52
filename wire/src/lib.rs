//! The mixnn wire format, sans IO: pure functions and state machines from bytes to typed
//! values, shared by the designer and the hosts, testable without sockets.
//!
//! - [`reader`]: the one bounded reader every parser uses.
//! - [`crypto`]: RSA-2048 OAEP-SHA256 as the onion KEM, HKDF, AES-256-GCM, AES-CTR
//!   keystreams, and the per-link cipher with implicit counters.
//! - [`setup`]: the op=0 onion that ships each hop its layer, neighbours and keys.
//! - [`frame`]: the fixed-length frames of op=1/2/3 and cover traffic on each link.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod crypto;
pub mod frame;
pub mod reader;
pub mod setup;
