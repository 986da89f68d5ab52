//! `LogSoftmax`, `NLLLoss` and their fusion, softmax cross-entropy.
//!
//! `exp` and `ln` come from `libm`, the same code in a component and natively, so the two give
//! bit-identical results.

use mixnn_layer_sdk::{Init, Layer, LayerError, LossOutput, Mode, NoConfig, Tensor};

/// `log_softmax` over the last dimension of `x`, row by row, as PyTorch computes it:
/// `x - max - ln(sum(exp(x - max)))`.
pub fn log_softmax(x: &Tensor) -> Result<Tensor, LayerError> {
    let cols = *x
        .shape()
        .last()
        .ok_or_else(|| LayerError::BadShape("scalar input".into()))?;
    let mut out = x.clone();
    if cols == 0 {
        return Ok(out);
    }
    for row in out.data_mut().chunks_exact_mut(cols) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|v| libm::expf(v - max)).sum();
        let shift = max + libm::logf(sum);
        for v in row.iter_mut() {
            *v -= shift;
        }
    }
    Ok(out)
}

/// Checks a target of class indices against `[batch, classes]` input, returning the indices.
#[allow(clippy::cast_possible_truncation)] // targets are checked to be small whole numbers first
fn classes(input: &Tensor, target: &Tensor) -> Result<(usize, usize, Vec<usize>), LayerError> {
    let [batch, n_classes] = *input.shape() else {
        return Err(LayerError::BadShape(format!(
            "loss input must be [batch, classes], got {:?}",
            input.shape()
        )));
    };
    target.expect_shape(&[batch], "loss target")?;
    if batch == 0 {
        return Err(LayerError::BadShape("empty batch".into()));
    }
    let indices = target
        .data()
        .iter()
        .map(|&t| {
            let ok = t.is_finite() && t >= 0.0 && t.fract() == 0.0 && (t as usize) < n_classes;
            ok.then_some(t as usize).ok_or_else(|| {
                LayerError::BadShape(format!("target {t} is not a class in 0..{n_classes}"))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((batch, n_classes, indices))
}

/// `LogSoftmax` over the last dimension.
#[derive(Debug, Default)]
pub struct LogSoftmax {
    output: Option<Tensor>,
}

impl Layer for LogSoftmax {
    type Config = NoConfig;
    const NAME: &'static str = "log-softmax";

    fn new(_: NoConfig, _: &mut Init) -> Result<Self, LayerError> {
        Ok(LogSoftmax::default())
    }

    fn forward(&mut self, input: Tensor, mode: Mode) -> Result<Tensor, LayerError> {
        let y = log_softmax(&input)?;
        self.output = (mode == Mode::Train).then(|| y.clone());
        Ok(y)
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor, LayerError> {
        let y = self
            .output
            .take()
            .ok_or_else(|| LayerError::BadOrder("backward without a training forward".into()))?;
        grad_output.expect_shape(y.shape(), "log-softmax gradient")?;
        let cols = y.shape().last().copied().unwrap_or(1).max(1);
        let mut dx = grad_output;
        // dx = g - softmax(x) * sum(g), row by row.
        for (g, y) in dx
            .data_mut()
            .chunks_exact_mut(cols)
            .zip(y.data().chunks_exact(cols))
        {
            let total: f32 = g.iter().sum();
            for (g, y) in g.iter_mut().zip(y) {
                *g -= libm::expf(*y) * total;
            }
        }
        Ok(dx)
    }
}

/// `NLLLoss` with mean reduction: input `[batch, classes]` of log-probabilities, target
/// `[batch]` of class indices. Its forward passes the input through (so a test pass may end on
/// it); training goes through `loss`.
#[derive(Debug, Default)]
pub struct NllLoss;

impl Layer for NllLoss {
    type Config = NoConfig;
    const NAME: &'static str = "nll-loss";
    const IS_LOSS: bool = true;

    fn new(_: NoConfig, _: &mut Init) -> Result<Self, LayerError> {
        Ok(NllLoss)
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
        let (batch, n_classes, targets) = classes(&input, &target)?;
        let scale = 1.0 / batch as f32;
        let mut total = 0.0f32;
        let mut grad = Tensor::zeros(vec![batch, n_classes]);
        for (i, &t) in targets.iter().enumerate() {
            total += input.data()[i * n_classes + t];
            grad.data_mut()[i * n_classes + t] = -scale;
        }
        Ok(LossOutput {
            loss: -total / batch as f32,
            grad_input: grad,
        })
    }
}

/// `LogSoftmax` and `NLLLoss` fused (PyTorch's `CrossEntropyLoss` on logits). Its forward
/// returns the log-probabilities.
#[derive(Debug, Default)]
pub struct SoftmaxCrossEntropy;

impl Layer for SoftmaxCrossEntropy {
    type Config = NoConfig;
    const NAME: &'static str = "softmax-cross-entropy";
    const IS_LOSS: bool = true;

    fn new(_: NoConfig, _: &mut Init) -> Result<Self, LayerError> {
        Ok(SoftmaxCrossEntropy)
    }

    fn forward(&mut self, input: Tensor, _: Mode) -> Result<Tensor, LayerError> {
        log_softmax(&input)
    }

    fn backward(&mut self, _: Tensor) -> Result<Tensor, LayerError> {
        Err(LayerError::Unsupported(
            "a loss layer's gradient comes from `loss`".into(),
        ))
    }

    fn loss(&mut self, input: Tensor, target: Tensor) -> Result<LossOutput, LayerError> {
        let (batch, n_classes, targets) = classes(&input, &target)?;
        let log_p = log_softmax(&input)?;
        let scale = 1.0 / batch as f32;
        let mut total = 0.0f32;
        let mut grad = log_p.clone();
        for (i, (row, &t)) in grad
            .data_mut()
            .chunks_exact_mut(n_classes)
            .zip(&targets)
            .enumerate()
        {
            total += log_p.data()[i * n_classes + t];
            for v in row.iter_mut() {
                *v = libm::expf(*v) * scale;
            }
            row[t] -= scale;
        }
        Ok(LossOutput {
            loss: -total / batch as f32,
            grad_input: grad,
        })
    }
}
