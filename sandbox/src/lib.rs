//! The mixnn sandbox: runs designers' layer components in a hardened wasmtime sandbox.
//!
//! A host never trusts the components it is given. The [`Sandbox`] compiles each component
//! once (cached by content hash, in memory and, with [`SandboxConfig::cache_dir`], on the
//! host's own disk: only code this host compiled is ever loaded from there), refuses any
//! that imports a capability (files, network, clock, randomness, or anything unknown), and
//! runs every session in its own store with a memory cap, a deadline on every call, and a
//! bounded wasm stack. Heavy arithmetic runs in trusted native kernels the component imports
//! (`mixnn:layer/kernels`).
//!
//! ```no_run
//! # fn demo(component: &[u8], config: &[u8], input: mixnn_sandbox::wit::Tensor) -> Result<(), mixnn_sandbox::SandboxError> {
//! use mixnn_sandbox::{Sandbox, SandboxConfig, wit::Mode};
//! let sandbox = Sandbox::new(SandboxConfig::default())?;
//! let module = sandbox.load(component)?;
//! let mut session = sandbox.start(&module)?;
//! session.init(config)?;
//! let output = session.forward(&input, Mode::Train)?;
//! # Ok(()) }
//! ```

// One function may use unsafe: loading the host's own compiled code from its disk cache
// (`disk_cache::deserialize_own`, with its safety argument).
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod config;
mod disk_cache;
mod error;
mod sandbox;
mod session;
mod stats;
pub mod wit;

pub use config::{DEFAULT_MAX_DISK_CACHE_BYTES, SandboxConfig};
pub use error::{BadTensor, SandboxError, TrapReason};
pub use sandbox::{ALLOWED_IMPORTS, LayerModule, Sandbox};
pub use session::{CallBudget, LayerSession, OverBudget, thread_cpu};
pub use stats::SandboxStats;
