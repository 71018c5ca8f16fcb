//! The wasmtime host: engines and linkers built once, components compiled and
//! pre-linked at load, calls served by a per-thread instance reset after
//! every call (or, for a component that cannot be reset, a fresh store and
//! instance per call), with memory, stack and time limits, outputs validated.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::filter::recsys::plugin::host::{self as host_api, Level};
use super::bindings::filter::recsys::plugin::types::Ordering as WitOrdering;
use super::bindings::filter::{Filter, FilterPre};
use super::bindings::order::{Order, OrderPre};
use super::instances::{self, Idle};
use super::memory::Snapshot;
use super::runtime::Runtime;
use super::stats::PluginStats;
use super::{reuse, OrderOutput, PluginInput};

/// Resource limits for every plugin call (module arguments of the Redis module).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Linear memory per instance.
    pub memory_bytes: usize,
    /// WebAssembly stack.
    pub stack_bytes: usize,
    /// Wall time per call.
    pub timeout: Duration,
    /// Largest component accepted by LOAD.
    pub max_component_bytes: usize,
    /// Bytes of log (host.log, stdout, stderr) kept per call.
    pub log_bytes: usize,
    /// Fresh instances that may run at once (the pool of components that
    /// cannot be reset; reusable ones are bounded by the threads that call
    /// them and the 16 idle instances each thread keeps at most).
    pub max_instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 16 << 20,
            stack_bytes: 128 << 10,
            timeout: Duration::from_millis(5),
            max_component_bytes: 8 << 20,
            log_bytes: 4096,
            max_instances: 64,
        }
    }
}

/// Which world a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    Filter,
    Order,
}

impl World {
    pub fn name(self) -> &'static str {
        match self {
            World::Filter => "filter",
            World::Order => "order",
        }
    }
}

/// Why a call did not produce a usable answer.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// The plugin trapped (including running out of time, memory or stack).
    Trap(String),
    /// The plugin returned an error.
    Guest(String),
    /// The plugin's answer broke the contract (out of range, duplicates, size).
    Invalid(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Trap(m) => write!(f, "plugin trapped: {m}"),
            CallError::Guest(m) => write!(f, "plugin returned an error: {m}"),
            CallError::Invalid(m) => write!(f, "plugin output rejected: {m}"),
        }
    }
}

pub(super) enum Pre {
    Filter(FilterPre<StoreData>),
    Order(OrderPre<StoreData>),
}

impl Pre {
    fn instantiate(&self, store: &mut Store<StoreData>) -> wasmtime::Result<Bound> {
        Ok(match self {
            Pre::Filter(pre) => Bound::Filter(pre.instantiate(store)?),
            Pre::Order(pre) => Bound::Order(pre.instantiate(store)?),
        })
    }
}

/// An instantiated plugin, ready to call.
pub(super) enum Bound {
    Filter(Filter),
    Order(Order),
}

/// Source of [`Plugin::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A compiled, pre-linked plugin.
pub struct Plugin {
    pub name: String,
    pub world: World,
    pub sha256: String,
    pub size: usize,
    /// The component bytes (kept for persistence and replication).
    pub bytes: Arc<Vec<u8>>,
    pub stats: PluginStats,
    /// `Ok` when calls reuse a per-thread instance reset after each call;
    /// otherwise why each call gets a fresh instance.
    pub instance_reuse: Result<(), String>,
    /// Identifies this load among all plugins the process has loaded.
    id: u64,
    pre: Pre,
}

/// Per-call state: the WASI context (built on the guest's first WASI call;
/// most plugins never make one), its resources, limits and the log.
pub(super) struct StoreData {
    wasi: Option<WasiCtx>,
    /// stdout and stderr of the guest (bounded), once WASI is in use.
    output: Option<MemoryOutputPipe>,
    table: ResourceTable,
    limits: StoreLimits,
    log: String,
    log_cap: usize,
}

impl StoreData {
    /// Clears what the last call left, for the next call on the same store.
    fn begin_call(&mut self, log_cap: usize) {
        self.wasi = None;
        self.output = None;
        self.log.clear();
        self.log_cap = log_cap;
    }

    /// host.log lines, then whatever the guest printed.
    fn log_text(&mut self) -> String {
        let mut log = std::mem::take(&mut self.log);
        if let Some(out) = &self.output {
            log.push_str(&String::from_utf8_lossy(&out.contents()));
        }
        log
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let cap = self.log_cap;
        let output = &mut self.output;
        let wasi = self.wasi.get_or_insert_with(|| {
            let out = output.get_or_insert_with(|| MemoryOutputPipe::new(cap));
            WasiCtxBuilder::new()
                .stdout(out.clone())
                .stderr(out.clone())
                .build()
        });
        WasiCtxView {
            ctx: wasi,
            table: &mut self.table,
        }
    }
}

impl host_api::Host for StoreData {
    fn log(&mut self, level: Level, message: String) {
        let level = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
        };
        let room = self.log_cap.saturating_sub(self.log.len());
        let line = format!("[{level}] {message}\n");
        self.log.push_str(&line[..line.len().min(room)]);
    }
}

/// The process-wide plugin engines.
pub struct Host {
    /// A fresh pooled instance per call.
    fresh: Runtime,
    /// Per-thread instances reset by the host after each call.
    reused: Runtime,
    /// Memory and stack are fixed when the engine is built; the timeout and
    /// the component size limit change at run time ([`Host::set_limits`]).
    limits: parking_lot::RwLock<Limits>,
    ticker: Arc<Ticker>,
}

/// The epoch ticker's state: it ticks every millisecond while calls are in
/// flight and sleeps otherwise, so an idle server does not wake 1000 times a
/// second.
#[derive(Default)]
struct Ticker {
    active: AtomicU64,
    thread: OnceLockThread,
}

type OnceLockThread = std::sync::OnceLock<std::thread::Thread>;

/// Marks a call in flight for as long as it lives.
struct InFlight<'a>(&'a Ticker);

impl<'a> InFlight<'a> {
    fn new(t: &'a Ticker) -> Self {
        if t.active.fetch_add(1, Relaxed) == 0 {
            if let Some(th) = t.thread.get() {
                th.unpark();
            }
        }
        InFlight(t)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

impl Host {
    /// Builds the engines (once) and starts the epoch ticker thread.
    pub fn new(limits: Limits) -> Result<Host, String> {
        let fresh = Runtime::new(&limits, true)?;
        let reused = Runtime::new(&limits, false)?;
        let engines = [fresh.engine.weak(), reused.engine.weak()];
        let ticker = Arc::new(Ticker::default());
        let state = Arc::clone(&ticker);
        let handle = std::thread::Builder::new()
            .name("recsys-wasm-epoch".into())
            .spawn(move || loop {
                for weak in &engines {
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
                if state.active.load(Relaxed) == 0 {
                    // Idle: wait for a call (InFlight unparks) or 100 ms.
                    std::thread::park_timeout(Duration::from_millis(100));
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .map_err(|e| format!("cannot start the epoch thread: {e}"))?;
        let _ = ticker.thread.set(handle.thread().clone());
        Ok(Host {
            fresh,
            reused,
            limits: parking_lot::RwLock::new(limits),
            ticker,
        })
    }

    pub fn limits(&self) -> Limits {
        *self.limits.read()
    }

    /// Changes the limits that apply per call and per load (timeout, largest
    /// component); calls in flight keep the limits they started with.
    pub fn set_limits(&self, timeout: Duration, max_component_bytes: usize) {
        let mut l = self.limits.write();
        l.timeout = timeout;
        l.max_component_bytes = max_component_bytes;
    }

    /// Validates, compiles and pre-links a component. The error names what is
    /// wrong: size, bytes that are not a component, a world it does not
    /// implement, or an import the sandbox does not offer. A component whose
    /// state can be reset between calls (`reuse::prepare`) is compiled
    /// rewritten, for per-thread instances; any other runs in a fresh
    /// instance per call.
    pub fn compile(&self, name: &str, bytes: Vec<u8>) -> Result<Plugin, String> {
        let max_bytes = self.limits.read().max_component_bytes;
        if bytes.len() > max_bytes {
            return Err(format!(
                "component is {} bytes, the limit is {max_bytes}",
                bytes.len(),
            ));
        }
        let reusable = reuse::prepare(&bytes).and_then(|rewritten| {
            self.reused
                .prepare(&rewritten)
                .map_err(|e| format!("the rewritten component failed to load: {e}"))
        });
        let (instance_reuse, (world, pre)) = match reusable {
            Ok(prepared) => (Ok(()), prepared),
            Err(why) => (Err(why), self.fresh.prepare(&bytes)?),
        };
        let sha256 = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Plugin {
            name: name.to_string(),
            world,
            sha256,
            size: bytes.len(),
            bytes: Arc::new(bytes),
            stats: PluginStats::default(),
            instance_reuse,
            id: NEXT_ID.fetch_add(1, Relaxed),
            pre,
        })
    }

    fn store(&self, runtime: &Runtime) -> Store<StoreData> {
        let limits = self.limits();
        let data = StoreData {
            wasi: None,
            output: None,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(16)
                .trap_on_grow_failure(true)
                .build(),
            log: String::new(),
            log_cap: limits.log_bytes,
        };
        let mut store = Store::new(&runtime.engine, data);
        store.limiter(|d| &mut d.limits);
        store
    }

    /// Gives the store's next call its time budget. Every epoch tick (1 ms)
    /// the guest stops at a check: it may go on while the CPU time this
    /// thread spent in the call is under the limit. CPU time, not wall time,
    /// so a worker preempted on a busy machine is not punished; a wall-clock
    /// backstop of 50x the limit stays. The thread's CPU clock is a system
    /// call, so it is first read at the first tick: a call that ends within
    /// a tick (nearly all) never reads it, and a long one may run up to one
    /// tick past the limit.
    fn arm(store: &mut Store<StoreData>, budget: Duration) {
        let wall_start = Instant::now();
        let mut cpu_start: Option<Duration> = None;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            let now = thread_cpu_time();
            let start = *cpu_start.get_or_insert(now);
            if now.saturating_sub(start) >= budget || wall_start.elapsed() >= budget * 50 {
                return Err(wasmtime::Trap::Interrupt.into());
            }
            Ok(wasmtime::UpdateDeadline::Continue(1))
        });
    }

    /// This thread's instance of a reusable plugin, made if it has none.
    fn idle_instance(&self, plugin: &Plugin) -> wasmtime::Result<Idle> {
        if let Some(idle) = instances::take(plugin.id) {
            return Ok(idle);
        }
        let mut store = self.store(&self.reused);
        Self::arm(&mut store, self.limits().timeout);
        Snapshot::forget_created();
        plugin.stats.instances.fetch_add(1, Relaxed);
        let bound = plugin.pre.instantiate(&mut store)?;
        // SAFETY: the instance is alive (in `store`) and not running.
        let snapshot = unsafe { Snapshot::take() };
        Ok(Idle {
            store,
            bound,
            snapshot,
        })
    }

    /// One call: the guest call on a reset or fresh instance, the
    /// validation, and the plugin's statistics (time, outcome, log).
    fn timed<T>(
        &self,
        plugin: &Plugin,
        call: impl FnOnce(&mut Store<StoreData>, &Bound) -> wasmtime::Result<Result<T, String>>,
        validate: impl FnOnce(T) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        let _in_flight = InFlight::new(&self.ticker);
        let t = Instant::now();
        let limits = self.limits();
        let (answer, log) = if plugin.instance_reuse.is_ok() {
            match self.idle_instance(plugin) {
                Ok(mut idle) => {
                    idle.store.data_mut().begin_call(limits.log_bytes);
                    Self::arm(&mut idle.store, limits.timeout);
                    let answer = call(&mut idle.store, &idle.bound);
                    let log = idle.store.data_mut().log_text();
                    // Kept only when the call ended normally, left no
                    // resource behind and the memories could be reset.
                    // SAFETY: the instance is alive and its call has ended.
                    if answer.is_ok()
                        && idle.store.data().table.is_empty()
                        && unsafe { idle.snapshot.restore() }
                    {
                        instances::put_back(plugin.id, idle);
                    }
                    (answer, log)
                }
                Err(e) => (Err(e), String::new()),
            }
        } else {
            let mut store = self.store(&self.fresh);
            Self::arm(&mut store, limits.timeout);
            plugin.stats.instances.fetch_add(1, Relaxed);
            let answer = plugin
                .pre
                .instantiate(&mut store)
                .and_then(|bound| call(&mut store, &bound));
            let log = store.data_mut().log_text();
            (answer, log)
        };
        let result = answer
            .map_err(|e| CallError::Trap(trap_message(&e)))
            .and_then(|r| r.map_err(CallError::Guest))
            .and_then(validate);
        let outcome = result.as_ref().map(|_| ()).map_err(Clone::clone);
        plugin
            .stats
            .record(t.elapsed().as_micros() as u64, &outcome, log);
        result
    }

    /// Runs a filter plugin; returns the kept indices (validated).
    pub fn call_filter(
        &self,
        plugin: &Plugin,
        input: &PluginInput,
        config: &str,
    ) -> Result<Vec<u32>, CallError> {
        if plugin.world != World::Filter {
            return Err(CallError::Invalid(format!(
                "plugin '{}' is an order plugin",
                plugin.name
            )));
        }
        self.timed(
            plugin,
            |store, bound| match bound {
                Bound::Filter(f) => f.call_filter(store, input, config),
                Bound::Order(_) => Ok(Err("not a filter plugin".into())),
            },
            |kept| {
                check_indices(&kept, input.len())?;
                Ok(kept)
            },
        )
    }

    /// Runs an order plugin; returns the chosen indices (and scores), validated.
    pub fn call_order(
        &self,
        plugin: &Plugin,
        input: &PluginInput,
        config: &str,
    ) -> Result<OrderOutput, CallError> {
        if plugin.world != World::Order {
            return Err(CallError::Invalid(format!(
                "plugin '{}' is a filter plugin",
                plugin.name
            )));
        }
        let o: WitOrdering = self.timed(
            plugin,
            |store, bound| match bound {
                Bound::Order(o) => o.call_order(store, input, config),
                Bound::Filter(_) => Ok(Err("not an order plugin".into())),
            },
            |o: WitOrdering| {
                check_indices(&o.indices, input.len())?;
                if let Some(s) = &o.scores {
                    if s.len() != o.indices.len() {
                        return Err(CallError::Invalid(format!(
                            "{} scores for {} indices",
                            s.len(),
                            o.indices.len()
                        )));
                    }
                    if s.iter().any(|x| !x.is_finite()) {
                        return Err(CallError::Invalid("a score is NaN or infinite".into()));
                    }
                }
                Ok(o)
            },
        )?;
        Ok(OrderOutput {
            indices: o.indices,
            scores: o.scores,
        })
    }
}

/// CPU time consumed by the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

pub(super) fn root_cause(e: &wasmtime::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn trap_message(e: &wasmtime::Error) -> String {
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        return match trap {
            wasmtime::Trap::Interrupt => "deadline exceeded (time limit)".into(),
            wasmtime::Trap::StackOverflow => "stack overflow".into(),
            other => other.to_string(),
        };
    }
    root_cause(e)
}

/// Indices must be in range and unique, and no more than the candidates.
fn check_indices(indices: &[u32], n: usize) -> Result<(), CallError> {
    if indices.len() > n {
        return Err(CallError::Invalid(format!(
            "{} indices for {n} candidates",
            indices.len()
        )));
    }
    let mut seen = vec![false; n];
    for &i in indices {
        let slot = seen
            .get_mut(i as usize)
            .ok_or_else(|| CallError::Invalid(format!("index {i} out of range (0..{n})")))?;
        if *slot {
            return Err(CallError::Invalid(format!("index {i} returned twice")));
        }
        *slot = true;
    }
    Ok(())
}
