//! The allocator of mixnn's binaries, tuned for a host that holds many sessions.
//!
//! mimalloc, because frames of up to hundreds of KB are allocated and freed on every hop, and
//! glibc's malloc serves them with fresh mappings (a page fault per 4 KB; measured 3x slower
//! per hop at 200 KB). Tuned, for hosts ([`for_many_sessions`]), so that a host keeps only
//! what its sessions use: measured with `mixnn bench load` (the paper's model, all layers on
//! one host), a session cost about 10 MB without the tuning and under 4 MB with it.
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: mixnn_alloc::Allocator = mixnn_alloc::Allocator;
//!
//! fn main() {
//!     mixnn_alloc::for_many_sessions();
//!     // ...
//! }
//! ```

#![deny(unsafe_code)]

/// The allocator: declare it `#[global_allocator]` in a binary.
pub use mimalloc::MiMalloc as Allocator;

/// mimalloc's `mi_option_purge_delay`, its index in `mi_option_t` (the same in mimalloc 2 and
/// 3; libmimalloc-sys has no name for it).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// What mimalloc does by default: purge a second after a free (the purge delay's default).
pub const DEFAULT_PURGE_DELAY_MS: i64 = 1000;

/// Tunes the process for a host: freed memory goes back to the system at once, and memory
/// stays in 4 KiB pages. Call first thing in `main`, before the threads start.
///
/// - mimalloc purges freed pages a second after the free, and only when a thread next
///   allocates: what a session's worker freed after a frame stayed resident while the session
///   waited, about 2 MB per session of the paper's model. At once, it costs a few page faults
///   per frame (1-5% of a host's CPU, measured side by side).
/// - With transparent huge pages (`always`, or `madvise`, which mimalloc asks for on its
///   arenas), every 2 MiB of heap the allocator touches becomes resident whole: about 4.5 MB
///   per session, and 50 MB at a host's first session.
pub fn for_many_sessions() {
    // Sets an option mimalloc reads whenever it purges; 0 is a valid delay. mimalloc's
    // options are plain integers it reads without locks (`mi_option_set` is documented as safe
    // to call at any time).
    #[allow(unsafe_code)]
    // SAFETY: `mi_option_set` takes any option index and value; the index is checked by
    // the test below against mimalloc's documented default.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        // Old kernels: the host works, with more memory per session.
        eprintln!("cannot turn transparent huge pages off: {e}");
    }
}

/// mimalloc's purge delay now, in milliseconds.
pub fn purge_delay_ms() -> i64 {
    #[allow(unsafe_code)]
    // SAFETY: reads an option.
    let delay = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
    // A `c_long`: 32 bits on some platforms.
    #[allow(clippy::useless_conversion)]
    i64::from(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // A different default means the index no longer names the purge delay.
        assert_eq!(purge_delay_ms(), DEFAULT_PURGE_DELAY_MS);
        for_many_sessions();
        assert_eq!(purge_delay_ms(), 0);
    }
}
