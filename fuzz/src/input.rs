//! The byte formats of the structure-aware targets, read and written by hand.
//!
//! Not `arbitrary`: the regression tests in `wire/tests/` and `host/tests/` replay the same
//! inputs through the same checks on stable, and those crates have no `arbitrary` among
//! their dev-dependencies. So this file (included there with `#[path]`) is all the format
//! there is: [`Input`] reads a value from the front of the input and never fails (an
//! exhausted input reads as zeros, as `arbitrary::Unstructured` does), and [`Output`] writes
//! what [`Input`] reads back, for the seed corpora.
//!
//! Also here: [`FuzzEntropy`], a deterministic [`Entropy`], so that a crash replays alike.

use mixnn_wire::crypto::Entropy;

/// Reads fuzz input from the front; every read succeeds.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Bytes left.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Up to `n` bytes (fewer if the input ends).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    /// `N` bytes, zero-padded if the input ends.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let got = self.bytes(N);
        out[..got.len()].copy_from_slice(got);
        out
    }

    /// A byte.
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }

    /// A flag (the low bit of a byte).
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// A number in `0..n` (0 if `n` is 0): from one byte if `n` fits in one, else four.
    pub fn below(&mut self, n: usize) -> usize {
        match n {
            0 | 1 => {
                // Still consume, so that formats stay aligned whatever `n` is.
                self.u8();
                0
            }
            2..=256 => usize::from(self.u8()) % n,
            _ => usize::try_from(self.u32()).unwrap_or(usize::MAX) % n,
        }
    }

    /// A field prefixed by its `u16` length.
    pub fn lp16(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16());
        self.bytes(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Writes what [`Input`] reads (for seeds).
#[derive(Debug, Clone, Default)]
pub struct Output(pub Vec<u8>);

impl Output {
    /// A byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend(v.to_be_bytes());
        self
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend(v.to_be_bytes());
        self
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend(v.to_be_bytes());
        self
    }

    /// Raw bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }

    /// A field prefixed by its `u16` length (cut to 65,535 bytes).
    pub fn lp16(&mut self, v: &[u8]) -> &mut Self {
        let v = &v[..v.len().min(usize::from(u16::MAX))];
        self.u16(u16::try_from(v.len()).unwrap_or(u16::MAX));
        self.bytes(v)
    }

    /// The bytes written.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// Deterministic [`Entropy`] (SplitMix64): the harnesses' randomness comes from the input or
/// a constant, so that a crash found once replays the same way. Never for real keys.
#[derive(Debug, Clone)]
pub struct FuzzEntropy(u64);

impl FuzzEntropy {
    /// A stream from `seed`.
    pub fn new(seed: u64) -> Self {
        FuzzEntropy(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Entropy for FuzzEntropy {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}
