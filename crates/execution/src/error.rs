//! How a task can fail: every case has its own variant, so a receipt and a user can say
//! exactly which limit or fault ended it.

/// Why a task did not complete. Each ends with a failed receipt; the host carries on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The manifest is unusable; one message per problem.
    #[error("invalid manifest: {}", .0.join("; "))]
    InvalidManifest(Vec<String>),
    /// The bytes are not a valid WebAssembly module.
    #[error("invalid module: {0}")]
    InvalidModule(String),
    /// The module is bigger, or would cost more to compile, than the node's policy allows.
    #[error("module too large: {0}")]
    ModuleTooLarge(String),
    /// The module imports something the host does not provide.
    #[error("unknown import {module}::{name} (only WASI preview 1 is provided)")]
    UnknownImport {
        /// The import's module.
        module: String,
        /// The import's name.
        name: String,
    },
    /// The entry point is not exported as a function.
    #[error("missing export: the module has no function `{0}`")]
    MissingExport(String),
    /// The fuel limit ran out.
    #[error("out of fuel after {0} units")]
    OutOfFuel(u64),
    /// The wall-time limit passed.
    #[error("wall time exceeded after {0} ms")]
    WallTimeExceeded(u64),
    /// The module tried to grow memory past its limit.
    #[error("memory limit of {0} bytes exceeded")]
    MemoryLimit(u64),
    /// The module tried to grow a table past its limit.
    #[error("table limit of {0} elements exceeded")]
    TableLimit(u64),
    /// The call stack overflowed.
    #[error("stack overflow")]
    StackOverflow,
    /// The module trapped.
    #[error("trap: {0}")]
    Trap(String),
    /// The module wrote more output than allowed.
    #[error("output larger than the limit of {0} bytes")]
    OutputTooLarge(u64),
    /// The module exited with a non-zero code.
    #[error("task exited with code {0}")]
    Exited(i32),
    /// The host could not run the task (not the module's fault).
    #[error("host error: {0}")]
    Host(String),
}

impl TaskError {
    /// A short stable name for receipts and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidManifest(_) => "invalid_manifest",
            Self::InvalidModule(_) => "invalid_module",
            Self::ModuleTooLarge(_) => "module_too_large",
            Self::UnknownImport { .. } => "unknown_import",
            Self::MissingExport(_) => "missing_export",
            Self::OutOfFuel(_) => "out_of_fuel",
            Self::WallTimeExceeded(_) => "wall_time_exceeded",
            Self::MemoryLimit(_) => "memory_limit",
            Self::TableLimit(_) => "table_limit",
            Self::StackOverflow => "stack_overflow",
            Self::Trap(_) => "trap",
            Self::OutputTooLarge(_) => "output_too_large",
            Self::Exited(_) => "exited",
            Self::Host(_) => "host_error",
        }
    }
}
