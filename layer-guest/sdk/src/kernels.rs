//! Heavy arithmetic for layers. Inside a component, [`Kernels::Host`] calls the host's native
//! kernels through the WIT import; [`Kernels::Guest`] runs the same algorithm as wasm code
//! (slower under the host's deadline checks: kept to measure the difference). Outside wasm both
//! run natively.

use serde::Deserialize;

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
}
