//! Sizes of 2-D layers (kernels, strides, paddings), given as PyTorch takes them.

use serde::Deserialize;

/// A size given for both sides (`5`) or as `[rows, columns]`, as PyTorch takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Pair {
    /// The same for rows and columns.
    Square(usize),
    /// Rows, then columns.
    Sides([usize; 2]),
}

impl Default for Pair {
    fn default() -> Self {
        Pair::Square(0)
    }
}

impl Pair {
    /// Rows and columns.
    pub fn sides(self) -> (usize, usize) {
        match self {
            Pair::Square(v) => (v, v),
            Pair::Sides([h, w]) => (h, w),
        }
    }
}
