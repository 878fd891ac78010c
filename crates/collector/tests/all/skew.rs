//! Clock skew in the viewer: a node whose clock is ahead is drawn adjusted and marked, and
//! the raw times are one click (and the API) away.

use prost::Message;

use crate::harness::{collector, post, request, span};
use zerostate_collector::testing::{browser_or_skip, chromium};

/// A task's trace between a requester and an executor whose clock is `ahead_ms` ahead:
/// the requester's announcement received by the executor, its offer received back, the
/// hand-over run there.
fn skewed_trace(trace: u8, ahead_ms: u64) -> Vec<Vec<u8>> {
    let requester = vec![
        span(trace, 1, 0, "task.submit", 0, 200),
        span(trace, 2, 1, "p2p.gossip.publish", 1, 1),
        span(trace, 5, 4, "task.offer.receive", 8, 1),
        span(trace, 6, 1, "task.attempt", 10, 90),
    ];
    let executor = vec![
        span(trace, 3, 2, "guild.receive_message", ahead_ms + 3, 2),
        span(trace, 4, 3, "task.offer", ahead_ms + 4, 2),
        span(trace, 7, 6, "execution.task", ahead_ms + 12, 78),
    ];
    vec![
        request("edge-node-2", requester).encode_to_vec(),
        request("bootnode", executor).encode_to_vec(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_is_ahead_is_drawn_adjusted_and_marked() {
    let Some(bin) = browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(&dir.path().join("traces"), |_| {}).await;
    for body in skewed_trace(21, 3000)
        .into_iter()
        .chain(skewed_trace(22, 0))
    {
        let answer = post(&c, "application/x-protobuf", false, body).await;
        assert_eq!(answer.status(), 200);
    }
    let page = |trace: u8, query: &str| {
        let url = format!(
            "http://{}/trace/{}{query}",
            c.ui_addr,
            hex::encode([trace; 16])
        );
        let profile = dir.path().join(format!("profile-{trace}{}", query.len()));
        String::from_utf8_lossy(&chromium(&bin, &profile, "--dump-dom", &url)).into_owned()
    };
    // Its receive would start 3 s after the publish, its offer arrive back before it was
    // made: the executor's clock is 2.999 s ahead (the middle of what the pairs allow).
    let dom = page(21, "");
    assert!(
        dom.contains("data-skew-adjusted=\"true\""),
        "{}",
        &dom[..dom.len().min(3000)]
    );
    assert!(dom.contains("Clocks adjusted: bootnode +3.00s"), "{dom}");
    assert!(
        dom.contains("clock +3.00s, adjusted"),
        "the node is marked: {dom}"
    );
    // Drawn adjusted, the trace lasts its 200 ms, not the 3 s the raw times span.
    assert!(dom.contains("2 services, 200ms"), "{dom}");
    // The raw times on request.
    let raw = page(21, "?skew=off");
    assert!(raw.contains("data-skew-adjusted=\"false\""), "{raw}");
    assert!(
        raw.contains("Clocks disagree: bootnode +3.00s; raw times shown"),
        "{raw}"
    );
    assert!(raw.contains("2 services, 3.09s"), "{raw}");
    assert!(!raw.contains("clock +3.00s, adjusted"), "{raw}");
    // The same trace between clocks that agree: nothing adjusted, nothing said.
    let fair = page(22, "");
    assert!(fair.contains("data-skew-adjusted=\"false\""), "{fair}");
    assert!(
        !fair.contains("Clocks adjusted: bootnode") && !fair.contains("Clocks disagree: bootnode"),
        "{fair}"
    );
    // The API keeps the raw times.
    let api =
        crate::harness::get_ok(&c, &format!("/api/v3/traces/{}", hex::encode([21u8; 16]))).await;
    assert!(api.to_string().contains("1795611603003000000"), "{api}");
    c.shutdown().await;
}
