//! `Flatten` (as `torch.nn.Flatten()`, `start_dim = 1`): `[N, d1, d2, ...]` to
//! `[N, d1 * d2 * ...]`, for a convolutional stack to feed a `Linear`.

use mixnn_layer_sdk::{Init, Layer, LayerError, Mode, NoConfig, Tensor};

/// Keeps the batch dimension and flattens the rest; the data, row-major, is unchanged.
#[derive(Debug, Default)]
pub struct Flatten {
    /// The shapes of the last training input and of its output.
    kept: Option<(Vec<usize>, Vec<usize>)>,
}

/// `[N, d1 * d2 * ...]` for `shape`, which must have a batch and at least one more dimension
/// (PyTorch refuses `start_dim = 1` on fewer).
fn flattened(shape: &[usize]) -> Result<Vec<usize>, LayerError> {
    let [n, rest @ ..] = shape else {
        return Err(LayerError::BadShape(
            "flatten takes [N, ...], got a scalar".into(),
        ));
    };
    if rest.is_empty() {
        return Err(LayerError::BadShape(format!(
            "flatten takes [N, d1, ...], got {shape:?}"
        )));
    }
    // Checked: with N = 0 the input's size says nothing of the other dimensions' product.
    let features = rest
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| LayerError::BadShape(format!("flatten: {shape:?} overflows")))?;
    Ok(vec![*n, features])
}

impl Layer for Flatten {
    type Config = NoConfig;
    const NAME: &'static str = "flatten";

    fn new(_: NoConfig, _: &mut Init) -> Result<Self, LayerError> {
        Ok(Flatten::default())
    }

    fn forward(&mut self, input: Tensor, mode: Mode) -> Result<Tensor, LayerError> {
        let out_shape = flattened(input.shape())?;
        let (in_shape, data) = input.into_parts();
        self.kept = (mode == Mode::Train).then(|| (in_shape, out_shape.clone()));
        Tensor::new(out_shape, data)
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor, LayerError> {
        let (in_shape, out_shape) = self
            .kept
            .take()
            .ok_or_else(|| LayerError::BadOrder("backward without a training forward".into()))?;
        grad_output.expect_shape(&out_shape, "flatten gradient")?;
        let (_, data) = grad_output.into_parts();
        Tensor::new(in_shape, data)
    }
}
