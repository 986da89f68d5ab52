//! The sandbox's limits, each with the reason for its default.

use std::{path::PathBuf, time::Duration};

/// Bytes of compiled components a disk cache keeps by default (the seven standard components
/// compile to about 5 MB together; strangers choose the components, so the bound is firm).
pub const DEFAULT_MAX_DISK_CACHE_BYTES: u64 = 512 << 20;

/// Limits that a [`Sandbox`](crate::Sandbox) enforces on every component and session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SandboxConfig {
    /// Largest component accepted, in bytes. The standard layers are about 300 KB; a layer
    /// with its own dependencies stays far below 16 MiB.
    pub max_component_bytes: usize,
    /// Linear memory a session's instance may hold, in bytes. The paper's largest layer holds
    /// about 1.5 MB of weights, momentum and activations; 256 MiB leaves room for big layers.
    pub max_memory_bytes: usize,
    /// Linear memory all sessions' instances may hold together, in bytes: a host serves many
    /// strangers at once, and each may ask for the per-instance maximum in every layer.
    pub max_total_memory_bytes: usize,
    /// Wall-clock budget of one call into a component. A forward or backward of the paper's
    /// layers takes about a millisecond.
    pub call_timeout: Duration,
    /// Granularity of the deadline: an epoch ticker thread advances the engine this often.
    pub epoch_tick: Duration,
    /// Wasm stack a call may use. Calls must run on a thread whose native stack is larger:
    /// see [`Sandbox::spawn_worker`](crate::Sandbox::spawn_worker).
    pub max_wasm_stack: usize,
    /// Native stack of the worker threads that run calls: the wasm stack plus room for the
    /// host's own frames.
    pub worker_stack_bytes: usize,
    /// Most values in one tensor returned by a component.
    pub max_tensor_values: usize,
    /// Most multiply-adds a single kernel call may cost (bounds the time spent in host code,
    /// which the epoch deadline does not interrupt): 2^32 is about 0.3 s.
    pub max_kernel_macs: u64,
    /// Compiled components kept in memory (by content hash).
    pub max_cached_components: usize,
    /// Bytes of compiled code the cache keeps, in all: strangers choose the components, and
    /// compiled code is several times the size of the component.
    pub max_cached_code_bytes: usize,
    /// Components compiled at once: compiling costs memory and CPU a stranger chooses, so
    /// strangers' setups take turns.
    pub max_compiles_at_once: usize,
    /// Bytes of a component's stderr kept to explain a trap (panic messages).
    pub max_stderr_bytes: usize,
    /// A directory where the sandbox keeps the components it compiled, so that a restarted
    /// host does not compile them again (see the crate's docs). None (the default): compiled
    /// components live in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Bytes the disk cache may hold; the oldest entries go first.
    pub max_disk_cache_bytes: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            max_component_bytes: 16 << 20,
            max_memory_bytes: 256 << 20,
            max_total_memory_bytes: 4 << 30,
            call_timeout: Duration::from_secs(10),
            epoch_tick: Duration::from_millis(10),
            max_wasm_stack: 512 << 10,
            worker_stack_bytes: 8 << 20,
            max_tensor_values: 16 << 20,
            max_kernel_macs: 1 << 32,
            max_cached_components: 64,
            max_cached_code_bytes: 256 << 20,
            max_compiles_at_once: 2,
            max_stderr_bytes: 4 << 10,
            cache_dir: None,
            max_disk_cache_bytes: DEFAULT_MAX_DISK_CACHE_BYTES,
        }
    }
}

impl SandboxConfig {
    /// Native stack of a thread that runs calls: the worker's, and at least twice the wasm
    /// stack (the host's own frames sit under it).
    pub fn thread_stack_bytes(&self) -> usize {
        self.worker_stack_bytes.max(self.max_wasm_stack * 2)
    }

    /// The deadline of one call, in epoch ticks (rounded up, at least one).
    pub(crate) fn deadline_ticks(&self) -> u64 {
        let tick = self.epoch_tick.as_nanos().max(1);
        let ticks = self.call_timeout.as_nanos().div_ceil(tick);
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }
}
