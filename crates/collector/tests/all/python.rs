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

/// Runs the export script against `endpoint` with `env`; the trace id it printed.
async fn run_script(endpoint: String, env: Vec<(&'static str, String)>) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/export_trace.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(endpoint)
            // `requests` lets these override the exporter's own certificate setting.
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE")
            .envs(env)
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
    trace_id
}

/// Whether the SDK is here; under `CI=true` its absence fails the test.
fn require_sdk() -> bool {
    if sdk_available() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the OpenTelemetry Python SDK is missing: pip install opentelemetry-sdk \
         opentelemetry-exporter-otlp-proto-http (.ci/run does)"
    );
    eprintln!("skipped: the OpenTelemetry Python SDK is not installed");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_exports_over_tls_with_a_token() {
    if !require_sdk() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = crate::tls::pki(dir.path());
    let token = "python-token-0123456789";
    let token_file = dir.path().join("otlp.token");
    std::fs::write(&token_file, token).expect("token");
    let c = collector(&dir.path().join("traces"), |config| {
        config.tls_cert = Some(pki.server_cert.clone());
        config.tls_key = Some(pki.server_key.clone());
        config.otlp_token_file = Some(token_file);
    })
    .await;
    let trace_id = run_script(
        format!("https://{}", c.otlp_addr),
        vec![
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                pki.ca.display().to_string(),
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                format!("authorization=Bearer {token}"),
            ),
        ],
    )
    .await;
    assert_eq!(trace_id.len(), 32);
    eventually("the Python SDK's two spans, sent over TLS", || async {
        (c.stats().spans_stored == 2).then_some(())
    })
    .await;
    assert_eq!(c.stats().unauthorized, 0);
    c.shutdown().await;
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
    let trace_id = run_script(format!("http://{}", c.otlp_addr), Vec::new()).await;

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
