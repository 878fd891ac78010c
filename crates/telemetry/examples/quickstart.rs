//! Set up telemetry, record a small nested trace with the helpers, and shut down.
//!
//! ```text
//! zerostate collector &                      # or any OTLP/HTTP endpoint
//! cargo run -p zerostate-telemetry --example quickstart
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 cargo run -p zerostate-telemetry --example quickstart
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use zerostate_telemetry::names::{attr, span};
use zerostate_telemetry::{SpanExt, TelemetryConfig, propagation};

#[derive(Debug, thiserror::Error)]
#[error("output larger than the 1 MiB limit")]
struct OutputTooLarge;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Environment first (OTEL_*), then what the code says.
    let mut config = TelemetryConfig::from_env()?;
    config.service_name = "quickstart".into();
    config.node_role = Some("cli".into());
    let mut telemetry = zerostate_telemetry::init(config)?;

    let started = Instant::now();
    let task = tracing::info_span!(span::EXECUTION_TASK, task.id = "quickstart-1");
    task.in_scope(|| {
        let validate = tracing::info_span!(span::EXECUTION_MANIFEST_VALIDATE);
        validate.in_scope(|| std::thread::sleep(Duration::from_millis(2)));

        let compile = tracing::info_span!(span::EXECUTION_WASM_COMPILE, cache.hit = false);
        compile.in_scope(|| std::thread::sleep(Duration::from_millis(5)));
        compile.set_attribute(attr::SIZE_BYTES, 4096_i64);

        let execute = tracing::info_span!(span::EXECUTION_WASM_EXECUTE);
        execute.in_scope(|| {
            tracing::info!(fuel = 1_000_i64, "guest finished");
            // The context another node would receive in a message envelope.
            let mut headers = HashMap::new();
            propagation::inject_current(&mut headers);
            tracing::info!(traceparent = %headers["traceparent"], "would send");
        });
        execute.record_error(&OutputTooLarge);
    });
    task.record_success(started.elapsed());
    let trace_id = task.context().map(|cx| cx.trace_id.to_string());
    drop(task);

    let delivered = telemetry.shutdown();
    let stats = telemetry.stats();
    let trace_id = trace_id.unwrap_or_default();
    println!(
        "trace {trace_id}: {} spans sent, {} dropped, {} lost to failed exports",
        stats.spans_exported, stats.spans_dropped, stats.spans_failed
    );
    if let Err(e) = delivered {
        // Recording worked; only delivery did not. Say where to look instead of failing.
        println!(
            "the trace was recorded but not delivered: {e}\n\
             start an OTLP/HTTP receiver there (an OpenTelemetry Collector, Jaeger or Tempo), \
             or point OTEL_EXPORTER_OTLP_ENDPOINT at one"
        );
    }
    Ok(())
}
