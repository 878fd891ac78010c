//! A collector that pushes back (503 or 429 with `Retry-After`) gets the same spans again
//! after the delay it asked for; nothing is lost while the queue has room.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use zerostate_telemetry::TelemetryBuilder;

use crate::harness::test_config;

/// A receiver that answers `status` with `Retry-After: 1` to the first `refusals` requests
/// and 200 afterwards, counting the spans it accepted.
fn pushy_receiver(
    status: StatusCode,
    refusals: usize,
) -> (
    String,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    tokio::runtime::Runtime,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let requests = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (req, acc) = (requests.clone(), accepted.clone());
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let (req, acc) = (req.clone(), acc.clone());
            async move {
                use prost::Message;
                if req.fetch_add(1, Ordering::SeqCst) < refusals {
                    let mut r = status.into_response();
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    return r;
                }
                let decoded =
                    zerostate_telemetry::testing::ExportTraceServiceRequest::decode(&body[..])
                        .expect("protobuf");
                let n: usize = decoded
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .map(|s| s.spans.len())
                    .sum();
                acc.fetch_add(n, Ordering::SeqCst);
                StatusCode::OK.into_response()
            }
        }),
    );
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    runtime.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (endpoint, requests, accepted, runtime)
}

fn exports_after_push_back(status: StatusCode) {
    let (endpoint, requests, accepted, _runtime) = pushy_receiver(status, 2);
    let mut c = test_config();
    c.endpoint = endpoint;
    c.gzip = false;
    c.batch.scheduled_delay_ms = 20;
    c.batch.export_timeout_ms = 10_000;
    c.shutdown_timeout_ms = 15_000;
    let (dispatch, mut guard) = TelemetryBuilder::new(c).build().expect("telemetry");
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..10_i64 {
            tracing::info_span!("pushed back", n = i).in_scope(|| {});
        }
    });
    let started = Instant::now();
    guard
        .force_flush()
        .expect("flush succeeds after the collector accepts");
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "Retry-After was not honoured: {:?}",
        started.elapsed()
    );
    let stats = guard.stats();
    assert_eq!(accepted.load(Ordering::SeqCst), 10, "{stats:?}");
    assert_eq!(stats.spans_failed, 0, "{stats:?}");
    assert_eq!(stats.spans_exported, 10, "{stats:?}");
    assert!(requests.load(Ordering::SeqCst) >= 3);
    guard.shutdown().expect("shutdown");
}

#[test]
fn a_503_with_retry_after_is_retried_not_dropped() {
    exports_after_push_back(StatusCode::SERVICE_UNAVAILABLE);
}

#[test]
fn a_429_with_retry_after_is_retried_not_dropped() {
    exports_after_push_back(StatusCode::TOO_MANY_REQUESTS);
}
