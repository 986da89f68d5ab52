//! Compiled components on the host's own disk, so that a restarted host (or another host
//! process of the same operator sharing the directory) skips Cranelift for components it has
//! compiled before.
//!
//! Only our own output is ever loaded: an entry is written after this host compiled the
//! component it received, under a key that hashes the component's bytes with the engine's
//! compilation settings ([`wasmtime::Engine::precompile_compatibility_hash`]), and it carries
//! a SHA-256 of its payload that is checked before wasmtime sees a byte of it. Compiled code
//! never comes from the network: a peer only chooses which component bytes the key hashes.
//!
//! Host processes that share the directory compile each component once: the first to miss
//! claims it (an exclusive lock on a file beside the entry, which the OS releases if the
//! process dies) and the others wait for its entry, at most [`CLAIM_WAIT`], before they
//! compile it themselves.
//!
//! A file that is missing is a miss; one that is truncated, corrupt, of another format or
//! refused by wasmtime is a miss plus a counter (and the file is removed): never a failure.
//! The directory is bounded in bytes: after each write the oldest entries (by modification
//! time, which a hit refreshes) are removed until it fits.

use std::{
    fs,
    hash::Hasher,
    io::Write,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime},
};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, component::Component};

/// The start of every entry: the format and its version (a new layout is a new magic, and old
/// entries become misses).
const MAGIC: &[u8; 8] = b"mixnnC01";
/// Magic, the component's hash, the payload's hash.
const HEADER_LEN: usize = 8 + 32 + 32;
/// Entries end so; temporary files (being written) start with [`TEMP_PREFIX`]. Nothing else
/// in the directory is ever touched.
const SUFFIX: &str = ".cwasm";
const TEMP_PREFIX: &str = ".tmp-";
/// A claim's lock file: the entry's name with this extension instead of its own.
const CLAIM_EXTENSION: &str = "claim";
/// How long a sandbox waits for another process's claim before it compiles anyway (a
/// compile takes 0.1-2 s; a process that hangs must not stall its neighbours for longer).
pub(crate) const CLAIM_WAIT: Duration = Duration::from_secs(5);
/// How often a waiting sandbox tries the claim again.
const CLAIM_POLL: Duration = Duration::from_millis(5);

/// What a lookup found.
pub(crate) enum Lookup {
    /// A checked entry, deserialized.
    Hit(Component),
    /// No entry.
    Miss,
    /// An entry that could not be used (removed; the caller compiles and counts it).
    Corrupt(String),
}

/// The cache directory of one sandbox.
pub(crate) struct DiskCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Hashes the engine's compilation settings into every key.
    engine_key: [u8; 32],
    /// Names temporary files apart within this process.
    temp_seq: AtomicU64,
}

/// Feeds std's `Hash` into SHA-256 (for the engine's compatibility hash, which is only
/// offered as `impl Hash`).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        // Unused: the key is the full digest.
        0
    }
}

impl DiskCache {
    /// Opens (creating it if needed, readable by this user only) the cache in `dir`.
    pub(crate) fn open(dir: &Path, max_bytes: u64, engine: &Engine) -> std::io::Result<Self> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
        let mut hasher = Sha256Hasher(Sha256::new());
        hasher.write(MAGIC);
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        Ok(DiskCache {
            dir: dir.to_path_buf(),
            max_bytes,
            engine_key: hasher.0.finalize().into(),
            temp_seq: AtomicU64::new(0),
        })
    }

    fn path(&self, component_hash: &[u8; 32]) -> PathBuf {
        let key: [u8; 32] = Sha256::new()
            .chain_update(self.engine_key)
            .chain_update(component_hash)
            .finalize()
            .into();
        self.dir.join(format!("{}{SUFFIX}", hex(&key)))
    }

    /// Claims the compilation of `component_hash` for this process, waiting (at most
    /// [`CLAIM_WAIT`]) while another holds it; the claim ends when the returned value drops.
    /// None: no claim could be had in time (or at all); compile anyway.
    pub(crate) fn claim(&self, component_hash: &[u8; 32]) -> Option<Claim> {
        let path = self.path(component_hash).with_extension(CLAIM_EXTENSION);
        let file = fs::File::create(&path).ok()?;
        let deadline = Instant::now() + CLAIM_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => return Some(Claim { file, path }),
                Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(CLAIM_POLL);
                }
                Err(_) => return None,
            }
        }
    }

    /// The compiled component whose source hashes to `component_hash`, if this host (or a
    /// process sharing its directory) compiled it before with the same engine settings.
    pub(crate) fn get(&self, engine: &Engine, component_hash: &[u8; 32]) -> Lookup {
        let path = self.path(component_hash);
        let bytes = match read_bounded(&path, self.max_bytes) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Lookup::Miss,
            Err(why) => return self.discard(&path, why),
        };
        let Some(payload) = checked_payload(&bytes, component_hash) else {
            return self.discard(&path, "bad header or checksum".into());
        };
        match deserialize_own(engine, payload) {
            Ok(component) => {
                // The modification time is the entry's recency for eviction.
                let _ = fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(SystemTime::now()));
                Lookup::Hit(component)
            }
            Err(e) => self.discard(&path, format!("wasmtime refused it: {e:#}")),
        }
    }

    fn discard(&self, path: &Path, why: String) -> Lookup {
        let _ = fs::remove_file(path);
        Lookup::Corrupt(why)
    }

    /// Stores the component this host compiled from source hashing to `component_hash`, then
    /// evicts the oldest entries past the bound. Written to a temporary file and renamed, so
    /// a reader (or a crash) never sees half an entry under its name.
    pub(crate) fn put(
        &self,
        component_hash: &[u8; 32],
        component: &Component,
    ) -> Result<(), String> {
        let payload = component.serialize().map_err(|e| format!("{e:#}"))?;
        let total = HEADER_LEN + payload.len();
        if u64::try_from(total).unwrap_or(u64::MAX) > self.max_bytes {
            return Err(format!(
                "{total} bytes exceed the cache's {}",
                self.max_bytes
            ));
        }
        let payload_hash: [u8; 32] = Sha256::digest(&payload).into();
        let temp = self.dir.join(format!(
            "{TEMP_PREFIX}{}-{}",
            std::process::id(),
            self.temp_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = fs::File::create(&temp)?;
            file.write_all(MAGIC)?;
            file.write_all(component_hash)?;
            file.write_all(&payload_hash)?;
            file.write_all(&payload)?;
            drop(file);
            fs::rename(&temp, self.path(component_hash))
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(e.to_string());
        }
        self.evict();
        Ok(())
    }

    /// Our files in the directory (entries and temporary ones; claims are empty): when each
    /// was last modified, its bytes, its path. Files another process removes meanwhile are
    /// simply gone.
    fn our_files(&self) -> Vec<(SystemTime, u64, PathBuf)> {
        let Ok(read) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        read.filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.ends_with(SUFFIX) || name.starts_with(TEMP_PREFIX)
            })
            .filter_map(|e| {
                let meta = e.metadata().ok().filter(fs::Metadata::is_file)?;
                let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                Some((modified, meta.len(), e.path()))
            })
            .collect()
    }

    /// Removes the oldest of our files until they fit the bound.
    fn evict(&self) {
        let mut files = self.our_files();
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        if total <= self.max_bytes {
            return;
        }
        files.sort();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            let _ = fs::remove_file(&path);
            total = total.saturating_sub(len);
        }
    }

    /// Bytes of our files on disk now, what the bound holds (for tests and operators).
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.our_files().iter().map(|(_, len, _)| len).sum()
    }
}

/// A process's claim on compiling one component ([`DiskCache::claim`]).
pub(crate) struct Claim {
    file: fs::File,
    path: PathBuf,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Removed while locked: a process that opened it meanwhile gets the lock of a file
        // no longer in the directory, and looks up the entry written before this.
        let _ = fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Reads `path` whole if it exists and is at most `max` bytes.
fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>, String> {
    let len = match fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if len > max {
        return Err(format!("{len} bytes exceed the cache's bound"));
    }
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The payload of an entry, if its header names `component_hash` and its checksum matches.
fn checked_payload<'a>(bytes: &'a [u8], component_hash: &[u8; 32]) -> Option<&'a [u8]> {
    let (header, payload) = bytes.split_at_checked(HEADER_LEN)?;
    let (magic, hashes) = header.split_at(MAGIC.len());
    let (named, sum) = hashes.split_at(32);
    let actual: [u8; 32] = Sha256::digest(payload).into();
    (magic == MAGIC && named == component_hash && sum == actual).then_some(payload)
}

/// Loads compiled code this host wrote itself.
///
/// Safety argument: `Component::deserialize` trusts its bytes to be wasmtime's own output
/// (they become executable code). The only writer of the cache directory is
/// [`DiskCache::put`], in this host or another host process of the same operator (the
/// directory is created for this user only), and it writes nothing but `Component::serialize`
/// of a component compiled here from source: nothing from the network is ever written there.
/// `payload` passed [`checked_payload`], so a truncated or damaged file never gets here.
/// (The checksum is against accidents, not an adversary: whoever can write the directory is
/// the host's operator, who could as well replace the host's binary.) Bytes from another
/// wasmtime version or other engine settings are refused by wasmtime's own compatibility check
/// (and the key hashes the settings, so they are not even looked up).
#[allow(unsafe_code)]
fn deserialize_own(engine: &Engine, payload: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: see above: `payload` is checked to be our own `Component::serialize` output.
    unsafe { Component::deserialize(engine, payload) }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
