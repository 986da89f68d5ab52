//! The mixnn sandbox: runs designers' layer components in a hardened wasmtime sandbox.
//!
//! A host never trusts the components it is given. The [`Sandbox`] compiles each component
//! once (cached by content hash), refuses any that imports a capability (files, network,
//! clock, randomness, or anything unknown), and runs every session in its own store with a
//! memory cap, a deadline on every call, and a bounded wasm stack. Heavy arithmetic runs in
//! trusted native kernels the component imports (`mixnn:layer/kernels`).
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

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod config;
mod error;
mod sandbox;
mod session;
mod stats;
pub mod wit;

pub use config::SandboxConfig;
pub use error::{BadTensor, SandboxError, TrapReason};
pub use sandbox::{ALLOWED_IMPORTS, LayerModule, Sandbox};
pub use session::LayerSession;
pub use stats::SandboxStats;
