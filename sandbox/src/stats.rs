//! Counters of what the sandbox refused or stopped, and of the time spent in components, for
//! a host's metrics.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::SandboxError;

/// Live counters, shared by a sandbox and its sessions.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    loads: AtomicU64,
    refused_components: AtomicU64,
    sessions: AtomicU64,
    deadlines: AtomicU64,
    over_budget: AtomicU64,
    memory_limits: AtomicU64,
    stack_overflows: AtomicU64,
    traps: AtomicU64,
    bad_outputs: AtomicU64,
    kernel_refusals: AtomicU64,
    call_us: AtomicU64,
    disk_hits: AtomicU64,
    disk_corrupt: AtomicU64,
    disk_write_errors: AtomicU64,
}

/// A snapshot of the sandbox's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SandboxStats {
    /// Components compiled (cache misses that passed every check).
    pub loads: u64,
    /// Components refused at load (size, format, imports).
    pub refused_components: u64,
    /// Sessions started.
    pub sessions: u64,
    /// Calls stopped at their deadline.
    pub deadlines: u64,
    /// Calls stopped past their [`crate::CallBudget`].
    pub over_budget: u64,
    /// Calls stopped at the memory limit.
    pub memory_limits: u64,
    /// Calls stopped by a stack overflow.
    pub stack_overflows: u64,
    /// Other traps.
    pub traps: u64,
    /// Malformed or oversized tensors returned.
    pub bad_outputs: u64,
    /// Kernel calls refused for their size.
    pub kernel_refusals: u64,
    /// Microseconds spent in component calls (their kernels included).
    pub call_us: u64,
    /// Components loaded from the disk cache instead of compiled.
    pub disk_hits: u64,
    /// Disk cache entries that could not be used (truncated, corrupt, refused by wasmtime):
    /// each was removed and its component compiled again.
    pub disk_corrupt: u64,
    /// Compiled components that could not be written to the disk cache.
    pub disk_write_errors: u64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn loaded(&self) {
        bump(&self.loads);
    }

    pub(crate) fn disk_hit(&self) {
        bump(&self.disk_hits);
    }

    pub(crate) fn disk_corrupt(&self) {
        bump(&self.disk_corrupt);
    }

    pub(crate) fn disk_write_error(&self) {
        bump(&self.disk_write_errors);
    }

    pub(crate) fn refused(&self) {
        bump(&self.refused_components);
    }

    pub(crate) fn session(&self) {
        bump(&self.sessions);
    }

    pub(crate) fn called(&self, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.call_us.fetch_add(us, Ordering::Relaxed);
    }

    pub(crate) fn kernel_refused(&self) {
        bump(&self.kernel_refusals);
    }

    /// Counts a failure that ended a session.
    pub(crate) fn failure(&self, e: &SandboxError) {
        match e {
            SandboxError::Deadline(_) => bump(&self.deadlines),
            SandboxError::OverBudget(_) => bump(&self.over_budget),
            SandboxError::MemoryLimit(_) | SandboxError::HostMemory(_) => bump(&self.memory_limits),
            SandboxError::StackOverflow => bump(&self.stack_overflows),
            SandboxError::Trap { .. } => bump(&self.traps),
            SandboxError::BadOutput(_) => bump(&self.bad_outputs),
            _ => {}
        }
    }

    pub(crate) fn snapshot(&self) -> SandboxStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SandboxStats {
            loads: get(&self.loads),
            refused_components: get(&self.refused_components),
            sessions: get(&self.sessions),
            deadlines: get(&self.deadlines),
            over_budget: get(&self.over_budget),
            memory_limits: get(&self.memory_limits),
            stack_overflows: get(&self.stack_overflows),
            traps: get(&self.traps),
            bad_outputs: get(&self.bad_outputs),
            kernel_refusals: get(&self.kernel_refusals),
            call_us: get(&self.call_us),
            disk_hits: get(&self.disk_hits),
            disk_corrupt: get(&self.disk_corrupt),
            disk_write_errors: get(&self.disk_write_errors),
        }
    }
}
