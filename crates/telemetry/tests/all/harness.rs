//! What the tests share: a scoped subscriber over an in-memory exporter, a capturing log
//! writer, and a small OTLP/HTTP receiver.

use std::sync::{Arc, Mutex};

use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use tracing::Dispatch;
use zerostate_telemetry::{LogFormat, TelemetryBuilder, TelemetryConfig, TelemetryGuard};

/// A config for tests: fast batches, no logs, no export account (tests count spans; the
/// account's own tests turn it on).
pub(crate) fn test_config() -> TelemetryConfig {
    let mut c = TelemetryConfig::default();
    c.service_name = "test-node".into();
    c.account_interval_ms = 0;
    c.batch.scheduled_delay_ms = 50;
    c.log_format = LogFormat::Off;
    c
}

/// A subscriber exporting to memory.
pub(crate) struct Captured {
    pub(crate) dispatch: Dispatch,
    pub(crate) guard: TelemetryGuard,
    pub(crate) exporter: InMemorySpanExporter,
}

impl Captured {
    pub(crate) fn new(config: TelemetryConfig) -> Self {
        let exporter = InMemorySpanExporter::default();
        let (dispatch, guard) = TelemetryBuilder::new(config)
            .with_exporter(exporter.clone())
            .build()
            .expect("telemetry builds");
        Self {
            dispatch,
            guard,
            exporter,
        }
    }

    /// Runs `f` with this subscriber as the thread's default.
    pub(crate) fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        tracing::dispatcher::with_default(&self.dispatch, f)
    }

    /// Flushes and returns every span exported so far.
    pub(crate) fn spans(&self) -> Vec<SpanData> {
        self.guard.force_flush().expect("flush");
        self.exporter.get_finished_spans().expect("spans")
    }
}

/// The span named `name`; panics with the names present when there is none.
pub(crate) fn find<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        let names: Vec<_> = spans.iter().map(|s| s.name.as_ref()).collect();
        panic!("no span {name:?} among {names:?}")
    })
}

/// The string value of attribute `key` on `span`.
pub(crate) fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// A `MakeWriter` that keeps everything written, for log assertions.
#[derive(Clone, Default)]
pub(crate) struct LogBuffer(pub(crate) Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8 logs")
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

pub(crate) use zerostate_telemetry::testing::OtlpReceiver;

/// Waits up to 20 s for `done`; panics naming `what` after that.
pub(crate) fn until(what: &str, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "waited for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
