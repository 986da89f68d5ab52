//! Dense row-major tensors.

use crate::LayerError;

/// The most dimensions a tensor may have.
pub const MAX_RANK: usize = 8;

/// A dense row-major tensor of `f32`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    /// A tensor of `shape` holding `data`; fails if the sizes disagree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, LayerError> {
        if shape.len() > MAX_RANK {
            return Err(LayerError::BadShape(format!(
                "rank {} exceeds the maximum {MAX_RANK}",
                shape.len()
            )));
        }
        let len = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| LayerError::BadShape(format!("shape {shape:?} overflows")))?;
        if len != data.len() {
            return Err(LayerError::BadShape(format!(
                "shape {shape:?} needs {len} values, got {}",
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }

    /// A tensor of zeros.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let len = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; len],
        }
    }

    /// A tensor with `data` laid out like `self` (same shape); fails if the lengths differ.
    pub fn with_data(&self, data: Vec<f32>) -> Result<Self, LayerError> {
        Tensor::new(self.shape.clone(), data)
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The values, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Splits into shape and values.
    pub fn into_parts(self) -> (Vec<usize>, Vec<f32>) {
        (self.shape, self.data)
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor holds no value.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Views the tensor as a matrix whose rows are all leading dimensions and whose columns
    /// are the last one, which must equal `cols` (as PyTorch's `Linear` treats `[*, in]`).
    pub fn rows_with_cols(&self, cols: usize) -> Result<usize, LayerError> {
        match self.shape.last() {
            Some(&last) if last == cols => Ok(self.len().checked_div(cols).unwrap_or(0)),
            _ => Err(LayerError::BadShape(format!(
                "expected a last dimension of {cols}, got shape {:?}",
                self.shape
            ))),
        }
    }

    /// The shape with the last dimension replaced by `cols`.
    pub fn shape_with_last(&self, cols: usize) -> Vec<usize> {
        let mut shape = self.shape.clone();
        match shape.last_mut() {
            Some(last) => *last = cols,
            None => shape.push(cols),
        }
        shape
    }

    /// Fails unless `self` and `other` have the same shape.
    pub fn expect_shape(&self, shape: &[usize], what: &str) -> Result<(), LayerError> {
        if self.shape == shape {
            Ok(())
        } else {
            Err(LayerError::BadShape(format!(
                "{what}: expected shape {shape:?}, got {:?}",
                self.shape
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_sizes() {
        assert!(Tensor::new(vec![2, 3], vec![0.0; 6]).is_ok());
        assert!(Tensor::new(vec![2, 3], vec![0.0; 5]).is_err());
        assert!(Tensor::new(vec![usize::MAX, 2], vec![]).is_err());
        assert!(Tensor::new(vec![1; MAX_RANK + 1], vec![0.0]).is_err());
        assert_eq!(Tensor::new(vec![], vec![7.0]).unwrap().len(), 1);
    }

    #[test]
    fn rows_with_cols_flattens_leading_dims() {
        let t = Tensor::zeros(vec![2, 3, 4]);
        assert_eq!(t.rows_with_cols(4).unwrap(), 6);
        assert!(t.rows_with_cols(3).is_err());
        assert_eq!(t.shape_with_last(5), vec![2, 3, 5]);
    }
}
