//! Log lines carry the trace and span ids of the span they were written in.

use zerostate_telemetry::{LogFormat, TelemetryBuilder};

use crate::harness::{LogBuffer, test_config};

#[test]
fn json_logs_carry_trace_and_span_ids() {
    let logs = LogBuffer::default();
    let mut config = test_config();
    config.log_format = LogFormat::Json;
    config.enabled = false;
    let (dispatch, _guard) = TelemetryBuilder::new(config)
        .with_log_writer(logs.clone())
        .build()
        .expect("builds");
    let cx = tracing::dispatcher::with_default(&dispatch, || {
        tracing::info!("outside any span");
        let span = tracing::info_span!("execution.task");
        let _g = span.enter();
        tracing::warn!(task.id = "t-1", "task ran out of fuel");
        zerostate_telemetry::SpanExt::context(&span).expect("recorded")
    });
    let lines: Vec<serde_json::Value> = logs
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].get("trace_id").is_none());
    let line = &lines[1];
    assert_eq!(line["message"], "task ran out of fuel");
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["task.id"], "t-1");
    assert_eq!(line["span"], "execution.task");
    assert_eq!(line["trace_id"], cx.trace_id.to_string());
    assert_eq!(line["span_id"], cx.span_id.to_string());
}

#[test]
fn pretty_logs_carry_ids_and_respect_the_log_filter() {
    let logs = LogBuffer::default();
    let mut config = test_config();
    config.log_format = LogFormat::Pretty;
    config.log_filter = "info".into();
    config.enabled = false;
    let (dispatch, _guard) = TelemetryBuilder::new(config)
        .with_log_writer(logs.clone())
        .build()
        .expect("builds");
    let cx = tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!("guild.join");
        let _g = span.enter();
        tracing::debug!("not shown at info");
        tracing::info!(peers = 3_i64, "joined");
        zerostate_telemetry::SpanExt::context(&span).expect("recorded")
    });
    let text = logs.text();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(" INFO "), "{text}");
    assert!(text.contains("joined peers=3"), "{text}");
    assert!(
        text.contains(&format!("trace_id={} span_id={}", cx.trace_id, cx.span_id)),
        "{text}"
    );
}

#[test]
fn logs_name_a_span_by_its_exported_name() {
    let logs = LogBuffer::default();
    let mut config = test_config();
    config.log_format = LogFormat::Pretty;
    config.enabled = false;
    let (dispatch, _guard) = TelemetryBuilder::new(config)
        .with_log_writer(logs.clone())
        .build()
        .expect("builds");
    tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!("p2p.message", otel.name = "p2p.message.task_request");
        let _g = span.enter();
        tracing::info!("received");
    });
    let text = logs.text();
    assert!(text.contains(" span=p2p.message.task_request "), "{text}");
}
