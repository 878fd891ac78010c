//! The engine: compiles (or finds in the cache), instantiates and runs a task's module
//! under its limits, measures it, and signs a receipt, whatever the outcome.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::path::PathBuf;

use wasmtime::{
    Config, InstanceAllocationStrategy, InstancePre, Linker, Module, PoolingAllocationConfig,
    Store, Trap,
};
use zerostate_telemetry::SpanExt;
use zerostate_telemetry::local::{LocalParent, LocalSpan};
use zerostate_telemetry::names::{attr, span};

use crate::TaskError;
use crate::disk_cache::{DiskCache, Lookup};
use crate::limits::MAX_TABLE_ELEMENTS;
use crate::manifest::{Manifest, Policy, sha256};
use crate::receipt::{ExecutorKey, Receipt};
use crate::wasi::{self, Exit, TaskState};

/// How often the wall-time clock ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Bytes the disk cache of compiled modules holds by default: 1 GiB.
pub const DISK_CACHE_BYTES: u64 = 1 << 30;
/// Prepared modules kept in memory; the oldest is dropped when full.
pub const CACHE_CAPACITY: usize = 64;
/// Instance slots of the pooling allocator: tasks that can run at once.
const POOL_SLOTS: u32 = 64;
/// Deepest WebAssembly stack a task may use.
const MAX_STACK_BYTES: usize = 512 << 10;

/// What a task used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measurement {
    /// Fuel consumed.
    pub fuel_consumed: u64,
    /// Peak linear memory, bytes.
    pub peak_memory_bytes: u64,
    /// Time from instantiation to the end of the entry point.
    pub wall_time: Duration,
    /// Time spent compiling, or loading from disk (zero on a memory cache hit).
    pub compile_time: Duration,
    /// Whether the module came from a cache (memory or disk) instead of the compiler.
    pub cache_hit: bool,
    /// Whether it came from the disk cache (its load time is in `compile_time`).
    pub from_disk: bool,
    /// Compiled modules evicted from the disk cache to make room for this one.
    pub disk_evicted: u64,
}

/// Everything a run produced.
#[derive(Debug)]
pub struct Execution {
    /// `Ok` when the entry point returned (or exited with 0); the error otherwise.
    pub result: Result<(), TaskError>,
    /// What the task wrote to stdout (empty for a run the engine cut short: a trap, a limit;
    /// kept for a program that exited with a code of its own).
    pub output: Vec<u8>,
    /// The files it left in `/output`, by name, when it had one (none for a run the engine
    /// cut short, as for `output`).
    pub files: BTreeMap<String, Vec<u8>>,
    /// What it wrote to stderr (at most 64 KiB).
    pub stderr: Vec<u8>,
    /// The exit code (0 when the entry point returned).
    pub exit_code: i32,
    /// What it used.
    pub measurement: Measurement,
    /// The signed receipt.
    pub receipt: Receipt,
}

struct Prepared {
    pre: InstancePre<TaskState>,
}

/// A bounded cache of prepared modules keyed by the module's SHA-256.
#[derive(Default)]
struct Cache {
    entries: HashMap<[u8; 32], Arc<Prepared>>,
    order: VecDeque<[u8; 32]>,
}

impl Cache {
    fn get(&self, key: &[u8; 32]) -> Option<Arc<Prepared>> {
        self.entries.get(key).cloned()
    }

    fn put(&mut self, key: [u8; 32], value: Arc<Prepared>) {
        if self.entries.insert(key, value).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > CACHE_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }
}

/// Advances the engine's epoch so running tasks notice their wall-time deadline, every
/// [`EPOCH_TICK`] while at least one task runs; between tasks its thread sleeps until one
/// starts (an idle node does not wake for it). Deadlines count ticks from when their task
/// starts, so a clock that stood still meanwhile shortens none.
struct Ticker {
    clock: Arc<Clock>,
    handle: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Clock {
    state: Mutex<ClockState>,
    wake: std::sync::Condvar,
    /// Ticks so far.
    ticks: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct ClockState {
    running: usize,
    stop: bool,
}

impl Clock {
    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ticker thread: waits for a running task, then ticks while any runs.
    fn run(&self, engine: &wasmtime::Engine) {
        loop {
            {
                let mut state = self.lock();
                while state.running == 0 && !state.stop {
                    state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                if state.stop {
                    return;
                }
            }
            std::thread::sleep(EPOCH_TICK);
            engine.increment_epoch();
            self.ticks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Ticker {
    fn start(engine: &wasmtime::Engine) -> Result<Self, TaskError> {
        let clock = Arc::new(Clock::default());
        let handle = {
            let (engine, clock) = (engine.clone(), clock.clone());
            std::thread::Builder::new()
                .name("zerostate-epoch".into())
                .spawn(move || clock.run(&engine))
                .map_err(|e| TaskError::Host(format!("cannot start the wall-time clock: {e}")))?
        };
        Ok(Self {
            clock,
            handle: Some(handle),
        })
    }

    /// Keeps the clock ticking until the returned guard is dropped.
    fn ticking(&self) -> Ticking<'_> {
        let mut state = self.clock.lock();
        state.running += 1;
        if state.running == 1 {
            self.clock.wake.notify_one();
        }
        Ticking(&self.clock)
    }
}

/// A task that needs the clock ([`Ticker::ticking`]).
struct Ticking<'a>(&'a Clock);

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.running = state.running.saturating_sub(1);
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.clock.lock().stop = true;
        self.clock.wake.notify_one();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// How an engine is set up.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// What tasks may ask for. Default: [`Policy::default`].
    pub policy: Policy,
    /// Where compiled modules are kept across restarts. Default: none (memory only).
    pub disk_cache: Option<PathBuf>,
    /// The most bytes the disk cache holds; the least recently written entries go first.
    /// Default (0 here): [`DISK_CACHE_BYTES`].
    pub disk_cache_bytes: u64,
    /// Preallocate instance slots (faster instantiation, more reserved address space).
    /// Default `false`: allocate on demand.
    pub pooling_allocator: bool,
}

/// Runs tasks. One per node; share it between threads.
pub struct Engine {
    engine: wasmtime::Engine,
    /// What receipts name as their engine ([`Engine::id`]).
    id: String,
    linker: Linker<TaskState>,
    cache: Mutex<Cache>,
    disk: Option<DiskCache>,
    policy: Policy,
    key: ExecutorKey,
    ticker: Ticker,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("policy", &self.policy)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine set up by `options`, signing receipts with `key`.
    pub fn new(options: EngineOptions, key: ExecutorKey) -> Result<Self, TaskError> {
        let policy = options.policy;
        let mut config = Config::new();
        // Deterministic: the same module, input and limits give the same output and fuel on
        // any machine (NaNs canonical, relaxed SIMD in its deterministic mode; clocks and
        // randomness are virtual in the host). Fuel is counted per operator by wasmtime's
        // own costs and per byte by the host's, so a copy-on-write or copied memory image,
        // a cold compile or a cached module all consume the same.
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(MAX_STACK_BYTES)
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true);
        if options.pooling_allocator {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_core_instances(POOL_SLOTS)
                .total_memories(POOL_SLOTS)
                .total_tables(POOL_SLOTS * 8)
                .total_stacks(POOL_SLOTS)
                .max_memory_size(usize::try_from(policy.max_memory_bytes).unwrap_or(usize::MAX))
                .table_elements(MAX_TABLE_ELEMENTS);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = wasmtime::Engine::new(&config)
            .map_err(|e| TaskError::Host(format!("cannot start wasmtime: {e}")))?;
        let disk = match &options.disk_cache {
            Some(dir) => Some(
                DiskCache::new(
                    dir,
                    &engine,
                    key.derive_secret("module-cache"),
                    match options.disk_cache_bytes {
                        0 => DISK_CACHE_BYTES,
                        n => n,
                    },
                )
                .map_err(|e| {
                    TaskError::Host(format!(
                        "cannot use the module cache {}: {e}",
                        dir.display()
                    ))
                })?,
            ),
            None => None,
        };
        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker)?;
        let ticker = Ticker::start(&engine)?;
        Ok(Self {
            engine,
            id: engine_id(MAX_STACK_BYTES),
            linker,
            cache: Mutex::new(Cache::default()),
            disk,
            policy,
            key,
            ticker,
        })
    }

    /// What this engine allows a task.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Checks that `module` (binary or text WebAssembly) is one this engine would compile:
    /// valid, and within the policy's bounds on functions; without compiling it. A node
    /// checks a module where it enters (an upload, a submission), so that a file that is
    /// not WebAssembly is refused there, not by the executor it was sent to.
    pub fn check_module(&self, module: &[u8]) -> Result<(), TaskError> {
        if module.len() as u64 > self.policy.max_module_bytes {
            return Err(TaskError::ModuleTooLarge(format!(
                "{} bytes, above the node's policy of {}",
                module.len(),
                self.policy.max_module_bytes
            )));
        }
        let binary = crate::manifest::check_compile_cost(module, &self.policy)?;
        wasmtime::Module::validate(&self.engine, &binary)
            .map_err(|e| TaskError::InvalidModule(format!("{e:#}")))
    }

    /// The executor's peer id, as receipts name it.
    pub fn peer_id(&self) -> String {
        self.key.peer_id()
    }

    /// What receipts name as this engine: `wasmtime-<version>+<fingerprint>`, the
    /// fingerprint the first 16 hex digits of the SHA-256 of every setting that decides a
    /// task's output and fuel (NaN canonicalization, deterministic relaxed SIMD, fuel on,
    /// the stack bound, the host's fuel costs and virtual clocks). Two engines with the
    /// same id give the same output and fuel for the same task.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Signs `receipt` with this engine's key, naming this engine.
    pub fn sign(&self, mut receipt: Receipt) -> Receipt {
        receipt.engine = self.id.clone();
        receipt.sign(&self.key)
    }

    /// Runs `manifest`. Never panics on anything the module does; every failure is a
    /// [`TaskError`] in the result and a failed, signed receipt.
    pub fn run(&self, manifest: &Manifest) -> Execution {
        let task = tracing::info_span!(
            span::EXECUTION_TASK,
            task.id = %manifest.task_id,
            size.bytes = manifest.module.len() as u64,
            status = tracing::field::Empty,
        );
        let _entered = task.enter();
        // The phases below are local spans: children of the task span collected on this
        // thread, a few tens of nanoseconds each instead of a `tracing` span's hundreds.
        let _phases = LocalParent::of(&task);
        let mut measurement = Measurement::default();
        let mut state_out: Option<TaskState> = None;

        let result = self.execute(manifest, &mut measurement, &mut state_out, true);
        let (output, files, stderr, exit_code) = match state_out {
            Some(state) => (
                state.stdout,
                state.files.into_output().unwrap_or_default(),
                state.stderr,
                state.exit_code.unwrap_or(0),
            ),
            None => (Vec::new(), BTreeMap::new(), Vec::new(), 0),
        };
        // A program that ended itself with a code keeps what it wrote, as under any WASI
        // runtime (`grep` finding nothing exits 1); a run the engine cut short has none.
        let (output, files) = match &result {
            Ok(()) | Err(TaskError::Exited(_)) => (output, files),
            Err(_) => (Vec::new(), BTreeMap::new()),
        };

        let receipt = {
            let _s = LocalSpan::enter(span::EXECUTION_RECEIPT_GENERATE);
            Receipt {
                task_id: manifest.task_id.clone(),
                module_sha256: hex::encode(sha256(&manifest.module)),
                input_sha256: hex::encode(sha256(&manifest.input)),
                output_sha256: hex::encode(sha256(&output)),
                entry: manifest.entry.clone(),
                args: manifest.args.clone(),
                env: manifest.env.clone(),
                files_sha256: if manifest.files.is_empty() {
                    String::new()
                } else {
                    crate::tree_sha256(&manifest.files)
                },
                output_files_sha256: if manifest.output_files {
                    crate::tree_sha256(&files)
                } else {
                    String::new()
                },
                limits: manifest.limits,
                status: if result.is_ok() { "ok" } else { "failed" }.to_owned(),
                error: result.as_ref().err().map(|e| format!("{}: {e}", e.kind())),
                fuel_consumed: measurement.fuel_consumed,
                peak_memory_bytes: measurement.peak_memory_bytes,
                wall_time_us: measurement.wall_time.as_micros() as u64,
                executor: String::new(),
                trace_id: task
                    .context()
                    .map(|c| c.trace_id.to_string())
                    .unwrap_or_default(),
                issued_at: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                engine: self.id.clone(),
                signature: String::new(),
            }
            .sign(&self.key)
        };
        drop(
            LocalSpan::enter(span::EXECUTION_RESOURCES_MEASURE)
                .with_attribute(attr::RESOURCES_FUEL, measurement.fuel_consumed as i64)
                .with_attribute(
                    attr::RESOURCES_MEMORY_BYTES,
                    measurement.peak_memory_bytes as i64,
                )
                .with_attribute(
                    attr::RESOURCES_DURATION_MS,
                    measurement.wall_time.as_secs_f64() * 1e3,
                ),
        );
        task.set_attribute(attr::RESOURCES_FUEL, measurement.fuel_consumed as i64);
        task.set_attribute(
            attr::RESOURCES_MEMORY_BYTES,
            measurement.peak_memory_bytes as i64,
        );
        task.set_attribute(
            attr::RESOURCES_DURATION_MS,
            measurement.wall_time.as_secs_f64() * 1e3,
        );
        match &result {
            Ok(()) => {
                task.record(attr::STATUS, "ok");
            }
            Err(e) => {
                task.record(attr::STATUS, e.kind());
                task.record_error(e);
            }
        }
        Execution {
            result,
            output,
            files,
            stderr,
            exit_code,
            measurement,
            receipt,
        }
    }

    /// Validates `manifest`, compiles or finds its module, and instantiates it under its
    /// limits (running its start function), without calling the entry point or signing a
    /// receipt: a check that a task would start, and what starting it costs.
    pub fn dry_run(&self, manifest: &Manifest) -> Result<Measurement, TaskError> {
        let mut measurement = Measurement::default();
        let mut state = None;
        self.execute(manifest, &mut measurement, &mut state, false)?;
        Ok(measurement)
    }

    fn execute(
        &self,
        manifest: &Manifest,
        measurement: &mut Measurement,
        state_out: &mut Option<TaskState>,
        call_entry: bool,
    ) -> Result<(), TaskError> {
        let module_hash = {
            let _s = LocalSpan::enter(span::EXECUTION_MANIFEST_VALIDATE);
            manifest.validate(&self.policy)?
        };
        let prepared = self.prepare(manifest, module_hash, measurement)?;

        let limits = manifest.limits;
        let seed = sha256(&[&module_hash[..], &sha256(&manifest.input)[..]].concat());
        let state = TaskState::new(manifest, seed);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store
            .set_fuel(limits.fuel)
            .map_err(|e| TaskError::Host(format!("cannot set fuel: {e}")))?;
        // The wall-time limit is checked each time the task has used FUEL_YIELD units: the
        // run yields there with its fuel counted, so a task stopped by the clock states
        // exactly what it consumed. The epoch deadline, a little later, is the backstop
        // for a task stuck where no fuel is counted (one long host call or bulk memory
        // instruction); such a task states the fuel it had used at its last yield.
        store
            .fuel_async_yield_interval(Some(FUEL_YIELD))
            .map_err(|e| TaskError::Host(format!("cannot set the fuel yield: {e}")))?;
        let ticks = (limits.wall_time_ms + BACKSTOP.as_millis() as u64)
            .div_ceil(EPOCH_TICK.as_millis() as u64)
            + 1;
        let _ticking = self.ticker.ticking();
        store.set_epoch_deadline(ticks);

        let started = Instant::now();
        let deadline = started + Duration::from_millis(limits.wall_time_ms);
        let outcome = {
            let store = &mut store;
            let run = async move {
                let instance = {
                    let _s = LocalSpan::enter(span::EXECUTION_WASM_INSTANTIATE);
                    prepared.pre.instantiate_async(&mut *store).await?
                };
                let entry = instance
                    .get_typed_func::<(), ()>(&mut *store, &manifest.entry)
                    .map_err(|_| wasmtime::Error::new(MissingEntry))?;
                if !call_entry {
                    return Ok(());
                }
                let _s = LocalSpan::enter(span::EXECUTION_WASM_EXECUTE);
                entry.call_async(&mut *store, ()).await
            };
            until(run, deadline)
        };
        measurement.wall_time = started.elapsed();
        measurement.fuel_consumed = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let mut state = store.into_data();
        measurement.peak_memory_bytes = state.limiter.peak_memory as u64;

        let result = match outcome {
            Ok(()) => Ok(()),
            Err(e) => Err(classify(e, &mut state, manifest)),
        };
        let result = match result {
            // `proc_exit(0)` is a normal end.
            Err(TaskError::Exited(0)) => Ok(()),
            other => other,
        };
        *state_out = Some(state);
        result
    }

    fn prepare(
        &self,
        manifest: &Manifest,
        hash: [u8; 32],
        measurement: &mut Measurement,
    ) -> Result<Arc<Prepared>, TaskError> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash);
        let compile = LocalSpan::enter(span::EXECUTION_WASM_COMPILE);
        if let Some(p) = cached {
            compile.set_attribute(attr::CACHE_HIT, true);
            measurement.cache_hit = true;
            return Ok(p);
        }
        let started = Instant::now();
        let module = match self.disk.as_ref().map(|d| d.load(&self.engine, &hash)) {
            Some(Lookup::Hit(module)) => {
                measurement.cache_hit = true;
                measurement.from_disk = true;
                compile.set_attribute(attr::CACHE_HIT, true);
                module
            }
            found => {
                compile.set_attribute(attr::CACHE_HIT, false);
                if let Some(Lookup::Rejected(reason)) = found {
                    tracing::warn!(task.id = %manifest.task_id, "compiled module cache entry not used, compiling again: {reason}");
                }
                let binary = crate::manifest::check_compile_cost(&manifest.module, &self.policy)?;
                let module = Module::from_binary(&self.engine, &binary)
                    .map_err(|e| TaskError::InvalidModule(format!("{e:#}")))?;
                if let Some(disk) = &self.disk {
                    match disk.store(&module, &hash) {
                        Ok(evicted) => measurement.disk_evicted = evicted,
                        Err(e) => tracing::warn!("compiled module not cached: {e}"),
                    }
                }
                module
            }
        };
        measurement.compile_time = started.elapsed();
        for import in module.imports() {
            let provided = import.module() == wasi::MODULE
                && wasi::FUNCTIONS.contains(&import.name())
                && matches!(import.ty(), wasmtime::ExternType::Func(_));
            if !provided {
                return Err(TaskError::UnknownImport {
                    module: import.module().to_owned(),
                    name: import.name().to_owned(),
                });
            }
        }
        match module.get_export(&manifest.entry) {
            Some(wasmtime::ExternType::Func(_)) => {}
            _ => return Err(TaskError::MissingExport(manifest.entry.clone())),
        }
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| TaskError::InvalidModule(format!("cannot link: {e:#}")))?;
        let prepared = Arc::new(Prepared { pre });
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(hash, prepared.clone());
        Ok(prepared)
    }
}

/// The wasmtime this engine is built on, from the workspace's lock file.
const WASMTIME_VERSION: &str = env!("ZEROSTATE_WASMTIME_VERSION");

fn engine_id(max_stack: usize) -> String {
    let settings = format!(
        "wasmtime {WASMTIME_VERSION}\nconsume_fuel true\nfuel costs wasmtime default\n\
         cranelift_nan_canonicalization true\nrelaxed_simd_deterministic true\n\
         max_wasm_stack {max_stack}\nhost revision {}: call {}, iovec {}, copy {} per 8 bytes, \
         random {} per block, directory entry {}, clocks from fuel\n",
        wasi::HOST_REVISION,
        wasi::HOST_CALL_FUEL,
        wasi::IOVEC_FUEL,
        wasi::COPY_FUEL_PER_8_BYTES,
        wasi::RANDOM_FUEL_PER_BLOCK,
        wasi::ENTRY_FUEL,
    );
    let digest = sha256(settings.as_bytes());
    format!("wasmtime-{WASMTIME_VERSION}+{}", &hex::encode(digest)[..16])
}

/// Fuel a task uses between two looks at the wall clock.
const FUEL_YIELD: u64 = 100_000;
/// How long past its wall-time limit a task that yields no more is interrupted.
const BACKSTOP: Duration = Duration::from_millis(100);

/// The run went past its wall-time deadline at a yield, and was dropped there.
#[derive(Debug)]
struct PastDeadline;

impl std::fmt::Display for PastDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("wall time exceeded")
    }
}

impl std::error::Error for PastDeadline {}

/// Drives `run` on this thread to its end, or until it yields past `deadline`: it yields
/// only every [`FUEL_YIELD`] units of fuel (the host functions never wait), so polling it
/// again at once is all the scheduling it needs. Dropping it at a yield cancels the run.
fn until<F>(run: F, deadline: Instant) -> wasmtime::Result<()>
where
    F: std::future::Future<Output = wasmtime::Result<()>>,
{
    let mut run = std::pin::pin!(run);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        match run.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(result) => return result,
            std::task::Poll::Pending if Instant::now() >= deadline => {
                return Err(wasmtime::Error::new(PastDeadline));
            }
            std::task::Poll::Pending => {}
        }
    }
}

/// The entry point exists but is not a `() -> ()` function.
#[derive(Debug)]
struct MissingEntry;

impl std::fmt::Display for MissingEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("entry point is not a function without parameters and results")
    }
}

impl std::error::Error for MissingEntry {}

/// Names why a run ended, from what the host saw and what wasmtime reported.
fn classify(e: wasmtime::Error, state: &mut TaskState, manifest: &Manifest) -> TaskError {
    if state.output_exceeded {
        return TaskError::OutputTooLarge(manifest.limits.output_bytes);
    }
    if let Some(hit) = state.limiter.hit.take() {
        return hit;
    }
    if e.downcast_ref::<Exit>().is_some() {
        return TaskError::Exited(state.exit_code.unwrap_or(0));
    }
    if e.downcast_ref::<MissingEntry>().is_some() {
        return TaskError::MissingExport(manifest.entry.clone());
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => TaskError::OutOfFuel(manifest.limits.fuel),
        Some(Trap::Interrupt) => TaskError::WallTimeExceeded(manifest.limits.wall_time_ms),
        None if e.downcast_ref::<PastDeadline>().is_some() => {
            TaskError::WallTimeExceeded(manifest.limits.wall_time_ms)
        }
        Some(Trap::StackOverflow) => TaskError::StackOverflow,
        Some(trap) => TaskError::Trap(trap.to_string()),
        None => TaskError::Trap(format!("{e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    fn ticks(t: &Ticker) -> u64 {
        t.clock.ticks.load(Ordering::Relaxed)
    }

    /// Waits up to 5 s for `ready`.
    fn eventually(mut ready: impl FnMut() -> bool) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if ready() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn the_clock_ticks_only_while_a_task_runs() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = wasmtime::Engine::new(&config).unwrap();
        let ticker = Ticker::start(&engine).unwrap();
        std::thread::sleep(EPOCH_TICK * 10);
        assert_eq!(ticks(&ticker), 0, "no task ran, yet the clock ticked");
        let running = ticker.ticking();
        let second = ticker.ticking();
        assert!(
            eventually(|| ticks(&ticker) >= 3),
            "a task runs, the clock stands"
        );
        drop(running);
        let before = ticks(&ticker);
        assert!(
            eventually(|| ticks(&ticker) >= before + 3),
            "one of two tasks ended and the clock stopped"
        );
        drop(second);
        // Settled: no tick for twice a tick's length.
        let mut last = ticks(&ticker);
        assert!(eventually(|| {
            std::thread::sleep(EPOCH_TICK * 2);
            let now = ticks(&ticker);
            std::mem::replace(&mut last, now) == now
        }));
        std::thread::sleep(EPOCH_TICK * 10);
        assert_eq!(ticks(&ticker), last, "no task runs, yet the clock ticks");
        drop(ticker);
    }
}
