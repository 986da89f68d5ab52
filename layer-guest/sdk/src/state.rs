//! A layer's state as safetensors bytes: each parameter under its own name, and each momentum
//! buffer under `<name>.momentum_buffer`, all `F32`, so a state can be opened by any
//! safetensors reader (PyTorch, numpy) and checkpoints restore training exactly.

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::{Layer, LayerError, Sgd, Tensor};

/// The suffix of a momentum buffer's name.
pub const MOMENTUM_SUFFIX: &str = ".momentum_buffer";

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

/// Serialises the parameters of `layer` and the optimizer's momentum buffers.
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
    let views = owned
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes).map(|view| (name.as_str(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(state_error)?;
    let metadata = [("layer".to_owned(), L::NAME.to_owned())]
        .into_iter()
        .collect();
    safetensors::serialize(views, Some(metadata)).map_err(state_error)
}

/// Loads parameters (all required) and momentum buffers (optional; absent ones are cleared)
/// from safetensors bytes. Nothing changes unless every tensor fits.
pub fn import<L: Layer>(layer: &mut L, sgd: &mut Sgd, bytes: &[u8]) -> Result<(), LayerError> {
    let file = SafeTensors::deserialize(bytes).map_err(state_error)?;
    let mut params = layer.params();
    let known = |n: &str| {
        params
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
    for ((name, param), (value, momentum)) in params.iter_mut().zip(loaded) {
        param.value = Tensor::new(param.value.shape().to_vec(), value)?;
        sgd.set_velocity(name, momentum);
    }
    Ok(())
}
