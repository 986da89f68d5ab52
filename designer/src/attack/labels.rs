//! Label leakage: how much a host learns of the training labels from the gradient rows it
//! receives in the backward pass (one row per training example, batch after batch).
//!
//! Three attacks, none of which reads the labels (they only score the attacks):
//! - the **read-off**: right before the loss a row shows its label outright (NLLLoss's input
//!   gradient is -1/N at the label and 0 elsewhere; softmax minus one-hot has its only negative
//!   entry at the label);
//! - the **norm attack** and the **direction attack** of Li et al., "Label Leakage and
//!   Protection in Two-party Split Learning" (ICLR 2022, arXiv 2102.08504), defined there for two
//!   classes and adapted here to many (see [`LabelLeak`]).

use std::cmp::Ordering;

/// Only the first this many rows of a batch are paired by the direction attack: it bounds the
/// pairs per batch (128·127/2) whatever batch size a caller passes; the paper's 64 fit whole.
pub const MAX_PAIRED_ROWS: usize = 128;

/// Why the gradient rows and labels cannot be measured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LabelError {
    /// There must be one label per gradient row.
    #[error("{rows} gradient rows but {labels} labels")]
    Lengths {
        /// Gradient rows given.
        rows: usize,
        /// Labels given.
        labels: usize,
    },
    /// All rows come from one layer's backward tensor, so they have one width.
    #[error("gradient row {row} has width {width}, row 0 has {expected}")]
    Width {
        /// Which row.
        row: usize,
        /// Its width.
        width: usize,
        /// The width of row 0.
        expected: usize,
    },
    /// A label names no class.
    #[error("row {row} has label {label}, but there are {classes} classes")]
    Label {
        /// Which row.
        row: usize,
        /// Its label.
        label: usize,
        /// How many classes there are.
        classes: usize,
    },
    /// Batches of no rows cannot tile the rows.
    #[error("a batch size of zero")]
    ZeroBatch,
}

/// What one host's gradient rows leak of the labels. Every share and AUC is finite: with
/// nothing to measure a share is 0 and an AUC 0.5 (chance).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LabelLeak {
    /// Gradient rows measured (training examples the host saw the gradient of).
    pub rows: usize,
    /// Entries per row (10 right before the loss, 64 or 128 at earlier hosts).
    pub width: usize,
    /// Share of rows whose label the read-off gets right: a row with exactly one non-zero entry
    /// guesses that entry's index, else a row with exactly one negative entry guesses its index,
    /// else there is no guess, which counts as wrong.
    pub exact: f64,
    /// Share of rows for which the read-off made a guess at all (right or wrong).
    pub guessed: f64,
    /// Norm attack: the L2 norm of a row as the score. The norm names no class, and the plain
    /// mean over classes of the one-vs-rest AUCs is no measure: weighted by
    /// `n_c·(rows − n_c)` it is exactly 0.5 on any data (each pair of rows with different labels
    /// counts once, for one of the two classes), so with balanced classes it is 0.5 however much
    /// leaks. Instead each class gets the side (larger or smaller norms) it falls on in one half
    /// of the batches (even-numbered, odd-numbered), and its one-vs-rest AUC is read on the other
    /// half with that side as "positive"; this is the mean over classes and both halves (0.5
    /// where a half shows no side). The side is never chosen on the data it is scored on, so
    /// the expectation is 0.5 when norms carry no label, and above it when they do.
    pub norm_auc: f64,
    /// One-vs-rest AUC per class over all rows, score = norm: above 0.5 when the class has
    /// larger norms than the rest, below when smaller.
    pub norm_auc_by_class: Vec<f64>,
    /// The class whose `norm_auc_by_class` is farthest from 0.5 (None when all are exactly 0.5).
    pub norm_leakiest_class: Option<usize>,
    /// Direction attack: over the pairs of rows of one batch (the paper compares a row with one
    /// of known label; here every pair of the batch's first [`MAX_PAIRED_ROWS`] rows), the AUC of
    /// the cosine similarity as the score for "same label". A row of norm 0 has cosine 0 with
    /// every other.
    pub direction_auc: f64,
    /// Pairs the direction attack scored.
    pub pairs: usize,
    /// Share of those pairs whose two labels agree: the chance level of `nearest_same`.
    pub same_pair_rate: f64,
    /// The direction attack as labels: share of paired rows whose most cosine-similar other row
    /// of the batch has the same label, i.e. the label accuracy of a host that knows its
    /// batch-mates' labels (or one per class) and copies the nearest. A row with no batch-mate of
    /// its label cannot be right; chance is `same_pair_rate`.
    pub nearest_same: f64,
}

/// The Mann-Whitney AUC: the probability that a random positive scores above a random negative,
/// ties counted as half. O(n log n); scores are ordered by `f64::total_cmp`, so a NaN score
/// still ranks somewhere and the result is finite. 0.5 (chance) when either side is empty.
pub fn auc(positive: &[f64], negative: &[f64]) -> f64 {
    if positive.is_empty() || negative.is_empty() {
        return 0.5;
    }
    let mut scored: Vec<(f64, bool)> = positive.iter().map(|&s| (s, true)).collect();
    scored.extend(negative.iter().map(|&s| (s, false)));
    scored.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    // Twice the count of (positive, negative) pairs the positive wins, so a tie adds 1.
    let (mut twice_wins, mut negatives_below) = (0u128, 0u128);
    for group in scored.chunk_by(|a, b| a.0.total_cmp(&b.0).is_eq()) {
        let pos = group.iter().filter(|(_, p)| *p).count() as u128;
        let neg = group.len() as u128 - pos;
        twice_wins += 2 * pos * negatives_below + pos * neg;
        negatives_below += neg;
    }
    let pairs = positive.len() as f64 * negative.len() as f64;
    twice_wins as f64 / 2.0 / pairs
}

/// Measures the leak of one host's gradient rows (`rows[i]` is the gradient of the example
/// labelled `labels[i]`; consecutive runs of `batch` rows are one batch, the last may be short).
pub fn measure(
    rows: &[impl AsRef<[f32]>],
    labels: &[usize],
    batch: usize,
    classes: usize,
) -> Result<LabelLeak, LabelError> {
    let width = rows.first().map_or(0, |r| r.as_ref().len());
    if rows.len() != labels.len() {
        return Err(LabelError::Lengths {
            rows: rows.len(),
            labels: labels.len(),
        });
    }
    if batch == 0 {
        return Err(LabelError::ZeroBatch);
    }
    if let Some(row) = rows.iter().position(|r| r.as_ref().len() != width) {
        let width_of_row = rows.get(row).map_or(0, |r| r.as_ref().len());
        return Err(LabelError::Width {
            row,
            width: width_of_row,
            expected: width,
        });
    }
    if let Some((row, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
        return Err(LabelError::Label {
            row,
            label,
            classes,
        });
    }

    let guesses: Vec<Option<usize>> = rows.iter().map(|r| read_off(r.as_ref())).collect();
    let right = guesses
        .iter()
        .zip(labels)
        .filter(|(g, l)| **g == Some(**l))
        .count();
    let guessed = guesses.iter().filter(|g| g.is_some()).count();

    let norms: Vec<f64> = rows
        .iter()
        .map(|r| dot(r.as_ref(), r.as_ref()).sqrt())
        .collect();
    let norm_auc_by_class: Vec<f64> = (0..classes)
        .map(|c| class_auc(&norms, labels, c, |_| true))
        .collect();
    let far = |c: &usize| norm_auc_by_class.get(*c).map_or(0.0, |a| (a - 0.5).abs());
    let norm_leakiest_class = (0..classes)
        .filter(|c| far(c) > 0.0)
        .max_by(|a, b| far(a).total_cmp(&far(b)));
    let mut oriented = Vec::with_capacity(2 * classes);
    for c in 0..classes {
        for fit in [0, 1] {
            let side = class_auc(&norms, labels, c, |i| (i / batch) % 2 == fit);
            let held_out = class_auc(&norms, labels, c, |i| (i / batch) % 2 != fit);
            oriented.push(match side.total_cmp(&0.5) {
                Ordering::Greater => held_out,
                Ordering::Less => 1.0 - held_out,
                Ordering::Equal => 0.5,
            });
        }
    }
    let norm_auc = match oriented.len() {
        0 => 0.5,
        n => oriented.iter().sum::<f64>() / n as f64,
    };

    let d = direction(rows, labels, &norms, batch);
    let pairs = d.same.len() + d.different.len();
    Ok(LabelLeak {
        rows: rows.len(),
        width,
        exact: ratio(right, rows.len()),
        guessed: ratio(guessed, rows.len()),
        norm_auc,
        norm_auc_by_class,
        norm_leakiest_class,
        direction_auc: auc(&d.same, &d.different),
        pairs,
        same_pair_rate: ratio(d.same.len(), pairs),
        nearest_same: ratio(d.nearest_right, d.nearest_total),
    })
}

/// The read-off rule of [`LabelLeak::exact`].
fn read_off(row: &[f32]) -> Option<usize> {
    let only = |hit: fn(f32) -> bool| {
        let mut hits = row.iter().enumerate().filter(|(_, v)| hit(**v));
        match (hits.next(), hits.next()) {
            (Some((i, _)), None) => Some(i),
            _ => None,
        }
    };
    only(|v| v != 0.0).or_else(|| only(|v| v < 0.0))
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

/// `count / total`, 0 when there is nothing to count.
fn ratio(count: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        count as f64 / total as f64
    }
}

/// One-vs-rest AUC of class `c` with score = norm, over the rows whose index `keep` admits.
fn class_auc(norms: &[f64], labels: &[usize], c: usize, keep: impl Fn(usize) -> bool) -> f64 {
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for (i, (&norm, &label)) in norms.iter().zip(labels).enumerate() {
        match (keep(i), label == c) {
            (true, true) => pos.push(norm),
            (true, false) => neg.push(norm),
            (false, _) => {}
        }
    }
    auc(&pos, &neg)
}

/// The cosines of the within-batch pairs, split by whether the labels agree, and how often a
/// row's most similar batch-mate shares its label.
#[derive(Default)]
struct Direction {
    same: Vec<f64>,
    different: Vec<f64>,
    nearest_right: usize,
    nearest_total: usize,
}

fn direction(
    rows: &[impl AsRef<[f32]>],
    labels: &[usize],
    norms: &[f64],
    batch: usize,
) -> Direction {
    let mut out = Direction::default();
    let batches = rows
        .chunks(batch)
        .zip(labels.chunks(batch))
        .zip(norms.chunks(batch));
    for ((rows, labels), norms) in batches {
        let k = rows.len().min(MAX_PAIRED_ROWS);
        let (rows, labels, norms) = (&rows[..k], &labels[..k], &norms[..k]);
        // Each row's best cosine so far, and the label of the batch-mate it came from.
        let mut nearest: Vec<Option<(f64, usize)>> = vec![None; k];
        for i in 0..k {
            for j in i + 1..k {
                let product = norms[i] * norms[j];
                let cos = if product == 0.0 {
                    0.0
                } else {
                    dot(rows[i].as_ref(), rows[j].as_ref()) / product
                };
                let side = if labels[i] == labels[j] {
                    &mut out.same
                } else {
                    &mut out.different
                };
                side.push(cos);
                for (me, other) in [(i, j), (j, i)] {
                    if nearest[me].is_none_or(|(best, _)| cos > best) {
                        nearest[me] = Some((cos, labels[other]));
                    }
                }
            }
        }
        for (near, label) in nearest.iter().zip(labels) {
            if let Some((_, l)) = near {
                out.nearest_total += 1;
                out.nearest_right += usize::from(l == label);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

    use super::*;

    /// SplitMix64: a few lines of deterministic randomness for the tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let z = (self.0 ^ (self.0 >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn uniform(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32
        }
        fn gauss(&mut self) -> f32 {
            let (u, v) = (1.0 - self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        }
    }

    const BATCH: usize = 64;

    /// 100 batches (the last one short) of random labels, with rows made from them by `row`.
    fn leak_of(seed: u64, mut row: impl FnMut(&mut Rng, usize) -> Vec<f32>) -> LabelLeak {
        let mut rng = Rng(seed);
        let labels: Vec<usize> = (0..BATCH * 100 - 17)
            .map(|_| rng.next() as usize % 10)
            .collect();
        let rows: Vec<Vec<f32>> = labels.iter().map(|&l| row(&mut rng, l)).collect();
        measure(&rows, &labels, BATCH, 10).unwrap()
    }

    #[test]
    fn auc_by_hand() {
        assert_eq!(auc(&[3.0, 4.0], &[1.0, 2.0]), 1.0);
        assert_eq!(auc(&[1.0, 2.0], &[3.0, 4.0]), 0.0);
        assert_eq!(auc(&[1.0, 1.0], &[1.0, 1.0, 1.0]), 0.5);
        // 2 beats 1, ties 2 (half), loses to 3; 4 beats all three: 4.5 of 6 pairs.
        assert_eq!(auc(&[2.0, 4.0], &[1.0, 2.0, 3.0]), 0.75);
        assert_eq!((auc(&[], &[1.0]), auc(&[1.0], &[])), (0.5, 0.5));
        assert!(auc(&[f64::NAN, 1.0], &[f64::NAN, 0.0]).is_finite());
    }

    #[test]
    fn nll_gradients_show_their_labels() {
        let one_hot = |l: usize| (0..10).map(move |k| if k == l { -1.0 / 64.0 } else { 0.0 });
        let leak = leak_of(1, |_, l| one_hot(l).collect());
        assert_eq!((leak.rows, leak.width), (BATCH * 100 - 17, 10));
        assert_eq!(
            (leak.exact, leak.guessed, leak.direction_auc),
            (1.0, 1.0, 1.0)
        );
        // Only a row with no batch-mate of its label misses.
        assert!(leak.nearest_same > 0.99, "{leak:?}");
        // All norms are equal: the norm attack learns nothing, and no class stands out.
        assert_eq!((leak.norm_auc, leak.norm_leakiest_class), (0.5, None));
    }

    #[test]
    fn softmax_minus_one_hot_shows_its_labels() {
        let leak = leak_of(2, |rng, l| {
            let exp: Vec<f32> = (0..10).map(|_| (3.0 * rng.gauss()).exp()).collect();
            let sum: f32 = exp.iter().sum();
            let hot = |k: usize| if k == l { 1.0 } else { 0.0 };
            exp.iter()
                .enumerate()
                .map(|(k, e)| (e / sum - hot(k)) / 64.0)
                .collect()
        });
        assert_eq!(leak.exact, 1.0);
        assert!(leak.direction_auc > 0.9, "{leak:?}");
    }

    #[test]
    fn noise_leaks_nothing() {
        let leak = leak_of(3, |rng, _| (0..64).map(|_| rng.gauss()).collect());
        assert_eq!((leak.exact, leak.guessed), (0.0, 0.0));
        assert!((leak.norm_auc - 0.5).abs() < 0.02, "{leak:?}");
        assert!((leak.direction_auc - 0.5).abs() < 0.02, "{leak:?}");
        assert!(
            (leak.nearest_same - leak.same_pair_rate).abs() < 0.02,
            "{leak:?}"
        );
        assert_eq!(leak.pairs, 99 * 64 * 63 / 2 + 47 * 46 / 2);
    }

    #[test]
    fn larger_norms_of_one_class_leak_it() {
        let leak = leak_of(4, |rng, l| {
            let scale = if l == 3 { 1.5 } else { 1.0 };
            (0..64).map(|_| scale * rng.gauss()).collect()
        });
        assert_eq!(leak.norm_leakiest_class, Some(3));
        assert!(leak.norm_auc_by_class[3] > 0.95, "{leak:?}");
        assert!(leak.norm_auc > 0.55, "{leak:?}");
    }

    #[test]
    fn projected_labels_cluster_by_direction() {
        // An earlier host's gradient: a fixed linear map of the label's one-hot, scaled per
        // example, plus a little noise.
        let mut rng = Rng(50);
        let map: Vec<Vec<f32>> = (0..10)
            .map(|_| (0..128).map(|_| rng.gauss()).collect())
            .collect();
        let leak = leak_of(5, |rng, l| {
            let scale = 0.2 + rng.uniform();
            map[l]
                .iter()
                .map(|m| scale * m + 0.05 * rng.gauss())
                .collect()
        });
        assert!(leak.direction_auc > 0.99, "{leak:?}");
        assert!(leak.nearest_same > 0.99, "{leak:?}");
        assert_eq!(leak.exact, 0.0);
    }

    #[test]
    fn mismatched_inputs_are_refused() {
        let rows = [vec![0.0f32; 3], vec![0.0; 3]];
        let error = |rows: &[Vec<f32>], labels: &[usize], batch| {
            measure(rows, labels, batch, 10).unwrap_err()
        };
        assert_eq!(
            error(&rows, &[0], 64),
            LabelError::Lengths { rows: 2, labels: 1 }
        );
        let ragged = [vec![0.0f32; 3], vec![0.0; 4]];
        let width = LabelError::Width {
            row: 1,
            width: 4,
            expected: 3,
        };
        assert_eq!(error(&ragged, &[0, 1], 64), width);
        let label = LabelError::Label {
            row: 1,
            label: 10,
            classes: 10,
        };
        assert_eq!(error(&rows, &[0, 10], 64), label);
        assert_eq!(error(&rows, &[0, 1], 0), LabelError::ZeroBatch);
        let leak = measure(&[] as &[&[f32]], &[], 64, 10).unwrap();
        assert_eq!(
            (leak.exact, leak.norm_auc, leak.direction_auc),
            (0.0, 0.5, 0.5)
        );
    }
}
