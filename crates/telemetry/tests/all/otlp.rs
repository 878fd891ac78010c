//! Export over real OTLP/HTTP to a receiver started by the test, decoded with
//! `opentelemetry-proto`.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use zerostate_telemetry::TelemetryBuilder;
use zerostate_telemetry::names::span;

use crate::harness::{OtlpReceiver, test_config};

fn resource_attr(
    r: &opentelemetry_proto::tonic::resource::v1::Resource,
    key: &str,
) -> Option<String> {
    r.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

#[test]
fn spans_arrive_over_otlp_http_with_resource_names_and_parents() {
    let receiver = OtlpReceiver::start();
    let mut config = test_config();
    config.endpoint = receiver.endpoint();
    config.service_name = "edge-node-1".into();
    config.service_version = "9.9.9".into();
    config.instance_id = Some("12D3KooWtest".into());
    config.node_role = Some("edge".into());
    config
        .headers
        .insert("authorization".into(), "Bearer secret".into());
    let (dispatch, mut guard) = TelemetryBuilder::new(config).build().expect("builds");

    tracing::dispatcher::with_default(&dispatch, || {
        tracing::info_span!(span::TASK_SUBMIT).in_scope(|| {
            tracing::info_span!(span::GUILD_SEND_MESSAGE, message.type = "task_request").in_scope(
                || {
                    tracing::info_span!(span::P2P_GOSSIP_PUBLISH).in_scope(|| {});
                },
            );
        });
    });
    guard.shutdown().expect("exports and shuts down");
    assert_eq!(guard.stats().spans_exported, 3);

    let received = receiver.received.lock().expect("lock");
    assert!(!received.is_empty(), "the receiver got no request");
    let first = &received[0];
    assert_eq!(first.headers["content-type"], "application/x-protobuf");
    assert_eq!(first.headers["content-encoding"], "gzip");
    assert_eq!(first.headers["authorization"], "Bearer secret");

    let mut spans: Vec<Span> = Vec::new();
    for r in received.iter() {
        for rs in &r.request.resource_spans {
            let resource = rs.resource.as_ref().expect("resource");
            assert_eq!(
                resource_attr(resource, "service.name").as_deref(),
                Some("edge-node-1")
            );
            assert_eq!(
                resource_attr(resource, "service.version").as_deref(),
                Some("9.9.9")
            );
            assert_eq!(
                resource_attr(resource, "service.namespace").as_deref(),
                Some("zerostate")
            );
            assert_eq!(
                resource_attr(resource, "service.instance.id").as_deref(),
                Some("12D3KooWtest")
            );
            assert_eq!(
                resource_attr(resource, "zerostate.node.role").as_deref(),
                Some("edge")
            );
            for ss in &rs.scope_spans {
                spans.extend(ss.spans.iter().cloned());
            }
        }
    }
    let by_name = |n: &str| {
        spans
            .iter()
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("no {n}"))
            .clone()
    };
    let submit = by_name(span::TASK_SUBMIT);
    let send = by_name(span::GUILD_SEND_MESSAGE);
    let publish = by_name(span::P2P_GOSSIP_PUBLISH);
    assert!(submit.parent_span_id.is_empty(), "the root has no parent");
    assert_eq!(send.parent_span_id, submit.span_id);
    assert_eq!(publish.parent_span_id, send.span_id);
    assert_eq!(submit.trace_id.len(), 16);
    assert!(spans.iter().all(|s| s.trace_id == submit.trace_id));
    assert!(send.attributes.iter().any(|kv| kv.key == "message.type"));
}
