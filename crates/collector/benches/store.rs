//! The trace store under load: ingest rate, and a trace lookup and a search on a store
//! holding a million spans.
//!
//! ```text
//! cargo bench -p zerostate-collector --bench store
//! ```
//!
//! Ingest writes requests of 1,000 spans (100 traces of 10 spans, five services, three
//! attributes each, trace and span ids spread like random ones), encoded as an exporter
//! sends them, through `Store::ingest_export` (what the collector's receiving threads and
//! its writer thread do, here on one thread)
//! to a store on the real disk, until it holds 1,000,000 spans. Then it looks up 1,000
//! random traces by id, and runs 100 searches of each kind (service and operation; an
//! attribute). Prints a table.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use zerostate_collector::{Store, TraceQuery};

const SPANS: u64 = 1_000_000;
const PER_REQUEST: u64 = 1_000;
const PER_TRACE: u64 = 10;
const NAMES: [&str; 5] = [
    "p2p.gossip.publish",
    "p2p.message.task_request",
    "execution.task",
    "execution.wasm.execute",
    "payment.transaction",
];

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// A well-mixed 64-bit value of `x` (splitmix64), so that ids are spread like the random
/// ids real exporters make, yet the bench can name them again.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn trace_id(t: u64) -> Vec<u8> {
    [
        mix(t).to_be_bytes(),
        mix(t ^ 0x5555_5555_5555_5555).to_be_bytes(),
    ]
    .concat()
}

fn span_id(n: u64) -> Vec<u8> {
    mix(n.wrapping_mul(31).wrapping_add(7))
        .max(1)
        .to_be_bytes()
        .to_vec()
}

fn request(first_span: u64) -> ExportTraceServiceRequest {
    let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); 5];
    for n in first_span..first_span + PER_REQUEST {
        let t = n / PER_TRACE;
        let i = n % PER_TRACE;
        let start = 1_795_611_600_000_000_000 + n * 1_000;
        by_service[(i % 5) as usize].push(Span {
            trace_id: trace_id(t),
            span_id: span_id(n),
            parent_span_id: if i == 0 { vec![] } else { span_id(n - 1) },
            name: NAMES[(i % 5) as usize].into(),
            kind: 1,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 50_000 + (n % 7) * 1_000_000,
            attributes: vec![
                kv("peer.id", &format!("12D3KooWpeer{}", t % 97)),
                kv("task.id", &format!("task-{t}")),
                kv("message.type", "task_request"),
            ],
            ..Default::default()
        });
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .enumerate()
            .map(|(s, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", &format!("edge-node-{s}"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

fn percentile(mut v: Vec<Duration>, p: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

fn main() {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let mut store = Store::open(dir.path()).expect("store");
    let requests: Vec<_> = (0..SPANS / PER_REQUEST)
        .map(|r| request(r * PER_REQUEST).encode_to_vec())
        .collect();
    let start = Instant::now();
    for r in &requests {
        store.ingest_export(r).expect("ingest");
    }
    let ingest = SPANS as f64 / start.elapsed().as_secs_f64();
    drop(requests);
    assert_eq!(store.span_count().expect("count"), SPANS);

    let traces = SPANS / PER_TRACE;
    let mut lookups = Vec::new();
    for _ in 0..1000 {
        let t = fastrand::u64(..traces);
        let s = Instant::now();
        let found = store.trace(&trace_id(t)).expect("trace").expect("found");
        lookups.push(s.elapsed());
        assert_eq!(
            found
                .0
                .resource_spans
                .iter()
                .map(|r| r.scope_spans[0].spans.len())
                .sum::<usize>(),
            PER_TRACE as usize
        );
    }
    let mut by_op = Vec::new();
    for i in 0..100 {
        let q = TraceQuery {
            service: Some(format!("edge-node-{}", i % 5)),
            operation: Some(NAMES[i % 5].into()),
            limit: 20,
            ..Default::default()
        };
        let s = Instant::now();
        let ids = store.search(&q).expect("search");
        let _ = store.traces(&ids).expect("traces");
        by_op.push(s.elapsed());
        assert_eq!(ids.len(), 20);
    }
    let mut by_attr = Vec::new();
    for i in 0..100 {
        let mut q = TraceQuery {
            service: Some("edge-node-0".into()),
            limit: 20,
            ..Default::default()
        };
        q.attributes
            .insert("peer.id".into(), format!("12D3KooWpeer{}", i % 97));
        let s = Instant::now();
        let ids = store.search(&q).expect("search");
        by_attr.push(s.elapsed());
        assert!(!ids.is_empty());
    }
    let bytes = store.used_bytes().expect("bytes");
    println!("\n| measure | value |");
    println!("|---|---:|");
    println!("| ingest, spans/s (one thread, 1,000 spans per request) | {ingest:.0} |");
    println!(
        "| store size for 1,000,000 spans, MiB | {:.0} |",
        bytes as f64 / (1 << 20) as f64
    );
    println!(
        "| store bytes per span | {:.1} |",
        bytes as f64 / SPANS as f64
    );
    println!(
        "| trace lookup by id, p50 ms | {:.3} |",
        percentile(lookups.clone(), 0.5)
    );
    println!(
        "| trace lookup by id, p95 ms | {:.3} |",
        percentile(lookups, 0.95)
    );
    println!(
        "| search service + operation, 20 traces with their spans, p50 ms | {:.2} |",
        percentile(by_op.clone(), 0.5)
    );
    println!(
        "| search service + operation, p95 ms | {:.2} |",
        percentile(by_op, 0.95)
    );
    println!(
        "| search service + attribute, 20 trace ids, p50 ms | {:.2} |",
        percentile(by_attr.clone(), 0.5)
    );
    println!(
        "| search service + attribute, p95 ms | {:.2} |",
        percentile(by_attr, 0.95)
    );
}
