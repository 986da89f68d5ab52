//! One wasmtime engine per host process: configuration, the import allow-list, the cache of
//! compiled components, and the epoch ticker that enforces deadlines.

use std::{
    collections::HashMap,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
};

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, OptLevel, Strategy,
    component::{Component, HasData, Linker, ResourceTable},
};
use wasmtime_wasi::cli::WasiCli;

use crate::{
    LayerSession, SandboxConfig, SandboxError,
    disk_cache::{DiskCache, Lookup},
    session::SessionData,
    stats::{Counters, SandboxStats},
    wit::LayerComponentPre,
};

/// The interfaces a component may import, without their versions. Everything else (files,
/// sockets, clocks, randomness, HTTP, unknown interfaces) is refused at load time.
///
/// The `wasi:cli` and `wasi:io` ones are what Rust's standard library links on
/// `wasm32-wasip2` even when unused; the sandbox serves them with nothing behind them: no
/// arguments, no environment, empty stdin, stdout discarded, stderr kept (bounded) to explain
/// panics, and `exit` ends the session.
pub const ALLOWED_IMPORTS: &[&str] = &[
    "mixnn:layer/kernels",
    "mixnn:layer/types",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
];

/// A validated, compiled component, ready to start sessions from.
#[derive(Clone)]
pub struct LayerModule {
    hash: [u8; 32],
    pre: LayerComponentPre<SessionData>,
}

impl LayerModule {
    /// SHA-256 of the component's bytes.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }
}

impl std::fmt::Debug for LayerModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: String = self
            .hash
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        write!(f, "LayerModule({hex})")
    }
}

/// Advances the engine's epoch until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The sandbox: runs untrusted layer components within fixed limits.
///
/// Cheap to share (`Arc<Sandbox>`); each session has its own store.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<SessionData>,
    config: SandboxConfig,
    cache: Mutex<ModuleCache>,
    /// Compiled components on the host's own disk ([`SandboxConfig::cache_dir`]).
    disk: Option<DiskCache>,
    compiling: CompileTurns,
    counters: Arc<Counters>,
    /// Linear memory left to all sessions ([`SandboxConfig::max_total_memory_bytes`]).
    memory_left: Arc<AtomicUsize>,
    _ticker: Ticker,
}

struct Io;

impl HasData for Io {
    type Data<'a> = &'a mut ResourceTable;
}

fn engine_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SandboxError {
    SandboxError::Engine(e.into())
}

impl Sandbox {
    /// Sets up the engine, the linker and the epoch ticker.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let mut wasm = Config::new();
        wasm.strategy(Strategy::Cranelift)
            .cranelift_opt_level(OptLevel::Speed)
            .wasm_component_model(true)
            .wasm_simd(true)
            // Deadlines: a ticker advances the epoch; each call gets a budget of ticks.
            .epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack);
        let engine = Engine::new(&wasm).map_err(engine_error)?;
        let linker = Self::linker(&engine).map_err(engine_error)?;
        let disk = config
            .cache_dir
            .as_ref()
            .map(|dir| {
                DiskCache::open(dir, config.max_disk_cache_bytes, &engine).map_err(|source| {
                    SandboxError::CacheDir {
                        path: dir.clone(),
                        source,
                    }
                })
            })
            .transpose()?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let ticker_stop = Arc::clone(&stop);
        let tick = config.epoch_tick;
        let thread = thread::Builder::new()
            .name("mixnn-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    thread::sleep(tick);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(engine_error)?;
        let max_total_memory = config.max_total_memory_bytes;
        let max_compiles = config.max_compiles_at_once;
        Ok(Sandbox {
            engine,
            linker,
            config,
            cache: Mutex::new(ModuleCache::default()),
            disk,
            compiling: CompileTurns::new(max_compiles),
            counters: Arc::default(),
            memory_left: Arc::new(AtomicUsize::new(max_total_memory)),
            _ticker: Ticker {
                stop,
                thread: Some(thread),
            },
        })
    }

    fn linker(engine: &Engine) -> wasmtime::Result<Linker<SessionData>> {
        use wasmtime_wasi::p2::bindings::{cli, sync::io};

        let mut l = Linker::new(engine);
        crate::wit::add_kernels(&mut l)?;
        wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<_, Io>(&mut l, |s| {
            &mut s.table
        })?;
        io::poll::add_to_linker::<_, Io>(&mut l, |s| &mut s.table)?;
        io::streams::add_to_linker::<_, Io>(&mut l, |s| &mut s.table)?;
        cli::environment::add_to_linker::<_, WasiCli>(&mut l, SessionData::cli)?;
        cli::exit::add_to_linker::<_, WasiCli>(&mut l, SessionData::cli)?;
        cli::stdin::add_to_linker::<_, WasiCli>(&mut l, SessionData::cli)?;
        cli::stdout::add_to_linker::<_, WasiCli>(&mut l, SessionData::cli)?;
        cli::stderr::add_to_linker::<_, WasiCli>(&mut l, SessionData::cli)?;
        cli::terminal_input::add_to_linker::<_, WasiCli>(&mut l, SessionData::cli)?;
        cli::terminal_output::add_to_linker::<_, WasiCli>(&mut l, SessionData::cli)?;
        cli::terminal_stdin::add_to_linker::<_, WasiCli>(&mut l, SessionData::cli)?;
        cli::terminal_stdout::add_to_linker::<_, WasiCli>(&mut l, SessionData::cli)?;
        cli::terminal_stderr::add_to_linker::<_, WasiCli>(&mut l, SessionData::cli)?;
        Ok(l)
    }

    /// The limits in force.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Validates and compiles a component (or takes it from the cache, by content hash).
    ///
    /// Refuses oversized bytes, anything that is not a component of the layer world, and any
    /// component that imports an interface outside [`ALLOWED_IMPORTS`].
    pub fn load(&self, bytes: &[u8]) -> Result<LayerModule, SandboxError> {
        let result = self.compile(bytes);
        if let Err(e) = &result {
            self.counters.refused();
            tracing::debug!(error = %e, size = bytes.len(), "component refused");
        }
        result
    }

    fn compile(&self, bytes: &[u8]) -> Result<LayerModule, SandboxError> {
        if bytes.len() > self.config.max_component_bytes {
            return Err(SandboxError::TooLarge {
                size: bytes.len(),
                max: self.config.max_component_bytes,
            });
        }
        let hash: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(module) = lock(&self.cache).get(&hash) {
            return Ok(module);
        }
        // Only binary components: text (WAT) would be parsed by a larger attack surface.
        if !is_component_binary(bytes) {
            return Err(SandboxError::NotAComponent);
        }
        // Our own earlier output, before waiting for a turn: loading it costs about a
        // millisecond, and must not wait behind strangers' compiles.
        if let Some(component) = self.compiled_on_disk(&hash) {
            return self.finish(hash, &component, false);
        }
        let _turn = self.compiling.wait_turn();
        // Compiled by another session while this one waited.
        if let Some(module) = lock(&self.cache).get(&hash) {
            return Ok(module);
        }
        // Or by another host process sharing the disk cache. The claim is held until this
        // compile's entry is written (the end of this function).
        let claim = self.disk.as_ref().and_then(|disk| disk.claim(&hash));
        if claim.is_some()
            && let Some(component) = self.compiled_on_disk(&hash)
        {
            return self.finish(hash, &component, false);
        }
        let component =
            Component::from_binary(&self.engine, bytes).map_err(SandboxError::Invalid)?;
        self.finish(hash, &component, true)
    }

    /// The disk cache's entry for `hash`, if there is a usable one.
    fn compiled_on_disk(&self, hash: &[u8; 32]) -> Option<Component> {
        match self.disk.as_ref()?.get(&self.engine, hash) {
            Lookup::Hit(component) => {
                self.counters.disk_hit();
                Some(component)
            }
            Lookup::Miss => None,
            Lookup::Corrupt(why) => {
                self.counters.disk_corrupt();
                tracing::warn!(%why, "compilation cache entry unusable; compiling again");
                None
            }
        }
    }

    /// Checks a compiled component's imports and links it; one just `compiled` from source
    /// (not loaded from the disk cache) is counted and, if it passes, written to the disk.
    fn finish(
        &self,
        hash: [u8; 32],
        component: &Component,
        compiled: bool,
    ) -> Result<LayerModule, SandboxError> {
        let image = component.image_range();
        let code_bytes = (image.end as usize).saturating_sub(image.start as usize);
        for (name, _) in component.component_type().imports(&self.engine) {
            let unversioned = name.split('@').next().unwrap_or(name);
            if !ALLOWED_IMPORTS.contains(&unversioned) {
                return Err(SandboxError::ForbiddenImport(name.to_owned()));
            }
        }
        let instance_pre = self
            .linker
            .instantiate_pre(component)
            .map_err(SandboxError::Invalid)?;
        let pre = LayerComponentPre::new(instance_pre).map_err(SandboxError::Invalid)?;
        let module = LayerModule { hash, pre };
        if compiled {
            self.counters.loaded();
            if let Some(disk) = &self.disk
                && let Err(why) = disk.put(&hash, component)
            {
                self.counters.disk_write_error();
                tracing::warn!(%why, "cannot write to the compilation cache");
            }
        }
        lock(&self.cache).insert(&self.config, module.clone(), code_bytes);
        Ok(module)
    }

    /// Bytes of compiled components the disk cache holds now (0 without one).
    pub fn disk_cache_bytes(&self) -> u64 {
        self.disk.as_ref().map_or(0, DiskCache::disk_bytes)
    }

    /// Starts a session: a fresh store with its limits, and a new instance of `module`.
    pub fn start(&self, module: &LayerModule) -> Result<LayerSession, SandboxError> {
        self.counters.session();
        LayerSession::start(
            &self.engine,
            &self.config,
            module.pre.clone(),
            Arc::clone(&self.counters),
            Arc::clone(&self.memory_left),
        )
    }

    /// Bytes of compiled code the cache holds now.
    pub fn cached_code_bytes(&self) -> usize {
        lock(&self.cache).code_bytes
    }

    /// Linear memory all sessions' instances hold now, in bytes.
    pub fn memory_in_use(&self) -> usize {
        self.config
            .max_total_memory_bytes
            .saturating_sub(self.memory_left.load(Ordering::Acquire))
    }

    /// What the sandbox has refused or stopped so far.
    pub fn stats(&self) -> SandboxStats {
        self.counters.snapshot()
    }

    /// Spawns a thread whose native stack is large enough for calls into components
    /// ([`SandboxConfig::worker_stack_bytes`]). Run sessions' calls on such threads.
    pub fn spawn_worker<F, R>(&self, name: &str, f: F) -> std::io::Result<thread::JoinHandle<R>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        thread::Builder::new()
            .name(name.to_owned())
            .stack_size(self.config.thread_stack_bytes())
            .spawn(f)
    }
}

/// Compiled components by content hash, bounded in count and in bytes of compiled code.
#[derive(Default)]
struct ModuleCache {
    modules: HashMap<[u8; 32], (LayerModule, usize)>,
    code_bytes: usize,
}

impl ModuleCache {
    fn get(&self, hash: &[u8; 32]) -> Option<LayerModule> {
        self.modules.get(hash).map(|(m, _)| m.clone())
    }

    fn insert(&mut self, config: &SandboxConfig, module: LayerModule, code_bytes: usize) {
        if code_bytes > config.max_cached_code_bytes {
            return;
        }
        if self.modules.len() >= config.max_cached_components
            || self.code_bytes + code_bytes > config.max_cached_code_bytes
        {
            // Simple and bounded: start over rather than track recency.
            self.modules.clear();
            self.code_bytes = 0;
        }
        self.code_bytes += code_bytes;
        self.modules.insert(module.hash, (module, code_bytes));
    }
}

/// Turns to compile: at most so many compiles at once, the others wait.
struct CompileTurns {
    running: Mutex<usize>,
    done: Condvar,
    max: usize,
}

/// A turn to compile, given back when dropped.
struct CompileTurn<'a>(&'a CompileTurns);

impl CompileTurns {
    fn new(max: usize) -> Self {
        CompileTurns {
            running: Mutex::new(0),
            done: Condvar::new(),
            max: max.max(1),
        }
    }

    fn wait_turn(&self) -> CompileTurn<'_> {
        let mut running = lock(&self.running);
        while *running >= self.max {
            running = self
                .done
                .wait(running)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *running += 1;
        CompileTurn(self)
    }
}

impl Drop for CompileTurn<'_> {
    fn drop(&mut self) {
        let mut running = lock(&self.0.running);
        *running = running.saturating_sub(1);
        self.0.done.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind: keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A component binary starts with `\0asm`, then version 0x0d and layer 1.
fn is_component_binary(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}
