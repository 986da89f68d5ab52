//! `Conv2d` (as `torch.nn.Conv2d` without dilation or groups): filters slid over `[N, C, H, W]`
//! inputs, the products in the host's convolution kernels.

use mixnn_layer_sdk::{Conv2d as Geometry, Init, Kernels, Layer, LayerError, Mode, Param, Tensor};
use serde::Deserialize;

use crate::{Pair, linear::MAX_WEIGHTS};

/// The largest kernel side, stride or padding a layer accepts.
pub const MAX_SIDE: usize = 1 << 16;

/// Settings of a [`Conv2d`] layer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2dConfig {
    /// Channels of the input.
    pub in_channels: usize,
    /// Channels of the output (filters).
    pub out_channels: usize,
    /// Filter size.
    pub kernel_size: Pair,
    /// Step between outputs (default 1).
    #[serde(default = "one")]
    pub stride: Pair,
    /// Zeros added on each side (default 0).
    #[serde(default)]
    pub padding: Pair,
    /// Whether to learn an additive bias per output channel (default true).
    #[serde(default = "yes")]
    pub bias: bool,
    /// Where the convolutions run (default: the host's kernels).
    #[serde(default)]
    pub kernels: Kernels,
}

fn one() -> Pair {
    Pair::Square(1)
}

fn yes() -> bool {
    true
}

/// A 2-D convolution. Weight `[out, in, kh, kw]` and bias `[out]` start as PyTorch's defaults:
/// uniform in `±1/sqrt(in * kh * kw)`.
#[derive(Debug)]
pub struct Conv2d {
    in_channels: usize,
    out_channels: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    weight: Param,
    bias: Option<Param>,
    kernels: Kernels,
    /// The last training input and its geometry, until its backward pass.
    input: Option<(Tensor, Geometry)>,
    /// That input, its geometry and its output's gradient, from the backward pass to the
    /// parameters' gradients.
    backward_kept: Option<(Tensor, Geometry, Tensor)>,
}

impl Conv2d {
    /// The geometry of a batch `input`, which must be `[N, in_channels, H, W]`.
    fn geometry(&self, input: &Tensor) -> Result<(Geometry, Vec<usize>), LayerError> {
        let &[batch, channels, height, width] = input.shape() else {
            return Err(LayerError::BadShape(format!(
                "conv2d takes [N, C, H, W] inputs, not {:?}",
                input.shape()
            )));
        };
        if channels != self.in_channels {
            return Err(LayerError::BadShape(format!(
                "conv2d takes {} channels, not {channels}",
                self.in_channels
            )));
        }
        let g = Geometry {
            batch,
            in_channels: channels,
            height,
            width,
            out_channels: self.out_channels,
            kernel_h: self.kernel.0,
            kernel_w: self.kernel.1,
            stride_h: self.stride.0,
            stride_w: self.stride.1,
            pad_h: self.padding.0,
            pad_w: self.padding.1,
        };
        let (out_h, out_w) = g
            .out_size()
            .map_err(|e| LayerError::BadShape(e.to_string()))?;
        Ok((g, vec![batch, self.out_channels, out_h, out_w]))
    }
}

impl Layer for Conv2d {
    type Config = Conv2dConfig;
    const NAME: &'static str = "conv2d";

    fn new(config: Conv2dConfig, init: &mut Init) -> Result<Self, LayerError> {
        let Conv2dConfig {
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            bias,
            kernels,
        } = config;
        let (kernel, stride, padding) = (kernel_size.sides(), stride.sides(), padding.sides());
        let bad = |what: String| Err(LayerError::BadConfig(what));
        if in_channels == 0 || out_channels == 0 {
            return bad("channels must be positive".into());
        }
        if kernel.0 == 0 || kernel.1 == 0 || stride.0 == 0 || stride.1 == 0 {
            return bad("kernel sizes and strides must be positive".into());
        }
        if [kernel.0, kernel.1, stride.0, stride.1, padding.0, padding.1]
            .iter()
            .any(|&v| v > MAX_SIDE)
        {
            return bad(format!(
                "kernel sizes, strides and paddings are at most {MAX_SIDE}"
            ));
        }
        let fan_in = in_channels
            .checked_mul(kernel.0)
            .and_then(|v| v.checked_mul(kernel.1));
        let Some(fan_in) = fan_in.filter(|f| {
            f.checked_mul(out_channels)
                .is_some_and(|n| n <= MAX_WEIGHTS)
        }) else {
            return bad(format!(
                "{out_channels}x{in_channels}x{}x{} exceeds {MAX_WEIGHTS} weights",
                kernel.0, kernel.1
            ));
        };
        let bound = 1.0 / (fan_in as f32).sqrt();
        let weight = Param::new(
            init.uniform_tensor(vec![out_channels, in_channels, kernel.0, kernel.1], bound),
        );
        let bias = bias.then(|| Param::new(init.uniform_tensor(vec![out_channels], bound)));
        Ok(Conv2d {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            weight,
            bias,
            kernels,
            input: None,
            backward_kept: None,
        })
    }

    fn forward(&mut self, input: Tensor, mode: Mode) -> Result<Tensor, LayerError> {
        let (g, shape) = self.geometry(&input)?;
        let mut y = self
            .kernels
            .conv2d(&g, input.data(), self.weight.value.data())?;
        if let Some(bias) = &self.bias {
            // Outputs are at least 1x1, so planes are never empty.
            let plane = shape[2] * shape[3];
            for (k, channel) in y.chunks_exact_mut(plane.max(1)).enumerate() {
                let b = bias.value.data()[k % self.out_channels];
                for v in channel {
                    *v += b;
                }
            }
        }
        self.input = (mode == Mode::Train).then_some((input, g));
        Tensor::new(shape, y)
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor, LayerError> {
        let dx = self.backward_input(grad_output, true)?;
        self.param_grads()?;
        dx.ok_or_else(|| LayerError::Failed("no input gradient (a bug)".into()))
    }

    fn backward_input(
        &mut self,
        grad_output: Tensor,
        input_grad: bool,
    ) -> Result<Option<Tensor>, LayerError> {
        let (input, g) = self
            .input
            .take()
            .ok_or_else(|| LayerError::BadOrder("backward without a training forward".into()))?;
        let (out_h, out_w) = g
            .out_size()
            .map_err(|e| LayerError::Failed(e.to_string()))?;
        grad_output.expect_shape(&[g.batch, g.out_channels, out_h, out_w], "conv2d gradient")?;
        let dx = if input_grad {
            // With the weights before this step's update.
            let dx =
                self.kernels
                    .conv2d_input_grad(&g, grad_output.data(), self.weight.value.data())?;
            Some(Tensor::new(input.shape().to_vec(), dx)?)
        } else {
            None
        };
        self.backward_kept = Some((input, g, grad_output));
        Ok(dx)
    }

    fn param_grads(&mut self) -> Result<(), LayerError> {
        let (input, g, grad_output) = self
            .backward_kept
            .take()
            .ok_or_else(|| LayerError::BadOrder("parameter gradients without a backward".into()))?;
        let dy = grad_output.data();
        let dw = self.kernels.conv2d_weight_grad(&g, input.data(), dy)?;
        self.weight.grad = Tensor::new(self.weight.value.shape().to_vec(), dw)?;
        if let Some(bias) = &mut self.bias {
            let plane = grad_output.shape()[2] * grad_output.shape()[3];
            let mut db = vec![0.0f32; self.out_channels];
            for (k, channel) in dy.chunks_exact(plane.max(1)).enumerate() {
                db[k % self.out_channels] += channel.iter().sum::<f32>();
            }
            bias.grad = Tensor::new(vec![self.out_channels], db)?;
        }
        Ok(())
    }

    fn params(&mut self) -> Vec<(&'static str, &mut Param)> {
        let mut params = vec![("weight", &mut self.weight)];
        if let Some(bias) = &mut self.bias {
            params.push(("bias", bias));
        }
        params
    }
}
