//! What can go wrong when loading or running a component.

use crate::wit::LayerError;

/// A sandbox failure. Component faults (everything but [`SandboxError::Engine`]) end the
/// session they happen in and nothing else.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The component is larger than the configured maximum.
    #[error("component of {size} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a WebAssembly component binary.
    #[error("not a WebAssembly component binary")]
    NotAComponent,
    /// The component does not validate, or does not implement the layer world.
    #[error("invalid component: {0:#}")]
    Invalid(wasmtime::Error),
    /// The component imports something the sandbox does not offer (a WASI capability such as
    /// files, sockets, clocks or randomness, or an unknown interface).
    #[error("component imports {0:?}, which the sandbox does not offer")]
    ForbiddenImport(String),
    /// A call ran past its deadline.
    #[error("component exceeded its {0:?} deadline")]
    Deadline(std::time::Duration),
    /// A call with a [`crate::CallBudget`] went past it.
    #[error("component went over its budget: {0}")]
    OverBudget(crate::OverBudget),
    /// The component tried to grow its memory (or tables) past the limit.
    #[error("component exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    /// The memory all sessions share is exhausted (its size, in bytes): other sessions hold
    /// it, so this one ends.
    #[error("the host's memory for all sessions ({0} bytes) is exhausted")]
    HostMemory(usize),
    /// The component overflowed its wasm stack.
    #[error("component overflowed its stack")]
    StackOverflow,
    /// The component trapped (e.g. `unreachable`, a panic, a bad memory access).
    #[error("component trapped: {reason}{}", said(.stderr))]
    Trap {
        /// The trap.
        reason: TrapReason,
        /// What the component wrote to its stderr (a panic message), bounded.
        stderr: String,
    },
    /// The component returned a tensor that is malformed or too large.
    #[error("component returned a bad tensor: {0}")]
    BadOutput(BadTensor),
    /// The layer reported an error (as a value; the session goes on).
    #[error("layer error: {0}")]
    Layer(LayerError),
    /// An earlier trap ended this session.
    #[error("the session ended after an earlier failure")]
    SessionDead,
    /// The disk cache's directory could not be created.
    #[error("compilation cache {path}: {source}")]
    CacheDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The engine could not be set up (a bug or a broken host, not the component's fault).
    #[error("sandbox engine: {0}")]
    Engine(Box<dyn std::error::Error + Send + Sync>),
}

/// Why a component stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrapReason {
    /// A trap of its own code (`unreachable`, a bad memory access, ...).
    #[error("{0}")]
    Wasm(wasmtime::Trap),
    /// A host function it called failed.
    #[error("{0:#}")]
    Host(wasmtime::Error),
}

/// What is wrong with a tensor a component returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadTensor {
    /// More values than a tensor may hold.
    #[error("{values} values exceed the limit of {max}")]
    TooManyValues {
        /// Its values.
        values: usize,
        /// The limit.
        max: usize,
    },
    /// A shape that does not match the values.
    #[error("shape {shape:?} does not match {values} values")]
    Shape {
        /// Its shape.
        shape: Vec<u32>,
        /// Its values.
        values: usize,
    },
}

fn said(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        String::new()
    } else {
        format!(" ({stderr})")
    }
}

impl SandboxError {
    /// Whether the error ended the session (any later call returns [`SandboxError::SessionDead`]).
    pub fn ends_session(&self) -> bool {
        matches!(
            self,
            SandboxError::Deadline(_)
                | SandboxError::OverBudget(_)
                | SandboxError::MemoryLimit(_)
                | SandboxError::HostMemory(_)
                | SandboxError::StackOverflow
                | SandboxError::Trap { .. }
                | SandboxError::BadOutput(_)
                | SandboxError::SessionDead
        )
    }
}
