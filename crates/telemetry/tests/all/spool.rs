//! The spool: spans a collector did not take wait on disk and are sent again, oldest first,
//! once it answers, within a bound, across a restart.

use std::net::{SocketAddr, TcpListener};

use zerostate_telemetry::testing::OtlpReceiver;
use zerostate_telemetry::{LogFormat, TelemetryBuilder, TelemetryConfig, TelemetryGuard};

use crate::harness::{LogBuffer, test_config, until};

/// A loopback address nothing listens on (until a test starts a receiver there).
fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn config(addr: SocketAddr, spool: &std::path::Path) -> TelemetryConfig {
    let mut c = test_config();
    c.endpoint = format!("http://{addr}");
    c.batch.max_queue_size = 4096;
    c.batch.max_export_batch_size = 64;
    c.batch.scheduled_delay_ms = 20;
    c.batch.export_timeout_ms = 1000;
    c.shutdown_timeout_ms = 3000;
    c.spool_dir = Some(spool.to_owned());
    c
}

fn spans(dispatch: &tracing::Dispatch, name: &'static str, n: usize) {
    tracing::dispatcher::with_default(dispatch, || {
        for i in 0..n {
            tracing::info_span!("work", kind = name, n = i).in_scope(|| {});
        }
    });
}

fn kinds(receiver: &OtlpReceiver) -> Vec<String> {
    receiver
        .spans()
        .iter()
        .map(|s| s.attribute("kind").unwrap_or_default())
        .collect()
}

#[test]
fn spans_a_dead_collector_did_not_take_are_sent_when_it_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let logs = LogBuffer::default();
    let mut c = config(addr, dir.path());
    c.log_format = LogFormat::Pretty;
    let (dispatch, mut guard) = TelemetryBuilder::new(c)
        .with_log_writer(logs.clone())
        .build()
        .expect("builds");
    spans(&dispatch, "during", 1000);
    until("1000 spans spooled", || guard.stats().spool_spans == 1000);
    let stats = guard.stats();
    assert_eq!(
        (stats.spans_spooled, stats.spans_failed, stats.spans_dropped),
        (1000, 0, 0),
        "{stats:?}"
    );
    assert!(stats.failing && stats.spool_bytes > 0, "{stats:?}");
    let files = std::fs::read_dir(dir.path()).expect("the spool").count();
    assert!(files >= 1000 / 64, "{files} files");

    let receiver = OtlpReceiver::start_on(addr).expect("the port again");
    until("the spool sent", || guard.stats().spool_spans == 0);
    spans(&dispatch, "after", 100);
    guard
        .force_flush()
        .expect("flushes once the collector answers");
    let stats = guard.stats();
    assert_eq!(
        (stats.spans_exported, stats.spans_resent, stats.spans_lost()),
        (1100, 1000, 0),
        "{stats:?}"
    );
    assert_eq!(stats.spans_made(), 1100, "{stats:?}");
    assert!(!stats.failing, "{stats:?}");
    // Each once, the spooled ones first.
    let kinds = kinds(&receiver);
    assert_eq!(kinds.len(), 1100);
    assert!(kinds[..1000].iter().all(|k| k == "during"), "{kinds:?}");
    assert!(kinds[1000..].iter().all(|k| k == "after"), "{kinds:?}");
    let ids: std::collections::HashSet<Vec<u8>> = receiver
        .spans()
        .into_iter()
        .map(|s| s.span.span_id)
        .collect();
    assert_eq!(ids.len(), 1100, "no span sent twice");
    assert_eq!(std::fs::read_dir(dir.path()).expect("spool").count(), 0);
    let text = logs.text();
    assert!(
        text.contains("its spans are spooled in") && text.contains("the spool is sent and empty"),
        "{text}"
    );
    guard.shutdown().expect("shuts down");
}

#[test]
fn what_is_spooled_at_shutdown_is_sent_by_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let (dispatch, mut guard): (_, TelemetryGuard) =
        TelemetryBuilder::new(config(addr, dir.path()))
            .build()
            .expect("builds");
    spans(&dispatch, "before", 500);
    // The queue is spooled at shutdown too, when the collector does not answer.
    let _ = guard.shutdown();
    let stats = guard.stats();
    assert_eq!(
        (stats.spool_spans, stats.spans_lost()),
        (500, 0),
        "{stats:?}"
    );
    drop(dispatch);

    let receiver = OtlpReceiver::start_on(addr).expect("the port again");
    let (dispatch, mut guard) = TelemetryBuilder::new(config(addr, dir.path()))
        .build()
        .expect("builds again");
    assert_eq!(guard.stats().spool_found, 500);
    spans(&dispatch, "after", 10);
    until("everything sent", || receiver.spans().len() == 510);
    guard.force_flush().expect("flushes");
    let stats = guard.stats();
    assert_eq!(
        (stats.spans_resent, stats.spans_made(), stats.spool_spans),
        (500, 10, 0),
        "{stats:?}"
    );
    let kinds = kinds(&receiver);
    assert!(kinds[..500].iter().all(|k| k == "before"), "{kinds:?}");
    guard.shutdown().expect("shuts down");
}

#[test]
fn a_full_spool_loses_its_oldest_spans_and_counts_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let logs = LogBuffer::default();
    let mut c = config(addr, dir.path());
    c.spool_bytes = 16 << 10;
    c.log_format = LogFormat::Pretty;
    let (dispatch, mut guard) = TelemetryBuilder::new(c)
        .with_log_writer(logs.clone())
        .build()
        .expect("builds");
    spans(&dispatch, "old", 1500);
    spans(&dispatch, "new", 500);
    until("2000 spans accounted for", || {
        let s = guard.stats();
        s.spool_spans + s.spans_spool_lost == 2000
    });
    let stats = guard.stats();
    assert!(stats.spans_spool_lost > 0, "{stats:?}");
    assert!(stats.spool_bytes <= 16 << 10, "{stats:?}");
    let kept = stats.spool_spans;

    let receiver = OtlpReceiver::start_on(addr).expect("the port again");
    until("the spool sent", || guard.stats().spool_spans == 0);
    let stats = guard.stats();
    assert_eq!(stats.spans_resent, kept, "{stats:?}");
    assert_eq!(stats.spans_made(), 2000, "{stats:?}");
    // The newest were kept.
    let kinds = kinds(&receiver);
    assert_eq!(kinds.len() as u64, kept);
    let new = kinds.iter().filter(|k| *k == "new").count() as u64;
    assert_eq!(new, kept.min(500), "{kinds:?}");
    let text = logs.text();
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("the span spool is full"))
            .count(),
        1,
        "{text}"
    );
    guard.shutdown().expect("shuts down");
}

#[test]
fn a_collector_refusing_the_request_is_not_spooled() {
    // An answer of 404 (no OTLP route) would be the same for the same request later.
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = server.local_addr().expect("addr");
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in server.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 65536];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let (dispatch, mut guard) = TelemetryBuilder::new(config(addr, dir.path()))
        .build()
        .expect("builds");
    spans(&dispatch, "refused", 64);
    let _ = guard.force_flush();
    let stats = guard.stats();
    assert_eq!(
        (stats.spans_failed, stats.spans_spooled, stats.spool_spans),
        (64, 0, 0),
        "{stats:?}"
    );
    let _ = guard.shutdown();
}
