//! Heavy arithmetic for layers. Inside a component, [`Kernels::Host`] calls the host's native
//! kernels through the WIT import; [`Kernels::Guest`] runs the same algorithm as wasm code
//! (slower under the host's deadline checks: kept to measure the difference). Outside wasm both
//! run natively.

use serde::Deserialize;

pub use mixnn_kernels::Conv2d;

use crate::LayerError;

/// Where a layer's matrix products run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernels {
    /// The host's native kernels (the `kernels` import).
    #[default]
    Host,
    /// Compiled into the component.
    Guest,
}

impl Kernels {
    /// `c = op(a) * op(b)` with `op(a)` of `m x k` and `op(b)` of `k x n`, row-major; a `t_*`
    /// flag says the slice holds the transpose.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        self,
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        t_a: bool,
        b: &[f32],
        t_b: bool,
    ) -> Result<Vec<f32>, LayerError> {
        #[cfg(target_arch = "wasm32")]
        if self == Kernels::Host {
            let dim = |d: usize| {
                u32::try_from(d).map_err(|_| LayerError::Failed(format!("dimension {d} too large")))
            };
            return crate::bindings::mixnn::layer::kernels::gemm(
                dim(m)?,
                dim(k)?,
                dim(n)?,
                bytemuck::cast_slice(a),
                t_a,
                bytemuck::cast_slice(b),
                t_b,
            )
            .map_err(LayerError::Failed);
        }
        use mixnn_kernels::Layout;
        mixnn_kernels::gemm(
            m,
            k,
            n,
            a,
            Layout::from_flag(t_a),
            b,
            Layout::from_flag(t_b),
        )
        .map_err(|e| LayerError::Failed(e.to_string()))
    }

    /// The convolution of `x` (`[batch, in_channels, height, width]`) with the filters `w`
    /// (`[out_channels, in_channels, kernel_h, kernel_w]`), without bias:
    /// `[batch, out_channels, out_h, out_w]`.
    pub fn conv2d(self, g: &Conv2d, x: &[f32], w: &[f32]) -> Result<Vec<f32>, LayerError> {
        self.conv(ConvKernel::Forward, g, x, w)
    }

    /// The gradient with respect to the input of [`Kernels::conv2d`], from `dy` (shaped as its
    /// output) and the filters `w`.
    pub fn conv2d_input_grad(
        self,
        g: &Conv2d,
        dy: &[f32],
        w: &[f32],
    ) -> Result<Vec<f32>, LayerError> {
        self.conv(ConvKernel::InputGrad, g, dy, w)
    }

    /// The gradient with respect to the filters of [`Kernels::conv2d`], from its input `x` and
    /// `dy`, summed over the batch.
    pub fn conv2d_weight_grad(
        self,
        g: &Conv2d,
        x: &[f32],
        dy: &[f32],
    ) -> Result<Vec<f32>, LayerError> {
        self.conv(ConvKernel::WeightGrad, g, x, dy)
    }

    fn conv(
        self,
        kernel: ConvKernel,
        g: &Conv2d,
        a: &[f32],
        b: &[f32],
    ) -> Result<Vec<f32>, LayerError> {
        #[cfg(target_arch = "wasm32")]
        if self == Kernels::Host {
            use crate::bindings::mixnn::layer::kernels as host;
            let d = |v: usize| {
                u32::try_from(v).map_err(|_| LayerError::Failed(format!("size {v} too large")))
            };
            let geometry = host::Conv2dGeometry {
                batch: d(g.batch)?,
                in_channels: d(g.in_channels)?,
                height: d(g.height)?,
                width: d(g.width)?,
                out_channels: d(g.out_channels)?,
                kernel_h: d(g.kernel_h)?,
                kernel_w: d(g.kernel_w)?,
                stride_h: d(g.stride_h)?,
                stride_w: d(g.stride_w)?,
                pad_h: d(g.pad_h)?,
                pad_w: d(g.pad_w)?,
            };
            let (a, b) = (bytemuck::cast_slice(a), bytemuck::cast_slice(b));
            return match kernel {
                ConvKernel::Forward => host::conv2d(geometry, a, b),
                ConvKernel::InputGrad => host::conv2d_input_grad(geometry, a, b),
                ConvKernel::WeightGrad => host::conv2d_weight_grad(geometry, a, b),
            }
            .map_err(LayerError::Failed);
        }
        match kernel {
            ConvKernel::Forward => mixnn_kernels::conv2d(g, a, b),
            ConvKernel::InputGrad => mixnn_kernels::conv2d_input_grad(g, a, b),
            ConvKernel::WeightGrad => mixnn_kernels::conv2d_weight_grad(g, a, b),
        }
        .map_err(|e| LayerError::Failed(e.to_string()))
    }
}

/// Which of the three convolution kernels.
#[derive(Debug, Clone, Copy)]
enum ConvKernel {
    Forward,
    InputGrad,
    WeightGrad,
}
