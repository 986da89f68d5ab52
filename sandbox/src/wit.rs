//! Bindings generated from `wit/layer.wit`, and the host's side of the `kernels` import.

#![allow(missing_docs, unreachable_pub)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "layer-component",
});

pub use exports::mixnn::layer::layer::{LayerInfo, LossOutput};
pub use mixnn::layer::types::{LayerError, Mode, Tensor};

use mixnn::layer::kernels::Conv2dGeometry;

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
    for conv in [Conv::Forward, Conv::InputGrad, Conv::WeightGrad] {
        kernels.func_wrap(
            conv.name(),
            move |store: StoreContextMut<'_, SessionData>, args: ConvArgs| {
                Ok((conv2d(store, conv, args),))
            },
        )?;
    }
    Ok(())
}

type ConvArgs = (Conv2dGeometry, WasmList<u32>, WasmList<u32>);

/// The three convolution kernels.
#[derive(Debug, Clone, Copy)]
enum Conv {
    Forward,
    InputGrad,
    WeightGrad,
}

impl Conv {
    fn name(self) -> &'static str {
        match self {
            Conv::Forward => "conv2d",
            Conv::InputGrad => "conv2d-input-grad",
            Conv::WeightGrad => "conv2d-weight-grad",
        }
    }
}

fn conv2d(
    mut store: StoreContextMut<'_, SessionData>,
    conv: Conv,
    args: ConvArgs,
) -> Result<Vec<f32>, String> {
    let result = checked_conv2d(&mut store, conv, args);
    if result.is_err() {
        store.data().counters.kernel_refused();
    }
    result
}

fn checked_conv2d(
    store: &mut StoreContextMut<'_, SessionData>,
    conv: Conv,
    (geometry, a, b): ConvArgs,
) -> Result<Vec<f32>, String> {
    let d = |v: u32| v as usize;
    let g = mixnn_kernels::Conv2d {
        batch: d(geometry.batch),
        in_channels: d(geometry.in_channels),
        height: d(geometry.height),
        width: d(geometry.width),
        out_channels: d(geometry.out_channels),
        kernel_h: d(geometry.kernel_h),
        kernel_w: d(geometry.kernel_w),
        stride_h: d(geometry.stride_h),
        stride_w: d(geometry.stride_w),
        pad_h: d(geometry.pad_h),
        pad_w: d(geometry.pad_w),
    };
    let name = conv.name();
    let (out_h, out_w) = g.out_size().map_err(|e| format!("{name}: {e}"))?;
    let result_len = match conv {
        Conv::Forward => [g.batch, g.out_channels, out_h, out_w],
        Conv::InputGrad => [g.batch, g.in_channels, g.height, g.width],
        Conv::WeightGrad => [g.out_channels, g.in_channels, g.kernel_h, g.kernel_w],
    }
    .iter()
    .fold(1u64, |acc, &v| acc.saturating_mul(v as u64));
    // The work is the products, or filling the result where it has more values than products
    // (a large stride, an empty batch).
    if !store
        .data_mut()
        .kernel_macs_allowed(g.macs().max(result_len))
    {
        return Err(format!("{name} exceeds the multiply-adds allowed"));
    }
    // The result must fit in the component's memory; refuse before allocating it here.
    if result_len.saturating_mul(4) > store.data().max_memory_bytes {
        return Err(format!(
            "{name} result cannot fit in the component's memory"
        ));
    }
    let store = &*store;
    let a: &[f32] = bytemuck::try_cast_slice(a.as_le_slice(store)).map_err(|e| e.to_string())?;
    let b: &[f32] = bytemuck::try_cast_slice(b.as_le_slice(store)).map_err(|e| e.to_string())?;
    match conv {
        Conv::Forward => mixnn_kernels::conv2d(&g, a, b),
        Conv::InputGrad => mixnn_kernels::conv2d_input_grad(&g, a, b),
        Conv::WeightGrad => mixnn_kernels::conv2d_weight_grad(&g, a, b),
    }
    .map_err(|e| format!("{name}: {e}"))
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
