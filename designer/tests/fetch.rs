//! `mixnn data fetch` against a small HTTP server on loopback (plain std, in this process):
//! files land only whole and verified; corrupted, truncated, oversized and stalled downloads
//! are refused with errors that say which file and why, and leave nothing in the cache. Then
//! the command itself, and the cache as the data of commands given no `--data`.
//!
//! Data: `../shared/data/fashion-mnist` and `../shared/data/mnist` beside the workspace, served
//! as they are. Nothing leaves loopback; everything is written under temporary folders.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use mixnn_designer::{
    data,
    fetch::{self, DownloadError, FetchError, FetchOptions, RemoteFile, Source},
};
use sha2::{Digest, Sha256};

/// What the server answers for a path.
#[derive(Clone)]
enum Route {
    /// 200 with these bytes and their length.
    Serve(Arc<Vec<u8>>),
    /// 200 announcing `length` bytes, then only these, then the connection closes.
    ShortOf { body: Arc<Vec<u8>>, length: u64 },
    /// 200 with these bytes and no length: the body ends when the connection closes.
    Unsized(Arc<Vec<u8>>),
    /// 200 announcing `length` bytes, these first, then nothing for a long while.
    StallAfter { head: Vec<u8>, length: u64 },
    /// Nothing at all for a long while, not even the headers.
    StallBeforeHeaders,
}

/// How long a stalling route holds its connection (far beyond the tests' stall timeout).
const STALL: Duration = Duration::from_secs(10);

/// A tiny HTTP/1.1 server on loopback: one thread per connection, `Connection: close`.
struct Server {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl Server {
    fn start(routes: HashMap<String, Route>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&requests);
        let routes = Arc::new(routes);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let routes = Arc::clone(&routes);
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let _ = answer(stream, &routes);
                });
            }
        });
        Server { addr, requests }
    }

    /// The base URL of the files under `/prefix/`.
    fn url(&self, prefix: &str) -> String {
        format!("http://{}/{prefix}/", self.addr)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn answer(stream: TcpStream, routes: &HashMap<String, Route>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let path = request.split(' ').nth(1).unwrap_or("/").to_owned();
    let mut out = stream;
    let head = |length: Option<u64>| {
        let length = length.map_or_else(String::new, |n| format!("Content-Length: {n}\r\n"));
        format!(
            "HTTP/1.1 200 OK\r\n{length}Content-Type: application/gzip\r\nConnection: close\r\n\r\n"
        )
    };
    match routes.get(&path) {
        None => out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?,
        Some(Route::Serve(body)) => {
            out.write_all(head(Some(body.len() as u64)).as_bytes())?;
            out.write_all(body)?;
        }
        Some(Route::ShortOf { body, length }) => {
            out.write_all(head(Some(*length)).as_bytes())?;
            out.write_all(body)?;
        }
        Some(Route::Unsized(body)) => {
            out.write_all(head(None).as_bytes())?;
            out.write_all(body)?;
        }
        Some(Route::StallAfter {
            head: first,
            length,
        }) => {
            out.write_all(head(Some(*length)).as_bytes())?;
            out.write_all(first)?;
            out.flush()?;
            std::thread::sleep(STALL);
        }
        Some(Route::StallBeforeHeaders) => std::thread::sleep(STALL),
    }
    out.flush()?;
    out.shutdown(std::net::Shutdown::Both)
}

/// `../shared/data/<name>` beside the workspace.
fn shared(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(name)
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (this test serves ../shared/data's files)",
            path.display()
        )
    })
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every entry of `dir` (hidden ones too), sorted; none if it does not exist.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Downloads from `mirrors`, with a stall timeout short enough for a test.
fn options(mirrors: Vec<String>) -> FetchOptions {
    FetchOptions {
        connect_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(1),
        file_timeout: Duration::from_secs(120),
        ..FetchOptions::new(mirrors)
    }
}

/// The names of `source`'s files, each with the bytes of the copy in `dir`.
fn copies(source: Source, dir: &Path) -> Vec<(&'static str, Arc<Vec<u8>>)> {
    source
        .files()
        .iter()
        .map(|f| (f.name, Arc::new(read(dir, f.name))))
        .collect()
}

/// The only attempt of a failed fetch.
fn only_attempt(err: &FetchError) -> (&str, &fetch::Attempt) {
    match err {
        FetchError::Failed { file, attempts } if attempts.len() == 1 => (file, &attempts[0]),
        other => panic!("expected one failed attempt, got {other:?}"),
    }
}

/// Fashion-MNIST from a mirror on loopback, after one that has nothing: each file lands, is
/// the server's bytes, and loads; a second fetch downloads nothing; a file damaged in the
/// cache is noticed and downloaded again.
#[test]
fn files_land_whole_and_verified_from_the_first_mirror_that_has_them() {
    let files = copies(Source::FashionMnist, &shared("fashion-mnist"));
    // These are Debian's copies of Fashion-MNIST (other gzip bytes than the originals whose
    // sums the code holds), so the test lists their own sums.
    let sums: Vec<String> = files.iter().map(|(_, b)| sha256(b)).collect();
    let table: Vec<RemoteFile<'_>> = files
        .iter()
        .zip(&sums)
        .map(|((name, _), sum)| RemoteFile { name, sha256: sum })
        .collect();
    let server = Server::start(
        files
            .iter()
            .map(|(name, bytes)| (format!("/good/{name}"), Route::Serve(Arc::clone(bytes))))
            .collect(),
    );
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("fashion-mnist");
    let mirrors = vec![server.url("empty"), server.url("good")];

    let fetched = fetch::fetch(&table, &dir, &options(mirrors.clone())).unwrap();
    assert_eq!(fetched.len(), 4);
    for ((name, bytes), f) in files.iter().zip(&fetched) {
        assert_eq!(f.path, dir.join(name));
        assert_eq!(f.bytes, bytes.len() as u64);
        assert_eq!(
            f.from.as_deref(),
            Some(format!("{}{name}", mirrors[1]).as_str())
        );
        assert_eq!(&std::fs::read(&f.path).unwrap(), bytes.as_ref(), "{name}");
    }
    let mut names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    assert_eq!(entries(&dir), names, "no temporary file is left");
    let splits = data::load(&dir).unwrap();
    assert_eq!((splits.train.len(), splits.test.len()), (60_000, 10_000));
    assert_eq!(
        fetch::cached(Source::FashionMnist, cache.path()),
        Some(dir.clone())
    );

    // Again: everything is there and intact, so nothing is asked of the server.
    let before = server.requests();
    let again = fetch::fetch(&table, &dir, &options(mirrors.clone())).unwrap();
    assert!(again.iter().all(|f| f.from.is_none()), "{again:?}");
    assert_eq!(server.requests(), before);

    // A file damaged in the cache is downloaded again.
    let labels = dir.join("t10k-labels-idx1-ubyte.gz");
    std::fs::write(&labels, b"damaged").unwrap();
    let repaired = fetch::fetch(&table, &dir, &options(mirrors)).unwrap();
    assert_eq!(repaired.iter().filter(|f| f.from.is_some()).count(), 1);
    assert_eq!(std::fs::read(&labels).unwrap(), *files[3].1);
}

/// The code's MNIST sums are the published ones: the original test files (which
/// ../shared/data/mnist holds) pass with the built-in table, and its training images, cut to
/// 24,000, are refused as not the published file.
#[test]
fn the_built_in_mnist_checksums_accept_the_originals_only() {
    let files = copies(Source::Mnist, &shared("mnist"));
    let server = Server::start(
        files
            .iter()
            .map(|(name, bytes)| (format!("/mnist/{name}"), Route::Serve(Arc::clone(bytes))))
            .collect(),
    );
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("mnist");
    let all = Source::Mnist.files();
    let test_files: Vec<RemoteFile<'_>> = all
        .iter()
        .copied()
        .filter(|f| f.name.starts_with("t10k"))
        .collect();
    let fetched = fetch::fetch(&test_files, &dir, &options(vec![server.url("mnist")])).unwrap();
    assert_eq!(fetched.len(), 2);
    assert_eq!(data::load_split(&dir, "t10k").unwrap().len(), 10_000);

    let err = fetch::fetch(&all[..1], &dir, &options(vec![server.url("mnist")])).unwrap_err();
    let (file, attempt) = only_attempt(&err);
    assert_eq!(file, "train-images-idx3-ubyte.gz");
    assert!(
        matches!(&attempt.error, DownloadError::Checksum { expected, .. } if expected == all[0].sha256),
        "{err}"
    );
    assert!(!dir.join("train-images-idx3-ubyte.gz").exists());
}

/// A file with one byte flipped, one cut short (with a matching or a lying length) and one
/// over the cap (announced, or not) are refused, each error naming the file and why, and
/// nothing of them stays in the cache.
#[test]
fn corrupted_truncated_and_oversized_files_are_refused_and_leave_nothing() {
    let dir = shared("fashion-mnist");
    let name = "train-labels-idx1-ubyte.gz";
    let good = read(&dir, name);
    let sum = sha256(&good);
    let table = [RemoteFile { name, sha256: &sum }];
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x01;
    let half = Arc::new(good[..good.len() / 2].to_vec());
    let server = Server::start(HashMap::from([
        (
            format!("/flipped/{name}"),
            Route::Serve(Arc::new(flipped.clone())),
        ),
        (format!("/short/{name}"), Route::Serve(Arc::clone(&half))),
        (
            format!("/lying/{name}"),
            Route::ShortOf {
                body: Arc::clone(&half),
                length: good.len() as u64,
            },
        ),
        (
            format!("/unsized/{name}"),
            Route::Unsized(Arc::new(good.clone())),
        ),
        (
            format!("/sized/{name}"),
            Route::Serve(Arc::new(good.clone())),
        ),
    ]));
    let cache = tempfile::tempdir().unwrap();
    let target = cache.path().join("fashion-mnist");
    let fetch_from = |prefix: &str, max_bytes: u64| {
        let options = FetchOptions {
            max_bytes,
            ..options(vec![server.url(prefix)])
        };
        let err = fetch::fetch(&table, &target, &options).unwrap_err();
        assert!(
            entries(&target).is_empty(),
            "{prefix}: {:?}",
            entries(&target)
        );
        let message = err.to_string();
        eprintln!("{prefix}: {message}");
        assert!(message.contains(name), "{message}");
        assert!(message.contains(&server.url(prefix)), "{message}");
        let (_, attempt) = only_attempt(&err);
        (message, format!("{:?}", attempt.error))
    };

    let (message, _) = fetch_from("flipped", fetch::MAX_DOWNLOAD_BYTES);
    assert!(
        message.contains(&format!("expected SHA-256 {sum}, got {}", sha256(&flipped))),
        "{message}"
    );
    let (message, _) = fetch_from("short", fetch::MAX_DOWNLOAD_BYTES);
    assert!(
        message.contains(&format!("expected SHA-256 {sum}, got {}", sha256(&half))),
        "{message}"
    );
    let (message, error) = fetch_from("lying", fetch::MAX_DOWNLOAD_BYTES);
    assert!(error.starts_with("Truncated"), "{message}");
    assert!(
        message.contains(&format!("{} of the {} bytes", half.len(), good.len())),
        "{message}"
    );
    let cap = good.len() as u64 - 1;
    for prefix in ["sized", "unsized"] {
        let (message, error) = fetch_from(prefix, cap);
        assert!(error.starts_with("TooLarge"), "{prefix}: {message}");
        assert!(
            message.contains(&format!("cap of {cap} bytes")),
            "{message}"
        );
    }
    // The same file, whole, does land.
    fetch::fetch(&table, &target, &options(vec![server.url("sized")])).unwrap();
    assert_eq!(entries(&target), [name]);
}

/// A server that stops sending, before its headers or in the middle of the body, is given up
/// on after the stall timeout, and the next mirror is tried.
#[test]
fn a_stalled_server_hits_the_timeout() {
    let dir = shared("fashion-mnist");
    let name = "t10k-labels-idx1-ubyte.gz";
    let good = Arc::new(read(&dir, name));
    let sum = sha256(&good);
    let table = [RemoteFile { name, sha256: &sum }];
    let server = Server::start(HashMap::from([
        (format!("/silent/{name}"), Route::StallBeforeHeaders),
        (
            format!("/stalling/{name}"),
            Route::StallAfter {
                head: good[..100].to_vec(),
                length: good.len() as u64,
            },
        ),
        (format!("/good/{name}"), Route::Serve(Arc::clone(&good))),
    ]));
    let cache = tempfile::tempdir().unwrap();
    let target = cache.path().join("fashion-mnist");
    for prefix in ["silent", "stalling"] {
        let started = Instant::now();
        let err = fetch::fetch(&table, &target, &options(vec![server.url(prefix)])).unwrap_err();
        let waited = started.elapsed();
        eprintln!("{prefix}: {err} ({waited:?})");
        let (_, attempt) = only_attempt(&err);
        assert!(
            matches!(attempt.error, DownloadError::Timeout(_)),
            "{prefix}: {err}"
        );
        assert!(err.to_string().contains("timed out"), "{err}");
        assert!(
            waited >= Duration::from_millis(900) && waited < STALL / 2,
            "{prefix}: gave up after {waited:?}"
        );
        assert!(entries(&target).is_empty(), "{:?}", entries(&target));
    }
    let fetched = fetch::fetch(
        &table,
        &target,
        &options(vec![server.url("stalling"), server.url("good")]),
    )
    .unwrap();
    assert_eq!(
        fetched[0].from.as_deref(),
        Some(format!("{}{name}", server.url("good")).as_str())
    );
}

/// The command: the built-in sums refuse Debian's re-compressed Fashion-MNIST, naming the file
/// and both sums, and keep nothing; mirrors come from $MIXNN_MIRROR, or from --mirror (which
/// wins), tried in turn.
#[test]
fn the_command_verifies_against_the_published_sums() {
    let fashion = copies(Source::FashionMnist, &shared("fashion-mnist"));
    let server = Server::start(
        fashion
            .iter()
            .map(|(name, bytes)| (format!("/fashion/{name}"), Route::Serve(Arc::clone(bytes))))
            .collect(),
    );
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mixnn"))
        .args(["data", "fetch", "fashion-mnist", "--cache"])
        .arg(cache.path())
        .env(fetch::MIRROR_ENV, server.url("fashion"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let first = Source::FashionMnist.files()[0];
    for part in [
        first.name,
        "checksum mismatch",
        &format!("expected SHA-256 {}", first.sha256),
        &format!("got {}", sha256(&fashion[0].1)),
    ] {
        assert!(stderr.contains(part), "{part:?} not in: {stderr}");
    }
    assert!(entries(&cache.path().join("fashion-mnist")).is_empty());

    let out = Command::new(env!("CARGO_BIN_EXE_mixnn"))
        .args(["data", "fetch", "fashion-mnist", "--cache"])
        .arg(cache.path())
        .args([
            "--mirror",
            &server.url("empty"),
            "--mirror",
            &server.url("fashion"),
        ])
        .env(fetch::MIRROR_ENV, "http://127.0.0.1:9/unused/")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for part in [
        format!("{}{}: HTTP status 404", server.url("empty"), first.name),
        format!("{}{}: checksum mismatch", server.url("fashion"), first.name),
    ] {
        assert!(stderr.contains(&part), "{part:?} not in: {stderr}");
    }
    assert!(!stderr.contains("unused"), "{stderr}");
    assert!(entries(&cache.path().join("fashion-mnist")).is_empty());

    // `--help` says where the cache is.
    let help = Command::new(env!("CARGO_BIN_EXE_mixnn"))
        .args(["data", "fetch", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("~/.cache/mixnn") && help.contains("--mirror"),
        "{help}"
    );
}

/// Commands given no --data: with an empty cache they fail, saying to run `mixnn data fetch
/// mnist`; once the cache holds MNIST they train on it. (Skipped where Debian's Fashion-MNIST is
/// installed: it comes before the cache.)
#[test]
fn commands_without_data_use_the_cache_or_say_how_to_fill_it() {
    if Path::new(data::DEBIAN_FASHION_MNIST).is_dir() {
        eprintln!(
            "skipped: {} comes before the cache",
            data::DEBIAN_FASHION_MNIST
        );
        return;
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cache = tempfile::tempdir().unwrap();
    let train = || {
        Command::new(env!("CARGO_BIN_EXE_mixnn"))
            .current_dir(&workspace)
            .args([
                "train",
                "--model",
                "models/paper-mlp.toml",
                "--mode",
                "native",
                "--epochs",
                "1",
                "--train-limit",
                "640",
                "--test-limit",
                "100",
                "--json",
            ])
            .env_remove(data::DATA_ENV)
            .env(fetch::CACHE_ENV, cache.path())
            .output()
            .unwrap()
    };
    let out = train();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("run `mixnn data fetch mnist`"), "{stderr}");
    assert!(
        stderr.contains(&cache.path().join("mnist").display().to_string()),
        "{stderr}"
    );

    let dir = cache.path().join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    for f in Source::Mnist.files() {
        std::fs::copy(shared("mnist").join(f.name), dir.join(f.name)).unwrap();
    }
    let out = train();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"test_acc\""), "{stdout}");
}
