//! What colluding hosts can learn, measured (`mixnn attack`): a session over host processes
//! with audits on, then attacks that use only what a coalition of hosts recorded.
//!
//! The attacks are plain Rust over recorded data, each in its own module:
//! - [`completion`]: model completion from the layers a coalition holds, what it saw around
//!   the others, and a few labelled examples of its own;
//! - [`inputs`]: input reconstruction from the features a host sees (a decoder on public data);
//! - [`labels`]: label leakage from the gradients a host receives (exact read-off, and the norm
//!   and direction attacks of Li et al. 2021);
//! - [`linking`]: whether non-adjacent colluding hosts can tell they serve the same session
//!   from the timing of frames, and what a host learns of its position.

pub mod completion;
pub mod inputs;
pub mod labels;
pub mod linking;
#[cfg(feature = "local-hosts")]
pub mod views;
