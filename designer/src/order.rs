//! The order in which an epoch visits the training examples: a shuffle seeded by the seed and
//! the epoch (the default), the data set's own order, or orders read from a file, so that a
//! run can be matched example for example against another framework's.
//!
//! An order file has one line per epoch: the indices of the training examples in the order
//! they are used, separated by spaces, tabs or commas. Each line is a permutation of `0..n`
//! for the `n` training examples in use. Blank lines and lines starting with `#` are skipped.
//! NumPy writes one with `np.savetxt("order.txt", orders, fmt="%d")` for an `[epochs, n]`
//! array, e.g. `np.stack([torch.randperm(n).numpy() for _ in range(epochs)])`.

use std::{path::Path, sync::Arc};

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// What is wrong with a line of an order file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineProblem {
    /// A field that is not a whole number.
    #[error("{0:?} is not an index")]
    NotAnIndex(String),
    /// An index past the training examples.
    #[error("index {index} is not below {n}")]
    OutOfRange {
        /// The index.
        index: usize,
        /// The training examples.
        n: usize,
    },
    /// An index given twice.
    #[error("index {0} appears twice")]
    Twice(usize),
    /// Too few or too many indices.
    #[error("{got} indices, but there are {n} training examples")]
    Count {
        /// Indices on the line.
        got: usize,
        /// The training examples.
        n: usize,
    },
}

/// Why an order cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not a permutation of the training examples.
    #[error("order file, line {line}: {problem}")]
    Line {
        /// The line (1-based).
        line: usize,
        /// What is wrong.
        problem: LineProblem,
    },
    /// The orders do not fit this training run.
    #[error(
        "the order file has {epochs} epochs of {n} examples; this run needs {want_epochs} of {want_n}"
    )]
    Mismatch {
        /// Epochs in the file.
        epochs: usize,
        /// Examples per epoch in the file.
        n: usize,
        /// Epochs the run trains.
        want_epochs: usize,
        /// Training examples the run uses.
        want_n: usize,
    },
}

/// How each epoch orders the training examples.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DataOrder {
    /// A Fisher-Yates shuffle seeded by the seed and the epoch.
    #[default]
    Shuffled,
    /// The data set's order, every epoch.
    Sequential,
    /// One permutation per epoch, given.
    Given(Arc<Vec<Vec<usize>>>),
}

impl DataOrder {
    /// Reads an order file for `n` training examples.
    pub fn from_file(path: &Path, n: usize) -> Result<Self, OrderError> {
        let text = std::fs::read_to_string(path).map_err(|source| OrderError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, n)
    }

    /// Parses the text of an order file for `n` training examples.
    pub fn parse(text: &str, n: usize) -> Result<Self, OrderError> {
        let mut epochs = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |problem: LineProblem| OrderError::Line {
                line: line_no,
                problem,
            };
            let mut seen = vec![false; n];
            let mut order = Vec::with_capacity(n);
            for field in line
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|f| !f.is_empty())
            {
                let index: usize = field
                    .parse()
                    .map_err(|_| bad(LineProblem::NotAnIndex(field.to_owned())))?;
                match seen.get_mut(index) {
                    None => return Err(bad(LineProblem::OutOfRange { index, n })),
                    Some(true) => return Err(bad(LineProblem::Twice(index))),
                    Some(s) => *s = true,
                }
                order.push(index);
            }
            if order.len() != n {
                return Err(bad(LineProblem::Count {
                    got: order.len(),
                    n,
                }));
            }
            epochs.push(order);
        }
        Ok(DataOrder::Given(Arc::new(epochs)))
    }

    /// Checks that every epoch of a run of `epochs` over `n` examples has an order.
    pub fn check(&self, epochs: usize, n: usize) -> Result<(), OrderError> {
        match self {
            DataOrder::Given(given)
                if given.len() < epochs || given.iter().any(|o| o.len() != n) =>
            {
                Err(OrderError::Mismatch {
                    epochs: given.len(),
                    n: given.first().map_or(0, Vec::len),
                    want_epochs: epochs,
                    want_n: n,
                })
            }
            _ => Ok(()),
        }
    }

    /// The order of the `n` training examples in `epoch` (1-based); [`DataOrder::check`]
    /// first (a given order too short for `epoch` starts again from its first line).
    pub fn epoch(&self, seed: u64, epoch: usize, n: usize) -> Vec<usize> {
        match self {
            DataOrder::Shuffled => shuffled(seed, epoch, n),
            DataOrder::Sequential => (0..n).collect(),
            DataOrder::Given(given) if !given.is_empty() => {
                given[(epoch.max(1) - 1) % given.len()].clone()
            }
            DataOrder::Given(_) => (0..n).collect(),
        }
    }
}

/// A Fisher-Yates shuffle seeded by `seed` and `epoch`, so runs with the same seed see the
/// same batches.
fn shuffled(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        // Multiply-shift: an unbiased-enough index in 0..=i without division.
        let j = ((u64::from(rng.next_u32()) * (i as u64 + 1)) >> 32) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffles_are_seeded_permutations() {
        let a = shuffled(1, 1, 1000);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(a, shuffled(1, 1, 1000));
        assert_ne!(a, shuffled(1, 2, 1000));
        assert_ne!(a, shuffled(2, 1, 1000));
        assert_eq!(DataOrder::Shuffled.epoch(1, 1, 1000), a);
        assert_eq!(DataOrder::Sequential.epoch(1, 3, 4), vec![0, 1, 2, 3]);
    }

    #[test]
    fn order_files_give_each_epoch_its_line() {
        let order = DataOrder::parse("# from numpy\n2 0 1 3\n\n3,2,1,0\n", 4).unwrap();
        order.check(2, 4).unwrap();
        assert_eq!(order.epoch(9, 1, 4), vec![2, 0, 1, 3]);
        assert_eq!(order.epoch(9, 2, 4), vec![3, 2, 1, 0]);
        assert!(matches!(
            order.check(3, 4),
            Err(OrderError::Mismatch { epochs: 2, .. })
        ));
        assert!(order.check(2, 5).is_err());
    }

    #[test]
    fn bad_order_files_say_which_line_and_why() {
        for (text, line, why) in [
            ("0 1 2\n0 1 1\n", 2, "appears twice"),
            ("0 1 3\n", 1, "not below 3"),
            ("0 1\n", 1, "2 indices"),
            ("0 x 2\n", 1, "not an index"),
            ("0 -1 2\n", 1, "not an index"),
        ] {
            let err = DataOrder::parse(text, 3).unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(err, OrderError::Line { line: l, .. } if l == line),
                "{message}"
            );
            assert!(message.contains(why), "{message}");
        }
    }
}
