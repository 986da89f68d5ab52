//! What keeps a host alive among strangers: the counters of everything refused, the per-peer
//! op=0 rate limit, and the replay cache of setup layers.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::transport::Fingerprint;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters of a host daemon.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A snapshot of [`Counters`], as written to the stats file.
        #[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub struct DaemonStats {
            $(pub $name: u64,)*
        }

        impl Counters {
            /// The current values.
            pub fn snapshot(&self) -> DaemonStats {
                DaemonStats { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Sessions set up.
    setups_accepted,
    /// op=0 messages that did not peel (not for this host, tampered, expired, oversized).
    setups_refused,
    /// op=0 layers seen before.
    setups_replayed,
    /// op=0 messages over a peer's rate.
    setups_rate_limited,
    /// op=0 messages refused because the host is full.
    sessions_refused_full,
    /// Links from a peer other than the neighbour named at setup.
    wrong_neighbour,
    /// Frames received on a circuit and processed.
    frames_processed,
    /// Microseconds the hops spent on the frames they processed: opening, the layers,
    /// sealing (not the network).
    frame_us,
    /// Of which, microseconds inside the layers' components ([`crate::SandboxStats`];
    /// approximate while sessions overlap).
    layer_us,
    /// Frames that did not open (tampered, replayed, reordered, mis-sized).
    frames_rejected,
    /// Frames for a session that had already failed.
    frames_after_failure,
    /// Sessions that failed (a layer's error, a protocol violation).
    sessions_failed,
    /// Sessions ended for receiving more than their byte budget.
    sessions_over_budget,
    /// Attach requests for no waiting session.
    attach_refused,
    /// Streams that were not a known kind or broke off.
    bad_streams,
}

/// Bumps a counter.
pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A token bucket per peer: `per_minute` op=0 messages a minute, bursts of as many.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: HashMap<Fingerprint, (f64, Instant)>,
}

/// Most peers tracked at once; the oldest are forgotten first.
const MAX_TRACKED_PEERS: usize = 10_000;

impl RateLimiter {
    /// A limiter allowing `per_minute` per peer.
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            buckets: HashMap::new(),
        }
    }

    /// Whether `peer` may send one more at `now`.
    pub fn allow(&mut self, peer: Fingerprint, now: Instant) -> bool {
        let capacity = f64::from(self.per_minute);
        if self.buckets.len() >= MAX_TRACKED_PEERS && !self.buckets.contains_key(&peer) {
            // Full buckets carry no information: forget them.
            self.buckets
                .retain(|_, (tokens, at)| *tokens + refill(capacity, now - *at) < capacity);
            if self.buckets.len() >= MAX_TRACKED_PEERS {
                return false;
            }
        }
        let (tokens, at) = self.buckets.entry(peer).or_insert((capacity, now));
        *tokens = (*tokens + refill(capacity, now.saturating_duration_since(*at))).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn refill(per_minute: f64, elapsed: Duration) -> f64 {
    per_minute * elapsed.as_secs_f64() / 60.0
}

/// The replay tags of setup layers, each kept until its session's expiry.
#[derive(Debug, Default)]
pub struct ReplayCache {
    tags: HashMap<[u8; 32], u64>,
}

/// Most tags kept: beyond it, new sessions are refused until old ones expire.
const MAX_REPLAY_TAGS: usize = 1 << 20;

impl ReplayCache {
    /// Records `tag` (valid until `expires_at`, Unix seconds); false if it was seen before or
    /// the cache is full.
    pub fn insert(&mut self, tag: [u8; 32], expires_at: u64, now: u64) -> bool {
        if self.tags.len() >= MAX_REPLAY_TAGS {
            self.tags.retain(|_, &mut expiry| expiry > now);
        }
        if self.tags.len() >= MAX_REPLAY_TAGS || self.tags.contains_key(&tag) {
            return false;
        }
        self.tags.insert(tag, expires_at);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_refills_over_time() {
        let mut limiter = RateLimiter::new(2);
        let t0 = Instant::now();
        assert!(limiter.allow([1; 32], t0));
        assert!(limiter.allow([1; 32], t0));
        assert!(!limiter.allow([1; 32], t0));
        assert!(limiter.allow([2; 32], t0), "peers are limited apart");
        assert!(limiter.allow([1; 32], t0 + Duration::from_secs(30)));
        assert!(!limiter.allow([1; 32], t0 + Duration::from_secs(31)));
    }

    #[test]
    fn a_replayed_tag_is_refused_until_it_expires() {
        let mut cache = ReplayCache::default();
        assert!(cache.insert([1; 32], 100, 10));
        assert!(!cache.insert([1; 32], 100, 50));
        assert!(cache.insert([2; 32], 100, 50));
    }
}
