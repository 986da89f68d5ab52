//! The mixnn host: the daemon that runs designers' layer components (in the sandbox of
//! [`mixnn_sandbox`]) as hops of onion-routed training sessions, relays their frames between
//! neighbours over the pinned QUIC of [`mixnn_transport`], and keeps itself registered with
//! the directory; the sans-IO hop, the host's keys, and the directory's server.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod check;
pub mod daemon;
pub mod directory;
pub mod directory_config;
pub mod directory_service;
pub mod hop;
pub mod keys;
pub mod serve;
