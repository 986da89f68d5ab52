//! `MaxPool2d` and `AvgPool2d` (as `torch.nn.MaxPool2d` and `torch.nn.AvgPool2d` with their
//! defaults: no dilation, `ceil_mode = false`, and for the average `count_include_pad = true`)
//! over `[N, C, H, W]` inputs.

use std::ops::Range;

use mixnn_layer_sdk::{Init, Layer, LayerError, Mode, Tensor};
use serde::Deserialize;

use crate::Pair;

/// The largest kernel size or stride of a pooling layer, per side. A window then holds at
/// most 2^24 values, a count that `f32` holds exactly (the average's divisor).
pub const MAX_POOL_WINDOW: usize = 1 << 12;

/// Settings of a [`MaxPool2d`] or [`AvgPool2d`] layer, named as PyTorch's arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The window's size.
    pub kernel_size: Pair,
    /// The step between windows (default, or `null`: the kernel size).
    #[serde(default)]
    pub stride: Option<Pair>,
    /// Implicit padding on each side (default 0): `-inf` for the maximum, zeros for the
    /// average. At most half the kernel size, as PyTorch requires.
    #[serde(default)]
    pub padding: Pair,
}

/// One spatial side of a checked pooling window.
#[derive(Debug, Clone, Copy)]
struct Side {
    kernel: usize,
    stride: usize,
    pad: usize,
}

impl Side {
    fn new(name: &str, kernel: usize, stride: usize, pad: usize) -> Result<Self, LayerError> {
        if kernel == 0 || stride == 0 {
            return Err(LayerError::BadConfig(format!(
                "{name}: kernel size and stride must be positive"
            )));
        }
        if kernel > MAX_POOL_WINDOW || stride > MAX_POOL_WINDOW {
            return Err(LayerError::BadConfig(format!(
                "{name}: kernel size {kernel} or stride {stride} exceeds {MAX_POOL_WINDOW}"
            )));
        }
        // PyTorch's rule; it also keeps every window over at least one real value.
        if pad > kernel / 2 {
            return Err(LayerError::BadConfig(format!(
                "{name}: padding {pad} exceeds half the kernel size {kernel}"
            )));
        }
        Ok(Side {
            kernel,
            stride,
            pad,
        })
    }

    /// How many windows fit along an input side of `size` (floor, as `ceil_mode = false`).
    fn outputs(self, size: usize, what: &str) -> Result<usize, LayerError> {
        let padded = self
            .pad
            .checked_mul(2)
            .and_then(|p| p.checked_add(size))
            .ok_or_else(|| LayerError::BadShape(format!("{what} {size} overflows")))?;
        match padded.checked_sub(self.kernel) {
            Some(room) => Ok(room / self.stride + 1),
            None => Err(LayerError::BadShape(format!(
                "{what} {size} padded by {} is smaller than the kernel {}",
                self.pad, self.kernel
            ))),
        }
    }

    /// The input positions under window `o`, clipped to `0..size` (the rest is padding).
    fn span(self, o: usize, size: usize) -> Range<usize> {
        // In padded coordinates the window starts at `o * stride`: at most `size + pad`,
        // since `o` is below `outputs`.
        let start = o * self.stride;
        start.saturating_sub(self.pad)..(start + self.kernel).saturating_sub(self.pad).min(size)
    }
}

/// A checked pooling window: kernel, stride and padding of both sides.
#[derive(Debug, Clone, Copy)]
struct Window {
    height: Side,
    width: Side,
}

impl Window {
    fn new(name: &str, config: PoolConfig) -> Result<Self, LayerError> {
        let (kh, kw) = config.kernel_size.sides();
        let (sh, sw) = config.stride.unwrap_or(config.kernel_size).sides();
        let (ph, pw) = config.padding.sides();
        Ok(Window {
            height: Side::new(name, kh, sh, ph)?,
            width: Side::new(name, kw, sw, pw)?,
        })
    }

    /// The values under one window, padding included (below 2^24: exact as `f32`).
    fn area(self) -> usize {
        self.height.kernel * self.width.kernel
    }

    /// Where the windows fall on an input of `shape`.
    fn over(self, name: &str, shape: &[usize]) -> Result<Grid, LayerError> {
        let &[n, c, h, w] = shape else {
            return Err(LayerError::BadShape(format!(
                "{name} takes [N, C, H, W], got {shape:?}"
            )));
        };
        if c == 0 || h == 0 || w == 0 {
            return Err(LayerError::BadShape(format!(
                "{name}: channels, height and width must be positive, got {shape:?}"
            )));
        }
        let oh = self.height.outputs(h, "height")?;
        let ow = self.width.outputs(w, "width")?;
        // With padding at most half the kernel, oh <= h + 1 and ow <= w + 1: the output is at
        // most four times the input. These products are checked all the same, since with
        // N = 0 the input's own size says nothing of them.
        let overflow = || LayerError::BadShape(format!("{name}: {shape:?} overflows"));
        let plane = h.checked_mul(w).ok_or_else(overflow)?;
        let out_plane = oh.checked_mul(ow).ok_or_else(overflow)?;
        n.checked_mul(c)
            .and_then(|planes| planes.checked_mul(out_plane))
            .ok_or_else(overflow)?;
        Ok(Grid {
            window: self,
            h,
            w,
            plane,
            oh,
            ow,
            out_shape: vec![n, c, oh, ow],
            out_plane,
        })
    }
}

/// A window over an input of known shape.
#[derive(Debug, Clone)]
struct Grid {
    window: Window,
    h: usize,
    w: usize,
    /// `h * w`, positive.
    plane: usize,
    oh: usize,
    ow: usize,
    /// `[N, C, OH, OW]`.
    out_shape: Vec<usize>,
    /// `OH * OW`, positive.
    out_plane: usize,
}

impl Grid {
    /// The rows and columns of each window of one plane, row-major by output position.
    fn windows(&self) -> impl Iterator<Item = (Range<usize>, Range<usize>)> + '_ {
        (0..self.oh).flat_map(move |oy| {
            let rows = self.window.height.span(oy, self.h);
            (0..self.ow).map(move |ox| (rows.clone(), self.window.width.span(ox, self.w)))
        })
    }
}

/// Max pooling over 2-D windows of each channel. Padding counts as `-inf`; on ties the first
/// maximum in row-major order wins, and a NaN in a window is its maximum (the last NaN, if
/// several), as PyTorch's CPU kernel does. The gradient goes to each window's maximum, summed
/// where windows overlap.
#[derive(Debug)]
pub struct MaxPool2d {
    window: Window,
    /// From the last training forward: the input's shape, the output's, and for each output
    /// the flat input index of its maximum.
    kept: Option<(Vec<usize>, Vec<usize>, Vec<usize>)>,
}

impl Layer for MaxPool2d {
    type Config = PoolConfig;
    const NAME: &'static str = "max-pool2d";

    fn new(config: PoolConfig, _: &mut Init) -> Result<Self, LayerError> {
        Ok(MaxPool2d {
            window: Window::new(Self::NAME, config)?,
            kept: None,
        })
    }

    fn forward(&mut self, input: Tensor, mode: Mode) -> Result<Tensor, LayerError> {
        let grid = self.window.over(Self::NAME, input.shape())?;
        let train = mode == Mode::Train;
        let out_len = input.len() / grid.plane * grid.out_plane;
        let mut out = Vec::with_capacity(out_len);
        let mut argmax = Vec::with_capacity(if train { out_len } else { 0 });
        for (p, plane) in input.data().chunks_exact(grid.plane).enumerate() {
            for (rows, cols) in grid.windows() {
                // Every window covers a real value (padding is at most half the kernel).
                let mut best = rows.start * grid.w + cols.start;
                let mut max = f32::NEG_INFINITY;
                for r in rows {
                    for c in cols.clone() {
                        let i = r * grid.w + c;
                        let v = plane[i];
                        if v > max || v.is_nan() {
                            max = v;
                            best = i;
                        }
                    }
                }
                out.push(max);
                if train {
                    argmax.push(p * grid.plane + best);
                }
            }
        }
        let out = Tensor::new(grid.out_shape.clone(), out)?;
        self.kept = train.then(|| (input.shape().to_vec(), grid.out_shape, argmax));
        Ok(out)
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor, LayerError> {
        let (in_shape, out_shape, argmax) = self
            .kept
            .take()
            .ok_or_else(|| LayerError::BadOrder("backward without a training forward".into()))?;
        grad_output.expect_shape(&out_shape, "max-pool2d gradient")?;
        let mut grad = Tensor::zeros(in_shape);
        let dx = grad.data_mut();
        for (g, &i) in grad_output.data().iter().zip(&argmax) {
            *dx.get_mut(i).ok_or_else(|| {
                LayerError::Failed("max-pool2d index out of range (a bug)".into())
            })? += g;
        }
        Ok(grad)
    }
}

/// Average pooling over 2-D windows of each channel. Padding counts as zeros and the divisor
/// is always the kernel's area (PyTorch's default `count_include_pad = true`).
#[derive(Debug)]
pub struct AvgPool2d {
    window: Window,
    /// The shape of the last training input.
    kept: Option<Vec<usize>>,
}

impl Layer for AvgPool2d {
    type Config = PoolConfig;
    const NAME: &'static str = "avg-pool2d";

    fn new(config: PoolConfig, _: &mut Init) -> Result<Self, LayerError> {
        Ok(AvgPool2d {
            window: Window::new(Self::NAME, config)?,
            kept: None,
        })
    }

    fn forward(&mut self, input: Tensor, mode: Mode) -> Result<Tensor, LayerError> {
        let grid = self.window.over(Self::NAME, input.shape())?;
        let area = self.window.area() as f32;
        let mut out = Vec::with_capacity(input.len() / grid.plane * grid.out_plane);
        for plane in input.data().chunks_exact(grid.plane) {
            for (rows, cols) in grid.windows() {
                // As PyTorch: sum in row-major order, then divide.
                let mut sum = 0.0f32;
                for r in rows {
                    for v in &plane[r * grid.w + cols.start..r * grid.w + cols.end] {
                        sum += v;
                    }
                }
                out.push(sum / area);
            }
        }
        let out = Tensor::new(grid.out_shape, out)?;
        self.kept = (mode == Mode::Train).then(|| input.shape().to_vec());
        Ok(out)
    }

    fn backward(&mut self, grad_output: Tensor) -> Result<Tensor, LayerError> {
        let in_shape = self
            .kept
            .take()
            .ok_or_else(|| LayerError::BadOrder("backward without a training forward".into()))?;
        let grid = self.window.over(Self::NAME, &in_shape)?;
        grad_output.expect_shape(&grid.out_shape, "avg-pool2d gradient")?;
        let area = self.window.area() as f32;
        let mut grad = Tensor::zeros(in_shape);
        let planes = grad.data_mut().chunks_exact_mut(grid.plane);
        for (plane, g) in planes.zip(grad_output.data().chunks_exact(grid.out_plane)) {
            for ((rows, cols), g) in grid.windows().zip(g) {
                // As PyTorch: divide once, then add to every real value of the window.
                let delta = g / area;
                for r in rows {
                    for v in &mut plane[r * grid.w + cols.start..r * grid.w + cols.end] {
                        *v += delta;
                    }
                }
            }
        }
        Ok(grad)
    }
}
