//! `Identity`: what a dummy host runs. It passes data on unchanged, both ways.

use mixnn_layer_sdk::{Init, Layer, LayerError, Mode, NoConfig, Tensor};

/// Passes its input (and gradient) through.
#[derive(Debug, Default)]
pub struct Identity;

impl Layer for Identity {
    type Config = NoConfig;
    const NAME: &'static str = "identity";

    fn new(_: NoConfig, _: &mut Init) -> Result<Self, LayerError> {
        Ok(Identity)
    }

    fn forward(&mut self, input: Tensor, _: Mode) -> Result<Tensor, LayerError> {
        Ok(input)
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor, LayerError> {
        Ok(grad_output)
    }
}
