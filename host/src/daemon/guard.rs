//! What keeps a host alive among strangers: the counters of everything refused, rate limits
//! (per certificate, per source prefix, per host), quotas of what is held at once, and the
//! replay cache of setup layers.

use std::{
    collections::HashMap,
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        /// Live counters of a host daemon.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
        }

        impl DaemonStats {
            /// Every counter: its name, its documentation and its value.
            pub fn fields(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), concat!($($doc, "\n"),*), self.$name),)*]
            }
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
    /// op=0 messages that did not peel (not for this host, tampered, malformed).
    setups_refused,
    /// op=0 layers for this host that ask for more than it grants: a size out of bounds (the
    /// blob, the frames, a component), a lifetime too long, an expiry past, unknown flags.
    setups_invalid,
    /// op=0 layers seen before.
    setups_replayed,
    /// op=0 messages over a rate: the peer's (certificate), its source's, or the host's.
    setups_rate_limited,
    /// op=0 messages refused because too many were being read at once (by the host, or from
    /// the same source).
    setups_busy,
    /// op=0 messages refused because the host is full (sessions, or frame bytes).
    sessions_refused_full,
    /// Links from a peer other than the neighbour named at setup.
    wrong_neighbour,
    /// Frames received on a circuit and processed.
    frames_processed,
    /// Microseconds the hops spent on the frames they processed: opening, the layers,
    /// sealing (not the network).
    frame_us,
    /// Of which, microseconds inside the layers' components ([`mixnn_sandbox::SandboxStats`];
    /// approximate while sessions overlap).
    layer_us,
    /// Microseconds frames waited between the network and their hop, both ways: arrived and
    /// not yet taken by the hop, or queued by the hop and not yet taken by its link (the
    /// thread hand-offs of hops with layers; where a batch's time goes).
    handoff_us,
    /// Frames run where they arrived (their sessions' frames had proven cheap), not on
    /// their session's worker.
    frames_inline,
    /// Frames run inline that went over their budget (their sessions ended, and no frame ran
    /// inline for a while).
    inline_over_budget,
    /// Frames run inline that were costly (over 2 ms of CPU, with their update): their
    /// sessions went back to their workers for a while.
    inline_costly,
    /// Times costly frames run inline took more of the network thread than the host allows
    /// (about 1%), and no frame ran inline for a while.
    inline_stalls_closed,
    /// Frames that did not open (tampered, replayed, reordered, mis-sized).
    frames_rejected,
    /// Frames for a session that had already failed.
    frames_after_failure,
    /// Sessions that failed (a layer's error, a protocol violation).
    sessions_failed,
    /// Sessions ended for receiving more than their byte budget.
    sessions_over_budget,
    /// Sessions ended for receiving no frame for the idle timeout.
    sessions_idle,
    /// Attach requests for no waiting session.
    attach_refused,
    /// Streams that were not a known kind or broke off.
    bad_streams,
    /// Streams whose header (or op=0 head) did not arrive within the header timeout.
    streams_timed_out,
    /// Connections refused: too many at once, or from one source.
    connections_refused,
    /// op=0 messages refused because the host was shutting down.
    setups_refused_draining,
    /// Sessions ended at the end of a step because the host was shutting down (each told
    /// its designer).
    sessions_drained,
}

/// Bumps a counter.
pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Where a peer connects from, cut to a prefix: what a stranger cannot mint for free (a
/// certificate costs nothing; addresses do). IPv4-mapped IPv6 addresses count as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    /// `addr` cut to its first `v4_bits` (IPv4) or `v6_bits` (IPv6) bits.
    pub fn of(addr: IpAddr, v4_bits: u8, v6_bits: u8) -> Self {
        Source(match addr.to_canonical() {
            IpAddr::V4(a) => {
                let bits = u32::from(v4_bits.min(32));
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let bits = u32::from(v6_bits.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        })
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A token bucket per key: `per_minute` events a minute, bursts of as many.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_minute: u32,
    buckets: HashMap<K, (f64, Instant)>,
}

/// Most keys a limiter tracks at once; full buckets are forgotten first, and beyond it every
/// new key is refused.
const MAX_TRACKED_KEYS: usize = 10_000;

impl<K: Copy + Eq + Hash> RateLimiter<K> {
    /// A limiter allowing `per_minute` per key.
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            buckets: HashMap::new(),
        }
    }

    fn tokens(&mut self, key: K, now: Instant) -> Option<&mut f64> {
        let capacity = f64::from(self.per_minute);
        if self.buckets.len() >= MAX_TRACKED_KEYS && !self.buckets.contains_key(&key) {
            // Full buckets carry no information: forget them.
            self.buckets
                .retain(|_, (tokens, at)| *tokens + refill(capacity, now - *at) < capacity);
            if self.buckets.len() >= MAX_TRACKED_KEYS {
                return None;
            }
        }
        let (tokens, at) = self.buckets.entry(key).or_insert((capacity, now));
        *tokens = (*tokens + refill(capacity, now.saturating_duration_since(*at))).min(capacity);
        *at = now;
        Some(tokens)
    }

    /// Whether `key` has a token left at `now` (none is taken).
    pub fn check(&mut self, key: K, now: Instant) -> bool {
        self.tokens(key, now).is_some_and(|t| *t >= 1.0)
    }

    /// Takes a token of `key` at `now`; false if none is left.
    pub fn allow(&mut self, key: K, now: Instant) -> bool {
        match self.tokens(key, now) {
            Some(t) if *t >= 1.0 => {
                *t -= 1.0;
                true
            }
            _ => false,
        }
    }
}

fn refill(per_minute: f64, elapsed: Duration) -> f64 {
    per_minute * elapsed.as_secs_f64() / 60.0
}

/// What a [`Quota`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaFull {
    /// Every slot is taken.
    Total,
    /// Every slot of this key is taken.
    PerKey,
}

/// Slots held at once, in all and per key (a source, say): each slot is a [`QuotaSlot`],
/// given back when dropped.
#[derive(Debug)]
pub struct Quota<K: Eq + Hash> {
    state: Arc<Mutex<QuotaState<K>>>,
}

#[derive(Debug)]
struct QuotaState<K> {
    max_total: usize,
    max_per_key: usize,
    total: usize,
    per_key: HashMap<K, usize>,
}

/// A slot of a [`Quota`], held until dropped.
#[derive(Debug)]
pub struct QuotaSlot<K: Eq + Hash> {
    key: K,
    state: Arc<Mutex<QuotaState<K>>>,
}

impl<K: Copy + Eq + Hash> Quota<K> {
    /// At most `max_total` slots, `max_per_key` of them for one key.
    pub fn new(max_total: usize, max_per_key: usize) -> Self {
        Quota {
            state: Arc::new(Mutex::new(QuotaState {
                max_total,
                max_per_key,
                total: 0,
                per_key: HashMap::new(),
            })),
        }
    }

    /// A slot for `key`, if one is free.
    pub fn take(&self, key: K) -> Result<QuotaSlot<K>, QuotaFull> {
        let mut s = lock(&self.state);
        if s.total >= s.max_total {
            return Err(QuotaFull::Total);
        }
        let max_per_key = s.max_per_key;
        let held = s.per_key.entry(key).or_insert(0);
        if *held >= max_per_key {
            return Err(QuotaFull::PerKey);
        }
        *held += 1;
        s.total += 1;
        Ok(QuotaSlot {
            key,
            state: Arc::clone(&self.state),
        })
    }

    /// Slots held now.
    pub fn held(&self) -> usize {
        lock(&self.state).total
    }
}

impl<K: Eq + Hash> Drop for QuotaSlot<K> {
    fn drop(&mut self) {
        let mut s = lock(&self.state);
        s.total = s.total.saturating_sub(1);
        if let Some(held) = s.per_key.get_mut(&self.key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                s.per_key.remove(&self.key);
            }
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind: keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The replay tags of setup layers, each kept until its session's expiry. Its capacity bounds
/// its memory (about 100 bytes a tag); the host's total setup rate times the longest session
/// it grants must stay below it, or new sessions are refused until old ones expire
/// ([`super::Limits::check`]).
#[derive(Debug, Default)]
pub struct ReplayCache {
    tags: HashMap<[u8; 32], u64>,
}

/// Most tags kept: beyond it, new sessions are refused until old ones expire.
pub const MAX_REPLAY_TAGS: usize = 1 << 20;

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
    fn sources_are_prefixes_and_mapped_addresses_are_ipv4() {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            Source::of(v4("203.0.113.77"), 24, 56),
            Source::of(v4("203.0.113.1"), 24, 56)
        );
        assert_ne!(
            Source::of(v4("203.0.113.77"), 24, 56),
            Source::of(v4("203.0.114.77"), 24, 56)
        );
        assert_eq!(
            Source::of(v4("::ffff:203.0.113.9"), 24, 56),
            Source::of(v4("203.0.113.200"), 24, 56)
        );
        assert_eq!(
            Source::of(v4("2001:db8:1:2:3::1"), 24, 48),
            Source::of(v4("2001:db8:1:ffff::9"), 24, 48)
        );
        assert_eq!(Source::of(v4("10.1.2.3"), 0, 0).to_string(), "0.0.0.0");
        assert_eq!(Source::of(v4("10.1.2.3"), 32, 128).to_string(), "10.1.2.3");
    }

    #[test]
    fn quotas_hold_slots_until_dropped() {
        let quota = Quota::new(3, 2);
        let a1 = quota.take(1).unwrap();
        let _a2 = quota.take(1).unwrap();
        assert_eq!(quota.take(1).unwrap_err(), QuotaFull::PerKey);
        let _b = quota.take(2).unwrap();
        assert_eq!(quota.take(3).unwrap_err(), QuotaFull::Total);
        drop(a1);
        assert_eq!(quota.held(), 2);
        let _a3 = quota.take(1).unwrap();
    }

    #[test]
    fn a_replayed_tag_is_refused_until_it_expires() {
        let mut cache = ReplayCache::default();
        assert!(cache.insert([1; 32], 100, 10));
        assert!(!cache.insert([1; 32], 100, 50));
        assert!(cache.insert([2; 32], 100, 50));
    }
}
