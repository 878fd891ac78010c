//! OTLP in, api_v3 out, and what happens to bad input.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

use crate::harness::{collector, get, get_ok, gzip, kv, post, request, span};

const PB: &str = "application/x-protobuf";
const JSON: &str = "application/json";

fn trace_hex(b: u8) -> String {
    hex::encode([b; 16])
}

/// The trace, which must hold `n` spans: every request answered 200 is already stored.
async fn trace_with(c: &zerostate_collector::Collector, trace: u8, n: usize) -> serde_json::Value {
    let t = get_ok(c, &format!("/api/v3/traces/{}", trace_hex(trace))).await;
    assert_eq!(spans_of(&t["result"]).len(), n, "trace {trace}");
    t
}

fn spans_of(result: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for rs in result["resourceSpans"].as_array().into_iter().flatten() {
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            out.extend(ss["spans"].as_array().into_iter().flatten().cloned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_json_and_gzip_in_jaeger_api_v3_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path(), |_| {}).await;
    let a = request(
        "edge-node-1",
        vec![
            span(1, 1, 0, "task.submit", 0, 100),
            span(1, 2, 1, "p2p.gossip.publish", 10, 3),
        ],
    );
    assert_eq!(post(&c, PB, false, a.encode_to_vec()).await.status(), 200);
    let b = request(
        "edge-node-2",
        vec![span(1, 3, 2, "p2p.message.task_request", 12, 1)],
    );
    let json = serde_json::to_vec(&b).expect("json");
    assert_eq!(post(&c, JSON, false, json).await.status(), 200);
    let d = request("edge-node-1", vec![span(2, 9, 0, "guild.create", 200, 5)]);
    assert_eq!(
        post(&c, PB, true, gzip(&d.encode_to_vec())).await.status(),
        200
    );

    // Spans of one trace from two services, as OTLP JSON with hex ids.
    let t1 = trace_with(&c, 1, 3).await;
    let spans = spans_of(&t1["result"]);
    assert!(spans.iter().all(|s| s["traceId"] == trace_hex(1)));
    assert_eq!(
        t1["result"]["resourceSpans"].as_array().map(Vec::len),
        Some(2)
    );
    get_ok(&c, &format!("/api/v3/traces/{}", trace_hex(2))).await;

    let (_, services) = get(&c, "/api/v3/services").await;
    assert_eq!(
        services["services"],
        serde_json::json!(["edge-node-1", "edge-node-2"])
    );
    let (_, ops) = get(&c, "/api/v3/operations?service=edge-node-1").await;
    let names: Vec<&str> = ops["operations"]
        .as_array()
        .expect("operations")
        .iter()
        .map(|o| o["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["guild.create", "p2p.gossip.publish", "task.submit"]);

    let search = |q: &str| {
        let q = q.to_owned();
        let c = &c;
        async move {
            let (status, body) = get(c, &format!("/api/v3/traces?{q}")).await;
            let mut ids: Vec<String> = spans_of(&body["result"])
                .iter()
                .map(|s| s["traceId"].as_str().expect("id").to_owned())
                .collect();
            ids.sort();
            ids.dedup();
            (status, ids)
        }
    };
    assert_eq!(
        search("query.serviceName=edge-node-1&query.operationName=guild.create").await,
        (200, vec![trace_hex(2)])
    );
    assert_eq!(
        search("query.durationMin=50ms").await,
        (200, vec![trace_hex(1)])
    );
    assert_eq!(
        search("query.attributes=%7B%22peer.id%22%3A%22peer-3%22%7D").await,
        (200, vec![trace_hex(1)])
    );
    assert_eq!(
        search("query.searchDepth=10").await,
        (200, vec![trace_hex(1), trace_hex(2)])
    );
    assert_eq!(search("query.serviceName=nobody").await.0, 404);
    assert_eq!(
        search("query.startTimeMin=2026-11-25T13:00:00.150Z").await,
        (200, vec![trace_hex(2)])
    );
    // The service map and the per-operation figures (over a window that reaches back to
    // the test spans' fixed times).
    let (_, map) = get(&c, "/api/zerostate/map?lookback=1000000h").await;
    assert_eq!(
        map["edges"],
        serde_json::json!([{ "from": "edge-node-1", "to": "edge-node-2", "calls": 1, "errors": 0 }])
    );
    let (_, ops) = get(
        &c,
        "/api/zerostate/operations?service=edge-node-1&lookback=1000000h",
    )
    .await;
    let ops = ops["operations"].as_array().expect("operations").clone();
    assert_eq!(ops.len(), 3);
    let submit = ops
        .iter()
        .find(|o| o["name"] == "task.submit")
        .expect("task.submit");
    assert_eq!(submit["count"], 1);
    assert_eq!(submit["p99Ms"], 100.0);
    assert_eq!(submit["errorRate"], 0.0);
    assert_eq!(
        get(&c, &format!("/api/v3/traces/{}", trace_hex(7))).await.0,
        404
    );
    assert_eq!(get(&c, "/api/v3/traces/not-an-id").await.0, 400);
    assert_eq!(get(&c, "/api/v3/traces?query.durationMin=ten").await.0, 400);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_answered_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path(), |cfg| cfg.max_body_bytes = 256 * 1024).await;

    let r = post(&c, PB, false, b"\xff\xff\xff garbage".to_vec()).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.expect("body").contains("not an OTLP"));
    assert_eq!(
        post(&c, JSON, false, b"{\"resourceSpans\": 7".to_vec())
            .await
            .status(),
        400
    );
    assert_eq!(post(&c, PB, true, b"not gzip".to_vec()).await.status(), 400);
    assert_eq!(
        post(&c, "text/plain", false, b"hi".to_vec()).await.status(),
        415
    );
    // Truncated: a valid request cut short.
    let whole = request("svc", vec![span(3, 1, 0, "x", 0, 1)]).encode_to_vec();
    assert_eq!(
        post(&c, PB, false, whole[..whole.len() - 3].to_vec())
            .await
            .status(),
        400
    );
    // Too large raw, and too large once decompressed.
    assert_eq!(
        post(&c, PB, false, vec![0u8; 300 * 1024]).await.status(),
        413
    );
    assert_eq!(
        post(&c, PB, true, gzip(&vec![0u8; 2 << 20])).await.status(),
        413
    );
    // An empty request is accepted.
    assert_eq!(post(&c, PB, false, Vec::new()).await.status(), 200);

    // All-zero ids: partial success.
    let mut zero_trace = span(4, 1, 0, "bad", 0, 1);
    zero_trace.trace_id = vec![0; 16];
    let mut zero_span = span(4, 2, 0, "bad", 0, 1);
    zero_span.span_id = vec![0; 8];
    let r = post(
        &c,
        PB,
        false,
        request(
            "svc",
            vec![zero_trace, zero_span, span(4, 3, 0, "good", 0, 1)],
        )
        .encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let resp =
        ExportTraceServiceResponse::decode(r.bytes().await.expect("body")).expect("response");
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(partial.error_message.contains("16 bytes"));

    // Duplicates and a child before its parent.
    let child = request("svc", vec![span(5, 2, 1, "child", 5, 1)]);
    let parent = request("svc", vec![span(5, 1, 0, "parent", 0, 10)]);
    for body in [&child, &child, &parent, &parent] {
        assert_eq!(
            post(&c, PB, false, body.encode_to_vec()).await.status(),
            200
        );
    }
    // A huge attribute value.
    let mut big = span(6, 1, 0, "big", 0, 1);
    big.attributes.push(kv("blob", &"x".repeat(100 * 1024)));
    assert_eq!(
        post(&c, PB, false, request("svc", vec![big]).encode_to_vec())
            .await
            .status(),
        200
    );

    // Every request was answered, so everything it stored is stored: the good span beside
    // the zero ids, the child, the parent, the big one.
    let stats = c.stats();
    assert_eq!(stats.spans_stored, 4, "{stats:?}");
    assert_eq!(stats.spans_duplicate, 2, "{stats:?}");
    assert_eq!(stats.spans_rejected, 2, "{stats:?}");
    assert_eq!(stats.bad_requests, 5, "{stats:?}");
    assert_eq!(stats.too_large, 2, "{stats:?}");
    trace_with(&c, 5, 2).await;
    let t6 = get_ok(&c, &format!("/api/v3/traces/{}", trace_hex(6))).await;
    assert!(t6.to_string().len() > 100 * 1024);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_100000_spans_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path(), |_| {}).await;
    let spans: Vec<_> = (0..100_000u32)
        .map(|i| {
            let mut s = span(8, 1, 0, "many", 0, 1);
            s.trace_id = [&[8u8; 12][..], &i.to_be_bytes()].concat();
            s
        })
        .collect();
    let r = post(&c, PB, true, gzip(&request("bulk", spans).encode_to_vec())).await;
    assert_eq!(r.status(), 200);
    assert_eq!(c.stats().spans_stored, 100_000, "a 200 means stored");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_means_stored_and_a_stalled_store_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path(), |cfg| cfg.queue_requests = 1).await;
    let first = request("svc", vec![span(39, 1, 0, "x", 0, 1)]).encode_to_vec();
    assert_eq!(post(&c, PB, false, first).await.status(), 200);
    // The answer came after the commit: the span is there at once, not eventually.
    assert_eq!(c.stats().spans_stored, 1);

    // Another process takes the database's write lock: the writer stalls on the next
    // request, one more waits in the queue, the rest are turned away.
    let lock = rusqlite::Connection::open(dir.path().join("traces.db")).expect("open");
    lock.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    for i in 0..4u8 {
        let (tx, url) = (tx.clone(), format!("http://{}/v1/traces", c.otlp_addr));
        let body = request("svc", vec![span(40 + i, 1, 0, "x", 0, 1)]).encode_to_vec();
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(url)
                .header("content-type", PB)
                .body(body)
                .send()
                .await
                .expect("post");
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().expect("ascii").to_owned());
            let _ = tx.send((i, r.status().as_u16(), retry_after)).await;
        });
    }
    // At most two fit (the writer's and the queue's); the others are answered at once,
    // and nothing is answered 200 while the store cannot commit (a quiet period can only
    // miss that bug, never invent it).
    let mut early = Vec::new();
    while early.len() < 2 {
        early.push(rx.recv().await.expect("an answer"));
    }
    while let Ok(Some(answer)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), rx.recv()).await
    {
        early.push(answer);
    }
    assert!(
        early.len() < 4,
        "every request was answered while the store was locked"
    );
    for (_, status, retry_after) in &early {
        assert_eq!(*status, 503, "answered before it was stored: {early:?}");
        assert_eq!(retry_after.as_deref(), Some("1"));
    }
    let stored_before = c.stats().spans_stored;
    lock.execute_batch("COMMIT").expect("unlock");
    let mut late = Vec::new();
    while early.len() + late.len() < 4 {
        let (i, status, _) = rx.recv().await.expect("an answer");
        if status == 200 {
            // Acknowledged, so stored.
            let id = trace_hex(40 + i);
            assert!(
                c.stats().spans_stored > stored_before,
                "{id} acknowledged before it was stored"
            );
        }
        late.push(status);
    }
    assert!(late.contains(&200), "{late:?}");
    c.shutdown().await;
}
