//! How a layer of the in-process cascade runs: in the host's sandbox (the very code path a
//! host uses), or natively (the same layer code without wasm, as the baseline).

use mixnn_layer_sdk::{LayerError, LayerInfo, LayerRuntime, LossOutput, Mode, Tensor};
use mixnn_sandbox::{LayerSession, SandboxError, wit};

/// Where the layers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// As WebAssembly components in the host's sandbox.
    Wasm,
    /// The same layer code compiled natively.
    Native,
}

impl Backend {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Wasm => "wasm",
            Backend::Native => "native",
        }
    }
}

/// A failed call into a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerFailure {
    /// The sandbox refused or ended the call.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The layer reported an error.
    #[error("{0}")]
    Layer(#[from] LayerError),
}

/// One layer, whichever way it runs: the calls of the WIT `layer` interface.
pub trait LayerBackend {
    /// `init`.
    fn init(&mut self, config: &[u8]) -> Result<LayerInfo, LayerFailure>;
    /// `forward`.
    fn forward(&mut self, input: Tensor, mode: Mode) -> Result<Tensor, LayerFailure>;
    /// `backward`: the gradient of the input, if `input_grad`; `update` must follow.
    fn backward(
        &mut self,
        grad_output: Tensor,
        input_grad: bool,
    ) -> Result<Option<Tensor>, LayerFailure>;
    /// `update`: the parameters' gradients and the optimizer step.
    fn update(&mut self) -> Result<(), LayerFailure>;
    /// `backward` and `update` at once, for a caller with nothing to do in between: the
    /// gradient of the input.
    fn backward_step(&mut self, grad_output: Tensor) -> Result<Tensor, LayerFailure> {
        let g = self.backward(grad_output, true)?;
        self.update()?;
        g.ok_or_else(|| LayerError::Failed("the layer returned no input gradient".into()).into())
    }
    /// `loss`.
    fn loss(&mut self, input: Tensor, target: Tensor) -> Result<LossOutput, LayerFailure>;
    /// `export-state`.
    fn export_state(&mut self) -> Result<Vec<u8>, LayerFailure>;
    /// `import-state`.
    fn import_state(&mut self, state: &[u8]) -> Result<(), LayerFailure>;
}

/// A layer in a sandbox session.
pub struct WasmLayer(pub LayerSession);

/// A layer run natively.
pub struct NativeLayer(pub Box<dyn LayerRuntime>);

fn to_wit(t: Tensor) -> Result<wit::Tensor, LayerError> {
    let (shape, data) = t.into_parts();
    let shape = shape
        .into_iter()
        .map(|d| {
            u32::try_from(d).map_err(|_| LayerError::BadShape(format!("dimension {d} too large")))
        })
        .collect::<Result<_, _>>()?;
    Ok(wit::Tensor { shape, data })
}

fn from_wit(t: wit::Tensor) -> Result<Tensor, LayerError> {
    Tensor::new(t.shape.into_iter().map(|d| d as usize).collect(), t.data)
}

fn wit_mode(mode: Mode) -> wit::Mode {
    match mode {
        Mode::Train => wit::Mode::Train,
        Mode::Test => wit::Mode::Test,
    }
}

impl LayerBackend for WasmLayer {
    fn init(&mut self, config: &[u8]) -> Result<LayerInfo, LayerFailure> {
        let info = self.0.init(config)?;
        Ok(LayerInfo {
            name: info.name,
            is_loss: info.is_loss,
            param_count: info.param_count,
        })
    }

    fn forward(&mut self, input: Tensor, mode: Mode) -> Result<Tensor, LayerFailure> {
        Ok(from_wit(self.0.forward(&to_wit(input)?, wit_mode(mode))?)?)
    }

    fn backward(
        &mut self,
        grad_output: Tensor,
        input_grad: bool,
    ) -> Result<Option<Tensor>, LayerFailure> {
        let g = self.0.backward(&to_wit(grad_output)?, input_grad)?;
        Ok(g.map(from_wit).transpose()?)
    }

    fn update(&mut self) -> Result<(), LayerFailure> {
        Ok(self.0.update()?)
    }

    fn loss(&mut self, input: Tensor, target: Tensor) -> Result<LossOutput, LayerFailure> {
        let out = self.0.loss(&to_wit(input)?, &to_wit(target)?)?;
        Ok(LossOutput {
            loss: out.loss,
            grad_input: from_wit(out.grad_input)?,
        })
    }

    fn export_state(&mut self) -> Result<Vec<u8>, LayerFailure> {
        Ok(self.0.export_state()?)
    }

    fn import_state(&mut self, state: &[u8]) -> Result<(), LayerFailure> {
        Ok(self.0.import_state(state)?)
    }
}

impl LayerBackend for NativeLayer {
    fn init(&mut self, config: &[u8]) -> Result<LayerInfo, LayerFailure> {
        Ok(self.0.init(config)?)
    }

    fn forward(&mut self, input: Tensor, mode: Mode) -> Result<Tensor, LayerFailure> {
        Ok(self.0.forward(input, mode)?)
    }

    fn backward(
        &mut self,
        grad_output: Tensor,
        input_grad: bool,
    ) -> Result<Option<Tensor>, LayerFailure> {
        Ok(self.0.backward(grad_output, input_grad)?)
    }

    fn update(&mut self) -> Result<(), LayerFailure> {
        Ok(self.0.update()?)
    }

    fn loss(&mut self, input: Tensor, target: Tensor) -> Result<LossOutput, LayerFailure> {
        Ok(self.0.loss(input, target)?)
    }

    fn export_state(&mut self) -> Result<Vec<u8>, LayerFailure> {
        Ok(self.0.export_state()?)
    }

    fn import_state(&mut self, state: &[u8]) -> Result<(), LayerFailure> {
        Ok(self.0.import_state(state)?)
    }
}
