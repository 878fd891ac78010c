//! The four ways ZeroState code is instrumented, each in one function, all in one trace:
//!
//! 1. **A unit of work**: a span named by a constant, attributes by key, the outcome with
//!    `record_success` or `record_error`.
//! 2. **Across a process boundary**: the sender injects the current context into the
//!    message's headers, the receiver extracts it and makes it its span's parent.
//! 3. **Async work**: a future carries its span with `.instrument(span)`, and work handed
//!    to another task keeps its parent by taking the span along.
//! 4. **Many small steps on one thread**: local spans under a `tracing` span, a few tens of
//!    nanoseconds each, exported with their parent.
//!
//! ```text
//! cargo run -p zerostate-telemetry --example patterns
//! ```

use std::collections::HashMap;
use std::time::Instant;

use tracing::Instrument;
use zerostate_telemetry::names::{attr, span};
use zerostate_telemetry::{SpanExt, TelemetryConfig, propagation};

#[derive(Debug, thiserror::Error)]
#[error("the guest ran out of fuel after {0} units")]
struct OutOfFuel(u64);

/// Pattern 1: a unit of work with its outcome.
fn run_task(id: &str, fuel: u64) -> Result<(), OutOfFuel> {
    let started = Instant::now();
    let task = tracing::info_span!(span::EXECUTION_TASK, task.id = id);
    let _entered = task.enter();
    let fuel_used = i64::try_from(fuel).unwrap_or(i64::MAX);
    task.set_attribute(attr::RESOURCES_FUEL, fuel_used);
    let result = if fuel > 1_000 {
        Err(OutOfFuel(1_000))
    } else {
        Ok(())
    };
    match &result {
        Ok(()) => task.record_success(started.elapsed()),
        // Status Error, `error.message` with the whole cause chain, an `exception` event.
        Err(e) => task.record_error(e),
    }
    result
}

/// Pattern 2, sending side: the headers a message carries.
fn send() -> HashMap<String, String> {
    let publish = tracing::info_span!(
        span::P2P_GOSSIP_PUBLISH,
        otel.kind = "producer",
        message.type = "task_request"
    );
    let _entered = publish.enter();
    let mut headers = HashMap::new();
    propagation::inject_current(&mut headers);
    headers
}

/// Pattern 2, receiving side: a span whose parent is the sender's.
fn receive(headers: &HashMap<String, String>) {
    let received = tracing::info_span!(
        parent: None,
        "p2p.message",
        otel.name = zerostate_telemetry::names::p2p_message("task_request"),
        otel.kind = "consumer",
    );
    if let Some(cx) = propagation::extract(headers) {
        received.set_parent(&cx);
    }
    received.in_scope(|| tracing::info!("task request received"));
}

/// Pattern 3: async work keeps its span, also in another task.
async fn offer(task_id: String) {
    let offer = tracing::info_span!(span::TASK_OFFER, task.id = task_id.as_str());
    let child = offer.clone();
    async move {
        // Work handed to another task takes its span along.
        let sending = tracing::info_span!(parent: &child, "p2p.message", otel.name = "p2p.message.task_offer");
        let sent = tokio::spawn(async { tracing::info!("offer sent") }.instrument(sending));
        sent.await.ok();
    }
    .instrument(offer)
    .await;
}

/// Pattern 4: many small steps on one thread, as local spans of the enclosing span.
fn check_chunks(chunks: &[&[u8]]) -> usize {
    use zerostate_telemetry::local::{LocalParent, LocalSpan};
    let check = tracing::info_span!("receipt.check", chunks = chunks.len());
    let _collect = LocalParent::of(&check);
    let mut nonzero = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        let _step = LocalSpan::enter("receipt.check.chunk").with_attribute("chunk.index", i as i64);
        nonzero += chunk.iter().filter(|b| **b != 0).count();
    }
    nonzero
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = TelemetryConfig::from_env()?;
    config.service_name = "patterns".into();
    let mut telemetry = zerostate_telemetry::init(config)?;
    let root = tracing::info_span!(span::TASK_SUBMIT, task.id = "pattern-1");
    let trace_id = root.context().map(|cx| cx.trace_id.to_string());
    root.in_scope(|| {
        let _ = run_task("pattern-1", 500);
        let _ = run_task("pattern-2", 5_000);
        receive(&send());
        check_chunks(&[&b"ab"[..], &b"\0c"[..], &b"d"[..]]);
        tokio::runtime::Builder::new_current_thread()
            .build()
            .map(|rt| rt.block_on(offer("pattern-1".into())))
    })?;
    drop(root);
    let delivered = telemetry.shutdown();
    let stats = telemetry.stats();
    println!(
        "trace {}: {} spans sent, {} lost to failed exports",
        trace_id.unwrap_or_default(),
        stats.spans_exported,
        stats.spans_failed
    );
    if let Err(e) = delivered {
        println!("recorded but not delivered: {e}");
    }
    Ok(())
}
