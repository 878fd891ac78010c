//! Hostile modules: each ends in its own clear error and a failed, signed receipt, and the
//! engine carries on running the next task.

use zerostate_execution::{Engine, Manifest, TaskError};

use crate::harness::{ECHO, engine, manifest};

fn fails(engine: &Engine, m: &Manifest, is: fn(&TaskError) -> bool) -> TaskError {
    let run = engine.run(m);
    let err = run.result.clone().expect_err("must fail");
    assert!(is(&err), "unexpected error: {err}");
    assert_eq!(run.receipt.status, "failed");
    assert!(
        run.receipt
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with(err.kind())),
        "{:?}",
        run.receipt.error
    );
    run.receipt
        .verify()
        .expect("a failed run's receipt is signed too");
    assert!(run.output.is_empty());
    // The host carries on.
    let mut ok = manifest(ECHO);
    ok.input = b"still here".to_vec();
    let next = engine.run(&ok);
    assert_eq!(next.result, Ok(()));
    assert_eq!(next.output, b"still here");
    err
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    let mut m = manifest(r#"(module (func (export "_start") (loop $l (br $l))))"#);
    m.limits.fuel = 1_000_000;
    let err = fails(&engine(), &m, |e| {
        matches!(e, TaskError::OutOfFuel(1_000_000))
    });
    assert_eq!(err.to_string(), "out of fuel after 1000000 units");
}

#[test]
fn an_infinite_loop_with_plenty_of_fuel_hits_the_wall_time_limit() {
    let mut m = manifest(r#"(module (func (export "_start") (loop $l (br $l))))"#);
    m.limits.fuel = 100_000_000_000;
    m.limits.wall_time_ms = 100;
    let run = engine().run(&m);
    assert_eq!(run.result, Err(TaskError::WallTimeExceeded(100)));
    assert!(
        run.measurement.wall_time.as_millis() >= 100,
        "{:?}",
        run.measurement.wall_time
    );
}

#[test]
fn a_memory_grow_loop_hits_the_memory_limit() {
    let mut m = manifest(
        r#"(module (memory 1)
             (func (export "_start") (loop $l (drop (memory.grow (i32.const 1))) (br $l))))"#,
    );
    m.limits.memory_bytes = 2 << 20;
    fails(&engine(), &m, |e| matches!(e, TaskError::MemoryLimit(_)));
}

#[test]
fn a_memory_larger_than_the_limit_cannot_even_start() {
    let mut m = manifest(r#"(module (memory 100) (func (export "_start")))"#);
    m.limits.memory_bytes = 1 << 20;
    fails(&engine(), &m, |e| matches!(e, TaskError::MemoryLimit(_)));
}

#[test]
fn unbounded_recursion_overflows_the_stack() {
    let m = manifest(r#"(module (func $f (call $f)) (func (export "_start") (call $f)))"#);
    fails(&engine(), &m, |e| matches!(e, TaskError::StackOverflow));
}

#[test]
fn a_huge_table_is_refused() {
    let m = manifest(r#"(module (table 10000000 funcref) (func (export "_start")))"#);
    fails(&engine(), &m, |e| matches!(e, TaskError::TableLimit(_)));
}

#[test]
fn an_output_flood_is_stopped_at_the_output_limit() {
    let mut m = manifest(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 1000))
    (loop $l (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))) (br $l))))"#,
    );
    m.limits.output_bytes = 10_000;
    fails(&engine(), &m, |e| {
        matches!(e, TaskError::OutputTooLarge(10_000))
    });
}

#[test]
fn invalid_bytes_are_an_invalid_module() {
    let m = Manifest::new("garbage", b"\0asm\x01\0\0\0\x01\xff\xff\xff".to_vec());
    fails(&engine(), &m, |e| matches!(e, TaskError::InvalidModule(_)));
    let m = Manifest::new("not-wasm", b"this is not a module".to_vec());
    fails(&engine(), &m, |e| matches!(e, TaskError::InvalidModule(_)));
}

#[test]
fn a_trapping_start_function_is_a_trap() {
    let m = manifest(r#"(module (func $s unreachable) (start $s) (func (export "_start")))"#);
    let err = fails(&engine(), &m, |e| matches!(e, TaskError::Trap(_)));
    assert!(err.to_string().contains("unreachable"), "{err}");
}

#[test]
fn an_unknown_import_is_named() {
    let m = manifest(r#"(module (import "env" "open_socket" (func)) (func (export "_start")))"#);
    let err = fails(&engine(), &m, |e| {
        matches!(e, TaskError::UnknownImport { .. })
    });
    assert!(err.to_string().contains("env::open_socket"), "{err}");
    // A name preview 1 does not have, in its module, neither.
    let m = manifest(
        r#"(module (import "wasi_snapshot_preview1" "path_open_all"
             (func (param i32) (result i32)))
           (func (export "_start")))"#,
    );
    let err = fails(&engine(), &m, |e| {
        matches!(e, TaskError::UnknownImport { .. })
    });
    assert!(err.to_string().contains("path_open_all"), "{err}");
}

#[test]
fn a_missing_entry_point_is_named() {
    let m = manifest(r#"(module (func (export "main")))"#);
    let err = fails(&engine(), &m, |e| matches!(e, TaskError::MissingExport(_)));
    assert_eq!(
        err.to_string(),
        "missing export: the module has no function `_start`"
    );
    let m = manifest(r#"(module (func (export "_start") (param i32)))"#);
    fails(&engine(), &m, |e| matches!(e, TaskError::MissingExport(_)));
}

#[test]
fn a_manifest_above_policy_is_refused_with_every_reason() {
    let mut m = manifest(crate::harness::NOTHING);
    m.limits.fuel = u64::MAX;
    m.module_sha256 = Some([1; 32]);
    let err = fails(
        &engine(),
        &m,
        |e| matches!(e, TaskError::InvalidManifest(p) if p.len() == 2),
    );
    assert!(err.to_string().contains("SHA-256 mismatch"), "{err}");
}
