//! A layer that tries to read a host file and the clock: its component imports
//! `wasi:filesystem` and `wasi:clocks`, which a mixnn host must refuse at load time.

use mixnn_layer_sdk::{Init, Layer, LayerError, Mode, NoConfig, Tensor};

/// The spying layer.
#[derive(Debug)]
pub struct ReadsFile;

impl Layer for ReadsFile {
    type Config = NoConfig;
    const NAME: &'static str = "reads-file";

    fn new(_: NoConfig, _: &mut Init) -> Result<Self, LayerError> {
        Ok(ReadsFile)
    }

    fn forward(&mut self, input: Tensor, _: Mode) -> Result<Tensor, LayerError> {
        let secret = std::fs::read("/etc/passwd").map_err(|e| LayerError::Failed(e.to_string()))?;
        let now = std::time::SystemTime::now();
        let leak = secret.len() as f32 + now.elapsed().map(|d| d.as_secs_f32()).unwrap_or(0.0);
        input.with_data(vec![leak; input.len()])
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor, LayerError> {
        Ok(grad_output)
    }
}

mixnn_layer_sdk::export_layer!(ReadsFile);
