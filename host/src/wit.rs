//! Bindings generated from `wit/layer.wit`, and the host's side of the `kernels` import.

#![allow(missing_docs, unreachable_pub)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "layer-component",
});

pub use exports::mixnn::layer::layer::{LayerInfo, LossOutput};
pub use mixnn::layer::types::{LayerError, Mode, Tensor};

use mixnn_kernels::Layout;

use crate::session::SessionData;

impl mixnn::layer::kernels::Host for SessionData {
    fn gemm(
        &mut self,
        m: u32,
        k: u32,
        n: u32,
        a: Vec<f32>,
        trans_a: bool,
        b: Vec<f32>,
        trans_b: bool,
    ) -> Result<Vec<f32>, String> {
        let (m64, k64, n64) = (u64::from(m), u64::from(k), u64::from(n));
        let macs = m64.saturating_mul(k64).saturating_mul(n64);
        if macs > self.max_kernel_macs {
            return Err(format!(
                "gemm of {m}x{k}x{n} exceeds {} multiply-adds",
                self.max_kernel_macs
            ));
        }
        // The result must fit in the component's memory; refuse before allocating it here.
        if m64.saturating_mul(n64).saturating_mul(4) > self.max_memory_bytes {
            return Err(format!(
                "gemm result {m}x{n} cannot fit in the component's memory"
            ));
        }
        let (m, k, n) = (m as usize, k as usize, n as usize);
        mixnn_kernels::gemm(
            m,
            k,
            n,
            &a,
            Layout::from_flag(trans_a),
            &b,
            Layout::from_flag(trans_b),
        )
        .map_err(|e| e.to_string())
    }
}

impl mixnn::layer::types::Host for SessionData {}
