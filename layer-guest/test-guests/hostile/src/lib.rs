//! A hostile layer for the sandbox's tests: its config picks how `forward` misbehaves.
//! With `"well-behaved"` it doubles its input, so a test can also check that a healthy session
//! of the same component keeps working.

use std::hint::black_box;

use mixnn_layer_sdk::{Conv2d, Init, Kernels, Layer, LayerError, Mode, Tensor};
use serde::Deserialize;

/// How `forward` misbehaves.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behavior {
    /// Doubles its input.
    WellBehaved,
    /// Never returns.
    InfiniteLoop,
    /// Allocates until memory runs out.
    MemoryBomb,
    /// Recurses without bound.
    Recursion,
    /// Executes `unreachable` (a panic, with `panic = "abort"`).
    Unreachable,
    /// Returns `huge_output` values whatever the input.
    HugeOutput,
    /// Asks the host's kernels for absurd amounts of work and memory.
    KernelAbuse,
    /// Asks the host's convolution kernels for absurd work, an absurd result, and a small
    /// convolution over operands shorter than it says.
    ConvAbuse,
    /// Doubles its input for `after` calls (cheap, so a host runs it on its network thread),
    /// then never returns.
    TurnsSlow,
}

/// The config.
#[derive(Debug, Deserialize)]
pub struct HostileConfig {
    behavior: Behavior,
    #[serde(default)]
    huge_output: usize,
    #[serde(default)]
    after: u32,
}

/// The hostile layer.
#[derive(Debug)]
pub struct Hostile {
    config: HostileConfig,
    calls: u32,
}

/// Recursion that lives on the wasm stack (no locals in linear memory) and that the compiler
/// cannot turn into a loop: floating-point arithmetic after the call is not reassociable.
#[inline(never)]
fn recurse(depth: u32, x: f64) -> f64 {
    if depth == u32::MAX {
        return x;
    }
    recurse(depth + 1, x * 1.000_001 + 0.5) * x - 1.0
}

impl Layer for Hostile {
    type Config = HostileConfig;
    const NAME: &'static str = "hostile";

    fn new(config: HostileConfig, _: &mut Init) -> Result<Self, LayerError> {
        Ok(Hostile { config, calls: 0 })
    }

    fn forward(&mut self, input: Tensor, _: Mode) -> Result<Tensor, LayerError> {
        self.calls = self.calls.saturating_add(1);
        match self.config.behavior {
            Behavior::TurnsSlow if self.calls > self.config.after => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            Behavior::WellBehaved | Behavior::TurnsSlow => {
                let doubled = input.data().iter().map(|v| v * 2.0).collect();
                input.with_data(doubled)
            }
            Behavior::InfiniteLoop => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            Behavior::MemoryBomb => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            Behavior::Recursion => {
                let x = recurse(0, black_box(input.len() as f64));
                Err(LayerError::Failed(format!("recursion returned {x}")))
            }
            Behavior::Unreachable => panic!("hostile layer reached unreachable code"),
            Behavior::KernelAbuse => {
                // 2^48 multiply-adds from small operands, then a 4 GiB result.
                let (k, small) = (1usize << 16, vec![0.0f32; 1 << 15]);
                let slow = Kernels::Host.gemm(k, k, k, &small, false, &small, false);
                let huge = Kernels::Host.gemm(1 << 15, 1, 1 << 15, &small, false, &small, false);
                match (slow, huge) {
                    (Err(a), Err(b)) => Err(LayerError::Failed(format!("{a}; {b}"))),
                    _ => Ok(input),
                }
            }
            Behavior::ConvAbuse => {
                let small = vec![0.0f32; 1 << 10];
                let g = |batch, channels, side| Conv2d {
                    batch,
                    in_channels: channels,
                    height: side,
                    width: side,
                    out_channels: channels,
                    kernel_h: 1,
                    kernel_w: 1,
                    stride_h: 1,
                    stride_w: 1,
                    pad_h: 0,
                    pad_w: 0,
                };
                let calls = [
                    // 2^38 multiply-adds.
                    Kernels::Host.conv2d(&g(1, 1 << 12, 1 << 7), &small, &small),
                    // 2^28 multiply-adds, but 2^28 weights' gradient: 1 GiB.
                    Kernels::Host.conv2d_weight_grad(&g(1, 1 << 14, 1), &small, &small),
                    // A 4x4 image, 1024 values short of what it claims.
                    Kernels::Host.conv2d_input_grad(&g(64, 4, 4), &small, &small[..16]),
                ];
                let errors: Vec<String> = calls
                    .into_iter()
                    .filter_map(|c| c.err().map(|e| e.to_string()))
                    .collect();
                if errors.len() == 3 {
                    Err(LayerError::Failed(errors.join("; ")))
                } else {
                    Ok(input)
                }
            }
            Behavior::HugeOutput => {
                let n = self.config.huge_output;
                Tensor::new(vec![n], vec![1.0; n])
            }
        }
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor, LayerError> {
        Ok(grad_output)
    }
}

mixnn_layer_sdk::export_layer!(Hostile);
