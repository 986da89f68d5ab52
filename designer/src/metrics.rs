//! Test-set metrics, one helper for `mixnn train` (every epoch's test pass) and `mixnn
//! predict`: accuracy, the confusion matrix, per-class precision, recall and F1, and their
//! macro averages.
//!
//! Undefined ratios follow scikit-learn's `zero_division=0`: a class never predicted has
//! precision 0, a class with no example has recall 0, and F1 is 0 whenever the class has no
//! true positive. Each class also carries `support` (its examples) and `predicted` (its
//! predictions), so a 0 that stands for "undefined" can be told from a measured one; the
//! human table names those classes below it. Macro averages are unweighted means over the
//! classes that occur among the labels or the predictions (scikit-learn's default `labels`):
//! a class index that occurs in neither does not pull them down.

use std::fmt::Write as _;

use serde::Serialize;

/// The most classes metrics are kept for: the confusion matrix holds their square
/// (8 MiB of counts at most), whatever class index a model's output claims.
pub const MAX_CLASSES: usize = 1024;

/// The most classes whose confusion matrix is printed for people (wider rows wrap).
pub const PRINTED_CONFUSION_CLASSES: usize = 20;

/// Why a prediction could not be scored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// A class index past [`MAX_CLASSES`].
    #[error("class {class}: metrics are kept for at most {MAX_CLASSES} classes")]
    TooManyClasses {
        /// The class index, a label or a prediction.
        class: usize,
    },
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassMetrics {
    /// The class index.
    pub class: usize,
    /// Correct predictions of the class / all predictions of it (0 if never predicted).
    pub precision: f64,
    /// Correct predictions of the class / all examples of it (0 if it has none).
    pub recall: f64,
    /// `2 tp / (2 tp + fp + fn)`: the harmonic mean of precision and recall (0 if `tp` is 0).
    pub f1: f64,
    /// Examples of the class.
    pub support: u64,
    /// Predictions of the class.
    pub predicted: u64,
}

impl ClassMetrics {
    /// Whether the class occurs among the labels or the predictions.
    pub fn occurs(&self) -> bool {
        self.support > 0 || self.predicted > 0
    }
}

/// Unweighted means of the classes' metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Averages {
    /// Mean precision.
    pub precision: f64,
    /// Mean recall.
    pub recall: f64,
    /// Mean F1 (of the classes' F1, not the F1 of the mean precision and recall).
    pub f1: f64,
}

/// Counts of (true class, predicted class) over a test set; serialized as the matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Confusion {
    /// `counts[true][predicted]`, square.
    pub counts: Vec<Vec<u64>>,
}

impl Confusion {
    /// An empty matrix for `classes` classes (at most [`MAX_CLASSES`]); it grows to fit
    /// what it records.
    pub fn new(classes: usize) -> Self {
        let classes = classes.min(MAX_CLASSES);
        Confusion {
            counts: vec![vec![0; classes]; classes],
        }
    }

    /// Classes of the matrix.
    pub fn classes(&self) -> usize {
        self.counts.len()
    }

    /// Records one prediction, growing the matrix to fit both classes: a prediction past
    /// the labels counts as wrong and gets its own column (and row), as in scikit-learn.
    pub fn record(&mut self, truth: usize, predicted: usize) -> Result<(), MetricsError> {
        let class = truth.max(predicted);
        if class >= MAX_CLASSES {
            return Err(MetricsError::TooManyClasses { class });
        }
        if class >= self.counts.len() {
            let classes = class + 1;
            for row in &mut self.counts {
                row.resize(classes, 0);
            }
            self.counts.resize(classes, vec![0; classes]);
        }
        self.counts[truth][predicted] += 1;
        Ok(())
    }

    /// Examples recorded.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Fraction predicted correctly (0 for none).
    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.counts.len()).map(|i| self.counts[i][i]).sum();
        ratio(correct, self.total())
    }

    /// Every class's precision, recall and F1 (undefined ones 0, see the module's docs).
    pub fn per_class(&self) -> Vec<ClassMetrics> {
        let k = self.counts.len();
        (0..k)
            .map(|c| {
                let tp = self.counts[c][c];
                let predicted: u64 = (0..k).map(|t| self.counts[t][c]).sum();
                let support: u64 = self.counts[c].iter().sum();
                // fp + fn = (predicted - tp) + (support - tp).
                ClassMetrics {
                    class: c,
                    precision: ratio(tp, predicted),
                    recall: ratio(tp, support),
                    f1: ratio(2 * tp, predicted + support),
                    support,
                    predicted,
                }
            })
            .collect()
    }
}

/// The macro averages of `classes` over those that occur (zeros if none does).
pub fn macro_averages(classes: &[ClassMetrics]) -> Averages {
    let occurring: Vec<&ClassMetrics> = classes.iter().filter(|m| m.occurs()).collect();
    let mean = |f: fn(&ClassMetrics) -> f64| {
        if occurring.is_empty() {
            0.0
        } else {
            occurring.iter().map(|m| f(m)).sum::<f64>() / occurring.len() as f64
        }
    };
    Averages {
        precision: mean(|m| m.precision),
        recall: mean(|m| m.recall),
        f1: mean(|m| m.f1),
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// A test pass scored: what `mixnn train --json` adds to each epoch's line and `mixnn
/// predict` to its summary (`macro`, `per_class`, `confusion`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Macro averages over the classes that occur.
    #[serde(rename = "macro")]
    pub macro_avg: Averages,
    /// Every class of the matrix, in order.
    pub per_class: Vec<ClassMetrics>,
    /// The confusion matrix, rows the true classes, columns the predicted ones.
    pub confusion: Confusion,
}

impl Evaluation {
    /// An empty evaluation for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self::of(Confusion::new(classes))
    }

    /// The metrics of `confusion`.
    pub fn of(confusion: Confusion) -> Self {
        let per_class = confusion.per_class();
        Evaluation {
            macro_avg: macro_averages(&per_class),
            per_class,
            confusion,
        }
    }

    /// Scores `predictions` against `labels` (pairs past the shorter are ignored), with a
    /// matrix of at least `classes` classes.
    pub fn score(
        classes: usize,
        labels: impl IntoIterator<Item = usize>,
        predictions: impl IntoIterator<Item = usize>,
    ) -> Result<Self, MetricsError> {
        let mut confusion = Confusion::new(classes);
        for (truth, predicted) in labels.into_iter().zip(predictions) {
            confusion.record(truth, predicted)?;
        }
        Ok(Self::of(confusion))
    }

    /// Fraction predicted correctly.
    pub fn accuracy(&self) -> f64 {
        self.confusion.accuracy()
    }

    /// The per-class table for people: a row per class, the macro averages, and a note
    /// on the ratios reported as 0 because they are undefined.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:>5}  {:>9}  {:>6}  {:>6}  {:>7}  {:>9}\n",
            "class", "precision", "recall", "f1", "support", "predicted"
        );
        for m in &self.per_class {
            let _ = writeln!(
                out,
                "{:>5}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}  {:>9}",
                m.class, m.precision, m.recall, m.f1, m.support, m.predicted
            );
        }
        let a = &self.macro_avg;
        let _ = writeln!(
            out,
            "{:>5}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}",
            "macro",
            a.precision,
            a.recall,
            a.f1,
            self.confusion.total()
        );
        let list = |f: fn(&ClassMetrics) -> bool| {
            self.per_class
                .iter()
                .filter(|m| f(m))
                .map(|m| m.class.to_string())
                .collect::<Vec<_>>()
        };
        let never_predicted = list(|m| m.predicted == 0 && m.support > 0);
        if !never_predicted.is_empty() {
            let _ = writeln!(
                out,
                "precision reported as 0 (undefined: never predicted) for class {}",
                never_predicted.join(", ")
            );
        }
        let no_example = list(|m| m.support == 0 && m.predicted > 0);
        if !no_example.is_empty() {
            let _ = writeln!(
                out,
                "recall reported as 0 (undefined: no example) for class {}",
                no_example.join(", ")
            );
        }
        let absent = list(|m| !m.occurs());
        if !absent.is_empty() {
            let _ = writeln!(
                out,
                "left out of the macro averages (neither labelled nor predicted): class {}",
                absent.join(", ")
            );
        }
        out
    }

    /// The confusion matrix for people (rows: true class, columns: predicted), or none
    /// past [`PRINTED_CONFUSION_CLASSES`] classes, where its rows would wrap.
    pub fn confusion_table(&self) -> Option<String> {
        let k = self.confusion.classes();
        if k > PRINTED_CONFUSION_CLASSES {
            return None;
        }
        // As wide as the largest count.
        let width = self
            .confusion
            .counts
            .iter()
            .flatten()
            .max()
            .map_or(1, |m| m.to_string().len())
            .max(k.saturating_sub(1).to_string().len())
            .max(3);
        let mut out = format!("{:>5}", "");
        for c in 0..k {
            let _ = write!(out, " {c:>width$}");
        }
        out.push('\n');
        for (t, row) in self.confusion.counts.iter().enumerate() {
            let _ = write!(out, "{t:>5}");
            for count in row {
                let _ = write!(out, " {count:>width$}");
            }
            out.push('\n');
        }
        Some(out)
    }
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
            m.record(t, p).unwrap();
        }
        assert_eq!(m.accuracy(), 4.0 / 6.0);
        let c = m.per_class();
        assert_eq!((c[0].precision, c[0].recall, c[0].support), (0.75, 0.75, 4));
        assert_eq!((c[1].precision, c[1].recall), (0.5, 0.5));
        assert!((c[1].f1 - 0.5).abs() < 1e-12);
        assert_eq!(argmax_rows(&[0.1, 0.9, 0.5, 0.7, 0.2, 0.1], 3), vec![1, 0]);
    }

    /// Three classes, worked out by hand (and as scikit-learn's `classification_report`
    /// gives them):
    ///
    /// ```text
    ///            predicted
    ///             0  1  2
    /// true 0      5  1  0     support 6
    ///      1      2  3  1     support 6
    ///      2      0  2  4     support 6
    /// predicted   7  6  5
    /// ```
    ///
    /// precision 5/7, 3/6, 4/5; recall 5/6, 3/6, 4/6; F1 = 2tp/(support + predicted) =
    /// 10/13, 6/12, 8/11.
    #[test]
    fn precision_recall_and_f1_of_a_small_matrix_by_hand() {
        let mut pairs = Vec::new();
        for (t, row) in [[5, 1, 0], [2, 3, 1], [0, 2, 4]].iter().enumerate() {
            for (p, &n) in row.iter().enumerate() {
                pairs.extend(std::iter::repeat_n((t, p), n));
            }
        }
        let e = Evaluation::score(3, pairs.iter().map(|p| p.0), pairs.iter().map(|p| p.1)).unwrap();
        assert_eq!(e.confusion.counts, [[5, 1, 0], [2, 3, 1], [0, 2, 4]]);
        assert_eq!(e.accuracy(), 12.0 / 18.0);
        let want = [
            (5.0 / 7.0, 5.0 / 6.0, 10.0 / 13.0, 6, 7),
            (3.0 / 6.0, 3.0 / 6.0, 6.0 / 12.0, 6, 6),
            (4.0 / 5.0, 4.0 / 6.0, 8.0 / 11.0, 6, 5),
        ];
        for (m, &(p, r, f1, support, predicted)) in e.per_class.iter().zip(&want) {
            assert_eq!(
                (m.precision, m.recall, m.f1),
                (p, r, f1),
                "class {}",
                m.class
            );
            assert_eq!((m.support, m.predicted), (support, predicted));
            // F1 is the harmonic mean of precision and recall.
            assert!((m.f1 - 2.0 * p * r / (p + r)).abs() < 1e-12);
        }
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(e.macro_avg.precision, (5.0 / 7.0 + 0.5 + 0.8) / 3.0));
        assert!(close(
            e.macro_avg.recall,
            (5.0 / 6.0 + 0.5 + 4.0 / 6.0) / 3.0
        ));
        assert!(close(
            e.macro_avg.f1,
            (10.0 / 13.0 + 0.5 + 8.0 / 11.0) / 3.0
        ));
    }

    /// Undefined ratios are reported as 0 (scikit-learn's `zero_division=0`): class 2 is
    /// never predicted (precision 0/0), class 3 is predicted but has no example (recall
    /// 0/0), class 1 occurs nowhere and stays out of the macro averages.
    #[test]
    fn undefined_ratios_are_zero_and_absent_classes_leave_the_averages_alone() {
        // Labels 0, 0, 2, 2; predictions 0, 3, 0, 0.
        let e = Evaluation::score(3, [0, 0, 2, 2], [0, 3, 0, 0]).unwrap();
        assert_eq!(
            e.confusion.classes(),
            4,
            "the prediction past the labels widens it"
        );
        let c = &e.per_class;
        // Class 0: tp 1, predicted 3, support 2.
        assert_eq!((c[0].precision, c[0].recall), (1.0 / 3.0, 0.5));
        assert_eq!(c[0].f1, 2.0 / 5.0);
        // Class 1: nowhere.
        assert!(!c[1].occurs());
        assert_eq!((c[1].precision, c[1].recall, c[1].f1), (0.0, 0.0, 0.0));
        // Class 2: never predicted, two examples.
        assert_eq!((c[2].predicted, c[2].support), (0, 2));
        assert_eq!((c[2].precision, c[2].recall, c[2].f1), (0.0, 0.0, 0.0));
        // Class 3: predicted once, no example.
        assert_eq!((c[3].predicted, c[3].support), (1, 0));
        assert_eq!((c[3].precision, c[3].recall, c[3].f1), (0.0, 0.0, 0.0));
        // The prediction past the labels counts as wrong.
        assert_eq!(e.accuracy(), 0.25);
        // Means over classes 0, 2, 3 (as sklearn's macro averages over the labels present).
        assert_eq!(e.macro_avg.precision, (1.0 / 3.0) / 3.0);
        assert_eq!(e.macro_avg.recall, 0.5 / 3.0);
        assert_eq!(e.macro_avg.f1, (2.0 / 5.0) / 3.0);
        let table = e.table();
        assert!(table.contains("precision reported as 0 (undefined: never predicted) for class 2"));
        assert!(table.contains("recall reported as 0 (undefined: no example) for class 3"));
        assert!(table.contains("neither labelled nor predicted): class 1"));
        // Nothing recorded: zeros, not NaN (JSON has no NaN).
        let empty = Evaluation::new(2);
        assert_eq!(empty.accuracy(), 0.0);
        assert_eq!(empty.macro_avg.f1, 0.0);
    }

    #[test]
    fn the_json_carries_the_matrix_and_every_class() {
        let e = Evaluation::score(2, [0, 1, 1], [0, 1, 0]).unwrap();
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["confusion"], serde_json::json!([[1, 0], [1, 1]]));
        assert_eq!(json["per_class"][1]["class"], 1);
        assert_eq!(json["per_class"][1]["recall"], 0.5);
        assert_eq!(json["per_class"][0]["predicted"], 2);
        assert_eq!(json["macro"]["precision"], 0.75);
    }

    #[test]
    fn classes_are_bounded_and_wide_matrices_are_not_printed() {
        let mut m = Confusion::new(2);
        assert_eq!(
            m.record(0, MAX_CLASSES),
            Err(MetricsError::TooManyClasses { class: MAX_CLASSES })
        );
        assert_eq!(
            m.classes(),
            2,
            "a refused class leaves the matrix as it was"
        );
        assert!(
            Evaluation::new(PRINTED_CONFUSION_CLASSES)
                .confusion_table()
                .is_some()
        );
        assert!(
            Evaluation::new(PRINTED_CONFUSION_CLASSES + 1)
                .confusion_table()
                .is_none()
        );
        let printed = Evaluation::score(2, [0, 1, 1], [0, 1, 0])
            .unwrap()
            .confusion_table()
            .unwrap();
        assert_eq!(printed, "        0   1\n    0   1   0\n    1   1   1\n");
    }
}
