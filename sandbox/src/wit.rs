//! Bindings generated from `wit/layer.wit`, and the host's side of the `kernels` import.

#![allow(missing_docs, unreachable_pub)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "layer-component",
});

pub use exports::mixnn::layer::layer::{LayerInfo, LossOutput};
pub use mixnn::layer::types::{LayerError, Mode, Tensor};

use mixnn_kernels::Layout;
use wasmtime::{
    StoreContextMut,
    component::{Linker, WasmList},
};

use crate::session::SessionData;

/// Defines the `kernels` import: operands are read in place from the component's memory.
pub(crate) fn add_kernels(linker: &mut Linker<SessionData>) -> wasmtime::Result<()> {
    let mut kernels = linker.instance("mixnn:layer/kernels@0.2.0")?;
    kernels.func_wrap(
        "gemm",
        |store: StoreContextMut<'_, SessionData>, args: GemmArgs| Ok((gemm(store, args),)),
    )?;
    Ok(())
}

type GemmArgs = (u32, u32, u32, WasmList<u32>, bool, WasmList<u32>, bool);

fn gemm(mut store: StoreContextMut<'_, SessionData>, args: GemmArgs) -> Result<Vec<f32>, String> {
    let result = checked_gemm(&mut store, args);
    if result.is_err() {
        store.data().counters.kernel_refused();
    }
    result
}

fn checked_gemm(
    store: &mut StoreContextMut<'_, SessionData>,
    (m, k, n, a, trans_a, b, trans_b): GemmArgs,
) -> Result<Vec<f32>, String> {
    let (m64, k64, n64) = (u64::from(m), u64::from(k), u64::from(n));
    let macs = m64.saturating_mul(k64).saturating_mul(n64);
    if !store.data_mut().kernel_macs_allowed(macs) {
        return Err(format!(
            "gemm of {m}x{k}x{n} exceeds the multiply-adds allowed"
        ));
    }
    let data = store.data();
    // The result must fit in the component's memory; refuse before allocating it here.
    if m64.saturating_mul(n64).saturating_mul(4) > data.max_memory_bytes {
        return Err(format!(
            "gemm result {m}x{n} cannot fit in the component's memory"
        ));
    }
    // Canonical-ABI lists of u32 are 4-byte aligned, so the casts cannot fail; checked anyway.
    let store = &*store;
    let a: &[f32] = bytemuck::try_cast_slice(a.as_le_slice(store)).map_err(|e| e.to_string())?;
    let b: &[f32] = bytemuck::try_cast_slice(b.as_le_slice(store)).map_err(|e| e.to_string())?;
    let (m, k, n) = (m as usize, k as usize, n as usize);
    mixnn_kernels::gemm(
        m,
        k,
        n,
        a,
        Layout::from_flag(trans_a),
        b,
        Layout::from_flag(trans_b),
    )
    .map_err(|e| e.to_string())
}
