//! `MSELoss` (as `torch.nn.MSELoss`, mean reduction): a regression loss, for training a layer
//! to reproduce observed outputs.

use mixnn_layer_sdk::{Init, Layer, LayerError, LossOutput, Mode, NoConfig, Tensor};

/// The mean of the squared differences between input and target (of one shape). Its forward
/// passes the input through; training goes through `loss`.
#[derive(Debug, Default)]
pub struct MseLoss;

impl Layer for MseLoss {
    type Config = NoConfig;
    const NAME: &'static str = "mse-loss";
    const IS_LOSS: bool = true;

    fn new(_: NoConfig, _: &mut Init) -> Result<Self, LayerError> {
        Ok(MseLoss)
    }

    fn forward(&mut self, input: Tensor, _: Mode) -> Result<Tensor, LayerError> {
        Ok(input)
    }

    fn backward(&mut self, _: Tensor) -> Result<Tensor, LayerError> {
        Err(LayerError::Unsupported(
            "a loss layer's gradient comes from `loss`".into(),
        ))
    }

    fn loss(&mut self, input: Tensor, target: Tensor) -> Result<LossOutput, LayerError> {
        target.expect_shape(input.shape(), "mse target")?;
        if input.is_empty() {
            return Err(LayerError::BadShape("an empty batch".into()));
        }
        let n = input.len() as f32;
        let mut total = 0.0f32;
        let mut grad = input.clone();
        for (g, t) in grad.data_mut().iter_mut().zip(target.data()) {
            let d = *g - t;
            total += d * d;
            *g = 2.0 * d / n;
        }
        Ok(LossOutput {
            loss: total / n,
            grad_input: grad,
        })
    }
}
