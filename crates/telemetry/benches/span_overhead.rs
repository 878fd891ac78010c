//! What a span costs on the calling thread, for our set-up and the alternatives, all
//! exporting to the same in-process sink (so the export thread does real conversion work
//! but no I/O).
//!
//! ```text
//! cargo bench -p zerostate-telemetry --bench span_overhead
//! ```
//!
//! Criterion prints each row; the table at the end gives the median ns per span of the
//! samples and each row's ratio to ours, all from this one run. The child-span rows time a
//! task span with 50 children and divide by 50; ours are also run paced at a million
//! spans a second for three seconds, to show whether the export thread keeps up.

use std::borrow::Cow;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use opentelemetry::trace::{TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::layer::SubscriberExt;
use zerostate_telemetry::{LogFormat, TelemetryBuilder, TelemetryConfig};

/// Counts spans and discards them.
#[derive(Debug, Clone, Default)]
struct Sink(Arc<AtomicU64>);

impl SpanExporter for Sink {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Per-row samples of ns per span, for the closing table.
#[derive(Default)]
struct Table(Mutex<Vec<(&'static str, Vec<f64>, String)>>);

impl Table {
    fn measure(&self, c: &mut Criterion, row: &'static str, f: impl FnMut()) {
        self.measure_per(c, row, 1, f);
    }

    /// Like `measure`, for a closure that makes `per` spans: the row gives ns per span.
    fn measure_per(&self, c: &mut Criterion, row: &'static str, per: u64, mut f: impl FnMut()) {
        let mut samples = Vec::new();
        c.bench_function(row, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    f();
                }
                let elapsed = start.elapsed();
                samples.push(elapsed.as_nanos() as f64 / (iters * per) as f64);
                elapsed
            })
        });
        self.0
            .lock()
            .expect("lock")
            .push((row, samples, String::new()));
    }

    fn note(&self, row: &str, note: String) {
        if let Some(r) = self.0.lock().expect("lock").iter_mut().find(|r| r.0 == row) {
            r.2 = note;
        }
    }

    fn print(&self) {
        let rows = self.0.lock().expect("lock");
        let median = |s: &[f64]| {
            let mut s = s.to_vec();
            s.sort_by(f64::total_cmp);
            s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let ours = rows.first().map(|r| median(&r.1)).unwrap_or(f64::NAN);
        println!("\n| set-up | ns per span (median) | vs ours | spans exported / dropped |");
        println!("|---|---:|---:|---|");
        for (row, samples, note) in rows.iter() {
            let m = median(samples);
            println!("| {row} | {m:.1} | {:.2}x | {note} |", m / ours);
        }
    }
}

const OURS: &str = "zerostate-telemetry";
const FILTERED: &str = "zerostate-telemetry, span dropped by filter";
const RAW_SDK: &str = "opentelemetry_sdk, batch processor";
const FASTRACE: &str = "fastrace + OpenTelemetry reporter";
const TRACING_OTEL: &str = "tracing-opentelemetry 0.34, defaults";
const FLOOR: &str = "tracing registry alone, a do-nothing layer (floor)";
const OURS_CHILDREN: &str = "zerostate-telemetry, task span + 50 tracing child spans, per span";
const OURS_LOCAL: &str = "zerostate-telemetry, task span + 50 LocalSpan children, per span";
const RAW_SDK_CHILDREN: &str = "opentelemetry_sdk, task span + 50 child spans, per span";
const FASTRACE_LOCAL: &str = "fastrace, root + 50 LocalSpan children, per span";
/// Children of one task span in the child-span rows.
const CHILDREN: u64 = 50;
/// The rate of the paced runs, spans per second, and how long they last.
const PACED_RATE: u64 = 1_000_000;
const PACED_FOR: Duration = Duration::from_secs(3);

/// One task span with `CHILDREN` local children, each with an attribute.
fn local_task() {
    let task = tracing::info_span!("bench.task", task.id = 42_i64);
    let _collect = zerostate_telemetry::local::LocalParent::of(&task);
    for i in 0..CHILDREN as i64 {
        let _s = zerostate_telemetry::local::LocalSpan::enter("bench.child").with_attribute("i", i);
        black_box(());
    }
}

/// One task span with `CHILDREN` `tracing` children, each with an attribute.
fn tracing_task() {
    tracing::info_span!("bench.task", task.id = 42_i64).in_scope(|| {
        for i in 0..CHILDREN as i64 {
            tracing::info_span!("bench.child", i).in_scope(|| black_box(()));
        }
    });
}

/// Runs `task` (which makes `CHILDREN + 1` spans) paced at [`PACED_RATE`] spans a second
/// for [`PACED_FOR`], then flushes; returns the spans made and the stats after.
fn paced(task: fn(), telemetry: &mut zerostate_telemetry::TelemetryGuard) -> (u64, String) {
    let per_task = CHILDREN + 1;
    let started = Instant::now();
    let mut made = 0u64;
    while started.elapsed() < PACED_FOR {
        let due = (started.elapsed().as_secs_f64() * PACED_RATE as f64) as u64;
        while made < due {
            task();
            made += per_task;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let rate = made as f64 / started.elapsed().as_secs_f64();
    let _ = telemetry.force_flush();
    let s = telemetry.stats();
    (
        made,
        format!(
            "paced at {:.0} spans/s for {} s: {} made, {} exported / {} dropped",
            rate,
            PACED_FOR.as_secs(),
            made,
            s.spans_exported,
            s.spans_dropped
        ),
    )
}

/// A layer that records nothing: what `tracing-subscriber`'s registry costs by itself.
struct Noop;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Noop {}

/// Our set-up, exporting to a fresh sink.
fn ours() -> (tracing::Dispatch, zerostate_telemetry::TelemetryGuard) {
    TelemetryBuilder::new(ours_config())
        .with_exporter(Sink::default())
        .build()
        .expect("telemetry builds")
}

fn ours_config() -> TelemetryConfig {
    let mut c = TelemetryConfig::default();
    c.service_name = "bench".into();
    c.log_format = LogFormat::Off;
    c
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let table = Table::default();

    // Ours, and the filtered span, while ours is the only subscriber (as in a real process,
    // so callsite interest is cached the way it would be).
    {
        let (dispatch, mut guard) = ours();
        tracing::dispatcher::with_default(&dispatch, || {
            table.measure(&mut c, OURS, || {
                tracing::info_span!("bench.span", task.id = 42_i64).in_scope(|| black_box(()));
            });
            table.measure(&mut c, FILTERED, || {
                tracing::trace_span!(target: "libp2p_swarm", "bench.filtered", task.id = 42_i64)
                    .in_scope(|| black_box(()));
            });
        });
        let _ = guard.shutdown();
        let s = guard.stats();
        table.note(OURS, format!("{} / {}", s.spans_exported, s.spans_dropped));
        table.note(FILTERED, "none recorded".into());
    }

    // Child spans, ours both ways; each row also runs paced at a million spans a second
    // on a fresh set-up to show whether the export thread keeps up.
    for (row, task) in [
        (OURS_CHILDREN, tracing_task as fn()),
        (OURS_LOCAL, local_task as fn()),
    ] {
        let (dispatch, mut guard) = ours();
        tracing::dispatcher::with_default(&dispatch, || {
            table.measure_per(&mut c, row, CHILDREN, task);
        });
        let _ = guard.shutdown();
        let s = guard.stats();
        let (dispatch, mut guard) = ours();
        let (_, paced) = tracing::dispatcher::with_default(&dispatch, || paced(task, &mut guard));
        let _ = guard.shutdown();
        table.note(
            row,
            format!("{} / {}; {paced}", s.spans_exported, s.spans_dropped),
        );
    }

    {
        let sink = Sink::default();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(sink.clone())
            .build();
        let tracer = provider.tracer("bench");
        table.measure(&mut c, RAW_SDK, || {
            tracer.in_span("bench.span", |cx| {
                cx.span().set_attribute(KeyValue::new("task.id", 42));
                black_box(());
            });
        });
        let _ = provider.shutdown();
        table.note(
            RAW_SDK,
            format!("{} / (not reported)", sink.0.load(Ordering::Relaxed)),
        );
    }

    {
        let sink = Sink::default();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(sink.clone())
            .build();
        let tracer = provider.tracer("bench");
        table.measure_per(&mut c, RAW_SDK_CHILDREN, CHILDREN, || {
            tracer.in_span("bench.task", |_| {
                for i in 0..CHILDREN as i64 {
                    tracer.in_span("bench.child", |cx| {
                        cx.span().set_attribute(KeyValue::new("i", i));
                        black_box(());
                    });
                }
            });
        });
        let _ = provider.shutdown();
        table.note(
            RAW_SDK_CHILDREN,
            format!("{} / (not reported)", sink.0.load(Ordering::Relaxed)),
        );
    }

    {
        let sink = Sink::default();
        let reporter = fastrace_opentelemetry::OpenTelemetryReporter::new(
            sink.clone(),
            Cow::Owned(Resource::builder_empty().build()),
            InstrumentationScope::builder("bench").build(),
        );
        fastrace::set_reporter(reporter, fastrace::collector::Config::default());
        table.measure(&mut c, FASTRACE, || {
            let root = fastrace::Span::root("bench.span", fastrace::prelude::SpanContext::random())
                .with_property(|| ("task.id", "42"));
            let _g = root.set_local_parent();
            black_box(());
        });
        fastrace::flush();
        table.note(
            FASTRACE,
            format!("{} / (not reported)", sink.0.load(Ordering::Relaxed)),
        );
        let before = sink.0.load(Ordering::Relaxed);
        table.measure_per(&mut c, FASTRACE_LOCAL, CHILDREN, || {
            let root = fastrace::Span::root("bench.task", fastrace::prelude::SpanContext::random())
                .with_property(|| ("task.id", "42"));
            let _g = root.set_local_parent();
            for _ in 0..CHILDREN {
                let _s = fastrace::local::LocalSpan::enter_with_local_parent("bench.child")
                    .with_property(|| ("i", "1"));
                black_box(());
            }
        });
        fastrace::flush();
        table.note(
            FASTRACE_LOCAL,
            format!(
                "{} / (not reported)",
                sink.0.load(Ordering::Relaxed) - before
            ),
        );
    }

    {
        let sink = Sink::default();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(sink.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")));
        tracing::subscriber::with_default(subscriber, || {
            table.measure(&mut c, TRACING_OTEL, || {
                tracing::info_span!("bench.span", task.id = 42_i64).in_scope(|| black_box(()));
            });
        });
        let _ = provider.shutdown();
        table.note(
            TRACING_OTEL,
            format!("{} / (not reported)", sink.0.load(Ordering::Relaxed)),
        );
    }

    {
        let subscriber = tracing_subscriber::registry().with(Noop);
        tracing::subscriber::with_default(subscriber, || {
            table.measure(&mut c, FLOOR, || {
                tracing::info_span!("bench.span", task.id = 42_i64).in_scope(|| black_box(()));
            });
        });
        table.note(FLOOR, "nothing exported".into());
    }

    c.final_summary();
    table.print();
}
