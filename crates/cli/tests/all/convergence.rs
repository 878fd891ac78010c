//! Five `zerostate node` processes in one guild: every member reads every other member's
//! messages; a member whose membership updates are all lost catches up by itself within
//! two heartbeat intervals; a member killed and restarted is heard again at once.

use std::time::{Duration, Instant};

use zerostate_telemetry::testing::OtlpReceiver;

use crate::cluster::{NodeProcess, eventually, guild_coordinator};
use crate::guild::{guild, invitation, messages};

const HEARTBEAT_MS: u64 = 1000;

fn version(node: &NodeProcess, id: &str) -> Option<u64> {
    guild(node, id)["version"].as_u64()
}

fn send(node: &NodeProcess, id: &str, body: &str) {
    let (status, answer) = node.post(
        &format!("/v1/guilds/{id}/messages"),
        &serde_json::json!({ "type": "note", "payload": body }),
        &[],
    );
    assert_eq!(status, 200, "{}: {answer}", node.name);
}

/// Waits until every node in `readers` has opened a message `body`.
fn read_by_all(readers: &[&NodeProcess], id: &str, body: &str) {
    for n in readers {
        eventually(&format!("{} to read {body:?}", n.name), || {
            messages(n, id).iter().any(|m| m == body).then_some(())
        });
    }
}

#[test]
fn five_processes_converge_after_lost_updates_and_a_restart() {
    let receiver = OtlpReceiver::start();
    let otlp = receiver.endpoint();
    let dir = tempfile::tempdir().expect("tempdir");
    let (coordinator, id, config) = guild_coordinator(
        dir.path(),
        "coordinator",
        &format!("[guild]\nheartbeat_interval_ms = {HEARTBEAT_MS}\nmissed_heartbeats = 5\n"),
        "five",
        &otlp,
    );
    let listen = "/ip4/127.0.0.1/tcp/0";
    let boot = coordinator.tcp_address();
    let target = format!("{id}@{boot}");
    let member_args = |invitation: &str| -> Vec<String> {
        [
            "--listen",
            listen,
            "--bootstrap",
            &boot,
            "--config",
            &config,
            "--join-guild",
            &target,
            "--invitation",
            invitation,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let start = |name: &str, extra: &[&str]| {
        let args = member_args(&invitation(&coordinator, &id));
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        let kept: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        args.extend_from_slice(extra);
        (NodeProcess::start(dir.path(), name, &args, &otlp), kept)
    };
    // member-3 never applies a membership update from the topic: it learns of every change
    // only by catching up with the coordinator.
    let (m1, m1_args) = start("member-1", &[]);
    let (m2, _) = start("member-2", &[]);
    let (m3, _) = start("member-3", &["--misbehave", "withhold-membership"]);
    eventually("four members at the coordinator", || {
        (guild(&coordinator, &id)["members"].as_array()?.len() == 4).then_some(())
    });

    // A fifth joins while member-3 hears none of it.
    let (m4, _) = start("member-4", &[]);
    let v5 = eventually("the coordinator at five members", || {
        let g = guild(&coordinator, &id);
        (g["members"].as_array()?.len() == 5).then(|| g["version"].as_u64())?
    });
    let admitted = Instant::now();
    eventually("member-3 at the coordinator's version", || {
        (version(&m3, &id)? >= v5).then_some(())
    });
    let caught_up = admitted.elapsed();
    eprintln!("member-3 caught up {caught_up:?} after the fifth member was admitted");
    // Two heartbeat intervals, plus what polling and five processes on two cores add.
    assert!(
        caught_up < Duration::from_millis(2 * HEARTBEAT_MS + 1500),
        "member-3 took {caught_up:?} to catch up"
    );
    let (_, stats) = m3.get("/v1/guilds/stats");
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("json");
    assert!(stats["syncs"].as_u64() >= Some(1), "{stats}");

    // Every member sends; every other member opens every message.
    let all = [&coordinator, &m1, &m2, &m3, &m4];
    for n in all {
        eventually(&format!("{} on version {v5}", n.name), || {
            (version(n, &id)? >= v5).then_some(())
        });
    }
    for sender in all {
        let body = format!("hello from {}", sender.name);
        send(sender, &id, &body);
        let others: Vec<&NodeProcess> = all
            .iter()
            .copied()
            .filter(|n| n.name != sender.name)
            .collect();
        read_by_all(&others, &id, &body);
    }

    // member-1 crashes and comes back with the same identity: its new messages are
    // accepted at once, not refused as replays of its earlier ones.
    let m1_name = m1.name.clone();
    m1.kill();
    let args: Vec<&str> = m1_args.iter().map(String::as_str).collect();
    let m1 = NodeProcess::start(dir.path(), &m1_name, &args, &otlp);
    eventually("member-1 back in the guild", || {
        (guild(&m1, &id)["status"] == "member").then_some(())
    });
    send(&m1, &id, "member-1 is back");
    read_by_all(&[&coordinator, &m2, &m3, &m4], &id, "member-1 is back");
    for n in [&coordinator, &m2, &m3, &m4] {
        let (_, stats) = n.get("/v1/guilds/stats");
        let stats: serde_json::Value = serde_json::from_str(&stats).expect("json");
        assert_eq!(stats["rejected_replayed"], 0, "{}: {stats}", n.name);
    }

    crate::cluster::stop_cleanly(vec![m1, m2, m3, m4, coordinator]);
}
