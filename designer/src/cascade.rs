//! The in-process cascade: the model's layers called one after another, each through its own
//! backend (a sandbox session, exactly as a host runs it, or native code).

use mixnn_layer_sdk::{LayerInfo, Mode, Tensor};
use mixnn_sandbox::{Sandbox, SandboxError};

use crate::{
    backend::{Backend, LayerBackend, LayerFailure, NativeLayer, WasmLayer},
    spec::{ComponentSource, ModelSpec, SpecError},
};

/// Why a cascade could not be built or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CascadeError {
    /// The spec is unusable.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A component could not be read or loaded.
    #[error("layer {index} ({component}): {source}")]
    Load {
        /// Layer index.
        index: usize,
        /// The spec's component field.
        component: String,
        /// What went wrong.
        source: LoadError,
    },
    /// A call into a layer failed.
    #[error("layer {index} ({name}) failed in {op}: {source}")]
    Call {
        /// Layer index.
        index: usize,
        /// Layer name.
        name: String,
        /// The operation.
        op: &'static str,
        /// The failure.
        source: LayerFailure,
    },
    /// A layer's backward pass returned no gradient of its input, which was asked for.
    #[error("layer {0} returned no gradient of its input")]
    NoGradient(usize),
    /// A loss layer before the last.
    #[error("layer {0} is a loss layer but not the last")]
    LossNotLast(usize),
    /// The last layer computes no loss.
    #[error("the last layer must be a loss layer")]
    NoLoss,
    /// A batch whose tensors do not hold together.
    #[error("a batch: {0}")]
    Batch(mixnn_layer_sdk::LayerError),
    /// The data order does not fit the run.
    #[error(transparent)]
    Order(#[from] crate::order::OrderError),
    /// A test pass's predictions could not be scored.
    #[error("scoring the test pass: {0}")]
    Metrics(#[from] crate::metrics::MetricsError),
    /// A layer that gives no test output: the loss, or past the model.
    #[error("layer {layer} has no test output: the model's layers before the loss are 0 to {last}")]
    NoTestOutput {
        /// The layer asked for.
        layer: usize,
        /// The last layer before the loss.
        last: usize,
    },
}

/// Why a layer's component could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The spec names a standard component that does not exist.
    #[error("not a standard component")]
    NotStandard,
    /// Native mode runs the standard layers only.
    #[error("native mode runs the standard layers only; use wasm mode")]
    NotNative,
    /// Wasm mode needs a sandbox.
    #[error("wasm mode needs a sandbox")]
    NoSandbox,
    /// The component file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The sandbox refused or could not start it.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

struct Layer {
    info: LayerInfo,
    backend: Box<dyn LayerBackend>,
}

/// The layers of a model, ready to train.
pub struct Cascade {
    layers: Vec<Layer>,
    backend: Backend,
}

impl std::fmt::Debug for Cascade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.layers.iter().map(|l| l.info.name.as_str()).collect();
        f.debug_struct("Cascade")
            .field("backend", &self.backend)
            .field("layers", &names)
            .finish()
    }
}

/// The bytes of layer `i`'s component: a standard one, or the file the spec names.
pub fn component_bytes(spec: &ModelSpec, i: usize) -> Result<Vec<u8>, CascadeError> {
    let load_error = |source: LoadError| CascadeError::Load {
        index: i,
        component: spec.layers[i].component.clone(),
        source,
    };
    match spec.source(i) {
        ComponentSource::Standard(name) => mixnn_components::standard(&name)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| load_error(LoadError::NotStandard)),
        ComponentSource::File(path) => {
            std::fs::read(&path).map_err(|source| load_error(LoadError::Read { path, source }))
        }
    }
}

/// Builds and initialises layer `i` of `spec` on `backend`.
pub fn build_layer(
    spec: &ModelSpec,
    i: usize,
    backend: Backend,
    sandbox: Option<&Sandbox>,
) -> Result<(LayerInfo, Box<dyn LayerBackend>), CascadeError> {
    let component = spec.layers[i].component.clone();
    let load_error = |source: LoadError| CascadeError::Load {
        index: i,
        component: component.clone(),
        source,
    };
    let mut layer: Box<dyn LayerBackend> = match (backend, spec.source(i)) {
        (Backend::Native, ComponentSource::Standard(name)) => Box::new(NativeLayer(
            mixnn_layers::native(&name).ok_or_else(|| load_error(LoadError::NotNative))?,
        )),
        (Backend::Native, ComponentSource::File(_)) => {
            return Err(load_error(LoadError::NotNative));
        }
        (Backend::Wasm, _) => {
            let sandbox = sandbox.ok_or_else(|| load_error(LoadError::NoSandbox))?;
            let bytes = component_bytes(spec, i)?;
            let module = sandbox
                .load(&bytes)
                .map_err(|e| load_error(LoadError::Sandbox(e)))?;
            Box::new(WasmLayer(
                sandbox
                    .start(&module)
                    .map_err(|e| load_error(LoadError::Sandbox(e)))?,
            ))
        }
    };
    let config = spec.init_config(i)?.to_bytes();
    let info = layer.init(&config).map_err(|source| CascadeError::Call {
        index: i,
        name: component.clone(),
        op: "init",
        source,
    })?;
    Ok((info, layer))
}

impl Cascade {
    /// Builds and initialises every layer of `spec`. `Backend::Wasm` needs a sandbox; calls
    /// must then run on one of its worker threads.
    pub fn build(
        spec: &ModelSpec,
        backend: Backend,
        sandbox: Option<&Sandbox>,
    ) -> Result<Self, CascadeError> {
        let mut layers = Vec::with_capacity(spec.layers.len());
        for i in 0..spec.layers.len() {
            let (info, backend) = build_layer(spec, i, backend, sandbox)?;
            layers.push(Layer { info, backend });
        }
        let last = layers.len() - 1;
        if let Some(i) = layers
            .iter()
            .position(|l| l.info.is_loss)
            .filter(|&i| i != last)
        {
            return Err(CascadeError::LossNotLast(i));
        }
        if !layers[last].info.is_loss {
            return Err(CascadeError::NoLoss);
        }
        Ok(Cascade { layers, backend })
    }

    /// How the layers run.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What each layer reported at `init`.
    pub fn infos(&self) -> Vec<&LayerInfo> {
        self.layers.iter().map(|l| &l.info).collect()
    }

    fn call<R>(
        &mut self,
        index: usize,
        op: &'static str,
        f: impl FnOnce(&mut dyn LayerBackend) -> Result<R, LayerFailure>,
    ) -> Result<R, CascadeError> {
        let layer = &mut self.layers[index];
        f(layer.backend.as_mut()).map_err(|source| CascadeError::Call {
            index,
            name: layer.info.name.clone(),
            op,
            source,
        })
    }

    /// One SGD step on a batch: forward through every layer, the loss, backward (each layer
    /// applies its optimizer). Returns the batch's mean loss.
    pub fn train_step(&mut self, input: Tensor, target: Tensor) -> Result<f32, CascadeError> {
        let last = self.layers.len() - 1;
        let mut x = input;
        for i in 0..last {
            x = self.call(i, "forward", |l| l.forward(x, Mode::Train))?;
        }
        let out = self.call(last, "loss", |l| l.loss(x, target))?;
        let mut g = Some(out.grad_input);
        for i in (0..last).rev() {
            let grad_output = g.take().ok_or(CascadeError::NoGradient(i + 1))?;
            // The model's input needs no gradient.
            g = self.call(i, "backward", |l| l.backward(grad_output, i > 0))?;
            self.call(i, "update", |l| l.update())?;
        }
        Ok(out.loss)
    }

    /// The model's output for a batch (test mode), from the layer before the loss.
    pub fn predict(&mut self, input: Tensor) -> Result<Tensor, CascadeError> {
        let mut x = input;
        for i in 0..self.layers.len() - 1 {
            x = self.call(i, "forward", |l| l.forward(x, Mode::Test))?;
        }
        Ok(x)
    }

    /// Layer `end`'s output for a batch (test mode): the features a test pass that ends
    /// there gives (`mixnn predict --test-end`). `end` is a layer before the loss.
    pub fn predict_to(&mut self, input: Tensor, end: usize) -> Result<Tensor, CascadeError> {
        let last = self.layers.len() - 1;
        if end >= last {
            return Err(CascadeError::NoTestOutput {
                layer: end,
                last: last.saturating_sub(1),
            });
        }
        let mut x = input;
        for i in 0..=end {
            x = self.call(i, "forward", |l| l.forward(x, Mode::Test))?;
        }
        Ok(x)
    }

    /// The shape of every layer's output for `input` in test mode, loss layer excluded (how
    /// a designer sizes a session's frames). Changes no state of the usual layers.
    pub fn shapes(&mut self, input: Tensor) -> Result<Vec<Vec<usize>>, CascadeError> {
        let mut x = input;
        let mut shapes = Vec::new();
        for i in 0..self.layers.len() - 1 {
            x = self.call(i, "forward", |l| l.forward(x, Mode::Test))?;
            shapes.push(x.shape().to_vec());
        }
        Ok(shapes)
    }

    /// Sets the layers' states (safetensors bytes, by layer, as [`Cascade::export_states`]
    /// gives them); an empty state leaves its layer as it is.
    pub fn import_states(&mut self, states: &[Vec<u8>]) -> Result<(), CascadeError> {
        for (i, state) in states.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
            self.call(i, "import-state", |l| l.import_state(state))?;
        }
        Ok(())
    }

    /// Every layer's state (parameters and optimizer buffers), as safetensors bytes.
    pub fn export_states(&mut self) -> Result<Vec<Vec<u8>>, CascadeError> {
        (0..self.layers.len())
            .map(|i| self.call(i, "export-state", |l| l.export_state()))
            .collect()
    }
}
