//! An engine and small WAT programs the tests share.

use zerostate_execution::{Engine, EngineOptions, ExecutorKey, Manifest};

pub(crate) fn engine() -> Engine {
    Engine::new(EngineOptions::default(), ExecutorKey::from_seed([7; 32])).expect("engine")
}

pub(crate) fn manifest(wat: &str) -> Manifest {
    Manifest::new("test-task", wat.as_bytes().to_vec())
}

/// Copies stdin to stdout, 64 bytes at a time.
pub(crate) const ECHO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $more
      ;; iovec at 0: buffer 100, length 64; count read at 8
      (i32.store (i32.const 0) (i32.const 100))
      (i32.store (i32.const 4) (i32.const 64))
      (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (if (i32.gt_u (i32.load (i32.const 8)) (i32.const 0))
        (then
          (i32.store (i32.const 4) (i32.load (i32.const 8)))
          (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12)))
          (br $more))))))"#;

/// Calls `proc_exit` with `code`.
pub(crate) fn exits_with(code: i32) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const {code}))))"#
    )
}

/// A trivial program that returns at once.
pub(crate) const NOTHING: &str =
    r#"(module (memory (export "memory") 1) (func (export "_start")))"#;
