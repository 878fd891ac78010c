//! A node whose clock runs 3 s ahead (under libfaketime, as `faketime -f +3s` runs it) in a
//! real task's trace: the viewer draws its spans adjusted and marks it.

use std::path::Path;

use crate::cluster::{eventually, guild_cluster, stop_cleanly};
use crate::journey::{CONFIG, fund, member_with_env, run_task};

/// Debian's libfaketime for threaded programs (`apt-get install faketime`); only the wall
/// clock is moved (`DONT_FAKE_MONOTONIC`), as on a machine whose clock is off.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

#[test]
fn a_task_run_on_a_node_whose_clock_is_ahead_is_drawn_adjusted() {
    let Some(browser) = zerostate_collector::testing::browser_or_skip() else {
        return;
    };
    if !Path::new(LIBFAKETIME).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "libfaketime is missing: apt-get install faketime (scripts/test-deps.sh does)"
        );
        eprintln!("skipped: faketime is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut collector, otlp, ui) = crate::collector::start_collector(&dir.path().join("traces"));
    // The coordinator runs no tasks; member-1 submits; the only executor is 3 s ahead.
    let cluster = guild_cluster(dir.path(), CONFIG, 1, &otlp);
    let config = dir.path().join("cluster.toml");
    let ahead = member_with_env(
        dir.path(),
        (&cluster.coordinator, &cluster.id),
        "ahead",
        (&config, &otlp),
        &[],
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME", "+3s"),
            ("DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let requester = &cluster.members[0];
    fund(&cluster.coordinator, requester);
    eventually("the executor in the guild", || {
        (crate::guild::guild(&cluster.coordinator, &cluster.id)["members"]
            .as_array()?
            .len()
            == 3)
            .then_some(())
    });
    let topic = format!("/v1/p2p/mesh/zerostate%2Fguild%2F{}", cluster.id);
    eventually("the executor in the guild's mesh", || {
        let (status, body) = ahead.get(&topic);
        (status == 200 && body != "[]").then_some(())
    });
    // A joining node refuses, as replays, guild messages sent more than 2 s before it
    // joined by its own clock: 3 s ahead, it refuses what the others send in its first
    // second. Its offers are asked for after that.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let record = run_task(
        requester,
        &serde_json::json!({ "module": "builtin:crc32", "input": "zerostate" }),
    );
    assert_eq!(
        record["state"],
        "succeeded",
        "{record}\n{}",
        ahead.log_text()
    );
    assert_eq!(record["executor_name"], "ahead", "{record}");
    let trace = record["trace_id"].as_str().expect("a trace id").to_owned();
    // Both nodes' spans stored: the executor's run, and the requester's receipt check.
    let path = format!("/api/v3/traces/{trace}");
    eventually("the executor's spans in the collector", || {
        let (_, body) = crate::cluster::http(&ui, "GET", &path, None, &[]);
        (body.contains("\"ahead\"") && body.contains("execution.task")).then_some(())
    });
    let profile = dir.path().join("profile");
    // Drawn once: a trace this recent is otherwise read again as it grows.
    let url = format!("{ui}/trace/{trace}?polls=0");
    let dom = String::from_utf8_lossy(&zerostate_collector::testing::chromium(
        &browser,
        &profile,
        "--dump-dom",
        &url,
    ))
    .into_owned();
    assert!(
        dom.contains("data-skew-adjusted=\"true\""),
        "{}",
        &dom[..dom.len().min(3000)]
    );
    // The estimate: 3 s, give or take the messages' latency on loopback.
    let said = dom
        .split("Clocks adjusted: ahead +")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no adjustment named: {dom}"));
    assert!((2.9..=3.1).contains(&said), "{said} s: {dom}");
    eprintln!("the viewer estimated the executor's clock {said} s ahead");
    assert!(dom.contains("clock +"), "the node's rows are marked: {dom}");
    stop_cleanly(vec![ahead]);
    stop_cleanly(cluster.members);
    stop_cleanly(vec![cluster.coordinator]);
    let _ = collector.kill();
    let _ = collector.wait();
}
