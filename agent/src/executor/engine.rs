//! The one wasmtime [`Engine`] of an agent, the WASI preview 1 linker and
//! what a task's [`Store`] holds ([`TaskData`]).
//!
//! Fuel is on (it is how `max_fuel` is counted and where a running task can
//! be paused, stopped or throttled: async fuel yields). Epoch interruption is
//! off: fuel yields already give every needed stop point, and paying for both
//! costs about 1.3x on CPU-bound guests instead of about 1.14x for fuel alone.

use std::collections::HashSet;
use std::hash::Hasher;

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, PoolingAllocationConfig, Store,
};
use wasmtime_wasi::p1::WasiP1Ctx;

use super::limits::MemLimiter;

/// What a task's [`Store`] holds.
pub struct TaskData {
    /// The task's WASI preview 1 context.
    pub wasi: WasiP1Ctx,
    /// Its `mem` cap.
    pub limiter: MemLimiter,
}

/// The engine settings that matter for compiled code and instantiation.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    /// Pooling instance allocator (true) or on-demand allocation.
    pub pooling: bool,
    /// Pool slots (instances, memories, tables, async stacks).
    pub max_instances: u32,
    /// Fuel metering (always on for tasks; off only for benchmarks that
    /// measure its cost).
    pub fuel: bool,
    /// Epoch interruption instrumentation (off for tasks, see module docs).
    pub epochs: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            pooling: true,
            max_instances: 2_000,
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
    if settings.pooling {
        let n = settings.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(n)
            .total_memories(n)
            .total_tables(n)
            .total_stacks(n)
            .max_memory_size(4 << 30)
            // Keep a little of each slot's memory resident between tasks:
            // resetting it with memset is cheaper than madvise + page faults
            // for the small tasks that dominate launch rates.
            .linear_memory_keep_resident(64 << 10)
            .table_keep_resident(16 << 10);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&config)
}

/// A linker with every WASI preview 1 function (async versions), and
/// nothing else: any other import makes a module invalid.
pub fn wasi_linker(engine: &Engine) -> wasmtime::Result<Linker<TaskData>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |data: &mut TaskData| &mut data.wasi)?;
    Ok(linker)
}

/// The function names the WASI linker defines.
pub fn wasi_function_names(engine: &Engine, linker: &Linker<TaskData>) -> HashSet<String> {
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

/// A short, stable name for the engine's compiled-code compatibility: part
/// of every on-disk cache key, so an upgraded agent (or other settings) never
/// even opens entries it cannot use.
pub fn compatibility_key(engine: &Engine) -> String {
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
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compatibility_key_depends_on_settings_only() {
        let a = build_engine(&EngineSettings::default()).unwrap();
        let b = build_engine(&EngineSettings::default()).unwrap();
        let no_fuel = build_engine(&EngineSettings {
            fuel: false,
            pooling: false,
            ..EngineSettings::default()
        })
        .unwrap();
        assert_eq!(compatibility_key(&a), compatibility_key(&b));
        assert_ne!(compatibility_key(&a), compatibility_key(&no_fuel));
        assert_eq!(compatibility_key(&a).len(), 16);
    }
}
