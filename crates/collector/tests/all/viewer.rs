//! The web viewer in real headless Chromium (Debian's `chromium`): the search page, a
//! trace's waterfall with its critical path and an error, the gossip fan-out, the service
//! map and the operations table render from the API, and screenshots show them drawn.
//! `.ci/run` installs Chromium; under `CI=true` a missing browser fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;

use crate::harness::{collector, get_ok, post, request, span};

fn browser() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Runs headless Chromium on `url` with `action` (`--dump-dom` or `--screenshot=FILE`).
fn chromium(bin: &Path, profile: &Path, action: &str, url: &str) -> Vec<u8> {
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,800",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(action)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn png_size(path: &Path) -> u64 {
    let bytes = std::fs::read(path).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    bytes.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_renders_in_chromium() {
    let Some(bin) = browser() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Chromium is missing: apt-get install chromium (.ci/run does)"
        );
        eprintln!("skipped: chromium is not installed");
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

    let base = format!("http://{}", c.ui_addr);
    let profile = dir.path().join("profile");
    let results = tokio::task::spawn_blocking(move || {
        let dom = |path: &str| {
            String::from_utf8_lossy(&chromium(
                &bin,
                &profile,
                "--dump-dom",
                &format!("{base}{path}"),
            ))
            .into_owned()
        };
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
        let shot = |path: &str, name: &str| {
            let file = profile.parent().expect("dir").join(name);
            chromium(
                &bin,
                &profile,
                &format!("--screenshot={}", file.display()),
                &format!("{base}{path}"),
            );
            png_size(&file)
        };
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
