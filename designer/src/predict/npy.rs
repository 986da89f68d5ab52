//! Inputs and labels from NumPy `.npy` files (format versions 1.0 to 3.0), read by hand: the
//! magic `\x93NUMPY`, a version, the header's length and a Python dict literal with `descr`,
//! `fortran_order` and `shape`, then the array in C order. Only what `np.save` writes for
//! the arrays `predict` takes: little-endian `float32` (used as is) and `uint8` (scaled by
//! 1/255, as IDX pixels are) inputs, `int64` and `uint8` labels. Every size read from a
//! file is bounded, and the data's length is checked against the file's before anything is
//! allocated for it.

use std::{
    fs::File,
    io::Read as _,
    path::{Path, PathBuf},
};

use mixnn_designer::spec::{MAX_INPUT_RANK, MAX_INPUT_VALUES};

/// The longest header taken (NumPy's own reader stops at 10,000 bytes by default).
pub(crate) const MAX_HEADER_LEN: usize = 1 << 16;
/// The most examples (the first dimension) in one file.
pub(crate) const MAX_EXAMPLES: usize = 1 << 24;
/// The most values per example: a model's largest input.
pub(crate) const MAX_FEATURES: usize = MAX_INPUT_VALUES;
/// The most values in one file (4 GiB of `f32`).
pub(crate) const MAX_VALUES: usize = 1 << 30;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Why a `.npy` file was refused.
#[derive(Debug, thiserror::Error)]
#[error("{}: {what}", path.display())]
pub(crate) struct NpyError {
    /// The file.
    pub(crate) path: PathBuf,
    /// What is wrong with it.
    pub(crate) what: NpyFault,
}

/// What is wrong with a `.npy` file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NpyFault {
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a .npy file (no \\x93NUMPY magic)")]
    NotNpy,
    #[error("format version {0}.{1}: only 1.0, 2.0 and 3.0 are read")]
    Version(u8, u8),
    #[error("a header of {0} bytes: at most {MAX_HEADER_LEN} are taken")]
    HeaderTooLong(usize),
    #[error("the file ends inside its header")]
    TruncatedHeader,
    #[error("the header is not text")]
    HeaderNotText,
    #[error("the header does not parse: {0}")]
    Header(&'static str),
    #[error("the header has no {0:?}")]
    MissingKey(&'static str),
    #[error("fortran_order is True: only C order is read (np.ascontiguousarray first)")]
    FortranOrder,
    #[error("dtype {0:?} is big-endian: only little-endian is read")]
    BigEndian(String),
    #[error("dtype {found:?}: {expected}")]
    Dtype {
        found: String,
        expected: &'static str,
    },
    #[error("shape {found:?}: {expected}")]
    Shape { found: Vec<usize>, expected: String },
    #[error("{examples} examples: at most {MAX_EXAMPLES} are taken")]
    TooManyExamples { examples: usize },
    #[error("{features} values per example: at most {MAX_FEATURES}")]
    TooManyFeatures { features: usize },
    #[error("{0} values: at most {MAX_VALUES} in one file")]
    TooManyValues(usize),
    #[error("{have} bytes of data, the header promises {want}")]
    DataLength { have: u64, want: u64 },
    #[error("label {value} of example {index} is not a class (0 to 255)")]
    Label { index: usize, value: i64 },
}

/// The element types taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dtype {
    F4,
    U1,
    I8,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F4 => 4,
            Dtype::U1 => 1,
            Dtype::I8 => 8,
        }
    }
}

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    /// Where the data starts.
    pub(crate) data_offset: usize,
}

/// Inputs read from a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NpyInputs {
    /// The values, example after example.
    pub(crate) values: Vec<f32>,
    /// Values per example.
    pub(crate) features: usize,
    /// Whether they came as bytes (`uint8`, scaled by 1/255).
    pub(crate) bytes: bool,
}

/// Reads inputs from `path`: shape `[N, ...]` whose examples hold `expected` values each
/// (if known: the model's input), `<f4` used as is or `|u1` scaled by 1/255.
pub(crate) fn read_inputs(path: &Path, expected: Option<usize>) -> Result<NpyInputs, NpyError> {
    let fail = |what| NpyError {
        path: path.to_path_buf(),
        what,
    };
    let (header, data) = read_file(path, |h| check_inputs(h, expected)).map_err(fail)?;
    Ok(decode_inputs(&header, &data))
}

/// Reads `n` labels from `path`: shape `[n]`, `<i8` or `|u1`, each a class 0 to 255.
pub(crate) fn read_labels(path: &Path, n: usize) -> Result<Vec<u8>, NpyError> {
    let fail = |what| NpyError {
        path: path.to_path_buf(),
        what,
    };
    let (header, data) = read_file(path, |h| check_labels(h, n)).map_err(fail)?;
    decode_labels(&header, &data).map_err(fail)
}

/// The header, checked by `check`, and the data, checked against the file's length before
/// it is read.
fn read_file(
    path: &Path,
    check: impl FnOnce(&Header) -> Result<(), NpyFault>,
) -> Result<(Header, Vec<u8>), NpyFault> {
    let mut file = File::open(path)?;
    let file_len = file.metadata()?.len();
    // The magic and version, then the header's length (2 or 4 bytes), then the header.
    let mut head = vec![0u8; 8];
    let got = read_up_to(&mut file, &mut head)?;
    head.truncate(got);
    let field = if version(&head)? == 1 { 2 } else { 4 };
    let mut more = vec![0u8; field];
    if read_up_to(&mut file, &mut more)? < field {
        return Err(NpyFault::TruncatedHeader);
    }
    head.extend_from_slice(&more);
    let (len, _) = header_len(&head)?;
    let mut text = vec![0u8; len];
    if read_up_to(&mut file, &mut text)? < len {
        return Err(NpyFault::TruncatedHeader);
    }
    head.extend_from_slice(&text);
    let header = parse_header(&head)?;
    check(&header)?;
    let want = data_len(&header)?;
    let have = file_len.saturating_sub(header.data_offset as u64);
    if have != want {
        return Err(NpyFault::DataLength { have, want });
    }
    // Bounded by MAX_VALUES and checked against the file: this allocation is safe.
    let mut data = vec![0u8; usize::try_from(want).map_err(|_| NpyFault::TooManyValues(0))?];
    file.read_exact(&mut data)?;
    Ok((header, data))
}

/// Reads until `buf` is full or the file ends; how many bytes it got.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// From the first bytes: the header's length and where it starts.
/// The format's major version, from the first 8 bytes.
fn version(prefix: &[u8]) -> Result<u8, NpyFault> {
    if prefix.len() < 8 || &prefix[..6] != MAGIC {
        return Err(NpyFault::NotNpy);
    }
    match (prefix[6], prefix[7]) {
        (major @ 1..=3, 0) => Ok(major),
        (major, minor) => Err(NpyFault::Version(major, minor)),
    }
}

fn header_len(prefix: &[u8]) -> Result<(usize, usize), NpyFault> {
    let (major, minor) = (version(prefix)?, 0);
    let (len, start) = match (major, minor) {
        (1, 0) => match prefix.get(8..10) {
            Some(b) => (usize::from(u16::from_le_bytes([b[0], b[1]])), 10),
            None => return Err(NpyFault::TruncatedHeader),
        },
        (2 | 3, 0) => match prefix.get(8..12) {
            Some(b) => (
                usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(usize::MAX),
                12,
            ),
            None => return Err(NpyFault::TruncatedHeader),
        },
        _ => return Err(NpyFault::Version(major, minor)),
    };
    if len > MAX_HEADER_LEN {
        return Err(NpyFault::HeaderTooLong(len));
    }
    Ok((len, start))
}

/// Parses a whole header (magic to the end of the dict) held in memory.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<Header, NpyFault> {
    let (len, start) = header_len(bytes)?;
    let text = bytes
        .get(start..start + len)
        .ok_or(NpyFault::TruncatedHeader)?;
    // Version 3.0 allows UTF-8; the keys and values taken here are ASCII anyway.
    let text = std::str::from_utf8(text).map_err(|_| NpyFault::HeaderNotText)?;
    let dict = Parser::new(text).dict()?;
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (key, value) in dict {
        match (key.as_str(), value) {
            ("descr", Value::Str(s)) => descr = Some(s),
            ("fortran_order", Value::Bool(b)) => fortran = Some(b),
            ("shape", Value::Tuple(t)) => shape = Some(t),
            ("descr" | "fortran_order" | "shape", _) => {
                return Err(NpyFault::Header("a key with a value of the wrong kind"));
            }
            // NumPy ignores nothing, but writes nothing else either: refuse.
            _ => return Err(NpyFault::Header("an unknown key")),
        }
    }
    let descr = descr.ok_or(NpyFault::MissingKey("descr"))?;
    if fortran.ok_or(NpyFault::MissingKey("fortran_order"))? {
        return Err(NpyFault::FortranOrder);
    }
    let shape = shape.ok_or(NpyFault::MissingKey("shape"))?;
    let dtype = match descr.as_str() {
        "<f4" => Dtype::F4,
        "|u1" | "<u1" | "u1" => Dtype::U1,
        "<i8" => Dtype::I8,
        d if d.starts_with('>') => return Err(NpyFault::BigEndian(descr)),
        _ => {
            return Err(NpyFault::Dtype {
                found: descr,
                expected: "not one of <f4, |u1, <i8",
            });
        }
    };
    Ok(Header {
        dtype,
        shape,
        data_offset: start + len,
    })
}

/// Bytes of the data the header promises (its shape's values within bounds).
fn data_len(header: &Header) -> Result<u64, NpyFault> {
    let values = header
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_VALUES)
        .ok_or(NpyFault::TooManyValues(
            header
                .shape
                .iter()
                .fold(1usize, |n, &d| n.saturating_mul(d)),
        ))?;
    Ok(values as u64 * header.dtype.size() as u64)
}

/// An inputs' header: `<f4` or `|u1`, `[N, ...]`, examples of `expected` values.
fn check_inputs(header: &Header, expected: Option<usize>) -> Result<(), NpyFault> {
    if header.dtype == Dtype::I8 {
        return Err(NpyFault::Dtype {
            found: "<i8".into(),
            expected: "inputs are <f4 (float32) or |u1 (uint8)",
        });
    }
    let shape_error = |expected: String| NpyFault::Shape {
        found: header.shape.clone(),
        expected,
    };
    let Some((&examples, example)) = header.shape.split_first() else {
        return Err(shape_error(
            "inputs are [N, ...values of one example]".into(),
        ));
    };
    if example.is_empty() || example.len() > MAX_INPUT_RANK {
        return Err(shape_error(format!(
            "inputs are [N, ...values of one example], 1 to {MAX_INPUT_RANK} dimensions after N"
        )));
    }
    if examples > MAX_EXAMPLES {
        return Err(NpyFault::TooManyExamples { examples });
    }
    let features = example
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .unwrap_or(usize::MAX);
    if features > MAX_FEATURES {
        return Err(NpyFault::TooManyFeatures { features });
    }
    match expected {
        Some(want) if want != features => Err(shape_error(format!(
            "the model takes {want} values per example, these have {features}"
        ))),
        _ if features == 0 => Err(shape_error("examples of no values".into())),
        _ => Ok(()),
    }
}

/// A labels' header: `<i8` or `|u1`, `[n]`.
fn check_labels(header: &Header, n: usize) -> Result<(), NpyFault> {
    if header.dtype == Dtype::F4 {
        return Err(NpyFault::Dtype {
            found: "<f4".into(),
            expected: "labels are <i8 (int64) or |u1 (uint8)",
        });
    }
    if header.shape != [n] {
        return Err(NpyFault::Shape {
            found: header.shape.clone(),
            expected: format!("labels are [N], one per input: [{n}]"),
        });
    }
    Ok(())
}

fn decode_inputs(header: &Header, data: &[u8]) -> NpyInputs {
    let features = header.shape.iter().skip(1).product();
    match header.dtype {
        // As the IDX files' pixels are (`data::load_split`).
        Dtype::U1 => NpyInputs {
            values: data.iter().map(|&p| f32::from(p) / 255.0).collect(),
            features,
            bytes: true,
        },
        _ => NpyInputs {
            values: data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            features,
            bytes: false,
        },
    }
}

fn decode_labels(header: &Header, data: &[u8]) -> Result<Vec<u8>, NpyFault> {
    match header.dtype {
        Dtype::U1 => Ok(data.to_vec()),
        _ => data
            .chunks_exact(8)
            .enumerate()
            .map(|(index, c)| {
                let value = i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                u8::try_from(value).map_err(|_| NpyFault::Label { index, value })
            })
            .collect(),
    }
}

/// A value of the header's dict.
#[derive(Debug)]
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// The little of Python's literal syntax a `.npy` header uses: a dict of string keys to
/// strings, `True`/`False` and tuples of integers, with optional trailing commas.
struct Parser<'a> {
    rest: &'a str,
}

/// The most entries in the dict, or dimensions in a shape, taken.
const MAX_ITEMS: usize = 64;

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser { rest: text }
    }

    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char, what: &'static str) -> Result<(), NpyFault> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(NpyFault::Header(what))
        }
    }

    fn dict(&mut self) -> Result<Vec<(String, Value)>, NpyFault> {
        self.expect('{', "no '{' opening the dict")?;
        let mut entries = Vec::new();
        while !self.eat('}') {
            if entries.len() >= MAX_ITEMS {
                return Err(NpyFault::Header("too many keys"));
            }
            let key = self.string()?;
            self.expect(':', "no ':' after a key")?;
            let value = self.value()?;
            entries.push((key, value));
            if !self.eat(',') {
                self.expect('}', "no ',' or '}' after a value")?;
                break;
            }
        }
        // Padding and the final newline only.
        if !self.rest.trim().is_empty() {
            return Err(NpyFault::Header("text after the dict"));
        }
        Ok(entries)
    }

    fn string(&mut self) -> Result<String, NpyFault> {
        self.skip_space();
        let quote = match self.rest.chars().next() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(NpyFault::Header("a key or value that is not a string")),
        };
        let body = &self.rest[1..];
        let end = body
            .find(quote)
            .ok_or(NpyFault::Header("an unterminated string"))?;
        let s = &body[..end];
        if s.contains('\\') {
            return Err(NpyFault::Header("an escape in a string"));
        }
        self.rest = &body[end + 1..];
        Ok(s.to_owned())
    }

    fn value(&mut self) -> Result<Value, NpyFault> {
        self.skip_space();
        if let Some(rest) = self.rest.strip_prefix("True") {
            self.rest = rest;
            return Ok(Value::Bool(true));
        }
        if let Some(rest) = self.rest.strip_prefix("False") {
            self.rest = rest;
            return Ok(Value::Bool(false));
        }
        if self.eat('(') {
            let mut dims = Vec::new();
            while !self.eat(')') {
                if dims.len() >= MAX_ITEMS {
                    return Err(NpyFault::Header("too many dimensions"));
                }
                dims.push(self.integer()?);
                if !self.eat(',') {
                    self.expect(')', "no ',' or ')' in the shape")?;
                    break;
                }
            }
            return Ok(Value::Tuple(dims));
        }
        self.string().map(Value::Str)
    }

    fn integer(&mut self) -> Result<usize, NpyFault> {
        self.skip_space();
        // NumPy wrote `10L` for Python 2 longs.
        let digits = self.rest.len()
            - self
                .rest
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .len();
        if digits == 0 {
            return Err(NpyFault::Header("a dimension that is not a number"));
        }
        let n = self.rest[..digits]
            .parse()
            .map_err(|_| NpyFault::Header("a dimension too large"))?;
        self.rest = self.rest[digits..]
            .strip_prefix('L')
            .unwrap_or(&self.rest[digits..]);
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A `.npy` file's bytes as `np.save` lays them out: the header padded with spaces to a
    /// multiple of 64 and ended by a newline.
    fn npy(version: u8, descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        let shape = match dims.len() {
            1 => format!("({},)", dims[0]),
            _ => format!("({})", dims.join(", ")),
        };
        let fortran = if fortran { "True" } else { "False" };
        let mut dict =
            format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
        let prefix = if version == 1 { 10 } else { 12 };
        while (prefix + dict.len() + 1) % 64 != 0 {
            dict.push(' ');
        }
        dict.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend([version, 0]);
        if version == 1 {
            out.extend(u16::try_from(dict.len()).unwrap().to_le_bytes());
        } else {
            out.extend(u32::try_from(dict.len()).unwrap().to_le_bytes());
        }
        out.extend(dict.as_bytes());
        out.extend(data);
        out
    }

    fn write(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    fn f4(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn float32_inputs_of_either_header_version_are_read_as_they_are() {
        let values = [0.5f32, -1.25, 3.0, f32::MIN_POSITIVE, 7.0, 8.5];
        for version in [1, 2, 3] {
            let (_dir, path) = write(&npy(version, "<f4", false, &[2, 3], &f4(&values)));
            let inputs = read_inputs(&path, Some(3)).unwrap();
            assert_eq!(inputs.values, values, "version {version}");
            assert_eq!(inputs.features, 3);
            assert!(!inputs.bytes);
        }
        // Several dimensions per example: their product is what the model takes.
        let (_dir, path) = write(&npy(1, "<f4", false, &[1, 1, 2, 3], &f4(&values)));
        assert_eq!(read_inputs(&path, Some(6)).unwrap().features, 6);
    }

    #[test]
    fn uint8_inputs_are_scaled_as_idx_pixels_and_labels_read() {
        let pixels = [0u8, 1, 51, 128, 254, 255];
        let (_dir, path) = write(&npy(2, "|u1", false, &[3, 2], &pixels));
        let inputs = read_inputs(&path, None).unwrap();
        let want: Vec<f32> = pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
        assert_eq!(inputs.values, want);
        assert!(inputs.bytes);
        let labels: Vec<u8> = [7i64, 0, 255]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let (_d, path) = write(&npy(1, "<i8", false, &[3], &labels));
        assert_eq!(read_labels(&path, 3).unwrap(), [7, 0, 255]);
        let (_d, path) = write(&npy(1, "|u1", false, &[3], &[1, 2, 3]));
        assert_eq!(read_labels(&path, 3).unwrap(), [1, 2, 3]);
        // A label that is no class, and labels of the wrong count.
        let bad: Vec<u8> = [7i64, -1, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        let (_d, path) = write(&npy(1, "<i8", false, &[3], &bad));
        let e = read_labels(&path, 3).unwrap_err();
        assert!(
            matches!(
                e.what,
                NpyFault::Label {
                    index: 1,
                    value: -1
                }
            ),
            "{e}"
        );
        assert!(matches!(
            read_labels(&path, 4).unwrap_err().what,
            NpyFault::Shape { .. }
        ));
    }

    #[test]
    fn malformed_files_get_an_error_naming_the_file_and_the_fault() {
        let data = f4(&[1.0; 6]);
        let refused = |bytes: Vec<u8>, expected: Option<usize>| {
            let (_dir, path) = write(&bytes);
            let e = read_inputs(&path, expected).unwrap_err();
            assert!(
                e.to_string().starts_with(&path.display().to_string()),
                "{e}"
            );
            e.what
        };
        assert!(matches!(
            refused(npy(1, "<f4", true, &[2, 3], &data), None),
            NpyFault::FortranOrder
        ));
        assert!(matches!(
            refused(npy(1, "<f8", false, &[2, 3], &data), None),
            NpyFault::Dtype { .. }
        ));
        assert!(matches!(
            refused(npy(1, ">f4", false, &[2, 3], &data), None),
            NpyFault::BigEndian(_)
        ));
        assert!(matches!(
            refused(npy(1, "<i8", false, &[2, 3], &[0; 48]), None),
            NpyFault::Dtype { .. }
        ));
        // Truncated data, and data beyond what the header promises.
        assert!(matches!(
            refused(npy(1, "<f4", false, &[2, 3], &data[..23]), None),
            NpyFault::DataLength { have: 23, want: 24 }
        ));
        let mut long = data.clone();
        long.push(0);
        assert!(matches!(
            refused(npy(1, "<f4", false, &[2, 3], &long), None),
            NpyFault::DataLength { have: 25, want: 24 }
        ));
        // A shape the model does not take, and shapes no input has.
        assert!(matches!(
            refused(npy(1, "<f4", false, &[2, 3], &data), Some(784)),
            NpyFault::Shape { .. }
        ));
        assert!(matches!(
            refused(npy(1, "<f4", false, &[6], &data), None),
            NpyFault::Shape { .. }
        ));
        // Sizes past their bounds, refused before any allocation.
        assert!(matches!(
            refused(npy(1, "<f4", false, &[MAX_EXAMPLES + 1, 1], &data), None),
            NpyFault::TooManyExamples { .. }
        ));
        assert!(matches!(
            refused(npy(1, "<f4", false, &[1, MAX_FEATURES + 1], &data), None),
            NpyFault::TooManyFeatures { .. }
        ));
        assert!(matches!(
            refused(npy(1, "<f4", false, &[usize::MAX, usize::MAX], &data), None),
            NpyFault::TooManyExamples { .. }
        ));
        assert!(matches!(
            refused(npy(1, "<f4", false, &[1 << 20, 1 << 20], &data), None),
            NpyFault::TooManyValues(_)
        ));
        // Not a .npy file, another version, a header too long or cut short, garbage in it.
        assert!(matches!(
            refused(b"PK\x03\x04".to_vec(), None),
            NpyFault::NotNpy
        ));
        let mut v4 = npy(1, "<f4", false, &[2, 3], &data);
        v4[6] = 4;
        assert!(matches!(refused(v4, None), NpyFault::Version(4, 0)));
        let mut huge = npy(2, "<f4", false, &[2, 3], &data);
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(refused(huge, None), NpyFault::HeaderTooLong(_)));
        let whole = npy(1, "<f4", false, &[2, 3], &data);
        for cut in [0, 7, 9, 11, 40] {
            let what = refused(whole[..cut].to_vec(), None);
            assert!(
                matches!(what, NpyFault::NotNpy | NpyFault::TruncatedHeader),
                "{cut}: {what}"
            );
        }
        for dict in [
            "{'descr': '<f4', 'shape': (2, 3), }",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} trailing",
            "{'descr': '<f4, 'fortran_order': False",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
        ] {
            let mut bytes = MAGIC.to_vec();
            bytes.extend([1, 0]);
            bytes.extend(u16::try_from(dict.len()).unwrap().to_le_bytes());
            bytes.extend(dict.as_bytes());
            let what = refused(bytes, None);
            assert!(
                matches!(what, NpyFault::Header(_) | NpyFault::MissingKey(_)),
                "{dict}: {what}"
            );
        }
    }
}
