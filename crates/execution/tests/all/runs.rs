//! Ordinary runs: input and output, exit codes, arguments, the cache, measurement, spans.

use opentelemetry_sdk::trace::InMemorySpanExporter;
use zerostate_execution::TaskError;
use zerostate_telemetry::names::span;
use zerostate_telemetry::{LogFormat, TelemetryBuilder, TelemetryConfig};

use crate::harness::{ECHO, NOTHING, engine, exits_with, manifest};

#[test]
fn stdin_becomes_stdout() {
    let mut m = manifest(ECHO);
    m.input = (0..200u8).collect();
    let run = engine().run(&m);
    assert_eq!(run.result, Ok(()));
    assert_eq!(run.output, m.input);
    assert_eq!(run.exit_code, 0);
    assert!(run.measurement.fuel_consumed > 0);
    assert_eq!(run.measurement.peak_memory_bytes, 65_536);
}

#[test]
fn exit_codes_are_reported() {
    let e = engine();
    let ok = e.run(&manifest(&exits_with(0)));
    assert_eq!(ok.result, Ok(()));
    let failed = e.run(&manifest(&exits_with(3)));
    assert_eq!(failed.result, Err(TaskError::Exited(3)));
    assert_eq!(failed.exit_code, 3);
    assert_eq!(failed.receipt.status, "failed");
}

#[test]
fn the_second_run_of_a_module_comes_from_the_cache() {
    let e = engine();
    let first = e.run(&manifest(NOTHING));
    let second = e.run(&manifest(NOTHING));
    assert!(!first.measurement.cache_hit);
    assert!(first.measurement.compile_time > std::time::Duration::ZERO);
    assert!(second.measurement.cache_hit);
    assert_eq!(second.measurement.compile_time, std::time::Duration::ZERO);
}

#[test]
fn arguments_reach_the_task() {
    // Writes argc (as one byte, '0' + argc) to stdout.
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        (drop (call $sizes (i32.const 0) (i32.const 4)))
        (i32.store8 (i32.const 100) (i32.add (i32.const 48) (i32.load (i32.const 0))))
        (i32.store (i32.const 8) (i32.const 100))
        (i32.store (i32.const 12) (i32.const 1))
        (drop (call $write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))))"#;
    let mut m = manifest(wat);
    m.args = vec!["a".into(), "b".into()];
    let run = engine().run(&m);
    assert_eq!(run.output, b"3", "program name plus two arguments");
}

#[test]
fn a_task_leaves_the_seed_span_tree() {
    let exporter = InMemorySpanExporter::default();
    let mut config = TelemetryConfig::default();
    config.log_format = LogFormat::Off;
    let (dispatch, guard) = TelemetryBuilder::new(config)
        .with_exporter(exporter.clone())
        .build()
        .expect("telemetry");
    let run = tracing::dispatcher::with_default(&dispatch, || engine().run(&manifest(ECHO)));
    guard.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("spans");
    let task = spans
        .iter()
        .find(|s| s.name == span::EXECUTION_TASK)
        .expect("execution.task");
    assert_eq!(
        run.receipt.trace_id,
        task.span_context.trace_id().to_string(),
        "the receipt names the trace"
    );
    let mut children: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id == task.span_context.span_id())
        .collect();
    children.sort_by_key(|s| s.start_time);
    let names: Vec<_> = children.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            span::EXECUTION_MANIFEST_VALIDATE,
            span::EXECUTION_WASM_COMPILE,
            span::EXECUTION_WASM_INSTANTIATE,
            span::EXECUTION_WASM_EXECUTE,
            span::EXECUTION_RECEIPT_GENERATE,
            span::EXECUTION_RESOURCES_MEASURE,
        ]
    );
    let has = |name: &str, key: &str| {
        spans
            .iter()
            .any(|s| s.name == name && s.attributes.iter().any(|kv| kv.key.as_str() == key))
    };
    assert!(has(span::EXECUTION_TASK, "task.id"));
    assert!(has(span::EXECUTION_TASK, "resources.fuel"));
    assert!(has(span::EXECUTION_WASM_COMPILE, "cache.hit"));
    assert!(has(
        span::EXECUTION_RESOURCES_MEASURE,
        "resources.memory_bytes"
    ));
}

#[test]
fn a_dry_run_instantiates_without_calling_the_entry_point() {
    let e = engine();
    // The entry point would trap; the dry run never calls it.
    let m =
        manifest(r#"(module (memory (export "memory") 3) (func (export "_start") unreachable))"#);
    let measured = e.dry_run(&m).expect("instantiates");
    assert_eq!(measured.peak_memory_bytes, 3 * 65_536);
    assert!(matches!(e.run(&m).result, Err(TaskError::Trap(_))));
    // A start function that traps fails the dry run too.
    let bad = manifest(r#"(module (func $s unreachable) (start $s) (func (export "_start")))"#);
    assert!(matches!(e.dry_run(&bad), Err(TaskError::Trap(_))));
}
