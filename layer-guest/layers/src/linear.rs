//! `Linear` (as `torch.nn.Linear`): `y = x W^T + b` over the last dimension.

use mixnn_layer_sdk::{Init, Kernels, Layer, LayerError, Mode, Param, Tensor};
use serde::Deserialize;

/// The most weights a `Linear` may have (64 Mi, 256 MiB).
pub const MAX_WEIGHTS: usize = 1 << 26;

/// Settings of a [`Linear`] layer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearConfig {
    /// Size of each input row.
    pub in_features: usize,
    /// Size of each output row.
    pub out_features: usize,
    /// Whether to learn an additive bias (default true).
    #[serde(default = "yes")]
    pub bias: bool,
    /// Where the matrix products run (default: the host's kernels).
    #[serde(default)]
    pub kernels: Kernels,
}

fn yes() -> bool {
    true
}

/// A fully connected layer. Weight `[out, in]` and bias `[out]` start as PyTorch's defaults:
/// Kaiming-uniform (a = sqrt 5), i.e. uniform in `±1/sqrt(in)`, and the bias likewise.
#[derive(Debug)]
pub struct Linear {
    in_features: usize,
    out_features: usize,
    weight: Param,
    bias: Option<Param>,
    kernels: Kernels,
    /// The last training input, until its backward pass.
    input: Option<Tensor>,
    /// That input and its output's gradient, from the backward pass to the parameters'
    /// gradients.
    backward_kept: Option<(Tensor, Tensor)>,
}

impl Linear {
    /// Output of a forward pass without saving anything.
    fn affine(&self, input: &Tensor) -> Result<Tensor, LayerError> {
        let rows = input.rows_with_cols(self.in_features)?;
        let mut y = self.kernels.gemm(
            rows,
            self.in_features,
            self.out_features,
            input.data(),
            false,
            self.weight.value.data(),
            true,
        )?;
        if let Some(bias) = &self.bias {
            for row in y.chunks_exact_mut(self.out_features.max(1)) {
                for (v, b) in row.iter_mut().zip(bias.value.data()) {
                    *v += b;
                }
            }
        }
        Tensor::new(input.shape_with_last(self.out_features), y)
    }
}

impl Layer for Linear {
    type Config = LinearConfig;
    const NAME: &'static str = "linear";

    fn new(config: LinearConfig, init: &mut Init) -> Result<Self, LayerError> {
        let LinearConfig {
            in_features,
            out_features,
            bias,
            kernels,
        } = config;
        if in_features == 0 || out_features == 0 {
            return Err(LayerError::BadConfig("features must be positive".into()));
        }
        if in_features
            .checked_mul(out_features)
            .is_none_or(|n| n > MAX_WEIGHTS)
        {
            return Err(LayerError::BadConfig(format!(
                "{in_features}x{out_features} exceeds {MAX_WEIGHTS} weights"
            )));
        }
        let bound = 1.0 / (in_features as f32).sqrt();
        let weight = Param::new(init.uniform_tensor(vec![out_features, in_features], bound));
        let bias = bias.then(|| Param::new(init.uniform_tensor(vec![out_features], bound)));
        Ok(Linear {
            in_features,
            out_features,
            weight,
            bias,
            kernels,
            input: None,
            backward_kept: None,
        })
    }

    fn forward(&mut self, input: Tensor, mode: Mode) -> Result<Tensor, LayerError> {
        let y = self.affine(&input)?;
        self.input = (mode == Mode::Train).then_some(input);
        Ok(y)
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
        let input = self
            .input
            .take()
            .ok_or_else(|| LayerError::BadOrder("backward without a training forward".into()))?;
        grad_output.expect_shape(&input.shape_with_last(self.out_features), "linear gradient")?;
        let dx = if input_grad {
            let rows = input.rows_with_cols(self.in_features)?;
            // dx = g W  ([rows, out] x [out, in]), with the weights before this step's update.
            let dx = self.kernels.gemm(
                rows,
                self.out_features,
                self.in_features,
                grad_output.data(),
                false,
                self.weight.value.data(),
                false,
            )?;
            Some(Tensor::new(input.shape().to_vec(), dx)?)
        } else {
            None
        };
        self.backward_kept = Some((input, grad_output));
        Ok(dx)
    }

    fn param_grads(&mut self) -> Result<(), LayerError> {
        let (input, grad_output) = self
            .backward_kept
            .take()
            .ok_or_else(|| LayerError::BadOrder("parameter gradients without a backward".into()))?;
        let (rows, inp, out) = (
            input.rows_with_cols(self.in_features)?,
            self.in_features,
            self.out_features,
        );
        let g = grad_output.data();
        // dW = g^T x  ([out, rows] x [rows, in])
        let dw = self
            .kernels
            .gemm(out, rows, inp, g, true, input.data(), false)?;
        self.weight.grad = Tensor::new(vec![out, inp], dw)?;
        if let Some(bias) = &mut self.bias {
            let mut db = vec![0.0f32; out];
            for row in g.chunks_exact(out) {
                for (acc, v) in db.iter_mut().zip(row) {
                    *acc += v;
                }
            }
            bias.grad = Tensor::new(vec![out], db)?;
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
