//! Interop: the official OpenTelemetry Python SDK (PyPI `opentelemetry-sdk` with
//! `opentelemetry-exporter-otlp-proto-http`) exports into the collector, and the trace
//! comes back through the query API with its spans, resource and status. `.ci/run`
//! installs the SDK; under `CI=true` a missing SDK fails the test.

use std::process::Command;

use crate::harness::{collector, eventually, get};

fn sdk_available() -> bool {
    Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_exports_and_the_query_api_returns_it() {
    if !sdk_available() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the OpenTelemetry Python SDK is missing: pip install opentelemetry-sdk \
             opentelemetry-exporter-otlp-proto-http (.ci/run does)"
        );
        eprintln!("skipped: the OpenTelemetry Python SDK is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path(), |_| {}).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/export_trace.py");
    let endpoint = format!("http://{}", c.otlp_addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(endpoint)
            .output()
            .expect("python3 runs")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trace_id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(trace_id.len(), 32, "{trace_id:?}");

    let path = format!("/api/v3/traces/{trace_id}");
    let body = eventually("the Python SDK's trace", || async {
        let (status, body) = get(&c, &path).await;
        (status == 200).then_some(body)
    })
    .await;
    let rs = &body["result"]["resourceSpans"][0];
    let attrs = rs["resource"]["attributes"].to_string();
    assert!(attrs.contains("python-sdk"), "{attrs}");
    assert!(attrs.contains("telemetry.sdk.language"), "{attrs}");
    let spans = rs["scopeSpans"][0]["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2, "{body}");
    assert_eq!(rs["scopeSpans"][0]["scope"]["name"], "zerostate-interop");
    let parent = spans
        .iter()
        .find(|s| s["name"] == "checkout")
        .expect("checkout");
    let child = spans
        .iter()
        .find(|s| s["name"] == "charge card")
        .expect("child");
    assert_eq!(child["parentSpanId"], parent["spanId"]);
    assert_eq!(child["status"]["code"], 2, "{child}");
    assert_eq!(child["status"]["message"], "card declined");
    assert!(parent["attributes"].to_string().contains("py-peer"));
    c.shutdown().await;
}
