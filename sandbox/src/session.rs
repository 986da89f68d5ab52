//! One session: a store with its limits, one instance of a layer component, and the calls
//! into it, with every failure turned into a [`SandboxError`].

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use wasmtime::{
    Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline,
    component::ResourceTable,
};
use wasmtime_wasi::{
    WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
    cli::{WasiCliCtxView, WasiCliView},
    p2::pipe::MemoryOutputPipe,
};

use crate::{
    SandboxConfig, SandboxError,
    error::{BadTensor, TrapReason},
    stats::Counters,
    wit::{LayerComponent, LayerComponentPre, LayerInfo, LossOutput, Mode, Tensor},
};

/// Which cap a store hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hit {
    /// Its own memory or tables.
    Own,
    /// The memory all sessions share.
    Host,
}

/// Caps memory and tables, draws memory from the budget all sessions share (given back when
/// the store goes), and remembers which cap was hit so that the resulting trap is reported as
/// that limit rather than a generic trap.
struct Limiter {
    limits: StoreLimits,
    hit: Option<Hit>,
    /// Bytes left to all sessions.
    shared: Arc<AtomicUsize>,
    /// Bytes this store took from it.
    taken: usize,
}

impl Limiter {
    fn take_shared(&mut self, bytes: usize) -> bool {
        let took = self
            .shared
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(bytes)
            })
            .is_ok();
        if took {
            self.taken += bytes;
        }
        took
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        self.shared.fetch_add(self.taken, Ordering::AcqRel);
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.hit = Some(Hit::Own);
            return allowed;
        }
        if !self.take_shared(desired.saturating_sub(current)) {
            self.hit = Some(Hit::Host);
            return Err(wasmtime::Error::msg(
                "the memory shared by all sessions is exhausted",
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.table_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.hit = Some(Hit::Own);
        }
        allowed
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// What calls may use when they run where other work waits for them (a host's network
/// thread): CPU time rather than wall-clock time, so that a busy machine preempting the
/// thread does not count against the layer, shared by every call made until the budget is
/// lifted (a frame's calls, across the sessions of a hop's layers); and a kernel size far
/// below the usual one, since a kernel call is not interrupted. Past either, the call stops
/// as at its deadline, with [`SandboxError::OverBudget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallBudget {
    /// The thread's CPU time ([`thread_cpu`]) by which the calls must be done.
    pub cpu_until: Duration,
    /// Multiply-adds of one kernel call.
    pub kernel_macs: u64,
}

impl CallBudget {
    /// `cpu` of the calling thread's CPU time from now, and kernels of at most `kernel_macs`.
    pub fn from_now(cpu: Duration, kernel_macs: u64) -> Self {
        CallBudget {
            cpu_until: thread_cpu().saturating_add(cpu),
            kernel_macs,
        }
    }
}

/// What a budgeted call went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverBudget {
    /// Its CPU time.
    Cpu,
    /// The size of a kernel it asked for (its multiply-adds).
    Kernel(u64),
}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OverBudget::Cpu => write!(f, "its CPU time"),
            OverBudget::Kernel(macs) => write!(f, "a kernel of {macs} multiply-adds"),
        }
    }
}

/// A budgeted call under way.
struct Budgeted {
    budget: CallBudget,
    /// The call's wall-clock deadline (the call timeout, as for any call).
    until: Instant,
    /// What the call went past, if it did.
    over: Option<OverBudget>,
}

/// The calling thread's CPU time (what a [`CallBudget`] counts).
pub fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// What a session's store holds.
pub(crate) struct SessionData {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    limiter: Limiter,
    stderr: MemoryOutputPipe,
    pub(crate) max_kernel_macs: u64,
    pub(crate) max_memory_bytes: u64,
    pub(crate) counters: Arc<Counters>,
    /// The budget of the call under way, if it has one.
    budgeted: Option<Budgeted>,
}

impl SessionData {
    /// The most multiply-adds a kernel call may cost now; past the budget's, the call is
    /// marked over budget.
    pub(crate) fn kernel_macs_allowed(&mut self, macs: u64) -> bool {
        if let Some(b) = &mut self.budgeted
            && macs > b.budget.kernel_macs
        {
            b.over = Some(OverBudget::Kernel(macs));
            return false;
        }
        macs <= self.max_kernel_macs
    }

    pub(crate) fn cli(&mut self) -> WasiCliCtxView<'_> {
        WasiCliView::cli(self)
    }
}

impl WasiView for SessionData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A running instance of a layer component, owned by one session.
///
/// Calls block until the component returns, traps or hits its deadline. Run them on a thread
/// from [`Sandbox::spawn_worker`](crate::Sandbox::spawn_worker). After a trap or a limit, the
/// session is dead: every later call returns [`SandboxError::SessionDead`].
pub struct LayerSession {
    store: Store<SessionData>,
    layer: LayerComponent,
    deadline_ticks: u64,
    limits: SandboxConfig,
    dead: bool,
    counters: Arc<Counters>,
    budget: Option<CallBudget>,
}

impl LayerSession {
    pub(crate) fn start(
        engine: &Engine,
        config: &SandboxConfig,
        pre: LayerComponentPre<SessionData>,
        counters: Arc<Counters>,
        shared_memory: Arc<AtomicUsize>,
    ) -> Result<Self, SandboxError> {
        let stderr = MemoryOutputPipe::new(config.max_stderr_bytes);
        // No arguments, environment, directories, network; stdin empty, stdout discarded.
        let wasi = WasiCtxBuilder::new().stderr(stderr.clone()).build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(config.max_memory_bytes)
            .table_elements(100_000)
            .instances(16)
            .tables(16)
            .memories(4)
            .trap_on_grow_failure(true)
            .build();
        let data = SessionData {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter {
                limits,
                hit: None,
                shared: shared_memory,
                taken: 0,
            },
            stderr,
            max_kernel_macs: config.max_kernel_macs,
            max_memory_bytes: config.max_memory_bytes as u64,
            counters: Arc::clone(&counters),
            budgeted: None,
        };
        let mut store = Store::new(engine, data);
        store.limiter(|d| &mut d.limiter);
        // Without a budget the deadline is the call timeout, and reaching it stops the call.
        // With one, the deadline comes every tick, to look at the thread's CPU time.
        store.epoch_deadline_callback(|mut store| {
            let Some(b) = &mut store.data_mut().budgeted else {
                return Ok(UpdateDeadline::Interrupt);
            };
            if Instant::now() >= b.until {
                return Ok(UpdateDeadline::Interrupt);
            }
            if thread_cpu() > b.budget.cpu_until {
                b.over = Some(OverBudget::Cpu);
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::Continue(1))
        });
        let deadline_ticks = config.deadline_ticks();
        store.set_epoch_deadline(deadline_ticks);
        let session = LayerSession {
            layer: match pre.instantiate(&mut store) {
                Ok(layer) => layer,
                Err(e) => {
                    return Err(classify(e, &store, config));
                }
            },
            store,
            deadline_ticks,
            limits: config.clone(),
            dead: false,
            counters,
            budget: None,
        };
        Ok(session)
    }

    /// Runs one call with a fresh deadline, and maps its outcome.
    fn call<R>(
        &mut self,
        f: impl FnOnce(
            &LayerComponent,
            &mut Store<SessionData>,
        ) -> wasmtime::Result<Result<R, crate::wit::LayerError>>,
    ) -> Result<R, SandboxError> {
        if self.dead {
            return Err(SandboxError::SessionDead);
        }
        let started = Instant::now();
        match self.budget {
            None => self.store.set_epoch_deadline(self.deadline_ticks),
            Some(budget) => {
                self.store.data_mut().budgeted = Some(Budgeted {
                    budget,
                    until: started + self.limits.call_timeout,
                    over: None,
                });
                self.store.set_epoch_deadline(1);
            }
        }
        let outcome = f(&self.layer, &mut self.store);
        let over = self.store.data_mut().budgeted.take().and_then(|b| b.over);
        self.counters.called(started.elapsed());
        // Over budget is the end, whatever the layer made of a refused kernel: the same call
        // without a budget would have computed something else.
        if let Some(over) = over {
            return Err(self.end(SandboxError::OverBudget(over)));
        }
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(layer_error)) => Err(SandboxError::Layer(layer_error)),
            Err(e) => {
                let e = classify(e, &self.store, &self.limits);
                Err(self.end(e))
            }
        }
    }

    fn check(&mut self, tensor: Tensor) -> Result<Tensor, SandboxError> {
        match check_tensor(&tensor, self.limits.max_tensor_values) {
            Ok(()) => Ok(tensor),
            Err(e) => Err(self.end(e)),
        }
    }

    /// Ends the session after a failure, counting and logging it.
    fn end(&mut self, e: SandboxError) -> SandboxError {
        self.dead = true;
        self.counters.failure(&e);
        tracing::debug!(error = %e, "session ended");
        e
    }

    /// `init`: builds the layer from the designer's config bytes.
    pub fn init(&mut self, config: &[u8]) -> Result<LayerInfo, SandboxError> {
        self.call(|l, s| l.mixnn_layer_layer().call_init(s, config))
    }

    /// `forward`.
    pub fn forward(&mut self, input: &Tensor, mode: Mode) -> Result<Tensor, SandboxError> {
        let out = self.call(|l, s| l.mixnn_layer_layer().call_forward(s, input, mode))?;
        self.check(out)
    }

    /// `backward`: the gradient of the input, if `input_grad` (the layer returns none
    /// otherwise, and one it returns anyway is dropped); [`LayerSession::update`] must follow.
    pub fn backward(
        &mut self,
        grad_output: &Tensor,
        input_grad: bool,
    ) -> Result<Option<Tensor>, SandboxError> {
        let out = self.call(|l, s| {
            l.mixnn_layer_layer()
                .call_backward(s, grad_output, input_grad)
        })?;
        match out {
            Some(g) if input_grad => self.check(g).map(Some),
            _ => Ok(None),
        }
    }

    /// `update`: the parameters' gradients of the last backward, and the optimizer step.
    pub fn update(&mut self) -> Result<(), SandboxError> {
        self.call(|l, s| l.mixnn_layer_layer().call_update(s))
    }

    /// `loss` (loss layers).
    pub fn loss(&mut self, input: &Tensor, target: &Tensor) -> Result<LossOutput, SandboxError> {
        let out = self.call(|l, s| l.mixnn_layer_layer().call_loss(s, input, target))?;
        let grad_input = self.check(out.grad_input)?;
        Ok(LossOutput {
            loss: out.loss,
            grad_input,
        })
    }

    /// `export-state`: parameters and optimizer state as safetensors bytes.
    pub fn export_state(&mut self) -> Result<Vec<u8>, SandboxError> {
        self.call(|l, s| l.mixnn_layer_layer().call_export_state(s))
    }

    /// `import-state`.
    pub fn import_state(&mut self, state: &[u8]) -> Result<(), SandboxError> {
        self.call(|l, s| l.mixnn_layer_layer().call_import_state(s, state))
    }

    /// Runs the calls that follow within `budget` (None: the call timeout alone), for a
    /// caller that runs them where other work waits. A call over it ends the session.
    pub fn set_budget(&mut self, budget: Option<CallBudget>) {
        self.budget = budget;
    }

    /// Whether an earlier failure ended the session.
    pub fn is_dead(&self) -> bool {
        self.dead
    }
}

/// Checks that a returned tensor is well formed and within limits.
fn check_tensor(t: &Tensor, max_values: usize) -> Result<(), SandboxError> {
    if t.data.len() > max_values {
        return Err(SandboxError::BadOutput(BadTensor::TooManyValues {
            values: t.data.len(),
            max: max_values,
        }));
    }
    let expected = t
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize));
    if expected != Some(t.data.len()) {
        return Err(SandboxError::BadOutput(BadTensor::Shape {
            shape: t.shape.clone(),
            values: t.data.len(),
        }));
    }
    Ok(())
}

/// Turns a wasmtime error (trap, limit, host error) into a typed error.
fn classify(
    e: wasmtime::Error,
    store: &Store<SessionData>,
    limits: &SandboxConfig,
) -> SandboxError {
    match store.data().limiter.hit {
        Some(Hit::Own) => return SandboxError::MemoryLimit(limits.max_memory_bytes),
        Some(Hit::Host) => return SandboxError::HostMemory(limits.max_total_memory_bytes),
        None => {}
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => SandboxError::Deadline(limits.call_timeout),
        Some(Trap::StackOverflow) => SandboxError::StackOverflow,
        // Other traps (a panic, a bad access), and errors of the host functions it called.
        trap => {
            let stderr = store.data().stderr.contents();
            SandboxError::Trap {
                reason: match trap {
                    Some(&trap) => TrapReason::Wasm(trap),
                    None => TrapReason::Host(e),
                },
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
            }
        }
    }
}
