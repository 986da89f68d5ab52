//! A layer's state as safetensors bytes: each parameter and buffer ([`Layer::buffers`]) under
//! its own name, and each momentum buffer under `<name>.momentum_buffer`, all `F32`, so a state
//! can be opened by any safetensors reader (PyTorch, numpy) and checkpoints restore training
//! exactly. A layer's
//! extra state ([`Layer::extra_state`]) is a `U8` tensor of its UTF-8 bytes named
//! [`EXTRA_STATE`], as PyTorch's `_extra_state` entry of a `state_dict` (not in the metadata,
//! whose map serialises in no fixed order: states must be byte-identical to be compared).

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::{Layer, LayerError, Sgd, Tensor};

/// The suffix of a momentum buffer's name.
pub const MOMENTUM_SUFFIX: &str = ".momentum_buffer";

/// The name of a layer's extra state in its state.
pub const EXTRA_STATE: &str = "_extra_state";

fn to_le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn from_le_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn state_error(e: impl core::fmt::Display) -> LayerError {
    LayerError::BadState(e.to_string())
}

/// Serialises the parameters and buffers of `layer`, its extra state and the optimizer's
/// momentum buffers.
pub fn export<L: Layer>(layer: &mut L, sgd: &Sgd) -> Result<Vec<u8>, LayerError> {
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, param) in layer.params() {
        let shape = param.value.shape().to_vec();
        owned.push((
            name.to_owned(),
            shape.clone(),
            to_le_bytes(param.value.data()),
        ));
        if let Some(v) = sgd.velocity(name) {
            owned.push((format!("{name}{MOMENTUM_SUFFIX}"), shape, to_le_bytes(v)));
        }
    }
    for (name, buffer) in layer.buffers() {
        owned.push((
            name.to_owned(),
            buffer.shape().to_vec(),
            to_le_bytes(buffer.data()),
        ));
    }
    let extra = layer.extra_state().map(String::into_bytes);
    let mut views = owned
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes).map(|view| (name.as_str(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(state_error)?;
    if let Some(bytes) = &extra {
        views.push((
            EXTRA_STATE,
            TensorView::new(Dtype::U8, vec![bytes.len()], bytes).map_err(state_error)?,
        ));
    }
    // One metadata entry: a map of several would serialise in any order.
    let metadata = [("layer".to_owned(), L::NAME.to_owned())]
        .into_iter()
        .collect();
    safetensors::serialize(views, Some(metadata)).map_err(state_error)
}

/// Loads parameters and buffers (all required) and momentum buffers (optional; absent ones
/// are cleared) from safetensors bytes, and the extra state when there is some (absent, as in a weights
/// file, the layer's stays as it is). Nothing changes unless every tensor fits.
pub fn import<L: Layer>(layer: &mut L, sgd: &mut Sgd, bytes: &[u8]) -> Result<(), LayerError> {
    let file = SafeTensors::deserialize(bytes).map_err(state_error)?;
    let extra = match file.tensor(EXTRA_STATE) {
        Ok(view) if view.dtype() == Dtype::U8 => Some(
            String::from_utf8(view.data().to_vec())
                .map_err(|_| LayerError::BadState(format!("{EXTRA_STATE} is not UTF-8")))?,
        ),
        Ok(view) => {
            return Err(LayerError::BadState(format!(
                "{EXTRA_STATE} has dtype {}, expected U8",
                view.dtype()
            )));
        }
        Err(_) => None,
    };
    let buffer_names: Vec<&'static str> = layer.buffers().into_iter().map(|(n, _)| n).collect();
    let params = layer.params();
    let known = |n: &str| {
        n == EXTRA_STATE
            || buffer_names.contains(&n)
            || params
                .iter()
                .any(|(p, _)| *p == n || n.strip_suffix(MOMENTUM_SUFFIX) == Some(*p))
    };
    if let Some(unknown) = file.names().into_iter().find(|n| !known(n)) {
        return Err(LayerError::BadState(format!("unknown tensor {unknown:?}")));
    }
    let read = |name: &str, shape: &[usize]| -> Result<Option<Vec<f32>>, LayerError> {
        let view = match file.tensor(name) {
            Ok(view) => view,
            Err(_) => return Ok(None),
        };
        if view.dtype() != Dtype::F32 {
            return Err(LayerError::BadState(format!(
                "{name} has dtype {}, expected F32",
                view.dtype()
            )));
        }
        if view.shape() != shape {
            return Err(LayerError::BadState(format!(
                "{name} has shape {:?}, expected {shape:?}",
                view.shape()
            )));
        }
        Ok(Some(from_le_bytes(view.data())))
    };
    let mut loaded = Vec::new();
    for (name, param) in &params {
        let shape = param.value.shape();
        let value = read(name, shape)?
            .ok_or_else(|| LayerError::BadState(format!("missing tensor {name:?}")))?;
        let momentum = read(&format!("{name}{MOMENTUM_SUFFIX}"), shape)?;
        loaded.push((value, momentum));
    }
    drop(params);
    let mut buffers = Vec::new();
    for (name, buffer) in layer.buffers() {
        let value = read(name, buffer.shape())?
            .ok_or_else(|| LayerError::BadState(format!("missing tensor {name:?}")))?;
        buffers.push(value);
    }
    if let Some(extra) = &extra {
        layer.set_extra_state(extra)?;
    }
    for ((_, buffer), value) in layer.buffers().into_iter().zip(buffers) {
        *buffer = Tensor::new(buffer.shape().to_vec(), value)?;
    }
    let mut params = layer.params();
    for ((name, param), (value, momentum)) in params.iter_mut().zip(loaded) {
        param.value = Tensor::new(param.value.shape().to_vec(), value)?;
        sgd.set_velocity(name, momentum);
    }
    Ok(())
}
