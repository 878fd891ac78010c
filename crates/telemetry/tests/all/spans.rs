//! Names, attributes, parent links, helpers and remote parents, through an in-memory
//! exporter and a scoped subscriber.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::trace::{SpanId, Status};
use zerostate_telemetry::names::{self, attr as keys, span};
use zerostate_telemetry::{SpanExt, propagation};

use crate::harness::{Captured, attr, find, test_config};

#[test]
fn nested_spans_keep_names_attributes_and_parents() {
    let t = Captured::new(test_config());
    t.run(|| {
        let task = tracing::info_span!(span::EXECUTION_TASK, task.id = "t-1", guild.id = "g-9");
        task.in_scope(|| {
            tracing::info_span!(
                span::EXECUTION_WASM_COMPILE,
                cache.hit = false,
                size.bytes = 2048_i64
            )
            .in_scope(|| {});
            tracing::info_span!(span::EXECUTION_WASM_EXECUTE).in_scope(|| {
                tracing::info!(fuel = 10_i64, "guest returned");
            });
        });
    });
    let spans = t.spans();
    assert_eq!(spans.len(), 3);
    let task = find(&spans, span::EXECUTION_TASK);
    let compile = find(&spans, span::EXECUTION_WASM_COMPILE);
    let execute = find(&spans, span::EXECUTION_WASM_EXECUTE);

    assert_eq!(task.parent_span_id, SpanId::INVALID);
    for child in [compile, execute] {
        assert_eq!(child.parent_span_id, task.span_context.span_id());
        assert_eq!(child.span_context.trace_id(), task.span_context.trace_id());
        assert!(!child.parent_span_is_remote);
    }
    assert_eq!(attr(task, keys::TASK_ID).as_deref(), Some("t-1"));
    assert_eq!(attr(task, keys::GUILD_ID).as_deref(), Some("g-9"));
    assert_eq!(attr(compile, keys::CACHE_HIT).as_deref(), Some("false"));
    assert_eq!(attr(compile, keys::SIZE_BYTES).as_deref(), Some("2048"));
    assert!(task.end_time >= compile.end_time && compile.start_time >= task.start_time);

    let event = &execute.events.events[0];
    assert_eq!(event.name, "guest returned");
    assert!(event.attributes.iter().any(|kv| kv.key.as_str() == "fuel"));
    assert_eq!(task.instrumentation_scope.name(), "all");
}

#[test]
fn otel_fields_set_dynamic_name_kind_and_status() {
    let t = Captured::new(test_config());
    t.run(|| {
        tracing::info_span!(
            "p2p.message",
            otel.name = names::p2p_message("task_request").as_str(),
            otel.kind = "consumer",
            message.type = "task_request",
        )
        .in_scope(|| {});
    });
    let spans = t.spans();
    let s = find(&spans, "p2p.message.task_request");
    assert_eq!(s.span_kind, opentelemetry::trace::SpanKind::Consumer);
    assert_eq!(attr(s, keys::MESSAGE_TYPE).as_deref(), Some("task_request"));
    assert!(
        attr(s, "otel.name").is_none(),
        "otel.* fields are not attributes"
    );
}

#[derive(Debug, thiserror::Error)]
#[error("payment rejected")]
struct Rejected(#[source] std::io::Error);

#[test]
fn errors_are_recorded_with_status_attributes_and_an_exception_event() {
    let t = Captured::new(test_config());
    t.run(|| {
        let s = tracing::info_span!(span::PAYMENT_VERIFY);
        s.record_error(&Rejected(std::io::Error::other("signature does not match")));
    });
    let spans = t.spans();
    let s = find(&spans, span::PAYMENT_VERIFY);
    let chain = "payment rejected: signature does not match";
    assert_eq!(s.status, Status::error(chain));
    assert_eq!(attr(s, keys::ERROR_MESSAGE).as_deref(), Some(chain));
    assert!(
        attr(s, keys::ERROR_TYPE)
            .expect("error.type")
            .contains("Rejected")
    );
    let event = s
        .events
        .iter()
        .find(|e| e.name == names::EXCEPTION_EVENT)
        .expect("exception event");
    let msg = event
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == keys::EXCEPTION_MESSAGE);
    assert_eq!(msg.map(|kv| kv.value.to_string()).as_deref(), Some(chain));
}

#[test]
fn an_error_event_marks_the_span_failed() {
    let t = Captured::new(test_config());
    t.run(|| {
        tracing::info_span!(span::GUILD_JOIN).in_scope(|| tracing::error!("membership refused"));
    });
    let spans = t.spans();
    assert_eq!(
        find(&spans, span::GUILD_JOIN).status,
        Status::error("membership refused")
    );
}

#[test]
fn success_and_id_helpers_record_what_they_say() {
    let t = Captured::new(test_config());
    t.run(|| {
        let s = tracing::info_span!(span::PAYMENT_TRANSACTION);
        s.record_peer_id("12D3KooWpeer");
        s.record_guild_id("guild-1");
        s.record_task_id("task-7");
        s.set_attribute(keys::CHANNEL_ID, "chan-3");
        s.record_success(Duration::from_micros(1500));
    });
    let spans = t.spans();
    let s = find(&spans, span::PAYMENT_TRANSACTION);
    assert_eq!(s.status, Status::Ok);
    assert_eq!(attr(s, keys::PEER_ID).as_deref(), Some("12D3KooWpeer"));
    assert_eq!(attr(s, keys::GUILD_ID).as_deref(), Some("guild-1"));
    assert_eq!(attr(s, keys::TASK_ID).as_deref(), Some("task-7"));
    assert_eq!(attr(s, keys::CHANNEL_ID).as_deref(), Some("chan-3"));
    assert_eq!(attr(s, keys::DURATION_MS).as_deref(), Some("1.5"));
}

#[test]
fn a_remote_parent_continues_its_trace_with_state_and_baggage() {
    let t = Captured::new(test_config());
    let mut incoming = HashMap::new();
    incoming.insert(
        "traceparent".to_string(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03".to_string(),
    );
    incoming.insert(
        "tracestate".to_string(),
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7".to_string(),
    );
    incoming.insert(
        "baggage".to_string(),
        "node=edge-1,tenant=a%20b".to_string(),
    );

    let outgoing = t.run(|| {
        let receive = tracing::info_span!(span::GUILD_RECEIVE_MESSAGE);
        receive.set_parent(&propagation::extract(&incoming).expect("valid"));
        receive.in_scope(|| {
            let send = tracing::info_span!(span::GUILD_SEND_MESSAGE);
            let _g = send.enter();
            let mut out = HashMap::new();
            assert!(propagation::inject_current(&mut out));
            (out, send.context().expect("recorded"))
        })
    });
    let (headers, send_cx) = outgoing;
    let spans = t.spans();
    let receive = find(&spans, span::GUILD_RECEIVE_MESSAGE);
    let send = find(&spans, span::GUILD_SEND_MESSAGE);

    assert_eq!(
        receive.span_context.trace_id().to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(receive.parent_span_id.to_string(), "b7ad6b7169203331");
    assert!(receive.parent_span_is_remote);
    assert_eq!(
        receive.span_context.trace_state().header(),
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    );
    assert_eq!(send.parent_span_id, receive.span_context.span_id());

    // The random flag (02) travels on unchanged with the sampled flag.
    assert_eq!(
        headers["traceparent"],
        format!(
            "00-0af7651916cd43dd8448eb211c80319c-{}-03",
            send.span_context.span_id()
        )
    );
    assert_eq!(
        headers["tracestate"],
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    );
    assert_eq!(headers["baggage"], "node=edge-1,tenant=a%20b");
    assert_eq!(send_cx.baggage.get("tenant"), Some("a b"));
}

#[test]
fn the_byte_form_carries_a_context_between_spans() {
    let t = Captured::new(test_config());
    let bytes = t.run(|| {
        let s = tracing::info_span!(span::P2P_GOSSIP_PUBLISH);
        propagation::to_bytes(&s.context().expect("recorded"))
    });
    t.run(|| {
        let s = tracing::info_span!("p2p.message", otel.name = "p2p.message.task_request");
        s.set_parent(&propagation::from_bytes(&bytes).expect("decodes"));
    });
    let spans = t.spans();
    let publish = find(&spans, span::P2P_GOSSIP_PUBLISH);
    let receive = find(&spans, "p2p.message.task_request");
    assert_eq!(receive.parent_span_id, publish.span_context.span_id());
    assert_eq!(
        receive.span_context.trace_id(),
        publish.span_context.trace_id()
    );
}

#[test]
fn an_invalid_remote_context_starts_a_fresh_trace() {
    let mut incoming = HashMap::new();
    incoming.insert(
        "traceparent".to_string(),
        "00-00000000000000000000000000000000-b7ad6b7169203331-01".to_string(),
    );
    assert!(propagation::extract(&incoming).is_none());
}

#[test]
fn spans_the_filter_drops_are_not_exported_and_do_not_break_parenting() {
    let t = Captured::new(test_config());
    t.run(|| {
        tracing::info_span!(span::P2P_CONNECTION_ESTABLISH).in_scope(|| {
            // libp2p's own spans are filtered out by default, at any level.
            tracing::error_span!(target: "libp2p_swarm", "Connection::poll").in_scope(|| {
                tracing::debug_span!("fine.detail").in_scope(|| {
                    tracing::info_span!(span::P2P_HEALTH_CHECK).in_scope(|| {});
                });
            });
        });
    });
    let spans = t.spans();
    assert_eq!(
        spans.len(),
        2,
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let est = find(&spans, span::P2P_CONNECTION_ESTABLISH);
    let health = find(&spans, span::P2P_HEALTH_CHECK);
    assert_eq!(health.parent_span_id, est.span_context.span_id());
}

#[test]
fn disabled_telemetry_exports_nothing_but_still_propagates() {
    let mut config = test_config();
    config.enabled = false;
    let t = Captured::new(config);
    let cx = t.run(|| tracing::info_span!(span::TASK_SUBMIT).context());
    assert!(cx.is_some(), "ids exist without export");
    assert!(!t.guard.is_exporting(), "no export thread when disabled");
    assert!(t.exporter.get_finished_spans().expect("spans").is_empty());
    assert_eq!(t.guard.stats(), Default::default());
}

#[test]
fn recycled_records_carry_nothing_over() {
    let t = Captured::new(test_config());
    for round in 0..3 {
        t.run(|| {
            let s = tracing::info_span!("first", task.id = "t-1", otel.name = "renamed");
            s.in_scope(|| tracing::error!("failed"));
            s.set_attribute(keys::PEER_ID, "p");
        });
        // Let the export thread return the first record to the pool.
        t.spans();
        t.run(|| tracing::info_span!("second").in_scope(|| {}));
        let spans = t.spans();
        let second = find(&spans, "second");
        assert!(
            second.attributes.is_empty(),
            "round {round}: {:?}",
            second.attributes
        );
        assert!(second.events.is_empty(), "round {round}");
        assert_eq!(second.status, Status::Unset, "round {round}");
        assert_eq!(second.parent_span_id, SpanId::INVALID, "round {round}");
        t.exporter.reset();
    }
}

#[test]
fn a_span_first_reached_on_a_thread_without_telemetry_still_reaches_a_scoped_subscriber() {
    fn probe() {
        tracing::info_span!("first.reached.elsewhere").in_scope(|| {});
    }
    let captured = Captured::new(test_config());
    // Another thread, with no subscriber of its own, reaches the callsite first.
    std::thread::spawn(probe).join().expect("probe thread");
    captured.run(probe);
    find(&captured.spans(), "first.reached.elsewhere");
}
