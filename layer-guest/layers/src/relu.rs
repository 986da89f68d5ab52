//! `ReLU`, and the fused `Linear` + `ReLU` that the paper puts on one server.

use mixnn_layer_sdk::{Init, Layer, LayerError, Mode, NoConfig, Param, Tensor};

use crate::{Linear, LinearConfig};

/// `max(x, 0)` elementwise.
#[derive(Debug, Default)]
pub struct Relu {
    /// Which inputs were positive in the last training forward.
    active: Option<Vec<bool>>,
}

impl Relu {
    fn apply(&mut self, mut x: Tensor, mode: Mode) -> Tensor {
        let mut active = Vec::new();
        if mode == Mode::Train {
            active.reserve(x.len());
        }
        for v in x.data_mut() {
            let on = *v > 0.0;
            if !on {
                *v = 0.0;
            }
            if mode == Mode::Train {
                active.push(on);
            }
        }
        self.active = (mode == Mode::Train).then_some(active);
        x
    }

    fn gradient(&mut self, mut grad: Tensor) -> Result<Tensor, LayerError> {
        let active = self
            .active
            .take()
            .ok_or_else(|| LayerError::BadOrder("backward without a training forward".into()))?;
        if active.len() != grad.len() {
            return Err(LayerError::BadShape(format!(
                "relu gradient has {} values, the input had {}",
                grad.len(),
                active.len()
            )));
        }
        for (g, on) in grad.data_mut().iter_mut().zip(active) {
            if !on {
                *g = 0.0;
            }
        }
        Ok(grad)
    }
}

impl Layer for Relu {
    type Config = NoConfig;
    const NAME: &'static str = "relu";

    fn new(_: NoConfig, _: &mut Init) -> Result<Self, LayerError> {
        Ok(Relu::default())
    }

    fn forward(&mut self, input: Tensor, mode: Mode) -> Result<Tensor, LayerError> {
        Ok(self.apply(input, mode))
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor, LayerError> {
        self.gradient(grad_output)
    }
}

/// `Linear` followed by `ReLU`, in one component.
#[derive(Debug)]
pub struct LinearRelu {
    linear: Linear,
    relu: Relu,
}

impl Layer for LinearRelu {
    type Config = LinearConfig;
    const NAME: &'static str = "linear-relu";

    fn new(config: LinearConfig, init: &mut Init) -> Result<Self, LayerError> {
        Ok(LinearRelu {
            linear: Linear::new(config, init)?,
            relu: Relu::default(),
        })
    }

    fn forward(&mut self, input: Tensor, mode: Mode) -> Result<Tensor, LayerError> {
        let y = self.linear.forward(input, mode)?;
        Ok(self.relu.apply(y, mode))
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor, LayerError> {
        let g = self.relu.gradient(grad_output)?;
        self.linear.backward(g)
    }

    fn backward_input(
        &mut self,
        grad_output: Tensor,
        input_grad: bool,
    ) -> Result<Option<Tensor>, LayerError> {
        let g = self.relu.gradient(grad_output)?;
        self.linear.backward_input(g, input_grad)
    }

    fn param_grads(&mut self) -> Result<(), LayerError> {
        self.linear.param_grads()
    }

    fn params(&mut self) -> Vec<(&'static str, &mut Param)> {
        self.linear.params()
    }
}
