//! Input reconstruction: what a host can rebuild of the designer's private images from the
//! features it sees (the activations entering its layer).
//!
//! The attack is a decoder trained on public data: the attacker maps public images to the
//! features its position sees (through the true earlier layers, when its coalition holds
//! them, or its own estimate of them; the caller computes them), trains an MLP from features
//! back to images (MSE), and applies it to the features it observed. Scored against the true
//! images by MSE and SSIM, beside the baseline of guessing the mean public image every time.

use std::path::PathBuf;

use mixnn_layer_sdk::Tensor;

use crate::{
    backend::Backend,
    cascade::{Cascade, CascadeError},
    order::DataOrder,
    spec::ModelSpec,
};

/// Examples per SGD step of the decoder.
const BATCH: usize = 64;
/// Rows per forward pass when decoding.
const CHUNK: usize = 500;

/// Why a reconstruction could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A tensor that is not a non-empty matrix, or does not fit the others (the caller's
    /// mistake).
    #[error("{0}: shape {1:?} does not fit")]
    Shape(&'static str, Vec<usize>),
    /// Images that are not square, or too small for SSIM's window.
    #[error("{0} pixels per image: not a square image of at least {WINDOW}x{WINDOW}")]
    NotSquare(usize),
    /// The decoder's loss blew up: the learning rate is too large for these features.
    #[error("the decoder diverged at step {0}; lower its learning rate")]
    Diverged(usize),
    /// The decoder did not build or run.
    #[error(transparent)]
    Cascade(#[from] CascadeError),
}

/// How the attacker trains its decoder.
#[derive(Debug, Clone, Copy)]
pub struct DecoderBudget {
    /// SGD steps, in batches of 64.
    pub steps: usize,
    /// Width of the decoder's hidden layer.
    pub hidden: usize,
    /// The attacker's seed (initialisation, order).
    pub seed: u64,
    /// SGD's learning rate (momentum 0.9). `mse-loss` averages over every value of a batch,
    /// not over its images, so its gradients are the pixel count (784) times smaller than a
    /// per-image loss's, and the rate far larger than a classifier's 0.01. On MNIST features
    /// of widths 10 to 784 (centred, unit variance), 3 did best or as well as any of 0.1 to
    /// 10 in 2000 steps; 10 diverged on raw pixels.
    pub lr: f32,
}

impl Default for DecoderBudget {
    fn default() -> Self {
        DecoderBudget {
            steps: 2000,
            hidden: 512,
            seed: 0x1A9E5,
            lr: 3.0,
        }
    }
}

/// How well the private images were rebuilt.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reconstruction {
    /// Private images scored.
    pub examples: usize,
    /// Public examples the decoder trained on.
    pub public_examples: usize,
    /// Width of the features the host sees.
    pub features: usize,
    /// Mean squared error per pixel of the rebuilt images (clamped to [0, 1]).
    pub mse: f64,
    /// Their mean SSIM ([`ssim`]) against the true images.
    pub ssim: f64,
    /// MSE of the mean public image taken for every private one: what knowing the
    /// distribution alone gives.
    pub baseline_mse: f64,
    /// SSIM of that mean image.
    pub baseline_ssim: f64,
    /// The decoder's MSE on its own training data: near `mse` when it generalises, much
    /// lower when it overfits a small public set.
    pub public_mse: f64,
    /// The rebuilt images, `[examples, pixels]`, for plots.
    #[serde(skip)]
    pub decoded: Tensor,
}

/// Trains a decoder on `public` (features `[n, d]`, images `[n, pixels]`, square, in
/// [0, 1]) and scores what it makes of the `private` features against the private images.
pub fn reconstruct(
    (public, images): (&Tensor, &Tensor),
    (private, truth): (&Tensor, &Tensor),
    budget: &DecoderBudget,
) -> Result<Reconstruction, InputError> {
    let (n, d) = matrix(public, "public features", None, None)?;
    let (_, pixels) = matrix(images, "public images", Some(n), None)?;
    let (m, _) = matrix(private, "private features", None, Some(d))?;
    matrix(truth, "private images", Some(m), Some(pixels))?;
    let side = side(pixels)?;
    let (seen, observed) = standardise(public, private)?;
    let mut decoder = Cascade::build(&decoder_spec(d, pixels, budget)?, Backend::Native, None)?;
    let batches = (1..).flat_map(|pass| {
        let order = DataOrder::Shuffled.epoch(budget.seed, pass, n);
        order
            .chunks(BATCH)
            .map(<[usize]>::to_vec)
            .collect::<Vec<_>>()
    });
    for (step, idx) in batches.take(budget.steps).enumerate() {
        let loss = decoder.train_step(rows(&seen, &idx)?, rows(images, &idx)?)?;
        if !loss.is_finite() {
            return Err(InputError::Diverged(step));
        }
    }
    let public_mse = mse(decode(&mut decoder, &seen)?.data(), images.data());
    let decoded = decode(&mut decoder, &observed)?;
    Ok(score(decoded, images, truth, (side, d), public_mse))
}

/// The trivial case: a host that sees the raw pixels holds the private images themselves
/// (MSE 0, SSIM 1), beside the same baseline as [`reconstruct`].
pub fn raw_inputs(public: &Tensor, private: &Tensor) -> Result<Reconstruction, InputError> {
    let (_, pixels) = matrix(public, "public images", None, None)?;
    matrix(private, "private images", None, Some(pixels))?;
    let side = side(pixels)?;
    Ok(score(private.clone(), public, private, (side, pixels), 0.0))
}

/// The scores of `decoded` against `truth`, and the mean `public` image's.
#[allow(
    clippy::cast_possible_truncation,
    reason = "means of f32 pixels, back to f32"
)]
fn score(
    decoded: Tensor,
    public: &Tensor,
    truth: &Tensor,
    (side, features): (usize, usize),
    public_mse: f64,
) -> Reconstruction {
    let pixels = side * side;
    let public_examples = public.len() / pixels;
    let mut sum = vec![0.0f64; pixels];
    for image in public.data().chunks_exact(pixels) {
        sum.iter_mut()
            .zip(image)
            .for_each(|(s, &v)| *s += f64::from(v));
    }
    let mean: Vec<f32> = sum
        .iter()
        .map(|s| (s / public_examples as f64) as f32)
        .collect();
    let truths: Vec<&[f32]> = truth.data().chunks_exact(pixels).collect();
    let guesses: Vec<&[f32]> = decoded.data().chunks_exact(pixels).collect();
    let examples = truths.len();
    let average = |f: &dyn Fn(usize) -> f64| (0..examples).map(f).sum::<f64>() / examples as f64;
    Reconstruction {
        examples,
        public_examples,
        features,
        mse: mse(decoded.data(), truth.data()),
        ssim: average(&|i| ssim(guesses[i], truths[i], side, side)),
        baseline_mse: average(&|i| mse(&mean, truths[i])),
        baseline_ssim: average(&|i| ssim(&mean, truths[i], side, side)),
        public_mse,
        decoded,
    }
}

/// The decoder's images for every row of `features`, clamped to [0, 1].
fn decode(decoder: &mut Cascade, features: &Tensor) -> Result<Tensor, InputError> {
    let all: Vec<usize> = (0..features.shape()[0]).collect();
    let mut out = Vec::new();
    for chunk in all.chunks(CHUNK) {
        let y = decoder.predict(rows(features, chunk)?)?;
        out.extend(y.data().iter().map(|v| v.clamp(0.0, 1.0)));
    }
    let pixels = out.len() / all.len().max(1);
    Ok(Tensor::new(vec![all.len(), pixels], out).map_err(CascadeError::Batch)?)
}

/// Linear-ReLU(d, hidden), Linear(hidden, pixels), MSE, trained as the paper's model is
/// (SGD with momentum 0.9, the spec's default) at the budget's rate.
fn decoder_spec(d: usize, pixels: usize, budget: &DecoderBudget) -> Result<ModelSpec, InputError> {
    let hidden = budget.hidden;
    let text = format!(
        r#"
        name = "decoder"
        [[layer]]
        component = "linear-relu"
        config = {{ in_features = {d}, out_features = {hidden} }}
        [[layer]]
        component = "linear"
        config = {{ in_features = {hidden}, out_features = {pixels} }}
        [[layer]]
        component = "mse-loss"
        "#
    );
    let mut spec = ModelSpec::parse(&text, PathBuf::new()).map_err(CascadeError::from)?;
    spec.training.seed = budget.seed;
    spec.training.lr = budget.lr;
    spec.training.batch_size = BATCH;
    Ok(spec)
}

/// Both feature sets, centred on the public features' mean and scaled by one factor to unit
/// mean variance: the features' scale differs by orders of magnitude between positions
/// (pixels, hidden activations, logits), and one learning rate must fit them all. A factor
/// per feature did hardly better on MNIST's first hidden features (MSE 0.0109 against 0.0110).
#[allow(
    clippy::cast_possible_truncation,
    reason = "f32 features, scaled in f64"
)]
fn standardise(public: &Tensor, private: &Tensor) -> Result<(Tensor, Tensor), InputError> {
    let d = public.shape()[1];
    let n = (public.len() / d) as f64;
    let mut mean = vec![0.0f64; d];
    let mut square = 0.0f64;
    for row in public.data().chunks_exact(d) {
        mean.iter_mut()
            .zip(row)
            .for_each(|(m, &v)| *m += f64::from(v) / n);
        square += row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / n;
    }
    let variance = (square - mean.iter().map(|m| m * m).sum::<f64>()) / d as f64;
    let scale = 1.0 / variance.max(1e-12).sqrt();
    let apply = |t: &Tensor| {
        let centred = t
            .data()
            .chunks_exact(d)
            .flat_map(|row| row.iter().zip(&mean));
        let data = centred
            .map(|(&v, m)| ((f64::from(v) - m) * scale) as f32)
            .collect();
        t.with_data(data)
            .map_err(|e| InputError::Cascade(CascadeError::Batch(e)))
    };
    Ok((apply(public)?, apply(private)?))
}

/// The rows `idx` of a matrix.
fn rows(t: &Tensor, idx: &[usize]) -> Result<Tensor, InputError> {
    let w = t.shape()[1];
    let data = idx
        .iter()
        .flat_map(|&r| &t.data()[r * w..(r + 1) * w])
        .copied()
        .collect();
    Ok(Tensor::new(vec![idx.len(), w], data).map_err(CascadeError::Batch)?)
}

/// `t`'s (rows, columns): a non-empty matrix, of `rows` and `cols` where given.
fn matrix(
    t: &Tensor,
    what: &'static str,
    rows: Option<usize>,
    cols: Option<usize>,
) -> Result<(usize, usize), InputError> {
    match *t.shape() {
        [r, c] if r > 0 && c > 0 && rows.is_none_or(|n| n == r) && cols.is_none_or(|n| n == c) => {
            Ok((r, c))
        }
        _ => Err(InputError::Shape(what, t.shape().to_vec())),
    }
}

/// The side of a square image of `pixels`.
fn side(pixels: usize) -> Result<usize, InputError> {
    let s = pixels.isqrt();
    (s * s == pixels && s >= WINDOW)
        .then_some(s)
        .ok_or(InputError::NotSquare(pixels))
}

/// Mean squared difference.
fn mse(a: &[f32], b: &[f32]) -> f64 {
    let total: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    total / a.len().max(1) as f64
}

/// SSIM's Gaussian window: sigma 1.5, truncated at 3.5 sigma as scipy's `gaussian_filter`
/// does (radius `int(3.5 * 1.5 + 0.5)` = 5).
const WINDOW: usize = 11;
const SIGMA: f64 = 1.5;
/// SSIM's stabilisers for a data range L = 1: (K1 L)^2 and (K2 L)^2, K1 = 0.01, K2 = 0.03.
const C1: f64 = 0.01 * 0.01;
const C2: f64 = 0.03 * 0.03;

/// The structural similarity of two `width` x `height` images with values in [0, 1] (Wang et
/// al. 2004), as scikit-image's `structural_similarity(a, b, gaussian_weights=True,
/// sigma=1.5, use_sample_covariance=False, data_range=1)`: local means, variances and
/// covariance under an 11x11 Gaussian window (population moments, not sample ones), SSIM at
/// each position where the window lies inside the image, averaged. NaN if the slices are not
/// `width` x `height` or the image is smaller than the window.
pub fn ssim(a: &[f32], b: &[f32], width: usize, height: usize) -> f64 {
    if a.len() != width * height || b.len() != a.len() || width < WINDOW || height < WINDOW {
        return f64::NAN;
    }
    let r = (WINDOW / 2) as f64;
    let bell: Vec<f64> = (0..WINDOW)
        .map(|i| (-0.5 * ((i as f64 - r) / SIGMA).powi(2)).exp())
        .collect();
    let k: Vec<f64> = bell.iter().map(|w| w / bell.iter().sum::<f64>()).collect();
    let moment = |f: fn(f64, f64) -> f64| {
        let map: Vec<f64> = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| f(f64::from(x), f64::from(y)))
            .collect();
        filter_valid(&map, width, height, &k)
    };
    let (mx, my, mxx, myy, mxy) = (
        moment(|x, _| x),
        moment(|_, y| y),
        moment(|x, _| x * x),
        moment(|_, y| y * y),
        moment(|x, y| x * y),
    );
    let at = |i: usize| {
        let (ux, uy) = (mx[i], my[i]);
        let (vx, vy, cxy) = (mxx[i] - ux * ux, myy[i] - uy * uy, mxy[i] - ux * uy);
        ((2.0 * ux * uy + C1) * (2.0 * cxy + C2)) / ((ux * ux + uy * uy + C1) * (vx + vy + C2))
    };
    (0..mx.len()).map(at).sum::<f64>() / mx.len() as f64
}

/// `image` filtered by the separable window `k`, at the positions where it fits.
fn filter_valid(image: &[f64], width: usize, height: usize, k: &[f64]) -> Vec<f64> {
    let (w, h) = (width + 1 - k.len(), height + 1 - k.len());
    let dot = |from: &[f64], at: usize, stride: usize| -> f64 {
        k.iter()
            .enumerate()
            .map(|(j, kj)| kj * from[at + j * stride])
            .sum()
    };
    let across: Vec<f64> = (0..height * w)
        .map(|i| dot(image, i / w * width + i % w, 1))
        .collect();
    (0..h * w).map(|i| dot(&across, i, w)).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

    use rand_chacha::ChaCha8Rng;
    use rand_core::{Rng, SeedableRng};

    use super::*;

    /// Uniform values in [0, 1) from a splitmix64 hash, so that NumPy can make the same.
    fn hashed(salt: u64, len: usize) -> Vec<f32> {
        (0..len as u64)
            .map(|i| {
                let mut z = (i + salt * 7919).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                ((z >> 40) % 1000) as f32 / 1000.0
            })
            .collect()
    }

    fn blob(cx: f64, cy: f64, r: f64, width: usize, height: usize) -> Vec<f32> {
        (0..width * height)
            .map(|i| {
                let (y, x) = ((i / width) as f64, (i % width) as f64);
                (-((x - cx).powi(2) + (y - cy).powi(2)) / (2.0 * r * r)).exp() as f32
            })
            .collect()
    }

    fn noisy(image: &[f32], amplitude: f32, salt: u64) -> Vec<f32> {
        let noise = hashed(salt, image.len());
        let add = |(v, n): (&f32, &f32)| (v + amplitude * (n - 0.5)).clamp(0.0, 1.0);
        image.iter().zip(&noise).map(add).collect()
    }

    /// scikit-image 0.26.0's `structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
    /// use_sample_covariance=False, data_range=1.0)` on the same images (made in NumPy as
    /// float32, passed as float64): random and random, a blob and the blob shifted by a pixel,
    /// dimmed, with noise, against random, and a 32x20 blob with noise.
    const SKIMAGE: [f64; 6] = [
        -0.035_345_985_896_880_22,
        0.875_722_810_091_97,
        0.630_261_407_046_563_5,
        0.864_856_026_727_078_2,
        -0.018_731_655_981_563_178,
        0.644_073_626_233_918_8,
    ];

    #[test]
    fn ssim_matches_scikit_image() {
        let b = blob(14.0, 14.0, 4.0, 28, 28);
        let wide = blob(12.0, 9.0, 3.0, 32, 20);
        let cases = [
            (hashed(1, 784), hashed(2, 784), 28),
            (b.clone(), blob(15.0, 13.0, 4.0, 28, 28), 28),
            (b.clone(), b.iter().map(|v| 0.5 * v + 0.25).collect(), 28),
            (b.clone(), noisy(&b, 0.2, 3), 28),
            (b.clone(), hashed(4, 784), 28),
            (wide.clone(), noisy(&wide, 0.3, 5), 32),
        ];
        for ((x, y, width), want) in cases.into_iter().zip(SKIMAGE) {
            let height = x.len() / width;
            let (got, back) = (ssim(&x, &y, width, height), ssim(&y, &x, width, height));
            assert!((got - want).abs() < 1e-9 && got == back, "{got} vs {want}");
        }
    }

    #[test]
    fn ssim_is_one_for_identical_images_and_falls_with_noise() {
        let b = blob(10.0, 16.0, 3.0, 28, 28);
        assert!((ssim(&b, &b, 28, 28) - 1.0).abs() < 1e-12);
        let brighter: Vec<f32> = b.iter().map(|v| v * 0.8 + 0.2).collect();
        assert!(ssim(&b, &brighter, 28, 28) < 0.99);
        let scores: Vec<f64> = [0.05, 0.1, 0.2, 0.4, 0.8]
            .iter()
            .map(|&a| ssim(&b, &noisy(&b, a, 9), 28, 28))
            .collect();
        assert!(scores.windows(2).all(|w| w[1] < w[0]), "{scores:?}");
        assert!(ssim(&b, &b, 27, 29).is_nan() && ssim(&b[..100], &b[..100], 10, 10).is_nan());
    }

    fn uniform(rng: &mut ChaCha8Rng) -> f32 {
        rng.next_u32() as f32 / u32::MAX as f32
    }

    /// `n` 28x28 images of three blobs each.
    fn blobs(n: usize, rng: &mut ChaCha8Rng) -> Tensor {
        let mut data = vec![0.0f32; n * 784];
        for image in data.chunks_exact_mut(784) {
            for _ in 0..3 {
                let [x, y, r, level] = [0; 4].map(|_| f64::from(uniform(rng)));
                let shape = blob(x * 28.0, y * 28.0, 1.5 + 2.5 * r, 28, 28);
                for (p, v) in image.iter_mut().zip(shape) {
                    *p = (*p + (0.5 + 0.5 * level as f32) * v).min(1.0);
                }
            }
        }
        Tensor::new(vec![n, 784], data).unwrap()
    }

    /// Blob images and features that are a random projection of them to 128 (or noise,
    /// unless `informative`); a decoder trained on 256 and scored on 64.
    fn attack(informative: bool) -> Reconstruction {
        let rng = &mut ChaCha8Rng::seed_from_u64(7);
        let images = blobs(320, rng);
        let p: Vec<f32> = (0..784 * 128)
            .map(|_| (uniform(rng) - 0.5) * 0.125)
            .collect();
        let features: Vec<f32> = if informative {
            let row = |x: &[f32]| {
                (0..128)
                    .map(|j| (0..784).map(|i| x[i] * p[i * 128 + j]).sum::<f32>())
                    .collect::<Vec<_>>()
            };
            images.data().chunks_exact(784).flat_map(row).collect()
        } else {
            (0..320 * 128).map(|_| uniform(rng)).collect()
        };
        let features = Tensor::new(vec![320, 128], features).unwrap();
        let split =
            |t: &Tensor, from: usize, to: usize| rows(t, &(from..to).collect::<Vec<_>>()).unwrap();
        let (pf, pi) = (split(&features, 0, 256), split(&images, 0, 256));
        let (qf, qi) = (split(&features, 256, 320), split(&images, 256, 320));
        let budget = DecoderBudget {
            steps: 300,
            hidden: 128,
            ..DecoderBudget::default()
        };
        reconstruct((&pf, &pi), (&qf, &qi), &budget).unwrap()
    }

    #[test]
    fn features_that_determine_the_image_give_it_away() {
        let r = attack(true);
        assert_eq!((r.examples, r.public_examples, r.features), (64, 256, 128));
        assert_eq!(r.decoded.shape(), [64, 784]);
        assert!(
            r.mse < r.baseline_mse / 4.0 && r.ssim > r.baseline_ssim + 0.3,
            "{r:?}"
        );
    }

    #[test]
    fn features_independent_of_the_image_give_nothing_away() {
        let r = attack(false);
        assert!(
            r.mse > 0.9 * r.baseline_mse && r.ssim < r.baseline_ssim + 0.05,
            "{r:?}"
        );
    }

    #[test]
    fn raw_pixels_are_the_images() {
        let images = blobs(8, &mut ChaCha8Rng::seed_from_u64(3));
        let r = raw_inputs(&images, &images).unwrap();
        assert!(r.mse == 0.0 && (r.ssim - 1.0).abs() < 1e-12, "{r:?}");
        assert!(r.baseline_mse > 0.0 && r.baseline_ssim < 1.0);
    }

    #[test]
    fn shapes_that_do_not_fit_are_refused() {
        let zeros = |shape: &[usize]| Tensor::zeros(shape.to_vec());
        let (x, y, fewer) = (zeros(&[4, 3]), zeros(&[4, 784]), zeros(&[3, 784]));
        let (wider, flat, strip) = (zeros(&[4, 5]), zeros(&[12]), zeros(&[4, 280]));
        let budget = DecoderBudget::default();
        for (public, private) in [
            ((&x, &fewer), (&x, &y)),
            ((&x, &y), (&wider, &y)),
            ((&flat, &y), (&x, &y)),
            ((&x, &y), (&x, &fewer)),
        ] {
            let refused = reconstruct(public, private, &budget);
            assert!(matches!(refused, Err(InputError::Shape(..))), "{refused:?}");
        }
        let strips = reconstruct((&x, &strip), (&x, &strip), &budget);
        assert!(matches!(strips, Err(InputError::NotSquare(280))));
        assert!(matches!(raw_inputs(&y, &x), Err(InputError::Shape(..))));
    }

    #[test]
    fn a_rate_too_large_is_reported() {
        let images = blobs(8, &mut ChaCha8Rng::seed_from_u64(5));
        let budget = DecoderBudget {
            steps: 50,
            hidden: 8,
            seed: 1,
            lr: 1e9,
        };
        let r = reconstruct((&images, &images), (&images, &images), &budget);
        assert!(matches!(r, Err(InputError::Diverged(_))), "{r:?}");
    }
}
