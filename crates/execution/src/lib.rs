//! The ZeroState execution engine: runs a task's WebAssembly module on wasmtime inside hard
//! limits (fuel, memory, tables, wall time, output), measures what it used, and signs a
//! receipt for it, failed runs included. It knows nothing of the network.
//!
//! ```
//! use zerostate_execution::{Engine, EngineOptions, ExecutorKey, Manifest};
//!
//! let engine = Engine::new(EngineOptions::default(), ExecutorKey::from_seed([7; 32])).expect("engine");
//! let wat = r#"(module
//!     (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
//!     (memory (export "memory") 1)
//!     (data (i32.const 16) "hello")
//!     (func (export "_start")
//!         (i32.store (i32.const 0) (i32.const 16))
//!         (i32.store (i32.const 4) (i32.const 5))
//!         (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
//! let run = engine.run(&Manifest::new("hello-1", wat.as_bytes().to_vec()));
//! assert_eq!(run.result, Ok(()));
//! assert_eq!(run.output, b"hello");
//! run.receipt.verify().expect("signed by the engine's key");
//! ```
//!
//! This crate has no feature flags.

pub mod builtin;
mod disk_cache;
mod engine;
mod error;
mod limits;
mod manifest;
mod receipt;
mod wasi;

pub use engine::{CACHE_CAPACITY, DISK_CACHE_BYTES, Engine, EngineOptions, Execution, Measurement};
pub use error::TaskError;
pub use limits::MAX_TABLE_ELEMENTS;
pub use manifest::{
    Limits, MAX_ARG_BYTES, MAX_ARGS, MAX_FILES, Manifest, Policy, files_problem, sha256,
    strings_problem,
};
pub use receipt::{ExecutorKey, Receipt, ReceiptError, peer_id_of};
pub use wasi::{
    COPY_FUEL_PER_8_BYTES, ENTRY_FUEL, HOST_CALL_FUEL, IOVEC_FUEL, MAX_OPEN_FILES,
    MAX_OUTPUT_ENTRIES, MAX_PATH_BYTES, RANDOM_FUEL_PER_BLOCK, tree_sha256,
};
