//! Prints a digest of `mixnn_kernels::gemm`'s results for the paper MLP's products, so that two
//! machines (or one emulated as another) can be compared bit for bit:
//!
//! ```sh
//! cargo run --release -p mixnn-kernels --example gemm_digest
//! cargo run --release -p mixnn-kernels --example gemm_digest --target aarch64-unknown-linux-gnu
//! qemu-x86_64 -cpu IvyBridge target/release/examples/gemm_digest   # an x86_64 without FMA
//! ```
//!
//! Each line: the product's shape, an FNV-1a digest of every result's bits, and the first and
//! last results' bits. Equal lines mean equal results.

use mixnn_kernels::{KernelError, Layout, gemm};

/// `n` values in [-0.5, 0.5) from a xorshift generator: the same on every machine.
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // 16 bits: exact in an f32.
            f32::from(u16::try_from(x >> 16).unwrap_or(0)) / 65536.0 - 0.5
        })
        .collect()
}

fn fnv1a(values: &[f32]) -> u64 {
    values
        .iter()
        .flat_map(|v| v.to_bits().to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, byte| {
            (h ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
        })
}

fn main() -> Result<(), KernelError> {
    // (m, k, n, A's layout, B's layout): the paper MLP's products for a batch of 64, forward
    // (x W^T), weight gradient (dY^T x) and input gradient (dY W), as its layers ask for them.
    let products = [
        (64, 784, 128, Layout::Plain, Layout::Transposed),
        (128, 64, 784, Layout::Transposed, Layout::Plain),
        (64, 128, 64, Layout::Plain, Layout::Transposed),
        (64, 64, 128, Layout::Plain, Layout::Plain),
    ];
    for (seed, &(m, k, n, a_layout, b_layout)) in (1u32..).zip(&products) {
        let a = values(m * k, seed);
        let b = values(k * n, seed + 100);
        let c = gemm(m, k, n, &a, a_layout, &b, b_layout)?;
        let bits = |i: Option<&f32>| i.map_or(0, |v| v.to_bits());
        println!(
            "{m}x{k}x{n}: {:016x} first {:08x} last {:08x}",
            fnv1a(&c),
            bits(c.first()),
            bits(c.last())
        );
    }
    Ok(())
}
