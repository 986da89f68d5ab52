//! The mixnn wire format, sans IO: pure functions and state machines from bytes to typed
//! values, shared by the designer and the hosts, testable without sockets.
//!
//! - [`reader`]: the one bounded reader every parser uses.
//! - [`crypto`]: RSA-2048 OAEP-SHA256 as the onion KEM, HKDF, AES-256-GCM, and the per-link
//!   cipher with implicit counters.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod crypto;
pub mod reader;
pub mod setup;
