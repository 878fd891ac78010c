//! Why a trace is incomplete: nodes (each its own telemetry pipeline, exporting over real
//! OTLP/HTTP to a real collector) send their export accounts, and the viewer, drawn by
//! headless Chromium, says for a span whose parent is missing what the parent's node
//! reported: sampled out, dropped from a full queue, or nothing since it was cut off.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::Dispatch;
use zerostate_collector::Collector;
use zerostate_collector::testing::{browser_or_skip, chromium};
use zerostate_telemetry::{
    LogFormat, Sampling, SpanExt, TelemetryBuilder, TelemetryConfig, TelemetryGuard, TraceContext,
    propagation,
};

use crate::harness::{collector, eventually, get, get_ok};

/// A node's telemetry: its own pipeline, as a node process has.
struct Node {
    dispatch: Dispatch,
    guard: TelemetryGuard,
    instance: String,
}

const ACCOUNT_MS: u64 = 200;

fn node(name: &str, endpoint: String, tune: impl FnOnce(&mut TelemetryConfig)) -> Node {
    let instance = format!("12D3KooW{name}");
    let mut c = TelemetryConfig::default();
    c.service_name = name.to_owned();
    c.instance_id = Some(instance.clone());
    c.endpoint = endpoint;
    c.log_format = LogFormat::Off;
    c.account_interval_ms = ACCOUNT_MS;
    c.batch.scheduled_delay_ms = 50;
    c.batch.export_timeout_ms = 1000;
    c.shutdown_timeout_ms = 3000;
    tune(&mut c);
    let (dispatch, guard) = TelemetryBuilder::new(c).build().expect("telemetry builds");
    Node {
        dispatch,
        guard,
        instance,
    }
}

/// `cx` as a process receiving it in `traceparent` reads it: a remote parent.
fn over_the_wire(cx: &TraceContext) -> TraceContext {
    let mut headers = std::collections::HashMap::new();
    propagation::inject(cx, &mut headers);
    propagation::extract(&headers).expect("a traceparent")
}

impl Node {
    /// A span named `name` under `parent`: received in a message from `from` (the context
    /// carried over the wire), or local without one; its context.
    fn span(
        &self,
        name: &'static str,
        parent: Option<&TraceContext>,
        from: Option<&Node>,
    ) -> TraceContext {
        tracing::dispatcher::with_default(&self.dispatch, || {
            let span =
                tracing::info_span!("step", otel.name = name, peer.id = tracing::field::Empty);
            if let Some(from) = from {
                span.record_peer_id(&from.instance);
            }
            match (parent, from) {
                (Some(parent), Some(_)) => span.set_parent(&over_the_wire(parent)),
                (Some(parent), None) => span.set_parent(parent),
                _ => {}
            }
            span.context().expect("a recorded span")
        })
    }

    fn flush(&self) {
        self.guard.force_flush().expect("flushed");
    }
}

type Tune = fn(&mut TelemetryConfig);

/// A collector in a temporary directory.
async fn start() -> (tempfile::TempDir, Collector) {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(&dir.path().join("traces"), |_| {}).await;
    (dir, c)
}

/// Three nodes exporting to `c`: `edge-node-0`, `edge-node-1` (tuned by `middle`, and
/// exporting to `through` when given) and `edge-node-2` (tuned by `last`).
async fn three(
    c: &Collector,
    through: Option<SocketAddr>,
    middle: Tune,
    last: Tune,
) -> (Node, Node, Node) {
    let endpoint = format!("http://{}", c.otlp_addr);
    let middle_endpoint = format!("http://{}", through.unwrap_or(c.otlp_addr));
    tokio::task::spawn_blocking(move || {
        (
            node("edge-node-0", endpoint.clone(), |_| {}),
            node("edge-node-1", middle_endpoint, middle),
            node("edge-node-2", endpoint, last),
        )
    })
    .await
    .expect("the nodes start")
}

/// The DOM of the trace's page once its scripts ran.
fn page(addr: SocketAddr, dir: &std::path::Path, cx: &TraceContext) -> String {
    let bin = browser_or_skip().expect("checked by the caller");
    let url = format!("http://{addr}/trace/{}?polls=0", cx.trace_id);
    let profile = dir.join(format!("profile-{}", cx.trace_id));
    String::from_utf8_lossy(&chromium(&bin, &profile, "--dump-dom", &url)).into_owned()
}

/// Waits until the collector holds at least `spans` spans of the trace.
async fn stored(c: &Collector, cx: &TraceContext, spans: u64) {
    let path = format!("/api/v3/traces/{}", cx.trace_id);
    eventually("the trace stored", || async {
        let (status, body) = get(c, &path).await;
        (status == 200 && body["totalSpans"].as_u64() >= Some(spans)).then_some(())
    })
    .await;
}

/// Waits until the collector holds an account of `node` in which `key` is above 0.
async fn reported(c: &Collector, node: &str, key: &str) {
    eventually(&format!("{node}'s account with {key}"), || async {
        let body = get_ok(c, "/api/zerostate/accounts").await;
        let nodes = body["nodes"].as_array().cloned().unwrap_or_default();
        nodes
            .iter()
            .filter(|n| n["service"] == node)
            .flat_map(|n| n["accounts"].as_array().cloned().unwrap_or_default())
            .any(|a| a[key].as_str().is_some_and(|v| v != "0"))
            .then_some(())
    })
    .await;
}

/// A clock time as the viewer writes it, after `prefix`.
fn has_time_after(dom: &str, prefix: &str) -> bool {
    dom.find(prefix).is_some_and(|i| {
        let t = &dom[i + prefix.len()..];
        t.len() >= 8
            && t.as_bytes()[..8].iter().enumerate().all(|(j, b)| {
                if j == 2 || j == 5 {
                    *b == b':'
                } else {
                    b.is_ascii_digit()
                }
            })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_whose_parent_node_sampled_it_out_says_so() {
    if browser_or_skip().is_none() {
        return;
    }
    let (dir, c) = start().await;
    // The middle node samples nothing; the last keeps everything whatever its caller
    // decided (it does not follow the parent).
    let (requester, middle, last) = three(
        &c,
        None,
        |c| {
            c.sampling = Sampling {
                parent_based: false,
                ratio: 0.0,
            }
        },
        |c| {
            c.sampling = Sampling {
                parent_based: false,
                ratio: 1.0,
            }
        },
    )
    .await;
    let (cx, nodes) = tokio::task::spawn_blocking(move || {
        let root = requester.span("task.submit", None, None);
        let forwarded = middle.span("guild.receive_message", Some(&root), Some(&requester));
        last.span("task.offer", Some(&forwarded), Some(&middle));
        for n in [&requester, &middle, &last] {
            n.flush();
        }
        std::thread::sleep(Duration::from_millis(3 * ACCOUNT_MS));
        (root, (requester, middle, last))
    })
    .await
    .expect("the nodes ran");
    stored(&c, &cx, 2).await;
    reported(&c, "edge-node-1", "dropped.sampled_out").await;
    let dom = page(c.ui_addr, dir.path(), &cx);
    assert!(
        dom.contains("parent missing: sampled out at edge-node-1"),
        "{}",
        &dom[..dom.len().min(4000)]
    );
    assert!(
        dom.contains("Incomplete: sampled out at edge-node-1."),
        "{dom}"
    );
    // The accounts are stored as spans, each in its own trace, and kept out of trace
    // lists unless asked for by name.
    let list = get_ok(&c, "/api/zerostate/traces?limit=100").await;
    let roots: Vec<_> = list["traces"]
        .as_array()
        .expect("traces")
        .iter()
        .map(|t| t["root"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(roots, ["task.submit"], "{list}");
    let asked = get_ok(
        &c,
        "/api/zerostate/traces?query.serviceName=edge-node-1&query.operationName=telemetry.export_account",
    )
    .await;
    assert!(
        asked["traces"].as_array().is_some_and(|t| !t.is_empty()),
        "{asked}"
    );
    drop(nodes);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_whose_parent_node_dropped_it_from_a_full_queue_says_so() {
    if browser_or_skip().is_none() {
        return;
    }
    let (dir, c) = start().await;
    // A queue of eight spans, sending when it holds eight: a burst overflows it.
    let nodes = three(
        &c,
        None,
        |c| {
            c.batch.max_queue_size = 8;
            c.batch.max_export_batch_size = 8;
        },
        |_| {},
    )
    .await;
    let nodes = Arc::new(nodes);
    // Which span a full queue drops is a race; a trace whose parent got through is made
    // again, a few times at most.
    let mut dropped = None;
    for _ in 0..5 {
        let n = nodes.clone();
        let (cx, parent) = tokio::task::spawn_blocking(move || {
            let (requester, middle, last) = &*n;
            let root = requester.span("task.submit", None, None);
            let parent = tracing::dispatcher::with_default(&middle.dispatch, || {
                let span = tracing::info_span!("task.offer");
                span.set_parent(&over_the_wire(&root));
                let _in = span.enter();
                // Spans of other traces, closing before the parent does.
                for _ in 0..5000 {
                    tracing::info_span!(parent: None, "execution.resources.measure")
                        .in_scope(|| {});
                }
                span.context().expect("recorded")
            });
            last.span("execution.task", Some(&parent), Some(middle));
            for n in [requester, middle, last] {
                n.flush();
            }
            (root, parent)
        })
        .await
        .expect("the nodes ran");
        stored(&c, &cx, 2).await;
        let body = get_ok(&c, &format!("/api/v3/traces/{}", cx.trace_id)).await;
        // The child names it as its parent either way; is it there as a span?
        let as_span = format!("\"spanId\":\"{}\"", parent.span_id);
        if !body.to_string().contains(&as_span) {
            dropped = Some(cx);
            break;
        }
    }
    let cx = dropped.expect("a burst of 5000 spans through a queue of 8 dropped the parent");
    reported(&c, "edge-node-1", "dropped.queue_full").await;
    let dom = page(c.ui_addr, dir.path(), &cx);
    let prefix = "parent missing: edge-node-1 dropped ";
    assert!(dom.contains(prefix), "{}", &dom[..dom.len().min(4000)]);
    let tail = &dom[dom.find(prefix).expect("found") + prefix.len()..];
    let n: String = tail.chars().take_while(char::is_ascii_digit).collect();
    assert!(n.parse::<u64>().is_ok_and(|n| n > 0), "{tail:.80}");
    assert!(
        has_time_after(tail, &format!("{n} spans (queue full) at ")),
        "{tail:.120}"
    );
    c.shutdown().await;
}

/// A TCP relay to the collector that can be cut: established connections are shut and new
/// ones closed at once, as a network cut off would.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(to: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (cut2, open2) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut2.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                let mut kept = open2.lock().expect("lock");
                for s in [&client, &server] {
                    kept.push(s.try_clone().expect("clone"));
                }
                drop(kept);
                for (mut from, mut into) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || into.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = into.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Self { addr, cut, open }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().expect("lock").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_whose_parent_node_is_cut_off_says_since_when_it_reported_nothing() {
    if browser_or_skip().is_none() {
        return;
    }
    let (dir, c) = start().await;
    let relay = Relay::start(c.otlp_addr);
    let (requester, middle, last) = three(&c, Some(relay.addr), |_| {}, |_| {}).await;
    // The middle node reports through the relay, then the relay is cut.
    reported(&c, "edge-node-1", "interval_ms").await;
    relay.cut();
    let (cx, nodes) = tokio::task::spawn_blocking(move || {
        let root = requester.span("task.submit", None, None);
        let parent = middle.span("task.offer", Some(&root), Some(&requester));
        last.span("execution.task", Some(&parent), Some(&middle));
        for n in [&requester, &last] {
            n.flush();
        }
        // Longer than two of its intervals without a word from it.
        std::thread::sleep(Duration::from_millis(4 * ACCOUNT_MS));
        (root, (requester, middle, last))
    })
    .await
    .expect("the nodes ran");
    stored(&c, &cx, 2).await;
    let dom = page(c.ui_addr, dir.path(), &cx);
    let prefix = "parent missing: edge-node-1 reported nothing since ";
    assert!(dom.contains(prefix), "{}", &dom[..dom.len().min(4000)]);
    assert!(has_time_after(&dom, prefix), "{dom}");
    assert!(dom.contains("(stopped or cut off)"), "{dom}");
    drop(nodes);
    c.shutdown().await;
}
