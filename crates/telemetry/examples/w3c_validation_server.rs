//! The validation service of the W3C trace-context test suite, built on this crate's
//! propagation.
//!
//! ```text
//! cargo run -p zerostate-telemetry --example w3c_validation_server -- 127.0.0.1:5000
//! python test.py http://127.0.0.1:5000/test      # from the w3c/trace-context repository
//! ```
//!
//! `POST /test` takes a JSON array of `{"url": ..., "arguments": ...}`. For each element, in
//! order, the service POSTs `arguments` as JSON to `url`, carrying the trace context of a new
//! span whose parent is the context the request came with (or a new trace if it came with
//! none or an invalid one).

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde::Deserialize;
use zerostate_telemetry::{SpanExt, TelemetryConfig, propagation};

#[derive(Deserialize)]
struct Callback {
    url: String,
    #[serde(default)]
    arguments: serde_json::Value,
}

async fn test(headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let callbacks: Vec<Callback> = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("expected a JSON array of {{url, arguments}}: {e}"),
            );
        }
    };
    // Every header line, so repeated `traceparent`/`tracestate` headers are all seen.
    let carrier: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let server = tracing::info_span!("w3c.test", otel.kind = "server");
    if let Some(parent) = propagation::extract(&carrier) {
        server.set_parent(&parent);
    }
    let client = reqwest::Client::new();
    for callback in callbacks {
        let span = tracing::info_span!(parent: &server, "w3c.callback", otel.kind = "client");
        let mut out: Vec<(String, String)> = Vec::new();
        if let Some(cx) = span.context() {
            propagation::inject(&cx, &mut out);
        }
        let mut request = client.post(&callback.url).json(&callback.arguments);
        for (k, v) in out {
            request = request.header(k, v);
        }
        if let Err(e) = request.send().await {
            tracing::warn!(url = %callback.url, "callback failed: {e}");
        }
    }
    (StatusCode::OK, String::new())
}

#[tokio::main]
async fn main() -> ExitCode {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: w3c_validation_server <listen address, for example 127.0.0.1:5000>");
        return ExitCode::from(2);
    };
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {addr:?} is not a listen address: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = match TelemetryConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    config.service_name = "w3c-validation-server".into();
    let mut telemetry = match zerostate_telemetry::init(config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Tests read this line to learn the port when given port 0.
    match listener.local_addr() {
        Ok(local) => println!("listening on {local}"),
        Err(e) => eprintln!("warning: cannot read the bound address: {e}"),
    }
    let app = Router::new().route("/test", post(test));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    let _ = telemetry.shutdown();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: server failed: {e}");
            ExitCode::FAILURE
        }
    }
}
