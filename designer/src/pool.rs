//! The pool of hosts, as a designer sees it: the directory's signed descriptors, each verified
//! here (the directory cannot forge one), and a uniformly random pick of distinct hosts.

use mixnn_wire::{
    crypto::OnionPublicKey,
    descriptor::{self, Descriptor},
    setup::Peer,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// A host a designer may use.
#[derive(Debug)]
pub struct Candidate {
    /// What it published.
    pub descriptor: Descriptor,
    /// Its onion key.
    pub onion_key: OnionPublicKey,
}

impl Candidate {
    /// The host as a neighbour in a setup.
    pub fn peer(&self) -> Peer {
        Peer::Host {
            address: self.descriptor.address.clone(),
            fingerprint: self.descriptor.fingerprint,
        }
    }
}

/// Verifies every descriptor; drops (and logs) the ones that do not verify.
pub fn verify_pool(signed: &[Vec<u8>]) -> Vec<Candidate> {
    signed
        .iter()
        .filter_map(|bytes| {
            let checked = descriptor::verify(bytes)
                .map_err(|e| e.to_string())
                .and_then(|d| {
                    OnionPublicKey::from_der(&d.onion_key)
                        .map(|onion_key| Candidate {
                            descriptor: d,
                            onion_key,
                        })
                        .map_err(|e| e.to_string())
                });
            checked
                .inspect_err(|e| tracing::warn!(error = %e, "descriptor dropped"))
                .ok()
        })
        .collect()
}

/// Picks `n` distinct candidates uniformly at random (a partial Fisher-Yates shuffle from a
/// generator seeded by the system), in random order.
pub fn pick(pool: Vec<Candidate>, n: usize) -> Option<Vec<Candidate>> {
    if n > pool.len() {
        return None;
    }
    let mut rng = system_rng();
    let mut pool: Vec<Option<Candidate>> = pool.into_iter().map(Some).collect();
    let len = pool.len();
    let mut chosen = Vec::with_capacity(n);
    for i in 0..n {
        let j = i + below(&mut rng, len - i);
        pool.swap(i, j);
        chosen.push(pool[i].take()?);
    }
    Some(chosen)
}

/// A uniform integer in `0..n` (rejection sampling, no modulo bias).
pub fn below(rng: &mut impl Rng, n: usize) -> usize {
    let n = n as u64;
    if n <= 1 {
        return 0;
    }
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let v = rng.next_u64();
        if v < zone {
            // v % n < n, which came from a usize.
            return usize::try_from(v % n).unwrap_or(0);
        }
    }
}

/// A generator for the designer's other random choices (dummy positions).
pub fn system_rng() -> ChaCha20Rng {
    let mut seed = [0u8; 32];
    mixnn_wire::crypto::Entropy::fill(&mut mixnn_wire::crypto::SystemEntropy, &mut seed);
    ChaCha20Rng::from_seed(seed)
}
