//! The `mem` cap: a wasmtime [`ResourceLimiter`] over all of a task's linear
//! memories and tables.
//!
//! A refused grow returns an error instead of `Ok(false)`, so the task traps
//! at once with [`MemoryLimitExceeded`] rather than seeing `memory.grow`
//! return -1 and limping on (many guests abort with an unhelpful message, or
//! worse, keep running without the memory they asked for).

use wasmtime::ResourceLimiter;

/// The error a refused grow raises inside the task.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{what} of {desired} bytes would exceed the task's mem limit of {limit} bytes ({in_use} bytes in use)"
)]
pub struct MemoryLimitExceeded {
    /// "memory grow", "initial memory", "table grow", ...
    pub what: &'static str,
    /// Bytes the memory or table would have after the grow.
    pub desired: u64,
    /// Bytes in use by all memories and tables before it.
    pub in_use: u64,
    /// The task's `mem`.
    pub limit: u64,
}

/// Bytes per table element, as wasmtime stores them (one pointer).
const TABLE_ELEMENT_BYTES: u64 = std::mem::size_of::<usize>() as u64;

/// Tracks and caps a task's memory.
#[derive(Debug)]
pub struct MemLimiter {
    limit: u64,
    memory_bytes: u64,
    table_bytes: u64,
    peak_memory: u64,
    exceeded: Option<MemoryLimitExceeded>,
}

impl MemLimiter {
    /// A limiter allowing `limit` bytes of memories and tables together.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            memory_bytes: 0,
            table_bytes: 0,
            peak_memory: 0,
            exceeded: None,
        }
    }

    /// Peak bytes of linear memory (all memories).
    pub fn peak_memory(&self) -> u64 {
        self.peak_memory
    }

    /// The refusal, if one happened: the task failed on its `mem` cap.
    pub fn exceeded(&self) -> Option<&MemoryLimitExceeded> {
        self.exceeded.as_ref()
    }

    fn grow(
        &mut self,
        what: &'static str,
        current: u64,
        desired: u64,
    ) -> Result<(), MemoryLimitExceeded> {
        let in_use = self.memory_bytes + self.table_bytes;
        let after = in_use - current.min(in_use) + desired;
        if after > self.limit {
            let err = MemoryLimitExceeded {
                what,
                desired,
                in_use,
                limit: self.limit,
            };
            self.exceeded = Some(err.clone());
            return Err(err);
        }
        Ok(())
    }
}

impl ResourceLimiter for MemLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let what = if current == 0 {
            "initial memory"
        } else {
            "memory grow"
        };
        let (current, desired) = (current as u64, desired as u64);
        self.grow(what, current, desired)?;
        self.memory_bytes = self.memory_bytes - current.min(self.memory_bytes) + desired;
        self.peak_memory = self.peak_memory.max(self.memory_bytes);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let what = if current == 0 {
            "initial table"
        } else {
            "table grow"
        };
        let current = current as u64 * TABLE_ELEMENT_BYTES;
        let desired = desired as u64 * TABLE_ELEMENT_BYTES;
        self.grow(what, current, desired)?;
        self.table_bytes = self.table_bytes - current.min(self.table_bytes) + desired;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_all_memories_and_tables_against_one_cap() {
        let mut l = MemLimiter::new(10 * 65536);
        assert!(l.memory_growing(0, 4 * 65536, None).unwrap());
        assert!(l.memory_growing(0, 4 * 65536, None).unwrap()); // a second memory
        assert!(l.table_growing(0, 1000, None).unwrap());
        assert_eq!(l.peak_memory(), 8 * 65536);
        let err = l.memory_growing(4 * 65536, 6 * 65536, None).unwrap_err();
        let err = err.downcast_ref::<MemoryLimitExceeded>().unwrap();
        assert_eq!(err.limit, 10 * 65536);
        assert!(l.exceeded().is_some());
        assert_eq!(l.peak_memory(), 8 * 65536, "a refused grow is not counted");
    }

    #[test]
    fn refuses_initial_memory_above_the_cap() {
        let mut l = MemLimiter::new(65536);
        let err = l.memory_growing(0, 2 * 65536, None).unwrap_err();
        assert!(err.to_string().contains("initial memory"), "{err}");
    }
}
