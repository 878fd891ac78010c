//! What running a task costs, step by step.
//!
//! ```text
//! cargo bench -p zerostate-execution --bench execution
//! ```
//!
//! Rows: compiling a module cold; loading it from the disk cache into a fresh engine;
//! instantiating it from the in-memory cache (on-demand and pooling allocator); a whole
//! cached trivial task (validate, instantiate, execute, signed receipt), the same traced
//! (every span sampled and exported to a sink), and the same with 100 input files and an
//! output directory; signing and verifying a receipt. The table at the end gives the median of the samples.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use zerostate_telemetry::{LogFormat, TelemetryBuilder, TelemetryConfig};

use criterion::{BatchSize, Criterion};
use zerostate_execution::{Engine, EngineOptions, ExecutorKey, Manifest, builtin};

const TRIVIAL: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

fn engine(options: EngineOptions) -> Engine {
    Engine::new(options, ExecutorKey::from_seed([7; 32])).expect("engine")
}

/// Counts spans and discards them.
#[derive(Debug, Clone, Default)]
struct Sink(Arc<AtomicU64>);

impl SpanExporter for Sink {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Times `iters` calls of `once`, keeping their mean in µs as a sample.
fn timed(iters: u64, samples: &mut Vec<f64>, mut once: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        once();
    }
    let elapsed = start.elapsed();
    samples.push(elapsed.as_secs_f64() * 1e6 / iters as f64);
    elapsed
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut table: Vec<(&str, f64)> = Vec::new();
    // The built-in module: a realistic size for compile and load.
    let builtin = builtin::manifest("crc32", "bench", Vec::new()).expect("builtin");

    let mut samples = Vec::new();
    c.bench_function("compile cold (built-in module)", |b| {
        b.iter_batched(
            || engine(EngineOptions::default()),
            |e| {
                let m = e.dry_run(&builtin).expect("compiles");
                samples.push(m.compile_time.as_secs_f64() * 1e6);
            },
            BatchSize::PerIteration,
        )
    });
    table.push(("compile cold (built-in module), us", median(samples)));

    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let disk = EngineOptions {
        disk_cache: Some(dir.path().to_owned()),
        ..EngineOptions::default()
    };
    engine(disk.clone())
        .dry_run(&builtin)
        .expect("fills the disk cache");
    let mut samples = Vec::new();
    c.bench_function("load from disk cache (built-in module)", |b| {
        b.iter_batched(
            || engine(disk.clone()),
            |e| {
                let m = e.dry_run(&builtin).expect("loads");
                assert!(m.from_disk);
                samples.push(m.compile_time.as_secs_f64() * 1e6);
            },
            BatchSize::PerIteration,
        )
    });
    table.push((
        "load from disk cache (built-in module), us",
        median(samples),
    ));

    let trivial = Manifest::new("bench", TRIVIAL.as_bytes().to_vec());
    for (name, pooling) in [
        ("instantiate from cache, on demand", false),
        ("instantiate from cache, pooling", true),
    ] {
        let e = engine(EngineOptions {
            pooling_allocator: pooling,
            ..EngineOptions::default()
        });
        e.dry_run(&trivial).expect("warm");
        let mut samples = Vec::new();
        c.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let m = e.dry_run(&trivial).expect("instantiates");
                    total += m.wall_time;
                }
                samples.push(total.as_secs_f64() * 1e6 / iters as f64);
                total
            })
        });
        table.push((
            if pooling {
                "instantiate from cache, pooling, us"
            } else {
                "instantiate from cache, on demand, us"
            },
            median(samples),
        ));
    }

    let e = engine(EngineOptions {
        pooling_allocator: true,
        ..EngineOptions::default()
    });
    e.run(&trivial);
    let mut samples = Vec::new();
    c.bench_function("whole cached trivial task (pooling)", |b| {
        b.iter_custom(|iters| {
            timed(iters, &mut samples, || {
                black_box(e.run(&trivial)).result.expect("runs");
            })
        })
    });
    table.push((
        "whole cached trivial task (validate, instantiate, execute, receipt), us",
        median(samples),
    ));

    // The same task traced as an executor traces it: every span sampled (the task span and
    // its six phases) and exported, by the export thread, to a sink.
    let sink = Sink::default();
    let mut config = TelemetryConfig::default();
    config.service_name = "bench".into();
    config.log_format = LogFormat::Off;
    let (dispatch, guard) = TelemetryBuilder::new(config)
        .with_exporter(sink.clone())
        .build()
        .expect("telemetry builds");
    let mut samples = Vec::new();
    tracing::dispatcher::with_default(&dispatch, || {
        c.bench_function("whole cached trivial task, traced (pooling)", |b| {
            b.iter_custom(|iters| {
                timed(iters, &mut samples, || {
                    black_box(e.run(&trivial)).result.expect("runs");
                })
            })
        });
    });
    guard.force_flush().expect("flush");
    let exported = sink.0.load(Ordering::Relaxed);
    assert!(exported > 0, "the traced rows exported no span");
    table.push((
        "whole cached trivial task, traced (every span sampled and exported), us",
        median(samples),
    ));
    drop(guard);

    // The same task carrying 100 input files of 10 KiB (1 MiB) and an output directory:
    // what the file trees add to a run (building them, hashing both for the receipt).
    let mut with_files = trivial.clone();
    with_files.files = (0..100)
        .map(|i| (format!("dir/file-{i:03}.txt"), vec![b'x'; 10 << 10]))
        .collect();
    with_files.output_files = true;
    e.run(&with_files).result.expect("runs");
    let mut samples = Vec::new();
    c.bench_function(
        "whole cached trivial task, 100 input files (pooling)",
        |b| {
            b.iter_custom(|iters| {
                timed(iters, &mut samples, || {
                    black_box(e.run(&with_files)).result.expect("runs");
                })
            })
        },
    );
    table.push((
        "whole cached trivial task with 100 input files (1 MiB) and /output, us",
        median(samples),
    ));

    let receipt = e.run(&trivial).receipt;
    let key = ExecutorKey::from_seed([7; 32]);
    let mut samples = Vec::new();
    c.bench_function("receipt sign and verify", |b| {
        b.iter_custom(|iters| {
            timed(iters, &mut samples, || {
                receipt.clone().sign(&key).verify().expect("valid");
            })
        })
    });
    table.push(("receipt sign and verify, us", median(samples)));

    c.final_summary();
    println!("\n| step | median |");
    println!("|---|---:|");
    for (name, v) in table {
        println!("| {name} | {v:.2} |");
    }
}
