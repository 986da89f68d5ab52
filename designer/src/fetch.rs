//! The data sets mixnn can download (`mixnn data fetch`): MNIST and Fashion-MNIST, from their
//! usual public mirrors into a cache directory.
//!
//! Files are kept as the mirrors serve them, gzip-compressed IDX in MNIST's layout (what
//! [`crate::data`] reads), and each is checked against the SHA-256 of that `.gz` file, as its
//! publishers' bytes, before it takes its place: it is downloaded into a temporary file beside
//! its final name and renamed only once the checksum matches. So a file in the cache is always a
//! whole, verified one, and a corrupted, truncated or oversized download leaves nothing behind.
//! Every download is bounded in size ([`MAX_DOWNLOAD_BYTES`]) and in time (a connection
//! timeout, a stall timeout between bytes, and one for the whole file). Mirrors are tried in
//! turn; the first whose file verifies wins.
//!
//! The cache's root is `--cache DIR`, else `$MIXNN_CACHE`, else `$XDG_CACHE_HOME/mixnn`, else
//! `~/.cache/mixnn`; a data set goes into `<root>/<name>` (`mnist`, `fashion-mnist`).

use std::{
    fmt,
    fs::{self, File},
    io::{self, IsTerminal, Read, Write},
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

/// The environment variable naming the cache's root directory.
pub const CACHE_ENV: &str = "MIXNN_CACHE";

/// The environment variable naming the mirrors to download from instead of the usual ones:
/// base URLs separated by spaces or commas, tried in that order.
pub const MIRROR_ENV: &str = "MIXNN_MIRROR";

/// Most bytes taken for one downloaded file. The largest file, Fashion-MNIST's training
/// images, is 26,421,880 bytes.
pub const MAX_DOWNLOAD_BYTES: u64 = 64 << 20;

/// Longest wait for a connection (name lookup, TCP, TLS) to a mirror.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for the next bytes of a response (its headers, or more of its body).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest time for one file, from connecting to its last byte.
pub const FILE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// A file to download and the SHA-256 it must have (64 lowercase hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteFile<'a> {
    /// Its name, on the mirrors and in the cache.
    pub name: &'a str,
    /// The SHA-256 of its bytes as served.
    pub sha256: &'a str,
}

/// The SHA-256 sums of the original MNIST files (gzip-compressed, as the mirrors serve them),
/// as torchvision publishes them: `MNIST._CHECKSUMS` in pytorch/vision,
/// `torchvision/prototype/datasets/_builtin/mnist.py`. The two test files' sums were also
/// computed here from `../shared/data/mnist`'s copies, which are the originals (their MD5s are
/// those of torchvision's `MNIST.resources`): they match. That folder's training files hold only
/// the first 24,000 images, so their sums differ and none was taken from them.
const MNIST_FILES: [RemoteFile<'static>; 4] = [
    RemoteFile {
        name: "train-images-idx3-ubyte.gz",
        sha256: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    },
    RemoteFile {
        name: "train-labels-idx1-ubyte.gz",
        sha256: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    },
    RemoteFile {
        name: "t10k-images-idx3-ubyte.gz",
        sha256: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    },
    RemoteFile {
        name: "t10k-labels-idx1-ubyte.gz",
        sha256: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
];

/// The SHA-256 sums of the original Fashion-MNIST files (gzip-compressed, as Zalando serves
/// them), as torchvision publishes them: `FashionMNIST._CHECKSUMS` in the file that has MNIST's.
/// None could be computed here: `../shared/data/fashion-mnist` holds Debian's
/// copies, compressed again (23 or 24 bytes shorter: no file name in the gzip header), whose sums
/// differ.
const FASHION_MNIST_FILES: [RemoteFile<'static>; 4] = [
    RemoteFile {
        name: "train-images-idx3-ubyte.gz",
        sha256: "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    },
    RemoteFile {
        name: "train-labels-idx1-ubyte.gz",
        sha256: "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    },
    RemoteFile {
        name: "t10k-images-idx3-ubyte.gz",
        sha256: "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    },
    RemoteFile {
        name: "t10k-labels-idx1-ubyte.gz",
        sha256: "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
];

/// A data set mixnn can download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// MNIST's handwritten digits (LeCun, Cortes, Burges): 60,000 training and 10,000 test
    /// images.
    Mnist,
    /// Zalando's Fashion-MNIST: 60,000 training and 10,000 test images of clothing.
    FashionMnist,
}

impl Source {
    /// Every data set, in the order commands without `--data` look for them in the cache.
    pub const ALL: [Source; 2] = [Source::Mnist, Source::FashionMnist];

    /// Its name on the command line and its folder in the cache.
    pub fn name(self) -> &'static str {
        match self {
            Source::Mnist => "mnist",
            Source::FashionMnist => "fashion-mnist",
        }
    }

    /// Its usual name.
    pub fn title(self) -> &'static str {
        match self {
            Source::Mnist => "MNIST",
            Source::FashionMnist => "Fashion-MNIST",
        }
    }

    /// Its files and their checksums.
    pub fn files(self) -> &'static [RemoteFile<'static>] {
        match self {
            Source::Mnist => &MNIST_FILES,
            Source::FashionMnist => &FASHION_MNIST_FILES,
        }
    }

    /// Its usual mirrors (base URLs), in the order they are tried. Fashion-MNIST's first is
    /// Zalando's S3 website, which serves plain HTTP only: the checksums are what vouch for
    /// the files, whatever the transport.
    pub fn mirrors(self) -> &'static [&'static str] {
        match self {
            // torchvision's mirror, then the one TensorFlow Datasets uses.
            Source::Mnist => &[
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
            ],
            // torchvision's mirror, then the files in Zalando's repository.
            Source::FashionMnist => &[
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            ],
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Source::ALL
            .into_iter()
            .find(|source| source.name() == s)
            .ok_or_else(|| format!("unknown data set {s:?}: mnist or fashion-mnist"))
    }
}

/// How to download.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Base URLs, tried in turn for each file (`<base>/<file name>`).
    pub mirrors: Vec<String>,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response.
    pub stall_timeout: Duration,
    /// Longest time for one file.
    pub file_timeout: Duration,
    /// Most bytes taken for one file.
    pub max_bytes: u64,
    /// Show a progress bar for each download (only when stderr is a terminal).
    pub progress: bool,
}

impl FetchOptions {
    /// Downloads from `mirrors` with the default bounds and no progress bar.
    pub fn new(mirrors: Vec<String>) -> Self {
        FetchOptions {
            mirrors,
            connect_timeout: CONNECT_TIMEOUT,
            stall_timeout: STALL_TIMEOUT,
            file_timeout: FILE_TIMEOUT,
            max_bytes: MAX_DOWNLOAD_BYTES,
            progress: false,
        }
    }

    /// Downloads `source` from `$MIXNN_MIRROR`'s mirrors if it is set, else from its usual
    /// ones.
    pub fn for_source(source: Source) -> Self {
        FetchOptions::new(
            mirrors_from_env()
                .unwrap_or_else(|| source.mirrors().iter().map(|&m| m.to_owned()).collect()),
        )
    }
}

/// A file in the cache after [`fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Its path.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// The URL it was downloaded from, or `None` if it was already there and intact.
    pub from: Option<String>,
}

/// Why a data set could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No cache directory was given and none could be derived from the environment.
    #[error(
        "no cache directory: pass --cache DIR, or set {CACHE_ENV}, XDG_CACHE_HOME (an absolute \
         path) or HOME"
    )]
    NoCacheDir,
    /// No mirror to download from.
    #[error("no mirror to download {file} from")]
    NoMirror {
        /// The file.
        file: String,
    },
    /// A file name that is not a plain name in the cache's folder.
    #[error("{0:?} is not a plain file name")]
    BadName(String),
    /// The cache could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Every mirror failed for a file; nothing of it was kept.
    #[error(
        "{file}: not downloaded, nothing kept: {}",
        attempts.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Failed {
        /// The file.
        file: String,
        /// What each mirror did.
        attempts: Vec<Attempt>,
    },
}

/// One mirror's try at a file.
#[derive(Debug)]
pub struct Attempt {
    /// The URL tried.
    pub url: String,
    /// What went wrong.
    pub error: DownloadError,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.url, self.error)
    }
}

/// Why one download failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The server answered with an error status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The connection, the response or the whole file took too long.
    #[error("timed out ({0})")]
    Timeout(String),
    /// The connection failed or broke.
    #[error("{0}")]
    Transport(String),
    /// The file is larger than the cap.
    #[error("larger than the cap of {max} bytes")]
    TooLarge {
        /// The cap.
        max: u64,
    },
    /// The connection ended before the length the server announced.
    #[error("truncated: {got} of the {expected} bytes announced")]
    Truncated {
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// The bytes are not the published file's.
    #[error("checksum mismatch: expected SHA-256 {expected}, got {actual} ({bytes} bytes)")]
    Checksum {
        /// The published SHA-256.
        expected: String,
        /// The downloaded bytes' SHA-256.
        actual: String,
        /// Bytes received.
        bytes: u64,
    },
    /// The temporary file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// The cache's root: `explicit`, else `$MIXNN_CACHE`, else `$XDG_CACHE_HOME/mixnn` (when
/// absolute, as the XDG spec asks), else `$HOME/.cache/mixnn`.
pub fn cache_root(explicit: Option<&Path>) -> Result<PathBuf, FetchError> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var(CACHE_ENV) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
    {
        return Ok(dir.join("mixnn"));
    }
    var("HOME")
        .map(|home| PathBuf::from(home).join(".cache").join("mixnn"))
        .ok_or(FetchError::NoCacheDir)
}

/// The mirrors `$MIXNN_MIRROR` names, if it names any.
pub fn mirrors_from_env() -> Option<Vec<String>> {
    let value = std::env::var(MIRROR_ENV).ok()?;
    let mirrors: Vec<String> = value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect();
    (!mirrors.is_empty()).then_some(mirrors)
}

/// Where `source` is in the cache under `root`, if every one of its files is there.
pub fn cached(source: Source, root: &Path) -> Option<PathBuf> {
    let dir = root.join(source.name());
    source
        .files()
        .iter()
        .all(|f| dir.join(f.name).is_file())
        .then_some(dir)
}

/// Downloads `source` into `<root>/<name>` (see [`fetch`]); returns that folder and its files.
pub fn fetch_source(
    source: Source,
    root: &Path,
    options: &FetchOptions,
) -> Result<(PathBuf, Vec<Fetched>), FetchError> {
    let dir = root.join(source.name());
    let fetched = fetch(source.files(), &dir, options)?;
    Ok((dir, fetched))
}

/// Makes sure each of `files` is in `dir` with its checksum: a file already there and intact is
/// kept; any other is downloaded from the mirrors in turn, into a temporary file in `dir` that
/// is renamed to its name only once its SHA-256 matches. Stops at the first file that no mirror
/// gives intact (the files before it stay).
pub fn fetch(
    files: &[RemoteFile<'_>],
    dir: &Path,
    options: &FetchOptions,
) -> Result<Vec<Fetched>, FetchError> {
    for file in files {
        let plain = Path::new(file.name)
            .file_name()
            .is_some_and(|n| n == file.name);
        if !plain || file.name.contains(['/', '\\']) {
            return Err(FetchError::BadName(file.name.to_owned()));
        }
    }
    fs::create_dir_all(dir).map_err(|source| FetchError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let agent = agent(options);
    let mut fetched = Vec::with_capacity(files.len());
    for file in files {
        let path = dir.join(file.name);
        if let Some(bytes) = intact(&path, file.sha256)? {
            tracing::info!(path = %path.display(), bytes, "already in the cache, checksum verified");
            fetched.push(Fetched {
                path,
                bytes,
                from: None,
            });
            continue;
        }
        if options.mirrors.is_empty() {
            return Err(FetchError::NoMirror {
                file: file.name.to_owned(),
            });
        }
        let mut attempts = Vec::new();
        let mut done = None;
        for (i, mirror) in options.mirrors.iter().enumerate() {
            let url = format!("{}/{}", mirror.trim_end_matches('/'), file.name);
            tracing::info!(%url, "downloading");
            match download(&agent, &url, file, &path, options) {
                Ok(bytes) => {
                    tracing::info!(path = %path.display(), bytes, "downloaded, checksum verified");
                    done = Some(Fetched {
                        path: path.clone(),
                        bytes,
                        from: Some(url),
                    });
                    break;
                }
                Err(error) => {
                    // The last mirror's failure is the error's to tell.
                    if i + 1 < options.mirrors.len() {
                        tracing::warn!(%url, %error, "download failed; trying the next mirror");
                    }
                    attempts.push(Attempt { url, error });
                }
            }
        }
        match done {
            Some(f) => fetched.push(f),
            None => {
                return Err(FetchError::Failed {
                    file: file.name.to_owned(),
                    attempts,
                });
            }
        }
    }
    Ok(fetched)
}

/// The HTTP client: bounded in time, rustls over aws-lc-rs ([`root_certs`]), no automatic
/// decompression (the files are kept as served). Proxies come from the usual environment
/// variables (`HTTPS_PROXY`, `NO_PROXY`, ...).
fn agent(options: &FetchOptions) -> ureq::Agent {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::Rustls)
                .unversioned_rustls_crypto_provider(provider)
                .root_certs(root_certs())
                .build(),
        )
        .timeout_resolve(Some(options.connect_timeout))
        .timeout_connect(Some(options.connect_timeout))
        .timeout_recv_response(Some(options.stall_timeout))
        .timeout_per_read(Some(options.stall_timeout))
        .timeout_per_call(Some(options.file_timeout))
        .user_agent(concat!("mixnn/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

/// Where Linux distributions keep their bundle of trusted certificates (Go's list).
const CA_BUNDLES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Most bytes read from a certificate bundle.
const MAX_CA_BUNDLE_BYTES: u64 = 16 << 20;

/// The certificates TLS trusts: the system's bundle (`$SSL_CERT_FILE`, else the first of
/// [`CA_BUNDLES`] there is), as curl and pip do, so that a proxy the machine trusts works;
/// else the webpki roots built in (Mozilla's). The checksums vouch for the files either way.
fn root_certs() -> ureq::tls::RootCerts {
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(CA_BUNDLES.iter().map(PathBuf::from));
    for path in candidates {
        let mut pem = Vec::new();
        let read = File::open(&path)
            .and_then(|f| f.take(MAX_CA_BUNDLE_BYTES).read_to_end(&mut pem))
            .is_ok();
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                _ => None,
            })
            .collect();
        if read && !certs.is_empty() {
            tracing::debug!(path = %path.display(), certs = certs.len(), "trusted certificates");
            return ureq::tls::RootCerts::from(certs);
        }
    }
    tracing::debug!("no certificate bundle on this system: the webpki roots");
    ureq::tls::RootCerts::WebPki
}

/// The size of the file at `path` if it is there with the checksum `sha256`.
fn intact(path: &Path, sha256: &str) -> Result<Option<u64>, FetchError> {
    let io_error = |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(e)),
    };
    let mut hasher = Sha256::new();
    let bytes = io::copy(&mut file, &mut HashWriter(&mut hasher)).map_err(io_error)?;
    let actual = hex(&hasher.finalize());
    if actual == sha256 {
        return Ok(Some(bytes));
    }
    tracing::warn!(
        path = %path.display(),
        expected = sha256,
        actual,
        "a file in the cache has another checksum: downloading it again"
    );
    Ok(None)
}

/// Downloads `url` into a temporary file beside `dest`, checks it and renames it to `dest`;
/// returns its size. On any error the temporary file is removed.
fn download(
    agent: &ureq::Agent,
    url: &str,
    file: &RemoteFile<'_>,
    dest: &Path,
    options: &FetchOptions,
) -> Result<u64, DownloadError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{}.", file.name))
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(|source| DownloadError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    let write_error = |source| DownloadError::Io {
        path: dest.to_path_buf(),
        source,
    };
    let response = agent.get(url).call().map_err(classify)?;
    let announced = response.body().content_length();
    if announced.is_some_and(|n| n > options.max_bytes) {
        return Err(DownloadError::TooLarge {
            max: options.max_bytes,
        });
    }
    let bar = progress_bar(options.progress, file.name, announced);
    let mut reader = response.into_body().into_reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                return Err(classify_io(e, got, announced));
            }
        };
        got += n as u64;
        if got > options.max_bytes {
            bar.abandon();
            return Err(DownloadError::TooLarge {
                max: options.max_bytes,
            });
        }
        hasher.update(&buf[..n]);
        temp.write_all(&buf[..n]).map_err(write_error)?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    if let Some(expected) = announced.filter(|&n| n != got) {
        return Err(DownloadError::Truncated { got, expected });
    }
    let actual = hex(&hasher.finalize());
    if actual != file.sha256 {
        return Err(DownloadError::Checksum {
            expected: file.sha256.to_owned(),
            actual,
            bytes: got,
        });
    }
    temp.as_file().sync_all().map_err(write_error)?;
    temp.persist(dest).map_err(|e| write_error(e.error))?;
    Ok(got)
}

/// A progress bar for one download, drawn only if asked and stderr is a terminal.
fn progress_bar(progress: bool, name: &str, length: Option<u64>) -> ProgressBar {
    if !progress || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match length {
        Some(n) => (
            ProgressBar::new(n),
            "{msg} [{bar:30}] {bytes}/{total_bytes}, {bytes_per_sec}, eta {eta}",
        ),
        None => (
            ProgressBar::no_length(),
            "{msg} {spinner} {bytes}, {bytes_per_sec}",
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(name.to_owned());
    bar
}

/// A request's error, as a download error.
fn classify(error: ureq::Error) -> DownloadError {
    match error {
        ureq::Error::StatusCode(status) => DownloadError::Status(status),
        ureq::Error::Timeout(what) => DownloadError::Timeout(what.to_string()),
        ureq::Error::Io(e) => classify_io(e, 0, None),
        other => DownloadError::Transport(other.to_string()),
    }
}

/// An error while reading a response's body, `got` bytes into it (ureq's own errors come
/// wrapped in I/O errors there).
fn classify_io(error: io::Error, got: u64, announced: Option<u64>) -> DownloadError {
    let kind = error.kind();
    let error = match error
        .into_inner()
        .map(|inner| inner.downcast::<ureq::Error>())
    {
        Some(Ok(inner)) => match *inner {
            ureq::Error::Timeout(what) => {
                return DownloadError::Timeout(format!("{what}, after {got} bytes"));
            }
            ureq::Error::StatusCode(status) => return DownloadError::Status(status),
            other => other.to_string(),
        },
        Some(Err(inner)) => inner.to_string(),
        None => format!("{kind}"),
    };
    match announced {
        _ if kind == io::ErrorKind::TimedOut => {
            DownloadError::Timeout(format!("{error}, after {got} bytes"))
        }
        Some(expected) if kind == io::ErrorKind::UnexpectedEof => {
            DownloadError::Truncated { got, expected }
        }
        _ => DownloadError::Transport(error),
    }
}

/// Lowercase hex digits of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds what is written to a hasher.
struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_checksums_are_hex() {
        for source in Source::ALL {
            assert_eq!(source.name().parse::<Source>(), Ok(source));
            assert_eq!(source.files().len(), 4);
            for file in source.files() {
                assert_eq!(file.sha256.len(), 64, "{source} {}", file.name);
                assert!(
                    file.sha256
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                );
            }
        }
        assert!("cifar".parse::<Source>().is_err());
    }

    #[test]
    fn a_file_name_must_be_plain() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for name in ["../x.gz", "a/b.gz", "..", ""] {
            let files = [RemoteFile { name, sha256: "" }];
            let err = fetch(&files, dir.path(), &FetchOptions::new(Vec::new()));
            assert!(
                matches!(err, Err(FetchError::BadName(_))),
                "{name}: {err:?}"
            );
        }
    }
}
