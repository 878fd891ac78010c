//! A collector that refuses connections, and one that accepts and never answers: the
//! application carries on, shutdown keeps its bound, and losses are counted.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use zerostate_telemetry::{FlushError, LogFormat, TelemetryBuilder, TelemetryConfig};

use crate::harness::{LogBuffer, test_config};

fn config(endpoint: String) -> TelemetryConfig {
    let mut c = test_config();
    c.endpoint = endpoint;
    c.batch.max_queue_size = 64;
    c.batch.max_export_batch_size = 16;
    c.batch.scheduled_delay_ms = 20;
    c.batch.export_timeout_ms = 300;
    c.shutdown_timeout_ms = 1000;
    c
}

/// Closes 5000 spans, far more than the queue holds.
fn burst() {
    for i in 0..5000_i64 {
        tracing::info_span!("work", n = i).in_scope(|| {});
    }
}

#[test]
fn a_refusing_collector_loses_spans_but_not_the_application() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }; // closed again: connections are refused
    let mut c = config(format!("http://127.0.0.1:{port}"));
    // Short enough that the final drain of the queue ends well inside the shutdown bound,
    // so every span ends up counted as dropped or failed.
    c.batch.export_timeout_ms = 150;
    c.shutdown_timeout_ms = 3000;
    c.log_format = LogFormat::Pretty;
    let logs = LogBuffer::default();
    let (dispatch, mut guard) = TelemetryBuilder::new(c)
        .with_log_writer(logs.clone())
        .build()
        .expect("builds even though nothing listens");
    tracing::dispatcher::with_default(&dispatch, burst);
    // Let the export thread try (and fail) at least once.
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let result = guard.shutdown();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(3500), "shutdown took {took:?}");
    // Whether the final drain still had spans to fail depends on timing; it never times out.
    assert!(
        matches!(result, Ok(()) | Err(FlushError::Export(_))),
        "{result:?}"
    );

    let stats = guard.stats();
    assert!(stats.spans_dropped > 0, "{stats:?}");
    assert!(
        stats.failed_exports > 0 && stats.spans_failed > 0,
        "{stats:?}"
    );
    assert_eq!(stats.spans_exported, 0);
    assert!(
        stats.failed_exports > 1,
        "several requests failed: {stats:?}"
    );

    // Many failed requests and dropped spans, each kind reported once, plus the summary.
    let text = logs.text();
    let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        count(&format!(
            "span export to http://127.0.0.1:{port}/v1/traces failed"
        )),
        1,
        "{text}"
    );
    assert_eq!(count("spans are being dropped"), 1, "{text}");
    assert_eq!(count("telemetry shut down with spans lost"), 1, "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
    assert_eq!(
        stats.spans_dropped + stats.spans_failed,
        5000,
        "every span is accounted for: {stats:?}"
    );
}

#[test]
fn a_hanging_collector_does_not_hold_up_the_application_or_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Accept every connection and never answer; keep the sockets open.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let mut c = config(format!("http://{addr}"));
    c.batch.export_timeout_ms = 30_000; // the exporter itself would wait this long
    let (dispatch, mut guard) = TelemetryBuilder::new(c).build().expect("builds");
    let started = Instant::now();
    tracing::dispatcher::with_default(&dispatch, burst);
    // Were a closing span ever to wait on the exporter, this would take 30 s or more.
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "closing 5000 spans took {took:?}"
    );

    let started = Instant::now();
    let result = guard.shutdown();
    let took = started.elapsed();
    assert_eq!(
        result,
        Err(FlushError::TimedOut(Duration::from_millis(1000)))
    );
    assert!(took < Duration::from_millis(1500), "shutdown took {took:?}");
    let stats = guard.stats();
    assert!(stats.spans_dropped > 0, "{stats:?}");
    assert_eq!(stats.spans_exported, 0);
}
