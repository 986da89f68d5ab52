//! Test-set metrics: accuracy, confusion matrix, per-class precision, recall and F1.

use serde::Serialize;

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassMetrics {
    /// Correct predictions of the class / all predictions of it.
    pub precision: f64,
    /// Correct predictions of the class / all examples of it.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Examples of the class.
    pub support: u64,
}

/// Counts of (true class, predicted class) over a test set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Confusion {
    /// `counts[true][predicted]`.
    pub counts: Vec<Vec<u64>>,
}

impl Confusion {
    /// An empty matrix for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Confusion {
            counts: vec![vec![0; classes]; classes],
        }
    }

    /// Records one prediction (out-of-range classes are ignored).
    pub fn record(&mut self, truth: usize, predicted: usize) {
        if let Some(c) = self
            .counts
            .get_mut(truth)
            .and_then(|row| row.get_mut(predicted))
        {
            *c += 1;
        }
    }

    /// Examples recorded.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Fraction predicted correctly.
    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.counts.len()).map(|i| self.counts[i][i]).sum();
        ratio(correct, self.total())
    }

    /// Per-class precision, recall and F1.
    pub fn per_class(&self) -> Vec<ClassMetrics> {
        let k = self.counts.len();
        (0..k)
            .map(|c| {
                let tp = self.counts[c][c];
                let predicted: u64 = (0..k).map(|t| self.counts[t][c]).sum();
                let support: u64 = self.counts[c].iter().sum();
                let (precision, recall) = (ratio(tp, predicted), ratio(tp, support));
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassMetrics {
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect()
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Index of the largest value of each row of `cols` values (first one on ties).
pub fn argmax_rows(values: &[f32], cols: usize) -> Vec<usize> {
    values
        .chunks_exact(cols.max(1))
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                })
                .0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_by_hand() {
        let mut m = Confusion::new(2);
        // truth 0: 3 right, 1 wrong; truth 1: 1 right, 1 wrong.
        for (t, p) in [(0, 0), (0, 0), (0, 0), (0, 1), (1, 1), (1, 0)] {
            m.record(t, p);
        }
        assert_eq!(m.accuracy(), 4.0 / 6.0);
        let c = m.per_class();
        assert_eq!((c[0].precision, c[0].recall, c[0].support), (0.75, 0.75, 4));
        assert_eq!((c[1].precision, c[1].recall), (0.5, 0.5));
        assert!((c[1].f1 - 0.5).abs() < 1e-12);
        assert_eq!(argmax_rows(&[0.1, 0.9, 0.5, 0.7, 0.2, 0.1], 3), vec![1, 0]);
    }
}
