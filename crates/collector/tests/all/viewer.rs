//! The web viewer in real headless Chromium (Debian's `chromium`): the search page, a
//! trace's waterfall with its critical path and an error, the gossip fan-out, the service
//! map and the operations table render from the API, and screenshots show them drawn.
//! `.ci/run` installs Chromium; under `CI=true` a missing browser fails the test.

use std::path::{Path, PathBuf};

use prost::Message;

use crate::harness::{collector, get_ok, post, request, span};
use zerostate_collector::testing::{browser_or_skip, chromium, chromium_for};

/// Headless Chromium pointed at one collector's viewer.
struct Viewer {
    bin: PathBuf,
    profile: PathBuf,
    base: String,
}

impl Viewer {
    fn new(bin: PathBuf, dir: &Path, c: &zerostate_collector::Collector) -> Self {
        Self {
            bin,
            profile: dir.join("profile"),
            base: format!("http://{}", c.ui_addr),
        }
    }

    /// The page at `path` as drawn, its DOM.
    fn dom(&self, path: &str) -> String {
        let url = format!("{}{path}", self.base);
        String::from_utf8_lossy(&chromium(&self.bin, &self.profile, "--dump-dom", &url))
            .into_owned()
    }

    /// A screenshot of the page at `path`, kept as `name` (see [`artifact`]); its size.
    fn shot(&self, path: &str, name: &str) -> u64 {
        let file = artifact(name);
        let url = format!("{}{path}", self.base);
        let action = format!("--screenshot={}", file.display());
        chromium(&self.bin, &self.profile, &action, &url);
        png_size(&file)
    }
}

/// Where a screenshot is kept after the test, for a person to look at:
/// `target/tmp/viewer/<name>`.
fn artifact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("viewer");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir.join(name)
}

fn png_size(path: &Path) -> u64 {
    let bytes = std::fs::read(path).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    bytes.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_renders_in_chromium() {
    let Some(bin) = browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(&dir.path().join("traces"), |_| {}).await;
    // A gossip publish on edge-node-1 fanning out to three nodes, one of them failing.
    let publisher = request(
        "edge-node-1",
        vec![
            span(1, 1, 0, "guild.send_message", 0, 40),
            span(1, 2, 1, "p2p.gossip.publish", 1, 3),
        ],
    );
    let mut receivers = Vec::new();
    for (i, node) in ["edge-node-2", "edge-node-3", "relay-node"]
        .iter()
        .enumerate()
    {
        let mut s = span(
            1,
            10 + i as u8,
            2,
            "p2p.message.task_request",
            2 + i as u64,
            30,
        );
        if i == 1 {
            s.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
                code: 2,
                message: "out of fuel".into(),
            });
        }
        receivers.push(request(node, vec![s]));
    }
    for r in std::iter::once(&publisher).chain(&receivers) {
        assert_eq!(
            post(&c, "application/x-protobuf", false, r.encode_to_vec())
                .await
                .status(),
            200
        );
    }
    let id = hex::encode([1u8; 16]);
    let t = get_ok(&c, &format!("/api/v3/traces/{id}")).await;
    assert_eq!(t.to_string().matches("\"spanId\"").count(), 5);

    let viewer = Viewer::new(bin, dir.path(), &c);
    let results = tokio::task::spawn_blocking(move || {
        let dom = |path: &str| viewer.dom(path);
        let trace = dom(&format!("/trace/{id}"));
        let search = dom("/?limit=10");
        // Jaeger UI's search URL, as a dashboard's "View traces" link writes it.
        let jaeger = "/search?service=edge-node-1&operation=guild.send_message\
                      &tags=%7B%22peer.id%22%3A%22peer-1%22%7D&lookback=1000000h&limit=5";
        let jaeger_hit = dom(&format!("{jaeger}&minDuration=10ms&maxDuration=1s"));
        let jaeger_miss = dom(&format!("{jaeger}&minDuration=1s"));
        let jaeger_other_tag =
            dom("/search?service=edge-node-1&tags=peer.id%3Dpeer-9&lookback=1000000h");
        // The test spans carry fixed times in 2026; the window reaches back to them.
        let map = dom("/map?lookback=1000000h");
        let operations = dom("/operations?lookback=1000000h");
        let shot = |path: &str, name: &str| viewer.shot(path, name);
        let blank = shot(&format!("/trace/{}", "f".repeat(32)), "blank.png");
        let waterfall = shot(&format!("/trace/{id}"), "trace.png");
        let map_png = shot("/map?lookback=1000000h", "map.png");
        (
            (trace, search, map, operations, blank, waterfall, map_png),
            (jaeger_hit, jaeger_miss, jaeger_other_tag),
        )
    })
    .await
    .expect("chromium task");
    let (trace, search, map, operations, blank, waterfall, map_png) = results.0;
    let (jaeger_hit, jaeger_miss, jaeger_other_tag) = results.1;

    assert!(trace.contains("data-ready=\"1\""), "{trace}");
    // Five rows, numbered 0 to 4 (the page's own script holds the row template too).
    assert!(
        trace.contains("data-i=\"4\"") && !trace.contains("data-i=\"5\""),
        "{trace}"
    );
    assert!(
        trace.contains("class=\"bar critical\""),
        "critical path: {trace}"
    );
    assert!(trace.contains("class=\"bar error\""), "error span: {trace}");
    assert!(trace.contains("Gossip fan-out: 3 receivers"), "{trace}");
    assert!(trace.contains("@ relay-node"));
    assert!(
        trace.contains(&format!("/api/v3/traces/{}", hex::encode([1u8; 16]))),
        "export link"
    );
    assert!(
        search.contains(&format!("href=\"/trace/{}\"", hex::encode([1u8; 16]))),
        "{search}"
    );
    let link = format!("href=\"/trace/{}\"", hex::encode([1u8; 16]));
    assert!(jaeger_hit.contains(&link), "{jaeger_hit}");
    assert!(
        jaeger_hit.contains("value=\"10ms\""),
        "the form keeps the search: {jaeger_hit}"
    );
    for miss in [&jaeger_miss, &jaeger_other_tag] {
        assert!(
            !miss.contains(&link) && miss.contains("No traces match."),
            "{miss}"
        );
    }
    assert!(map.contains("<svg id=\"map\""), "{map}");
    assert!(map.contains("3 calls") || map.contains("1 calls"), "{map}");
    assert!(operations.contains("p2p.gossip.publish"), "{operations}");
    // Drawn pages are far from the empty one: a not-found trace page is mostly blank.
    assert!(
        waterfall > blank * 2,
        "waterfall {waterfall} B vs blank {blank} B"
    );
    assert!(map_png > blank * 2, "map {map_png} B vs blank {blank} B");
    c.shutdown().await;
}

/// A task's trace as a requester, an executor and a ledger would export it: the first
/// attempt timed out, the second delivered; `paid` adds the payment spans. `slow` makes the
/// run 30 ms longer.
fn task_trace(
    trace: u8,
    task: &str,
    paid: bool,
    slow: u64,
) -> Vec<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest> {
    use crate::harness::kv;
    let with = |mut s: opentelemetry_proto::tonic::trace::v1::Span, attrs: &[(&str, &str)]| {
        s.attributes.extend(attrs.iter().map(|(k, v)| kv(k, v)));
        s
    };
    let mut timed_out = with(
        span(trace, 2, 1, "task.attempt", 1, 40),
        &[("task.id", task), ("peer.id", "executor-a")],
    );
    timed_out.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
        code: 2,
        message: "the executor did not answer: timed out".into(),
    });
    let mut requester = vec![
        with(
            span(trace, 1, 0, "task.submit", 0, 120 + slow),
            &[("task.id", task)],
        ),
        timed_out,
        with(
            span(trace, 3, 1, "task.attempt", 42, 60 + slow),
            &[("task.id", task), ("peer.id", "executor-b")],
        ),
    ];
    if paid {
        requester.push(with(
            span(trace, 6, 1, "payment.flow", 105 + slow, 10),
            &[
                ("amount", "44"),
                ("channel.id", "c0ffee"),
                ("peer.id", "executor-b"),
                ("receipt.sha256", "5eed5eed"),
            ],
        ));
        requester.push(with(
            span(trace, 7, 6, "payment.transaction", 106 + slow, 2),
            &[("nonce", "3")],
        ));
    }
    let executor = vec![
        with(
            span(trace, 4, 3, "execution.task", 45, 50 + slow),
            &[("task.id", task)],
        ),
        with(
            span(trace, 5, 4, "execution.resources.measure", 94 + slow, 1),
            &[
                ("resources.fuel", "43608379"),
                ("resources.memory_bytes", "1114112"),
                ("resources.duration_ms", "11.2"),
            ],
        ),
    ];
    vec![
        request("edge-node-2", requester),
        request("bootnode", executor),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_task_statistics_and_operation_links_render_in_chromium() {
    let Some(bin) = browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(&dir.path().join("traces"), |_| {}).await;
    for r in task_trace(2, "t-1", true, 0)
        .into_iter()
        .chain(task_trace(3, "t-2", false, 30))
    {
        let answer = post(&c, "application/x-protobuf", false, r.encode_to_vec()).await;
        assert_eq!(answer.status(), 200);
    }
    let (a, b) = (hex::encode([2u8; 16]), hex::encode([3u8; 16]));
    let ids = [a.clone(), b.clone()];
    let viewer = Viewer::new(bin, dir.path(), &c);
    let pages = tokio::task::spawn_blocking(move || {
        let dom = |path: &str| viewer.dom(path);
        let shot = |path: &str, name: &str| viewer.shot(path, name);
        (
            dom(&format!("/compare/{a}/{b}")),
            dom("/task/t-1"),
            dom(&format!("/trace/{a}")),
            dom("/operations?lookback=1000000h"),
            dom("/search?service=edge-node-2&lookback=1000000h"),
            dom("/search?rootOperation=task.submit&errors=1&lookback=1000000h"),
            dom("/search?rootOperation=task.attempt&lookback=1000000h"),
            shot(&format!("/compare/{a}/{b}"), "compare.png"),
            shot("/task/t-1", "task.png"),
            shot(
                "/search?service=edge-node-2&lookback=1000000h",
                "search.png",
            ) + shot("/operations?lookback=1000000h", "operations.png"),
        )
    })
    .await
    .expect("chromium task");
    let (
        compare,
        task,
        trace,
        operations,
        search,
        failing,
        by_root,
        compare_png,
        task_png,
        pages_png,
    ) = pages;
    // Search by root operation and errors only.
    for id in &ids {
        assert!(
            failing.contains(&format!("href=\"/trace/{id}\"")),
            "{failing}"
        );
    }
    assert!(
        by_root.contains("No traces match."),
        "no trace has task.attempt at its root"
    );
    // Compare: aligned pairs with their difference; the payment only in A.
    assert!(compare.contains("id=\"compare\""), "{compare}");
    assert!(compare.contains("only in A"), "{compare}");
    assert!(
        compare.contains("+30ms"),
        "the slower run's difference: {compare}"
    );
    assert!(
        compare.contains("2 spans only in A, 0 only in B"),
        "{compare}"
    );
    // The task page: both attempts, the failure's reason, the receipt and the payment.
    assert!(task.contains("id=\"attempts\""), "{task}");
    assert!(
        task.contains("executor-a") && task.contains("executor-b"),
        "{task}"
    );
    assert!(
        task.contains("failed: the executor did not answer: timed out"),
        "{task}"
    );
    assert!(
        task.contains("43608379") && task.contains("c0ffee") && task.contains("5eed5eed"),
        "{task}"
    );
    // Statistics beside the waterfall: self time of the root excludes its children.
    assert!(trace.contains("id=\"statistics\""), "{trace}");
    // Each latency figure links to traces near it.
    assert!(operations.contains("class=\"example\""), "{operations}");
    assert!(operations.contains("minDuration="), "{operations}");
    // Two traces can be picked for comparison from the search.
    assert!(search.contains("id=\"compare-picked\""), "{search}");
    assert!(
        compare_png > 10_000 && task_png > 10_000 && pages_png > 20_000,
        "{compare_png} {task_png} {pages_png}"
    );
    c.shutdown().await;
}

/// A span of trace `[trace; 16]` with a 64-bit id, for traces too big for `span`.
fn wide_span(
    trace: u8,
    id: u64,
    parent: u64,
    name: &str,
    start_us: u64,
    dur_us: u64,
) -> opentelemetry_proto::tonic::trace::v1::Span {
    let mut s = span(trace, 1, 0, name, 0, 0);
    s.span_id = id.to_be_bytes().to_vec();
    s.parent_span_id = if parent == 0 {
        Vec::new()
    } else {
        parent.to_be_bytes().to_vec()
    };
    let start = s.start_time_unix_nano + start_us * 1000;
    s.start_time_unix_nano = start;
    s.end_time_unix_nano = start + dur_us * 1000;
    s.attributes.clear();
    s
}

/// 100,000 spans in one trace: a root, a gossip publish with 2,000 receivers on ten other
/// nodes, and 98 stages of up to 999 steps each.
fn huge_trace(
    trace: u8,
) -> Vec<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest> {
    let mut requester = vec![
        wide_span(trace, 1, 0, "task.submit", 0, 2_000_000),
        wide_span(trace, 2, 1, "p2p.gossip.publish", 10, 500),
    ];
    let mut next = 3u64;
    let mut receivers: Vec<Vec<_>> = vec![Vec::new(); 10];
    for i in 0..2_000u64 {
        receivers[(i % 10) as usize].push(wide_span(
            trace,
            next,
            2,
            "p2p.message.task_request",
            200 + i,
            50,
        ));
        next += 1;
    }
    for stage in 0..98u64 {
        let id = next;
        next += 1;
        requester.push(wide_span(
            trace,
            id,
            1,
            "stage",
            1_000 + stage * 20_000,
            19_000,
        ));
        for step in 0..999u64 {
            if next > 100_000 {
                break;
            }
            requester.push(wide_span(
                trace,
                next,
                id,
                "step",
                1_000 + stage * 20_000 + step * 19,
                15,
            ));
            next += 1;
        }
    }
    assert_eq!(next - 1, 100_000);
    let mut out: Vec<_> = requester
        .chunks(5_000)
        .map(|c| request("requester", c.to_vec()))
        .collect();
    for (i, r) in receivers.into_iter().enumerate() {
        out.push(request(&format!("edge-{i}"), r));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_of_100000_spans_opens_scrolls_and_collapses_its_fan_out() {
    let Some(bin) = browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(&dir.path().join("traces"), |cfg| {
        cfg.max_bytes = 4 << 30;
    })
    .await;
    for r in huge_trace(4) {
        let answer = post(&c, "application/x-protobuf", false, r.encode_to_vec()).await;
        assert_eq!(answer.status(), 200);
    }
    let id = hex::encode([4u8; 16]);
    // The API in pages: the query time behind the page.
    let started = std::time::Instant::now();
    let mut offset = 0u64;
    let mut pages = 0;
    loop {
        let (status, body) = crate::harness::get(
            &c,
            &format!("/api/v3/traces/{id}?offset={offset}&limit=50000"),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["totalSpans"], 100_000);
        pages += 1;
        match body["nextOffset"].as_u64() {
            Some(n) => offset = n,
            None => break,
        }
    }
    let query = started.elapsed();
    assert_eq!(pages, 2);
    let viewer = Viewer::new(bin, dir.path(), &c);
    let (opened, scrolled, open_time, scroll_time) = tokio::task::spawn_blocking(move || {
        let timed = |path: &str| {
            let started = std::time::Instant::now();
            let dom = viewer.dom(path);
            (dom, started.elapsed())
        };
        let (opened, open_time) = timed(&format!("/trace/{id}"));
        let (scrolled, scroll_time) = timed(&format!("/trace/{id}#row=50000"));
        viewer.shot(&format!("/trace/{id}#row=50000"), "huge.png");
        (opened, scrolled, open_time, scroll_time)
    })
    .await
    .expect("chromium");
    assert!(
        opened.contains("100000 spans"),
        "{}",
        &opened[..opened.len().min(3000)]
    );
    // Only the rows in view are in the page.
    let rows = opened.matches("class=\"row").count();
    assert!((10..200).contains(&rows), "{rows} rows in the page");
    // The fan-out of 2,000 receivers is one row until expanded.
    assert!(
        opened.contains("2000 receivers: min"),
        "fan-out row missing"
    );
    assert!(
        scrolled.contains("data-i=\"50000\""),
        "row 50,000 not drawn after the jump"
    );
    let paint_ms = |dom: &str| -> u64 {
        dom.split("data-first-paint-ms=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|v| v.parse().ok())
            .expect("first paint recorded")
    };
    eprintln!(
        "100,000-span trace: API 2 pages in {:.0} ms; Chromium open (process start to DOM dump) {:.0} ms, first paint at {} ms; jump to row 50,000 {:.0} ms, first paint at {} ms",
        query.as_secs_f64() * 1e3,
        open_time.as_secs_f64() * 1e3,
        paint_ms(&opened),
        scroll_time.as_secs_f64() * 1e3,
        paint_ms(&scrolled),
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_still_arriving_shows_waiting_spans_and_updates_when_they_come() {
    let Some(bin) = browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(&dir.path().join("traces"), |_| {}).await;
    // The executor's span arrives first; the requester's, its parent, later.
    let child = request("bootnode", vec![span(5, 2, 1, "execution.task", 5, 20)]);
    assert_eq!(
        post(&c, "application/x-protobuf", false, child.encode_to_vec())
            .await
            .status(),
        200
    );
    let id = hex::encode([5u8; 16]);
    let url = format!("http://{}/trace/{id}?wait_ms=20000", c.ui_addr);
    let profile = dir.path().join("profile");
    let browser = tokio::task::spawn_blocking(move || {
        String::from_utf8_lossy(&chromium_for(&bin, &profile, "--dump-dom", &url, 60_000))
            .into_owned()
    });
    // Long enough for the page to have drawn the lone span and be waiting for more.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let parent = request("edge-node-2", vec![span(5, 1, 0, "task.submit", 0, 40)]);
    assert_eq!(
        post(&c, "application/x-protobuf", false, parent.encode_to_vec())
            .await
            .status(),
        200
    );
    let dom = browser.await.expect("chromium");
    assert!(
        dom.contains("data-first-waiting=\"1\""),
        "the first drawing had one span waiting for its parent: {}",
        &dom[..dom.len().min(2000)]
    );
    assert!(
        dom.contains("data-waiting=\"0\""),
        "the parent arrived: {dom}"
    );
    assert!(!dom.contains("<div class=\"row waiting"), "{dom}");
    assert!(dom.contains("2 spans across 2 services"), "{dom}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_can_be_drawn_per_node() {
    use crate::harness::kv;
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(&dir.path().join("traces"), |_| {}).await;
    // Two edge nodes of the same name, told apart by their peer ids, call the bootnode.
    for (i, peer) in ["12D3KooWAAAAAAaaaaaa", "12D3KooWBBBBBBbbbbbb"]
        .iter()
        .enumerate()
    {
        let trace = 10 + i as u8;
        let mut caller = request("edge-node", vec![span(trace, 1, 0, "task.submit", 0, 10)]);
        caller.resource_spans[0]
            .resource
            .as_mut()
            .expect("resource")
            .attributes
            .push(kv("service.instance.id", peer));
        let callee = request("bootnode", vec![span(trace, 2, 1, "execution.task", 1, 5)]);
        for r in [caller, callee] {
            assert_eq!(
                post(&c, "application/x-protobuf", false, r.encode_to_vec())
                    .await
                    .status(),
                200
            );
        }
    }
    let by_service = crate::harness::get_ok(&c, "/api/zerostate/map?lookback=1000000h").await;
    assert_eq!(
        by_service["edges"].as_array().expect("edges").len(),
        1,
        "{by_service}"
    );
    assert_eq!(by_service["edges"][0]["calls"], 2);
    let by_node = crate::harness::get_ok(&c, "/api/zerostate/map?by=node&lookback=1000000h").await;
    let edges = by_node["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), 2, "{by_node}");
    assert_eq!(edges[0]["from"], "edge-node (…aaaaaa)", "{by_node}");
    assert_eq!(edges[1]["from"], "edge-node (…bbbbbb)", "{by_node}");
    assert!(
        edges
            .iter()
            .all(|e| e["to"] == "bootnode" && e["calls"] == 1)
    );
    // An edge's link: the traces in which the bootnode was called from an edge node.
    let crossing = crate::harness::get_ok(
        &c,
        "/api/zerostate/traces?query.serviceName=bootnode&query.callerServiceName=edge-node",
    )
    .await;
    assert_eq!(
        crossing["traces"].as_array().expect("traces").len(),
        2,
        "{crossing}"
    );
    let none = crate::harness::get_ok(
        &c,
        "/api/zerostate/traces?query.serviceName=edge-node&query.callerServiceName=bootnode",
    )
    .await;
    assert_eq!(
        none["traces"].as_array().expect("traces").len(),
        0,
        "{none}"
    );
    c.shutdown().await;
}
