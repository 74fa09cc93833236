//! The wasmtime [`Engine`] tasks run on ([`TaskEngine`]: the engine, its
//! WASI preview 1 linker for modules, its WASI preview 2 linker for
//! components, and what a task's [`Store`] holds), and how its linear
//! memories are laid out ([`MemoryModel`]), chosen from what the agents
//! sharing it may run at once ([`Capacity`]).
//!
//! Components run on an engine of their own with memories allocated per
//! instance: one component holds as many core instances, memories and
//! tables as its author chose, so a pool sized in tasks could not promise
//! them room. The engine's other settings (fuel, yields) are the same.
//!
//! Fuel is on (it is how `max_fuel` is counted and where a running task can
//! be paused, stopped or throttled: async fuel yields). Epoch interruption is
//! off: fuel yields already give every needed stop point, and paying for both
//! costs about 1.3x on CPU-bound guests instead of about 1.14x for fuel alone.
//!
//! An engine's memory layout is fixed when it is built, and a pool that is
//! full fails the next instantiation ("maximum concurrent limit"), so the
//! engine is sized for every task the master may place: each task has at
//! least 0.001 cpus, so an agent with `cpus` runs at most `cpus × 1000` at
//! once, and each of them at most `min(mem, 4 GiB)` of memory. What that
//! needs must fit the process's address space: 4 GiB slots (no bounds
//! checks) if they fit, smaller pooled slots (bounds checks) if those fit,
//! otherwise memories allocated per task that reserve what they use.

use std::collections::HashSet;
use std::hash::Hasher;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, PoolingAllocationConfig, Store, component,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use super::limits::MemLimiter;

/// The largest linear memory of a wasm32 module.
const WASM32_MEMORY: u64 = 4 << 30;
/// Guard region after each pooled memory (wasmtime's default on 64-bit).
const POOLED_GUARD: u64 = 32 << 20;
/// Guard after an on-demand memory and the room it reserves to grow into
/// before it must move: small, so an idle task reserves little more than
/// it uses.
const ON_DEMAND_GUARD: u64 = 64 << 10;
const ON_DEMAND_GROWTH: u64 = 16 << 20;
/// Rounding of slot sizes (the wasm page).
const WASM_PAGE: u64 = 64 << 10;
/// Memory mappings one running task takes (measured: about 6.6 for an
/// on-demand instance: its memory and guard, its initial image, its fiber
/// stack and guard).
const MAPS_PER_TASK: u64 = 7;

/// What a task's [`Store`] holds: its WASI context (preview 1 for a
/// module, [`ComponentWasi`] for a component) and its `mem` cap.
pub struct TaskData<W = WasiP1Ctx> {
    /// The task's WASI context.
    pub wasi: W,
    /// Its `mem` cap.
    pub limiter: MemLimiter,
}

/// A component's WASI preview 2 state: its context and the table of the
/// resources (streams, descriptors) it holds.
pub struct ComponentWasi {
    /// Args, env, stdio, preopens.
    pub ctx: WasiCtx,
    /// Its resources.
    pub table: ResourceTable,
}

impl WasiView for TaskData<ComponentWasi> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

/// A component task's store data.
pub type ComponentData = TaskData<ComponentWasi>;

/// What the executors sharing an engine may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Tasks at once.
    pub tasks: u64,
    /// The largest linear memory one of them may have, in bytes.
    pub largest_memory: u64,
}

impl Capacity {
    /// An agent offering `cpus` and `mem`: one task per 0.001 cpus (the
    /// least a task may ask for), each with at most `mem` (and 4 GiB).
    pub fn of(cpus: f64, mem: u64) -> Self {
        let tasks = if cpus.is_finite() && cpus > 0.0 {
            (cpus * 1000.0).floor().max(1.0) as u64
        } else {
            1
        };
        Self {
            tasks,
            largest_memory: mem.clamp(WASM_PAGE, WASM32_MEMORY),
        }
    }

    /// Room for both.
    pub fn plus(self, other: Capacity) -> Self {
        Self {
            tasks: self.tasks.saturating_add(other.tasks),
            largest_memory: self.largest_memory.max(other.largest_memory),
        }
    }
}

/// How an engine lays out linear memories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryModel {
    /// A pool of `slots` instances made at start, each memory slot
    /// reserving `reservation` bytes: the fastest instantiation, and with
    /// 4 GiB slots no bounds checks in compiled code.
    Pooled {
        /// Instances at once.
        slots: u32,
        /// Address space per memory slot (also its largest memory).
        reservation: u64,
    },
    /// Memories mapped per instance, reserving their size plus 16 MiB and
    /// moving when they grow past it: no count limit and little address
    /// space per idle task, at the cost of bounds checks and an `mmap`
    /// per instantiation.
    OnDemand,
}

impl MemoryModel {
    /// The model for `capacity` within `budget` bytes of address space.
    pub fn for_capacity(capacity: Capacity, budget: u64) -> Self {
        let Ok(slots) = u32::try_from(capacity.tasks) else {
            return Self::OnDemand;
        };
        let fits = |reservation: u64| {
            (reservation + POOLED_GUARD)
                .checked_mul(capacity.tasks)
                .is_some_and(|need| need <= budget)
        };
        let smallest = capacity.largest_memory.div_ceil(WASM_PAGE) * WASM_PAGE;
        [WASM32_MEMORY, smallest]
            .into_iter()
            .find(|&r| fits(r))
            .map_or(Self::OnDemand, |reservation| Self::Pooled {
                slots: slots.max(1),
                reservation,
            })
    }
}

/// Address space the engine's memories may take: half of what this process
/// can map (the user half of the virtual address space, as the stack's
/// address shows on Unix, 128 TiB on 64-bit Windows; and `RLIMIT_AS`),
/// leaving the rest to everything else.
pub fn address_space_budget() -> u64 {
    let space = if cfg!(all(windows, target_pointer_width = "64")) {
        1 << 47
    } else {
        let here = 0u8;
        (&here as *const u8 as u64)
            .checked_next_power_of_two()
            .unwrap_or(u64::MAX)
    };
    let limit = wasmos_platform::limits::address_space().unwrap_or(u64::MAX);
    space.min(limit) / 2
}

/// Warns when this process's limits hold fewer than `tasks` running tasks:
/// past them a task fails with `AGENT_ERROR` (`Too many open files`,
/// `mmap failed`) although it fits the agent's resources. Each task that can
/// touch files holds a descriptor for its root; each takes a few mappings.
fn warn_of_process_limits(tasks: u64) {
    use wasmos_platform::limits;
    if let Some(files) = limits::open_files().filter(|&f| f < tasks) {
        tracing::warn!(
            tasks,
            open_files = files,
            "the open-file limit holds about {files} tasks that use files at once: raise it \
             (`ulimit -n`, LimitNOFILE=) or offer fewer cpus",
        );
    }
    if let Some(maps) = limits::memory_maps().filter(|&m| m / MAPS_PER_TASK < tasks) {
        tracing::warn!(
            tasks,
            max_map_count = maps,
            "vm.max_map_count holds about {} running tasks: raise it \
             (`sysctl vm.max_map_count={}`) or offer fewer cpus",
            maps / MAPS_PER_TASK,
            tasks.saturating_mul(MAPS_PER_TASK).next_power_of_two()
        );
    }
}

/// The engine settings that matter for compiled code and instantiation.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    /// The memory layout.
    pub memory: MemoryModel,
    /// Fuel metering (always on for tasks; off only for benchmarks that
    /// measure its cost).
    pub fuel: bool,
    /// Epoch interruption instrumentation (off for tasks, see module docs).
    pub epochs: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            memory: MemoryModel::Pooled {
                slots: 2_000,
                reservation: WASM32_MEMORY,
            },
            fuel: true,
            epochs: false,
        }
    }
}

/// Builds an engine with `settings`.
pub fn build_engine(settings: &EngineSettings) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.consume_fuel(settings.fuel);
    config.epoch_interruption(settings.epochs);
    config.wasm_component_model(true);
    // The same results and the same fuel on every agent, whatever its CPU
    // and OS. NaNs are canonical and relaxed SIMD deterministic, so float
    // code prints the same bits on x86_64 and aarch64. Memory is always
    // initialised by copying: copy-on-write images exist on Linux always,
    // on other Unixes only for some modules and on Windows never, and the
    // startup code that copies data segments burns fuel where they are not
    // used, so a task's fuel would otherwise depend on the agent's OS.
    config
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .memory_init_cow(false);
    match settings.memory {
        MemoryModel::Pooled { slots, reservation } => {
            let n = slots.max(1);
            if reservation < WASM32_MEMORY {
                config
                    .memory_reservation(reservation)
                    .memory_reservation_for_growth(0);
            }
            let mut pool = PoolingAllocationConfig::new();
            pool.total_core_instances(n)
                .total_memories(n)
                .total_tables(n)
                .total_stacks(n)
                .max_memory_size(reservation as usize)
                // Keep a little of each slot's memory resident between
                // tasks: resetting it with memset is cheaper than madvise +
                // page faults for the small tasks that dominate launch rates.
                .linear_memory_keep_resident(64 << 10)
                .table_keep_resident(16 << 10);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        MemoryModel::OnDemand => {
            config
                .memory_reservation(0)
                .memory_guard_size(ON_DEMAND_GUARD)
                .memory_reservation_for_growth(ON_DEMAND_GROWTH);
        }
    }
    Engine::new(&config)
}

/// The engine tasks run on, with its WASI linker: built once per process
/// and shared by every executor in it
/// ([`ExecutorConfig::engine`](super::ExecutorConfig::engine)), so agents
/// of one process share one pool and one reservation of address space.
pub struct TaskEngine {
    engine: Engine,
    linker: Linker<TaskData>,
    functions: HashSet<String>,
    memory: MemoryModel,
    /// The engine components run on: `engine` itself when its memories are
    /// on demand, else one like it with on-demand memories.
    components: Engine,
    component_linker: component::Linker<ComponentData>,
}

impl std::fmt::Debug for TaskEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskEngine")
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

impl TaskEngine {
    /// An engine with room for `capacity` in this process's address space.
    pub fn for_capacity(capacity: Capacity) -> anyhow::Result<Arc<Self>> {
        let budget = address_space_budget();
        let memory = MemoryModel::for_capacity(capacity, budget);
        tracing::info!(
            tasks = capacity.tasks,
            largest_memory = capacity.largest_memory,
            address_space_budget = budget,
            ?memory,
            "task engine"
        );
        warn_of_process_limits(capacity.tasks);
        Self::new(EngineSettings {
            memory,
            ..EngineSettings::default()
        })
    }

    /// An engine with `settings`.
    pub fn new(settings: EngineSettings) -> anyhow::Result<Arc<Self>> {
        let engine = build_engine(&settings)
            .map_err(|e| anyhow::anyhow!("creating the wasmtime engine: {e:#}"))?;
        let linker = wasi_linker(&engine).map_err(|e| anyhow::anyhow!("linking WASI: {e:#}"))?;
        let functions = wasi_function_names(&engine, &linker);
        let components = match settings.memory {
            MemoryModel::OnDemand => engine.clone(),
            MemoryModel::Pooled { .. } => build_engine(&EngineSettings {
                memory: MemoryModel::OnDemand,
                ..settings
            })
            .map_err(|e| anyhow::anyhow!("creating the component engine: {e:#}"))?,
        };
        let mut component_linker = component::Linker::new(&components);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker)
            .map_err(|e| anyhow::anyhow!("linking WASI preview 2: {e:#}"))?;
        Ok(Arc::new(Self {
            engine,
            linker,
            functions,
            memory: settings.memory,
            components,
            component_linker,
        }))
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Its memory layout.
    pub fn memory_model(&self) -> MemoryModel {
        self.memory
    }

    /// The engine components run on.
    pub fn component_engine(&self) -> &Engine {
        &self.components
    }

    pub(super) fn linker(&self) -> &Linker<TaskData> {
        &self.linker
    }

    /// Every WASI preview 2 interface (async versions), and nothing else.
    pub(super) fn component_linker(&self) -> &component::Linker<ComponentData> {
        &self.component_linker
    }

    /// The key of compiled code for this engine's modules and components.
    pub fn compatibility_key(&self) -> String {
        compatibility_key(&[&self.engine, &self.components])
    }

    pub(super) fn functions(&self) -> &HashSet<String> {
        &self.functions
    }
}

/// A linker with every WASI preview 1 function (async versions), and
/// nothing else: any other import makes a module invalid.
fn wasi_linker(engine: &Engine) -> wasmtime::Result<Linker<TaskData>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |data: &mut TaskData| &mut data.wasi)?;
    Ok(linker)
}

/// The function names the WASI linker defines.
fn wasi_function_names(engine: &Engine, linker: &Linker<TaskData>) -> HashSet<String> {
    let data = TaskData {
        wasi: wasmtime_wasi::WasiCtxBuilder::new().build_p1(),
        limiter: MemLimiter::new(0),
    };
    let mut store = Store::new(engine, data);
    linker
        .iter(&mut store)
        .filter(|(module, _, _)| *module == super::validate::WASI_P1)
        .map(|(_, name, _)| name.to_owned())
        .collect()
}

/// A short, stable name for the engines' compiled-code compatibility: part
/// of every on-disk cache key, so an upgraded agent (or other settings) never
/// even opens entries it cannot use.
pub fn compatibility_key(engines: &[&Engine]) -> String {
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = ShaHasher(Sha256::new());
    for engine in engines {
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
    }
    hex::encode(&hasher.0.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIB: u64 = 1 << 40;
    const GIB: u64 = 1 << 30;

    #[test]
    fn compatibility_key_depends_on_settings_only() {
        let a = build_engine(&EngineSettings::default()).unwrap();
        let b = build_engine(&EngineSettings::default()).unwrap();
        let no_fuel = build_engine(&EngineSettings {
            fuel: false,
            memory: MemoryModel::OnDemand,
            ..EngineSettings::default()
        })
        .unwrap();
        assert_eq!(compatibility_key(&[&a]), compatibility_key(&[&b]));
        assert_ne!(compatibility_key(&[&a]), compatibility_key(&[&no_fuel]));
        assert_eq!(compatibility_key(&[&a]).len(), 16);
    }

    #[test]
    fn capacity_counts_one_task_per_thousandth_of_a_cpu() {
        let one = Capacity::of(2.5, 20 * GIB);
        assert_eq!(one.tasks, 2_500);
        assert_eq!(one.largest_memory, 4 * GIB);
        assert_eq!(Capacity::of(0.0001, 1).tasks, 1);
        assert_eq!(Capacity::of(f64::NAN, 1 << 20).tasks, 1);
        let both = one.plus(Capacity::of(1.0, GIB));
        assert_eq!(both.tasks, 3_500);
        assert_eq!(both.largest_memory, 4 * GIB);
    }

    #[test]
    fn the_model_fits_the_budget() {
        let budget = 64 * TIB;
        // A typical agent: 4 GiB slots, no bounds checks.
        let typical = Capacity::of(8.0, 32 * GIB);
        assert_eq!(
            MemoryModel::for_capacity(typical, budget),
            MemoryModel::Pooled {
                slots: 8_000,
                reservation: 4 * GIB
            }
        );
        // Sixteen agents of 1 cpu and 2 GiB in one process.
        let local = (1..16).fold(Capacity::of(1.0, 2 * GIB), |c, _| {
            c.plus(Capacity::of(1.0, 2 * GIB))
        });
        assert_eq!(
            MemoryModel::for_capacity(local, budget),
            MemoryModel::Pooled {
                slots: 16_000,
                reservation: 4 * GIB
            }
        );
        // Small memories: smaller slots.
        let small = Capacity::of(100.0, 100 << 20);
        assert_eq!(
            MemoryModel::for_capacity(small, budget),
            MemoryModel::Pooled {
                slots: 100_000,
                reservation: 100 << 20
            }
        );
        // 100,000 tasks of up to 4 GiB: per task.
        assert_eq!(
            MemoryModel::for_capacity(Capacity::of(100.0, 8 * GIB), budget),
            MemoryModel::OnDemand
        );
        // Under a `ulimit -v` of 16 GiB.
        assert_eq!(
            MemoryModel::for_capacity(typical, 8 * GIB),
            MemoryModel::OnDemand
        );
    }

    #[test]
    fn the_budget_is_most_of_a_64_bit_address_space() {
        let budget = address_space_budget();
        assert!(budget >= 32 * TIB, "{budget}");
    }

    #[test]
    fn every_model_builds() {
        for memory in [
            MemoryModel::Pooled {
                slots: 10,
                reservation: 4 * GIB,
            },
            MemoryModel::Pooled {
                slots: 10,
                reservation: 1 << 20,
            },
            MemoryModel::OnDemand,
        ] {
            let engine = TaskEngine::new(EngineSettings {
                memory,
                ..EngineSettings::default()
            })
            .unwrap();
            assert_eq!(engine.memory_model(), memory);
            assert!(engine.functions().contains("fd_write"));
        }
    }
}
