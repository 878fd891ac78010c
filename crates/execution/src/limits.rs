//! Memory and table limits, enforced as the module grows, remembering which one was hit.

use crate::TaskError;

/// Most table elements any table may have.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Enforces limits and records the peak memory a task reached.
#[derive(Debug)]
pub(crate) struct Limiter {
    max_memory: usize,
    pub(crate) peak_memory: usize,
    /// The limit that stopped the task, if one did.
    pub(crate) hit: Option<TaskError>,
}

impl Limiter {
    pub(crate) fn new(max_memory: u64) -> Self {
        Self {
            max_memory: usize::try_from(max_memory).unwrap_or(usize::MAX),
            peak_memory: 0,
            hit: None,
        }
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.hit = Some(TaskError::MemoryLimit(self.max_memory as u64));
            return Err(wasmtime::Error::msg("memory limit exceeded"));
        }
        self.peak_memory = self.peak_memory.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.hit = Some(TaskError::TableLimit(MAX_TABLE_ELEMENTS as u64));
            return Err(wasmtime::Error::msg("table limit exceeded"));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        8
    }

    fn memories(&self) -> usize {
        1
    }
}
