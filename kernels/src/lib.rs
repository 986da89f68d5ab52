//! Trusted numeric kernels.
//!
//! A layer component keeps its own logic and state inside the sandbox but hands the heavy
//! arithmetic (matrix products) to its host through the WIT `kernels` import: the host runs it
//! here, at native speed, instead of in a wasm loop slowed down by deadline checks. The native
//! baseline calls the very same functions, so wasm and native results are bit-identical.
//!
//! Every size comes from an untrusted component, so each kernel checks its arguments and returns
//! a [`KernelError`] instead of panicking.
#![deny(unsafe_code)]

mod conv;

pub use conv::{Conv2d, MAX_SCRATCH, conv2d, conv2d_input_grad, conv2d_weight_grad};

/// The largest number of elements a kernel accepts in one operand or result (256 Mi floats,
/// 1 GiB), far above anything a sandboxed component can hold in its capped memory.
pub const MAX_ELEMENTS: usize = 1 << 28;

/// Why a kernel refused its arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// An operand's length does not match the dimensions given with it.
    #[error("operand {operand} has {actual} elements, expected {expected}")]
    Length {
        /// Which operand (`a` or `b`).
        operand: &'static str,
        /// The length the dimensions call for.
        expected: usize,
        /// The length received.
        actual: usize,
    },
    /// A convolution's geometry is impossible or too large.
    #[error("convolution refused: {0}")]
    Geometry(&'static str),
    /// The dimensions overflow or exceed [`MAX_ELEMENTS`].
    #[error("dimensions {m}x{k}x{n} are too large")]
    TooLarge {
        /// Rows of the result.
        m: usize,
        /// Inner dimension.
        k: usize,
        /// Columns of the result.
        n: usize,
    },
}

/// How a row-major operand is stored: as the matrix itself, or as its transpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The slice holds the matrix, row-major.
    Plain,
    /// The slice holds the matrix's transpose, row-major.
    Transposed,
}

impl Layout {
    /// `Transposed` if `transposed`, else `Plain`.
    pub fn from_flag(transposed: bool) -> Self {
        if transposed {
            Layout::Transposed
        } else {
            Layout::Plain
        }
    }
}

fn elements(rows: usize, cols: usize, m: usize, k: usize, n: usize) -> Result<usize, KernelError> {
    rows.checked_mul(cols)
        .filter(|&len| len <= MAX_ELEMENTS)
        .ok_or(KernelError::TooLarge { m, k, n })
}

/// Matrix product `C = op(A) * op(B)`, with `op(A)` of `m x k` and `op(B)` of `k x n`, all
/// row-major; returns `C` (`m x n`).
///
/// `a` and `b` hold `A` and `B` as laid out by `a_layout` and `b_layout`: a transposed operand
/// costs nothing, it is read with swapped strides.
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    a_layout: Layout,
    b: &[f32],
    b_layout: Layout,
) -> Result<Vec<f32>, KernelError> {
    let a_len = elements(m, k, m, k, n)?;
    let b_len = elements(k, n, m, k, n)?;
    let c_len = elements(m, n, m, k, n)?;
    if a.len() != a_len {
        return Err(KernelError::Length {
            operand: "a",
            expected: a_len,
            actual: a.len(),
        });
    }
    if b.len() != b_len {
        return Err(KernelError::Length {
            operand: "b",
            expected: b_len,
            actual: b.len(),
        });
    }
    let mut c = vec![0.0f32; c_len];
    if c_len == 0 || k == 0 {
        return Ok(c);
    }
    // Strides in elements; sizes are bounded by MAX_ELEMENTS (< isize::MAX), so they fit.
    let (rsa, csa) = strides(a_layout, m, k);
    let (rsb, csb) = strides(b_layout, k, n);
    let n_stride = to_isize(n);
    // SAFETY is matrixmultiply's own: the checks above guarantee that every index it forms
    // from (m, k, n) and the strides lies inside `a`, `b` and `c`.
    sgemm_checked(m, k, n, a, rsa, csa, b, rsb, csb, &mut c, n_stride, 0.0);
    Ok(c)
}

fn to_isize(v: usize) -> isize {
    // Callers bound v by MAX_ELEMENTS.
    isize::try_from(v).unwrap_or(isize::MAX)
}

/// Row and column strides of a `rows x cols` matrix stored as `layout`.
fn strides(layout: Layout, rows: usize, cols: usize) -> (isize, isize) {
    match layout {
        Layout::Plain => (to_isize(cols), 1),
        Layout::Transposed => (1, to_isize(rows)),
    }
}

#[allow(clippy::too_many_arguments)]
#[allow(unsafe_code)]
fn sgemm_checked(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    rsa: isize,
    csa: isize,
    b: &[f32],
    rsb: isize,
    csb: isize,
    c: &mut [f32],
    rsc: isize,
    beta: f32,
) {
    // Every index sgemm forms must lie in its slice: callers derive the sizes and strides from
    // checked dimensions, and a mistake there must panic here rather than read or write out of
    // bounds (O(1), beside an O(m k n) product).
    assert!(
        within(a.len(), m, k, rsa, csa)
            && within(b.len(), k, n, rsb, csb)
            && within(c.len(), m, n, rsc, 1),
        "sgemm operands out of bounds (a bug)"
    );
    // `c = a * b + beta * c`. matrixmultiply's sgemm is the kernel ndarray uses: cache-blocked with AVX/FMA paths chosen
    // at run time, single-threaded, so the summation order (and thus every bit) is reproducible.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            rsc,
            1,
        );
    }
}

/// Whether a `rows x cols` matrix read with non-negative strides `rs`, `cs` from a slice of
/// `len` values stays inside it.
fn within(len: usize, rows: usize, cols: usize, rs: isize, cs: isize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let (Ok(rs), Ok(cs)) = (usize::try_from(rs), usize::try_from(cs)) else {
        return false;
    };
    (rows - 1)
        .checked_mul(rs)
        .and_then(|r| (cols - 1).checked_mul(cs).and_then(|c| r.checked_add(c)))
        .is_some_and(|last| last < len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, k: usize, n: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    fn transpose(rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
        let mut t = vec![0.0; x.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = x[r * cols + c];
            }
        }
        t
    }

    #[test]
    fn gemm_matches_naive_for_every_layout() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(m, k, n, &a, &b);
        let at = transpose(m, k, &a);
        let bt = transpose(k, n, &b);
        for (aa, la) in [(&a, Layout::Plain), (&at, Layout::Transposed)] {
            for (bb, lb) in [(&b, Layout::Plain), (&bt, Layout::Transposed)] {
                let got = gemm(m, k, n, aa, la, bb, lb).unwrap();
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() < 1e-5, "{la:?} {lb:?}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn gemm_hand_computed() {
        // [1 2; 3 4] * [5 6; 7 8] = [19 22; 43 50]
        let c = gemm(
            2,
            2,
            2,
            &[1., 2., 3., 4.],
            Layout::Plain,
            &[5., 6., 7., 8.],
            Layout::Plain,
        );
        assert_eq!(c.unwrap(), vec![19., 22., 43., 50.]);
    }

    #[test]
    fn gemm_rejects_bad_lengths_and_sizes() {
        let err = gemm(2, 2, 2, &[1.0; 3], Layout::Plain, &[1.0; 4], Layout::Plain).unwrap_err();
        assert_eq!(
            err,
            KernelError::Length {
                operand: "a",
                expected: 4,
                actual: 3
            }
        );
        let err = gemm(usize::MAX, 2, 2, &[], Layout::Plain, &[], Layout::Plain).unwrap_err();
        assert!(matches!(err, KernelError::TooLarge { .. }));
        let err = gemm(1 << 20, 1 << 20, 1, &[], Layout::Plain, &[], Layout::Plain).unwrap_err();
        assert!(matches!(err, KernelError::TooLarge { .. }));
        assert_eq!(
            gemm(0, 3, 2, &[], Layout::Plain, &[0.0; 6], Layout::Plain).unwrap(),
            vec![]
        );
    }
}
