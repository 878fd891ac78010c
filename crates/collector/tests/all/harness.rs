//! Spans to send and a collector to send them to.

use std::path::Path;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use zerostate_collector::{Collector, CollectorConfig};

pub(crate) fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// A span of `trace` (byte repeated) with id `id`, parent `parent` (0 for none).
pub(crate) fn span(trace: u8, id: u8, parent: u8, name: &str, start_ms: u64, dur_ms: u64) -> Span {
    let now = 1_795_611_600_000_000_000u64;
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
        name: name.to_owned(),
        kind: 1,
        start_time_unix_nano: now + start_ms * 1_000_000,
        end_time_unix_nano: now + (start_ms + dur_ms) * 1_000_000,
        attributes: vec![kv("peer.id", &format!("peer-{id}"))],
        status: Some(Status {
            code: 0,
            message: String::new(),
        }),
        ..Default::default()
    }
}

/// A request with these spans from service `service`.
pub(crate) fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

pub(crate) async fn collector(dir: &Path, tune: impl FnOnce(&mut CollectorConfig)) -> Collector {
    let mut config = CollectorConfig::default();
    config.otlp_http = "127.0.0.1:0".parse().expect("addr");
    config.ui = "127.0.0.1:0".parse().expect("addr");
    config.data_dir = dir.to_owned();
    // The test spans carry fixed times (2026-11-25T13:00Z); the default retention of a
    // week would age them out once that date is a week past, so tests keep them a century
    // unless they set their own.
    config.retention_secs = 100 * 365 * 24 * 3600;
    tune(&mut config);
    Collector::start(config).await.expect("collector starts")
}

/// How long a test waits for something that happens in the background.
pub(crate) const DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Polls `check` until it returns `Some`, or panics naming `what` at the deadline.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The JSON the query API answers `path` with; it must answer 200.
pub(crate) async fn get_ok(c: &Collector, path: &str) -> serde_json::Value {
    let (status, body) = get(c, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

pub(crate) async fn get(c: &Collector, path: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("http://{}{path}", c.ui_addr))
        .await
        .expect("get");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

pub(crate) async fn post(
    c: &Collector,
    ctype: &str,
    gzip: bool,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", c.otlp_addr))
        .header("content-type", ctype);
    if gzip {
        req = req.header("content-encoding", "gzip");
    }
    req.body(body).send().await.expect("post")
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}
