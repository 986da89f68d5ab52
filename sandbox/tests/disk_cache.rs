//! The compilation cache on disk: a second sandbox (a restarted host) loads what the first
//! compiled, a damaged entry is compiled again and counted, and the directory stays within its
//! bound.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use mixnn_components::{IDENTITY, LINEAR, LOG_SOFTMAX};
use mixnn_sandbox::{
    Sandbox, SandboxConfig,
    wit::{Mode, Tensor},
};

fn sandbox(dir: &Path, max_bytes: u64) -> Sandbox {
    let mut c = SandboxConfig::default();
    c.cache_dir = Some(dir.to_path_buf());
    c.max_disk_cache_bytes = max_bytes;
    Sandbox::new(c).unwrap()
}

/// The cache's entries.
fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    v.sort();
    v
}

/// (compiled, loaded from disk, found damaged) so far.
fn counts(sandbox: &Sandbox) -> (u64, u64, u64) {
    let stats = sandbox.stats();
    (stats.loads, stats.disk_hits, stats.disk_corrupt)
}

/// The component runs: an identity layer gives back its input.
fn runs(sandbox: &Sandbox, component: &[u8]) {
    let module = sandbox.load(component).unwrap();
    let mut session = sandbox.start(&module).unwrap();
    session.init(b"{}").unwrap();
    let input = Tensor {
        shape: vec![1, 3],
        data: vec![1.0, -2.0, 3.5],
    };
    let out = session.forward(&input, Mode::Train).unwrap();
    assert_eq!(out.data, input.data);
}

#[test]
fn a_restarted_host_loads_what_it_compiled() {
    let dir = tempfile::tempdir().unwrap();
    let first = sandbox(dir.path(), u64::MAX);
    runs(&first, IDENTITY);
    assert_eq!(first.stats().loads, 1);
    assert_eq!(first.stats().disk_hits, 0);
    assert_eq!(entries(dir.path()).len(), 1);
    drop(first);

    let second = sandbox(dir.path(), u64::MAX);
    runs(&second, IDENTITY);
    assert_eq!(counts(&second), (0, 1, 0));
    // In memory from then on.
    runs(&second, IDENTITY);
    assert_eq!(second.stats().disk_hits, 1);
}

#[test]
fn a_damaged_entry_is_compiled_again() {
    let dir = tempfile::tempdir().unwrap();
    runs(&sandbox(dir.path(), u64::MAX), IDENTITY);
    let [entry] = entries(dir.path()).try_into().unwrap();
    let whole = std::fs::read(&entry).unwrap();

    let damaged: [fn(&mut Vec<u8>); 4] = [
        // Truncated in its payload, in its header, and empty.
        |b| b.truncate(b.len() / 2),
        |b| b.truncate(20),
        Vec::clear,
        // One bit flipped in the code.
        |b| {
            let at = b.len() - 1000;
            b[at] ^= 0x10;
        },
    ];
    for damage in damaged {
        let mut bytes = whole.clone();
        damage(&mut bytes);
        std::fs::write(&entry, &bytes).unwrap();
        let s = sandbox(dir.path(), u64::MAX);
        runs(&s, IDENTITY);
        assert_eq!(counts(&s), (1, 0, 1));
        // Written again, whole.
        assert_eq!(std::fs::read(&entry).unwrap(), whole);
    }
    let s = sandbox(dir.path(), u64::MAX);
    runs(&s, IDENTITY);
    assert_eq!(s.stats().disk_hits, 1);
}

#[test]
fn the_bound_evicts_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    // Room for two entries, not three.
    let probe = tempfile::tempdir().unwrap();
    let p = sandbox(probe.path(), u64::MAX);
    for c in [IDENTITY, LINEAR, LOG_SOFTMAX] {
        p.load(c).unwrap();
    }
    let sizes: Vec<u64> = entries(probe.path())
        .iter()
        .map(|e| std::fs::metadata(e).unwrap().len())
        .collect();
    let max = sizes.iter().sum::<u64>() - sizes.iter().min().unwrap() / 2;

    let s = sandbox(dir.path(), max);
    for c in [IDENTITY, LINEAR] {
        s.load(c).unwrap();
        // Distinct modification times, whatever the file system's resolution.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(entries(dir.path()).len(), 2);
    s.load(LOG_SOFTMAX).unwrap();
    assert!(s.disk_cache_bytes() <= max);
    assert_eq!(entries(dir.path()).len(), 2);

    // The oldest (identity) went; the other two are hits.
    let restarted = sandbox(dir.path(), max);
    restarted.load(LINEAR).unwrap();
    restarted.load(LOG_SOFTMAX).unwrap();
    assert_eq!(restarted.stats().disk_hits, 2);
    restarted.load(IDENTITY).unwrap();
    assert_eq!(restarted.stats().loads, 1);
    assert!(restarted.disk_cache_bytes() <= max);
}

#[test]
fn other_files_in_the_directory_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mine = dir.path().join("notes.txt");
    std::fs::write(&mine, vec![b'x'; 4096]).unwrap();
    let s = sandbox(dir.path(), 1);
    s.load(IDENTITY).unwrap();
    // Too large for the bound: not written, counted.
    assert_eq!(s.stats().disk_write_errors, 1);
    assert!(mine.exists());
}

#[test]
fn host_processes_sharing_the_directory_compile_a_component_once() {
    let dir = tempfile::tempdir().unwrap();
    // Two sandboxes on one directory, as two host processes on one machine.
    let (a, b) = (sandbox(dir.path(), u64::MAX), sandbox(dir.path(), u64::MAX));
    std::thread::scope(|s| {
        let left = s.spawn(|| a.load(LINEAR).unwrap());
        let right = s.spawn(|| b.load(LINEAR).unwrap());
        left.join().unwrap();
        right.join().unwrap();
    });
    let (a, b) = (a.stats(), b.stats());
    assert_eq!(
        (a.loads + b.loads, a.disk_hits + b.disk_hits),
        (1, 1),
        "{a:?} {b:?}"
    );
    // Only the entry is left: the claim went with its compile.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
