//! 2-D convolution (PyTorch's `Conv2d` without dilation or groups) as im2col and gemm, one
//! example and a band of output rows at a time, so that the scratch columns stay small and in
//! cache whatever the batch. Each kernel has a fixed summation order: the same geometry gives
//! the same bits, on a host for a component and in the native baseline alike.

use crate::{KernelError, MAX_ELEMENTS, sgemm_checked, to_isize};

/// The most scratch (im2col columns) one call holds, in floats: 16 MiB.
pub const MAX_SCRATCH: usize = 1 << 22;

/// The geometry of a convolution: input `[batch, in_channels, height, width]`, weights
/// `[out_channels, in_channels, kernel_h, kernel_w]`, output `[batch, out_channels, out_h,
/// out_w]` with `out = (in + 2 * padding - kernel) / stride + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2d {
    /// Examples in the batch.
    pub batch: usize,
    /// Channels of the input.
    pub in_channels: usize,
    /// Rows of an input channel.
    pub height: usize,
    /// Columns of an input channel.
    pub width: usize,
    /// Channels of the output (filters).
    pub out_channels: usize,
    /// Rows of a filter.
    pub kernel_h: usize,
    /// Columns of a filter.
    pub kernel_w: usize,
    /// Step between output rows, in input rows.
    pub stride_h: usize,
    /// Step between output columns, in input columns.
    pub stride_w: usize,
    /// Zero rows added above and below the input.
    pub pad_h: usize,
    /// Zero columns added left and right of the input.
    pub pad_w: usize,
}

/// A geometry whose sizes have been checked, with what the kernels derive from it.
#[derive(Debug, Clone, Copy)]
struct Checked {
    g: Conv2d,
    out_h: usize,
    out_w: usize,
    /// Rows of the columns (`in_channels * kernel_h * kernel_w`).
    patch: usize,
    /// Input, weight and output elements of one example (weights: all of them).
    x_len: usize,
    w_len: usize,
    y_len: usize,
    /// Output rows per band.
    band: usize,
}

impl Conv2d {
    /// Output rows and columns, or why the geometry is refused.
    pub fn out_size(&self) -> Result<(usize, usize), KernelError> {
        let c = self.check()?;
        Ok((c.out_h, c.out_w))
    }

    /// Multiply-adds of each of the three kernels (they are the same), saturating.
    pub fn macs(&self) -> u64 {
        let (oh, ow) = self.out_size().unwrap_or((0, 0));
        [
            self.batch,
            self.out_channels,
            self.in_channels,
            self.kernel_h,
            self.kernel_w,
            oh,
            ow,
        ]
        .iter()
        .fold(1u64, |acc, &d| {
            acc.saturating_mul(u64::try_from(d).unwrap_or(u64::MAX))
        })
    }

    fn refuse(what: &'static str) -> KernelError {
        KernelError::Geometry(what)
    }

    fn check(&self) -> Result<Checked, KernelError> {
        let g = *self;
        if g.kernel_h == 0 || g.kernel_w == 0 {
            return Err(Self::refuse("a kernel side is zero"));
        }
        if g.stride_h == 0 || g.stride_w == 0 {
            return Err(Self::refuse("a stride is zero"));
        }
        if [g.in_channels, g.out_channels, g.height, g.width].contains(&0) {
            return Err(Self::refuse("a channel count or an input side is zero"));
        }
        let too_large = Self::refuse("the sizes are too large");
        let product = |dims: &[usize]| {
            dims.iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .filter(|&p| p <= MAX_ELEMENTS)
                .ok_or(too_large.clone())
        };
        let span = |size: usize, pad: usize, kernel: usize, stride: usize| {
            let padded = pad
                .checked_mul(2)
                .and_then(|p| p.checked_add(size))
                .ok_or(too_large.clone())?;
            padded
                .checked_sub(kernel)
                .map(|room| room / stride + 1)
                .ok_or(Self::refuse("the kernel is larger than the padded input"))
        };
        let out_h = span(g.height, g.pad_h, g.kernel_h, g.stride_h)?;
        let out_w = span(g.width, g.pad_w, g.kernel_w, g.stride_w)?;
        let patch = product(&[g.in_channels, g.kernel_h, g.kernel_w])?;
        let x_len = product(&[g.in_channels, g.height, g.width])?;
        let w_len = product(&[g.out_channels, patch])?;
        let y_len = product(&[g.out_channels, out_h, out_w])?;
        // The whole batch, too: callers pass and get it as one slice.
        product(&[g.batch, x_len])?;
        product(&[g.batch, y_len])?;
        let row = product(&[patch, out_w])?;
        if row > MAX_SCRATCH {
            return Err(Self::refuse(
                "one output row needs more scratch than allowed",
            ));
        }
        let band = (MAX_SCRATCH / row).clamp(1, out_h);
        Ok(Checked {
            g,
            out_h,
            out_w,
            patch,
            x_len,
            w_len,
            y_len,
            band,
        })
    }
}

fn expect_len(operand: &'static str, slice: &[f32], expected: usize) -> Result<(), KernelError> {
    if slice.len() == expected {
        Ok(())
    } else {
        Err(KernelError::Length {
            operand,
            expected,
            actual: slice.len(),
        })
    }
}

impl Checked {
    /// The output columns `ox` whose input column `ox * stride + j - pad` lies inside the
    /// input: `lo..hi`.
    fn valid_cols(&self, j: usize) -> (usize, usize) {
        let (s, p, w) = (self.g.stride_w, self.g.pad_w, self.g.width);
        let lo = if j >= p { 0 } else { (p - j).div_ceil(s) };
        // ox * s + j - p < w  <=>  ox * s < w + p - j (none when w + p <= j).
        let hi = (w + p).saturating_sub(j).div_ceil(s).min(self.out_w);
        (lo.min(hi), hi)
    }

    /// The input row for output row `oy` and filter row `i`, if inside the input.
    fn input_row(&self, oy: usize, i: usize) -> Option<usize> {
        (oy * self.g.stride_h + i)
            .checked_sub(self.g.pad_h)
            .filter(|&iy| iy < self.g.height)
    }

    /// Writes the columns of output rows `rows` of one example `x` into `cols`
    /// (`patch x rows.len() * out_w`, row-major).
    fn im2col(&self, x: &[f32], rows: std::ops::Range<usize>, cols: &mut [f32]) {
        let (g, ow) = (self.g, self.out_w);
        let n = rows.len() * ow;
        for c in 0..g.in_channels {
            let channel = &x[c * g.height * g.width..(c + 1) * g.height * g.width];
            for i in 0..g.kernel_h {
                for j in 0..g.kernel_w {
                    let r = (c * g.kernel_h + i) * g.kernel_w + j;
                    let out = &mut cols[r * n..(r + 1) * n];
                    let (lo, hi) = self.valid_cols(j);
                    for (k, oy) in rows.clone().enumerate() {
                        let seg = &mut out[k * ow..(k + 1) * ow];
                        let Some(iy) = self.input_row(oy, i) else {
                            seg.fill(0.0);
                            continue;
                        };
                        let line = &channel[iy * g.width..(iy + 1) * g.width];
                        seg[..lo].fill(0.0);
                        seg[hi..].fill(0.0);
                        // Input columns (lo + k) * stride + j - pad, k < hi - lo.
                        if lo == hi {
                            continue;
                        }
                        let from = lo * g.stride_w + j - g.pad_w;
                        if g.stride_w == 1 {
                            seg[lo..hi].copy_from_slice(&line[from..from + hi - lo]);
                        } else {
                            let picked = line[from..].iter().step_by(g.stride_w);
                            for (v, x) in seg[lo..hi].iter_mut().zip(picked) {
                                *v = *x;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adds the columns `cols` of output rows `rows` back into one example's input gradient
    /// `dx` (the transpose of [`Checked::im2col`]).
    fn col2im(&self, cols: &[f32], rows: std::ops::Range<usize>, dx: &mut [f32]) {
        let (g, ow) = (self.g, self.out_w);
        let n = rows.len() * ow;
        for c in 0..g.in_channels {
            let channel = &mut dx[c * g.height * g.width..(c + 1) * g.height * g.width];
            for i in 0..g.kernel_h {
                for j in 0..g.kernel_w {
                    let r = (c * g.kernel_h + i) * g.kernel_w + j;
                    let col = &cols[r * n..(r + 1) * n];
                    let (lo, hi) = self.valid_cols(j);
                    for (k, oy) in rows.clone().enumerate() {
                        let Some(iy) = self.input_row(oy, i) else {
                            continue;
                        };
                        if lo == hi {
                            continue;
                        }
                        let line = &mut channel[iy * g.width..(iy + 1) * g.width];
                        let from = lo * g.stride_w + j - g.pad_w;
                        let picked = line[from..].iter_mut().step_by(g.stride_w);
                        for (x, v) in picked.zip(&col[k * ow + lo..k * ow + hi]) {
                            *x += v;
                        }
                    }
                }
            }
        }
    }

    /// The bands of output rows.
    fn bands(&self) -> impl Iterator<Item = std::ops::Range<usize>> + use<> {
        let (band, out_h) = (self.band, self.out_h);
        (0..out_h)
            .step_by(band)
            .map(move |start| start..(start + band).min(out_h))
    }
}

/// The convolution of `x` (`[batch, in_channels, height, width]`) with `w` (`[out_channels,
/// in_channels, kernel_h, kernel_w]`), no bias: `[batch, out_channels, out_h, out_w]`.
pub fn conv2d(g: &Conv2d, x: &[f32], w: &[f32]) -> Result<Vec<f32>, KernelError> {
    let c = g.check()?;
    expect_len("x", x, g.batch * c.x_len)?;
    expect_len("w", w, c.w_len)?;
    let ohw = c.out_h * c.out_w;
    let mut y = vec![0.0f32; g.batch * c.y_len];
    // No scratch for an empty batch (nothing to compute; the multiply-adds say 0).
    let mut cols = vec![
        0.0f32;
        if g.batch == 0 {
            0
        } else {
            c.patch * c.band * c.out_w
        }
    ];
    for n in 0..g.batch {
        let x_n = &x[n * c.x_len..(n + 1) * c.x_len];
        let y_n = &mut y[n * c.y_len..(n + 1) * c.y_len];
        for rows in c.bands() {
            let cols_n = rows.len() * c.out_w;
            let cols = &mut cols[..c.patch * cols_n];
            c.im2col(x_n, rows.clone(), cols);
            // y_n[:, band] = w (out x patch) * cols (patch x band), written in place: row
            // stride `ohw`, starting at the band's first column.
            let start = rows.start * c.out_w;
            sgemm_checked(
                g.out_channels,
                c.patch,
                cols_n,
                w,
                to_isize(c.patch),
                1,
                cols,
                to_isize(cols_n),
                1,
                &mut y_n[start..],
                to_isize(ohw),
                0.0,
            );
        }
    }
    Ok(y)
}

/// The gradient of the loss with respect to the input of [`conv2d`], from that with respect to
/// its output `dy` and the weights `w`: `[batch, in_channels, height, width]`.
pub fn conv2d_input_grad(g: &Conv2d, dy: &[f32], w: &[f32]) -> Result<Vec<f32>, KernelError> {
    let c = g.check()?;
    expect_len("dy", dy, g.batch * c.y_len)?;
    expect_len("w", w, c.w_len)?;
    let ohw = c.out_h * c.out_w;
    let mut dx = vec![0.0f32; g.batch * c.x_len];
    // No scratch for an empty batch (nothing to compute; the multiply-adds say 0).
    let mut cols = vec![
        0.0f32;
        if g.batch == 0 {
            0
        } else {
            c.patch * c.band * c.out_w
        }
    ];
    for n in 0..g.batch {
        let dy_n = &dy[n * c.y_len..(n + 1) * c.y_len];
        let dx_n = &mut dx[n * c.x_len..(n + 1) * c.x_len];
        for rows in c.bands() {
            let cols_n = rows.len() * c.out_w;
            let cols = &mut cols[..c.patch * cols_n];
            // cols = w^T (patch x out) * dy_n[:, band] (out x band).
            sgemm_checked(
                c.patch,
                g.out_channels,
                cols_n,
                w,
                1,
                to_isize(c.patch),
                &dy_n[rows.start * c.out_w..],
                to_isize(ohw),
                1,
                cols,
                to_isize(cols_n),
                0.0,
            );
            c.col2im(cols, rows, dx_n);
        }
    }
    Ok(dx)
}

/// The gradient of the loss with respect to the weights of [`conv2d`], from its input `x` and
/// the gradient with respect to its output `dy`: `[out_channels, in_channels, kernel_h,
/// kernel_w]`, summed over the batch in order.
pub fn conv2d_weight_grad(g: &Conv2d, x: &[f32], dy: &[f32]) -> Result<Vec<f32>, KernelError> {
    let c = g.check()?;
    expect_len("x", x, g.batch * c.x_len)?;
    expect_len("dy", dy, g.batch * c.y_len)?;
    let ohw = c.out_h * c.out_w;
    let mut dw = vec![0.0f32; c.w_len];
    // No scratch for an empty batch (nothing to compute; the multiply-adds say 0).
    let mut cols = vec![
        0.0f32;
        if g.batch == 0 {
            0
        } else {
            c.patch * c.band * c.out_w
        }
    ];
    for n in 0..g.batch {
        let x_n = &x[n * c.x_len..(n + 1) * c.x_len];
        let dy_n = &dy[n * c.y_len..(n + 1) * c.y_len];
        for rows in c.bands() {
            let cols_n = rows.len() * c.out_w;
            let cols = &mut cols[..c.patch * cols_n];
            c.im2col(x_n, rows.clone(), cols);
            // dw += dy_n[:, band] (out x band) * cols^T (band x patch).
            sgemm_checked(
                g.out_channels,
                cols_n,
                c.patch,
                &dy_n[rows.start * c.out_w..],
                to_isize(ohw),
                1,
                cols,
                1,
                to_isize(cols_n),
                &mut dw,
                to_isize(c.patch),
                1.0,
            );
        }
    }
    Ok(dw)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

    use super::*;

    fn values(n: usize, salt: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 + salt) * 0.731).sin() * 0.9)
            .collect()
    }

    /// The definition, as loops.
    fn naive(g: &Conv2d, x: &[f32], w: &[f32]) -> Vec<f32> {
        let (oh, ow) = g.out_size().unwrap();
        let mut y = vec![0.0; g.batch * g.out_channels * oh * ow];
        for n in 0..g.batch {
            for o in 0..g.out_channels {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = 0.0f64;
                        for c in 0..g.in_channels {
                            for i in 0..g.kernel_h {
                                for j in 0..g.kernel_w {
                                    let iy = (oy * g.stride_h + i) as isize - g.pad_h as isize;
                                    let ix = (ox * g.stride_w + j) as isize - g.pad_w as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= g.height as isize
                                        || ix >= g.width as isize
                                    {
                                        continue;
                                    }
                                    let xv = x[((n * g.in_channels + c) * g.height + iy as usize)
                                        * g.width
                                        + ix as usize];
                                    let wv = w[((o * g.in_channels + c) * g.kernel_h + i)
                                        * g.kernel_w
                                        + j];
                                    s += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        y[((n * g.out_channels + o) * oh + oy) * ow + ox] = s as f32;
                    }
                }
            }
        }
        y
    }

    fn geometries() -> Vec<Conv2d> {
        let base = Conv2d {
            batch: 2,
            in_channels: 3,
            height: 7,
            width: 6,
            out_channels: 4,
            kernel_h: 3,
            kernel_w: 2,
            stride_h: 1,
            stride_w: 1,
            pad_h: 0,
            pad_w: 0,
        };
        vec![
            base,
            Conv2d {
                pad_h: 2,
                pad_w: 1,
                ..base
            },
            Conv2d {
                stride_h: 2,
                stride_w: 3,
                pad_h: 1,
                ..base
            },
            // Padding wider than the kernel (PyTorch allows it): border outputs see only zeros.
            Conv2d {
                pad_h: 4,
                pad_w: 3,
                stride_h: 2,
                ..base
            },
            // Strides past the padding: some filter columns see no input at all.
            Conv2d {
                batch: 1,
                in_channels: 2,
                height: 3,
                width: 1,
                out_channels: 2,
                kernel_h: 1,
                kernel_w: 2,
                stride_h: 3,
                stride_w: 10,
                pad_h: 5,
                pad_w: 5,
            },
            // LeNet-5's first layer, on one example.
            Conv2d {
                batch: 1,
                in_channels: 1,
                height: 28,
                width: 28,
                out_channels: 6,
                kernel_h: 5,
                kernel_w: 5,
                stride_h: 1,
                stride_w: 1,
                pad_h: 2,
                pad_w: 2,
            },
        ]
    }

    fn close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{what}[{k}]: {g} vs {w}"
            );
        }
    }

    #[test]
    fn the_three_kernels_match_the_definition() {
        for g in geometries() {
            let (oh, ow) = g.out_size().unwrap();
            let x = values(g.batch * g.in_channels * g.height * g.width, 0.0);
            let w = values(
                g.out_channels * g.in_channels * g.kernel_h * g.kernel_w,
                3.0,
            );
            let dy = values(g.batch * g.out_channels * oh * ow, 7.0);
            close(&conv2d(&g, &x, &w).unwrap(), &naive(&g, &x, &w), "y");
            // The gradients are the transposes of the linear maps x -> y and w -> y: check
            // them through <dy, conv(x, w)> = <conv_input_grad(dy, w), x> = <dw, w>.
            let y = naive(&g, &x, &w);
            let dot = |a: &[f32], b: &[f32]| -> f64 {
                a.iter()
                    .zip(b)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum()
            };
            let want = dot(&dy, &y);
            let dx = conv2d_input_grad(&g, &dy, &w).unwrap();
            let dw = conv2d_weight_grad(&g, &x, &dy).unwrap();
            assert!(
                (dot(&dx, &x) - want).abs() < 1e-3 * (1.0 + want.abs()),
                "{g:?}"
            );
            assert!(
                (dot(&dw, &w) - want).abs() < 1e-3 * (1.0 + want.abs()),
                "{g:?}"
            );
            // And entry by entry: one unit of dy at a time picks one output's patch.
            for probe in [0, dy.len() / 3, dy.len() - 1] {
                let mut unit = vec![0.0; dy.len()];
                unit[probe] = 1.0;
                let dx = conv2d_input_grad(&g, &unit, &w).unwrap();
                let dw = conv2d_weight_grad(&g, &x, &unit).unwrap();
                // y[probe] = sum_k x[k] * dx[k] = sum_k w[k] * dw[k].
                assert!(
                    (dot(&dx, &x) - f64::from(y[probe])).abs() < 1e-4,
                    "{g:?} {probe}"
                );
                assert!(
                    (dot(&dw, &w) - f64::from(y[probe])).abs() < 1e-4,
                    "{g:?} {probe}"
                );
            }
        }
    }

    #[test]
    fn hand_computed() {
        // A 3x3 input of 1..9, a 2x2 filter of ones: each output sums a 2x2 window.
        let g = Conv2d {
            batch: 1,
            in_channels: 1,
            height: 3,
            width: 3,
            out_channels: 1,
            kernel_h: 2,
            kernel_w: 2,
            stride_h: 1,
            stride_w: 1,
            pad_h: 0,
            pad_w: 0,
        };
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        assert_eq!(
            conv2d(&g, &x, &[1.0; 4]).unwrap(),
            vec![12.0, 16.0, 24.0, 28.0]
        );
        // Each input is counted once per window that covers it.
        assert_eq!(
            conv2d_input_grad(&g, &[1.0; 4], &[1.0; 4]).unwrap(),
            vec![1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]
        );
        assert_eq!(
            conv2d_weight_grad(&g, &x, &[1.0; 4]).unwrap(),
            vec![12.0, 16.0, 24.0, 28.0]
        );
    }

    #[test]
    fn many_bands_match_the_definition() {
        // Wide enough that one output row fills most of the scratch: bands of one row.
        let g = Conv2d {
            batch: 1,
            in_channels: 64,
            height: 6,
            width: 4096,
            out_channels: 2,
            kernel_h: 3,
            kernel_w: 3,
            stride_h: 1,
            stride_w: 1,
            pad_h: 1,
            pad_w: 1,
        };
        let c = g.check().unwrap();
        assert!(c.band < c.out_h, "more than one band: {}", c.band);
        let x = values(g.in_channels * g.height * g.width, 1.0);
        let w = values(g.out_channels * g.in_channels * 9, 2.0);
        let y = conv2d(&g, &x, &w).unwrap();
        close(&y, &naive(&g, &x, &w), "banded y");
    }

    /// Random small geometries, degenerate ones included, with operands of the right length
    /// or not: never a panic, and what is accepted matches the definition.
    #[test]
    fn random_geometries_never_panic_and_match_the_definition() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below as u64) as usize
        };
        let mut accepted = 0;
        for _ in 0..6000 {
            let g = Conv2d {
                batch: next(3),
                in_channels: next(4),
                height: next(7),
                width: next(7),
                out_channels: next(4),
                kernel_h: next(5),
                kernel_w: next(5),
                stride_h: next(4),
                stride_w: next(4),
                pad_h: next(6),
                pad_w: next(6),
            };
            let Ok((oh, ow)) = g.out_size() else {
                assert!(conv2d(&g, &[], &[]).is_err());
                continue;
            };
            let x_len = g.batch * g.in_channels * g.height * g.width;
            let w_len = g.out_channels * g.in_channels * g.kernel_h * g.kernel_w;
            let y_len = g.batch * g.out_channels * oh * ow;
            let off = next(3); // 0: right; 1 or 2: one value too many
            let x = values(x_len + usize::from(off == 1), 1.0);
            let w = values(w_len, 2.0);
            let dy = values(y_len + usize::from(off == 2), 3.0);
            let (y, dx, dw) = (
                conv2d(&g, &x, &w),
                conv2d_input_grad(&g, &dy, &w),
                conv2d_weight_grad(&g, &x, &dy),
            );
            if off != 0 {
                assert!(y.is_err() || dx.is_err() || dw.is_err(), "{g:?}");
                continue;
            }
            accepted += 1;
            close(&y.unwrap(), &naive(&g, &x, &w), "y");
            let dot = |a: &[f32], b: &[f32]| -> f64 {
                a.iter()
                    .zip(b)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum()
            };
            let want = dot(&dy, &naive(&g, &x, &w));
            assert!((dot(&dx.unwrap(), &x) - want).abs() < 1e-3 * (1.0 + want.abs()));
            assert!((dot(&dw.unwrap(), &w) - want).abs() < 1e-3 * (1.0 + want.abs()));
        }
        assert!(accepted > 200, "only {accepted} geometries accepted");
    }

    #[test]
    fn hostile_geometries_are_refused() {
        let ok = geometries()[0];
        let refused = [
            Conv2d { kernel_h: 0, ..ok },
            Conv2d { stride_w: 0, ..ok },
            Conv2d {
                out_channels: 0,
                ..ok
            },
            Conv2d { width: 0, ..ok },
            Conv2d {
                pad_w: usize::MAX / 2,
                ..ok
            },
            Conv2d {
                height: 1,
                kernel_h: 3,
                pad_h: 0,
                ..ok
            },
            Conv2d {
                batch: usize::MAX,
                ..ok
            },
            Conv2d {
                in_channels: 1 << 20,
                height: 1 << 20,
                ..ok
            },
            Conv2d {
                in_channels: 1 << 16,
                kernel_h: 3,
                kernel_w: 2,
                width: 1 << 12,
                ..ok
            },
        ];
        for g in refused {
            assert!(g.out_size().is_err(), "{g:?}");
            assert!(conv2d(&g, &[], &[]).is_err(), "{g:?}");
        }
        // Wrong operand lengths.
        let (oh, ow) = ok.out_size().unwrap();
        let x = values(ok.batch * 3 * 7 * 6, 0.0);
        let w = values(4 * 3 * 3 * 2, 0.0);
        assert!(matches!(
            conv2d(&ok, &x[1..], &w),
            Err(KernelError::Length { operand: "x", .. })
        ));
        assert!(matches!(
            conv2d_input_grad(&ok, &values(ok.batch * 4 * oh * ow + 1, 0.0), &w),
            Err(KernelError::Length { operand: "dy", .. })
        ));
        assert!(matches!(
            conv2d_weight_grad(&ok, &x, &[]),
            Err(KernelError::Length { operand: "dy", .. })
        ));
    }
}
