//! What a span costs on the calling thread, for our set-up and the alternatives, all
//! exporting to the same in-process sink (so the export thread does real conversion work
//! but no I/O).
//!
//! ```text
//! cargo bench -p zerostate-telemetry --bench span_overhead
//! ```
//!
//! Criterion prints each row; the table at the end gives the median ns per span of the
//! samples and each row's ratio to ours, all from this one run.

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
    fn measure(&self, c: &mut Criterion, row: &'static str, mut f: impl FnMut()) {
        let mut samples = Vec::new();
        c.bench_function(row, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    f();
                }
                let elapsed = start.elapsed();
                samples.push(elapsed.as_nanos() as f64 / iters as f64);
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

/// A layer that records nothing: what `tracing-subscriber`'s registry costs by itself.
struct Noop;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Noop {}

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
        let sink = Sink::default();
        let (dispatch, mut guard) = TelemetryBuilder::new(ours_config())
            .with_exporter(sink.clone())
            .build()
            .expect("telemetry builds");
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
