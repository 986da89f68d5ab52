//! MNIST-style data sets in the IDX format (gzip-compressed), as in the original MNIST
//! distribution, Debian's `dataset-fashion-mnist` and the cache of `mixnn data fetch`
//! ([`crate::fetch`]).

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use flate2::read::MultiGzDecoder;

use crate::fetch::{self, Source};

/// Where Debian's `dataset-fashion-mnist` installs Fashion-MNIST.
pub const DEBIAN_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// The environment variable naming the data directory when `--data` is not given.
pub const DATA_ENV: &str = "MIXNN_DATA";

/// Most bytes read from one decompressed IDX file (the full MNIST training images are 47 MB).
pub const MAX_IDX_BYTES: u64 = 512 << 20;

const IMAGES_MAGIC: u32 = 0x0803;
const LABELS_MAGIC: u32 = 0x0801;

/// Why a data set could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// No data directory was given and none of the defaults exists.
    #[error(
        "no data set found: run `mixnn data fetch mnist` to download MNIST into {} (commands \
         without --data then use it), or pass --data DIR or set {DATA_ENV} to a directory \
         holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, \
         t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (MNIST's layout), or install \
         Fashion-MNIST with `apt-get install dataset-fashion-mnist` (it goes to \
         {DEBIAN_FASHION_MNIST})",
        cache.as_ref().map_or_else(
            || format!("the cache (none here: set {} or HOME)", fetch::CACHE_ENV),
            |dir| dir.display().to_string()
        )
    )]
    NotFound {
        /// Where `mixnn data fetch mnist` would put MNIST, if there is a cache.
        cache: Option<PathBuf>,
    },
    /// A file is missing.
    #[error("{path}: missing ({source})")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not valid gzip-compressed IDX of the expected kind.
    #[error("{path}: corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: Corrupt,
    },
}

/// What is wrong with an IDX file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Corrupt {
    /// Not gzip.
    #[error("not gzip: {0}")]
    Gzip(std::io::Error),
    /// Larger than [`MAX_IDX_BYTES`].
    #[error("larger than {MAX_IDX_BYTES} bytes")]
    TooLarge,
    /// The header ends early.
    #[error("truncated header")]
    Truncated,
    /// Another kind of IDX file.
    #[error("magic {found:#010x}, expected {expected:#010x}")]
    Magic {
        /// What the file says.
        found: u32,
        /// What it should say.
        expected: u32,
    },
    /// Dimensions whose product overflows.
    #[error("dimensions overflow")]
    Overflow,
    /// A body of another size than the header says.
    #[error("header promises {promised} values, file holds {held}")]
    Size {
        /// The header's count.
        promised: usize,
        /// The body's.
        held: usize,
    },
    /// Images of another rank than 3.
    #[error("expected 3 dimensions, got {0}")]
    Rank(usize),
    /// Labels that do not match the images.
    #[error("{labels:?} labels for {images} images")]
    Labels {
        /// The labels' dimensions.
        labels: Vec<usize>,
        /// The images.
        images: usize,
    },
}

/// Images (pixels scaled to [0, 1]) with their labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Pixels, image after image, row-major.
    pub images: Vec<f32>,
    /// One label per image.
    pub labels: Vec<u8>,
    /// Pixels per image.
    pub pixels: usize,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The first `n` examples (all if fewer).
    pub fn truncate(mut self, n: usize) -> Self {
        let n = n.min(self.len());
        self.labels.truncate(n);
        self.images.truncate(n * self.pixels);
        self
    }

    /// Number of classes: one more than the largest label.
    pub fn classes(&self) -> usize {
        self.labels
            .iter()
            .copied()
            .max()
            .map_or(0, |m| usize::from(m) + 1)
    }

    /// The pixels of example `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i * self.pixels..(i + 1) * self.pixels]
    }
}

/// The training and test splits of a data set.
#[derive(Debug, Clone)]
pub struct Splits {
    /// Training examples.
    pub train: Dataset,
    /// Test examples.
    pub test: Dataset,
}

/// The data directory: `explicit`, else `$MIXNN_DATA`, else Debian's Fashion-MNIST, else what
/// `mixnn data fetch` downloaded (MNIST, else Fashion-MNIST); see [`Lookup`].
pub fn resolve_dir(explicit: Option<&Path>) -> Result<PathBuf, DataError> {
    Lookup::from_env().resolve(explicit)
}

/// Where a data set is looked for when none is named, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// `$MIXNN_DATA`, taken as it is.
    pub env: Option<PathBuf>,
    /// Debian's Fashion-MNIST ([`DEBIAN_FASHION_MNIST`]), taken if it is a directory.
    pub system: PathBuf,
    /// The root of `mixnn data fetch`'s cache ([`fetch::cache_root`]): each data set of
    /// [`Source::ALL`] in turn, taken if all its files are there. Never downloads.
    pub cache: Option<PathBuf>,
}

impl Lookup {
    /// The places this environment names.
    pub fn from_env() -> Self {
        Lookup {
            env: std::env::var_os(DATA_ENV)
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
            system: PathBuf::from(DEBIAN_FASHION_MNIST),
            cache: fetch::cache_root(None).ok(),
        }
    }

    /// `explicit`, else the first of these places that holds a data set.
    pub fn resolve(&self, explicit: Option<&Path>) -> Result<PathBuf, DataError> {
        if let Some(dir) = explicit.or(self.env.as_deref()) {
            return Ok(dir.to_path_buf());
        }
        if self.system.is_dir() {
            return Ok(self.system.clone());
        }
        if let Some(root) = &self.cache
            && let Some(dir) = Source::ALL
                .into_iter()
                .find_map(|source| fetch::cached(source, root))
        {
            tracing::info!(dir = %dir.display(), "data from the cache of `mixnn data fetch`");
            return Ok(dir);
        }
        Err(DataError::NotFound {
            cache: self
                .cache
                .as_ref()
                .map(|root| root.join(Source::Mnist.name())),
        })
    }
}

/// Loads both splits from `dir` (MNIST's file names).
pub fn load(dir: &Path) -> Result<Splits, DataError> {
    Ok(Splits {
        train: load_split(dir, "train")?,
        test: load_split(dir, "t10k")?,
    })
}

/// Loads `<prefix>-images-idx3-ubyte.gz` and `<prefix>-labels-idx1-ubyte.gz` from `dir`.
pub fn load_split(dir: &Path, prefix: &str) -> Result<Dataset, DataError> {
    let images_path = dir.join(format!("{prefix}-images-idx3-ubyte.gz"));
    let labels_path = dir.join(format!("{prefix}-labels-idx1-ubyte.gz"));
    let (dims, pixels) = read_idx(&images_path, IMAGES_MAGIC)?;
    let (label_dims, labels) = read_idx(&labels_path, LABELS_MAGIC)?;
    let corrupt = |path: &Path, reason: Corrupt| DataError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let [n, rows, cols] = dims[..] else {
        return Err(corrupt(&images_path, Corrupt::Rank(dims.len())));
    };
    if label_dims != [n] {
        return Err(corrupt(
            &labels_path,
            Corrupt::Labels {
                labels: label_dims,
                images: n,
            },
        ));
    }
    Ok(Dataset {
        images: pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
        labels,
        pixels: rows * cols,
    })
}

/// Reads a gzip-compressed IDX file of unsigned bytes: its dimensions and its values.
fn read_idx(path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let file = std::fs::File::open(path).map_err(|source| DataError::Missing {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |reason: Corrupt| DataError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut bytes = Vec::new();
    MultiGzDecoder::new(file)
        .take(MAX_IDX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| corrupt(Corrupt::Gzip(e)))?;
    if bytes.len() as u64 > MAX_IDX_BYTES {
        return Err(corrupt(Corrupt::TooLarge));
    }
    let word = |i: usize| -> Result<u32, DataError> {
        bytes
            .get(4 * i..4 * i + 4)
            .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            .ok_or_else(|| corrupt(Corrupt::Truncated))
    };
    let found = word(0)?;
    // The low byte is the number of dimensions; the one above it the element type (0x08: u8).
    let rank = (magic & 0xff) as usize;
    if found != magic {
        return Err(corrupt(Corrupt::Magic {
            found,
            expected: magic,
        }));
    }
    let dims = (1..=rank)
        .map(|i| word(i).map(|d| d as usize))
        .collect::<Result<Vec<_>, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| corrupt(Corrupt::Overflow))?;
    let header = 4 * (rank + 1);
    let body = bytes.len() - header.min(bytes.len());
    if body != count {
        return Err(corrupt(Corrupt::Size {
            promised: count,
            held: body,
        }));
    }
    bytes.drain(..header);
    Ok((dims, bytes))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::{Compression, write::GzEncoder};

    use super::*;

    fn write_gz(path: &Path, bytes: &[u8]) {
        let mut enc = GzEncoder::new(std::fs::File::create(path).unwrap(), Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap();
    }

    fn idx(magic: u32, dims: &[u32], body: &[u8]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        for d in dims {
            v.extend(d.to_be_bytes());
        }
        v.extend(body);
        v
    }

    #[test]
    fn loads_small_split_and_scales_pixels() {
        let dir = tempfile::tempdir().unwrap();
        write_gz(
            &dir.path().join("train-images-idx3-ubyte.gz"),
            &idx(0x803, &[2, 1, 2], &[0, 255, 51, 102]),
        );
        write_gz(
            &dir.path().join("train-labels-idx1-ubyte.gz"),
            &idx(0x801, &[2], &[3, 7]),
        );
        let d = load_split(dir.path(), "train").unwrap();
        assert_eq!((d.len(), d.pixels, d.classes()), (2, 2, 8));
        assert_eq!(d.images, vec![0.0, 1.0, 0.2, 0.4]);
        assert_eq!(d.image(1), &[0.2, 0.4]);
    }

    /// `--data`, then `$MIXNN_DATA`, then Debian's folder, then the cache (MNIST first, a data
    /// set only if it is whole); else an error that says how to fetch one.
    #[test]
    fn the_cache_is_the_last_place_looked_in() {
        let root = tempfile::tempdir().unwrap();
        let fill = |source: Source, files: usize| {
            let dir = root.path().join(source.name());
            std::fs::create_dir_all(&dir).unwrap();
            for f in &source.files()[..files] {
                std::fs::write(dir.join(f.name), b"").unwrap();
            }
            dir
        };
        let mut lookup = Lookup {
            env: None,
            system: root.path().join("no-such-folder"),
            cache: Some(root.path().to_path_buf()),
        };
        let err = lookup.resolve(None).unwrap_err().to_string();
        assert!(err.contains("run `mixnn data fetch mnist`"), "{err}");
        assert!(
            err.contains(&root.path().join("mnist").display().to_string()),
            "{err}"
        );
        fill(Source::Mnist, 3);
        assert!(
            lookup.resolve(None).is_err(),
            "a partial data set is not taken"
        );
        let fashion = fill(Source::FashionMnist, 4);
        assert_eq!(lookup.resolve(None).unwrap(), fashion);
        let mnist = fill(Source::Mnist, 4);
        assert_eq!(lookup.resolve(None).unwrap(), mnist);
        lookup.system = root.path().to_path_buf();
        assert_eq!(lookup.resolve(None).unwrap(), root.path());
        lookup.env = Some(PathBuf::from("from-env"));
        assert_eq!(lookup.resolve(None).unwrap(), Path::new("from-env"));
        let explicit = Path::new("explicit");
        assert_eq!(lookup.resolve(Some(explicit)).unwrap(), explicit);
        let none = Lookup {
            cache: None,
            ..Lookup::from_env()
        };
        if !none.system.is_dir() && none.env.is_none() {
            let err = none.resolve(None).unwrap_err().to_string();
            assert!(err.contains("set MIXNN_CACHE or HOME"), "{err}");
        }
    }

    #[test]
    fn clear_errors_for_missing_and_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_split(dir.path(), "train").unwrap_err();
        assert!(matches!(err, DataError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("train-images-idx3-ubyte.gz"));

        let images = dir.path().join("train-images-idx3-ubyte.gz");
        let labels = dir.path().join("train-labels-idx1-ubyte.gz");
        std::fs::write(&images, b"not gzip at all").unwrap();
        write_gz(&labels, &idx(0x801, &[1], &[0]));
        assert!(matches!(
            load_split(dir.path(), "train"),
            Err(DataError::Corrupt { .. })
        ));
        // Truncated body, wrong magic, mismatched counts.
        write_gz(&images, &idx(0x803, &[2, 2, 2], &[0; 7]));
        let err = load_split(dir.path(), "train").unwrap_err();
        assert!(err.to_string().contains("promises 8 values"), "{err}");
        write_gz(&images, &idx(0x801, &[2, 2, 2], &[0; 8]));
        assert!(
            load_split(dir.path(), "train")
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
        write_gz(&images, &idx(0x803, &[2, 2, 2], &[0; 8]));
        assert!(
            load_split(dir.path(), "train")
                .unwrap_err()
                .to_string()
                .contains("labels for 2 images")
        );
        write_gz(&images, &idx(0x803, &[u32::MAX, u32::MAX, u32::MAX], &[]));
        assert!(load_split(dir.path(), "train").is_err());
    }
}
