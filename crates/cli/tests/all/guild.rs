//! A guild of `zerostate node` processes: created and joined from the command line, its
//! messages readable by members only, its key rotated when a member leaves, a member
//! killed with SIGKILL noticed by heartbeats, and a member removed by hand
//! (`zerostate guild remove`).

use std::time::{Duration, Instant};

use zerostate_telemetry::testing::OtlpReceiver;

use crate::cluster::{NodeProcess, eventually, guild_coordinator, hex};

/// The node's view of the guild; `Null` while it is not in it yet.
pub(crate) fn guild(node: &NodeProcess, id: &str) -> serde_json::Value {
    let (status, body) = node.get(&format!("/v1/guilds/{id}"));
    if status == 404 {
        return serde_json::Value::Null;
    }
    assert_eq!(status, 200, "{}: {body}", node.name);
    serde_json::from_str(&body).expect("json")
}

/// A single-use invitation to guild `id`, signed by its coordinator.
pub(crate) fn invitation(coordinator: &NodeProcess, id: &str) -> String {
    let (status, body) = coordinator.post(
        &format!("/v1/guilds/{id}/invitations"),
        &serde_json::json!({ "ttl_s": 600 }),
        &[],
    );
    assert_eq!(status, 201, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
    body["invitation"].as_str().expect("invitation").to_owned()
}

pub(crate) fn messages(node: &NodeProcess, id: &str) -> Vec<String> {
    let (_, body) = node.get(&format!("/v1/guilds/{id}/messages"));
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).expect("json");
    list.iter()
        .map(|m| m["body"].as_str().expect("body").to_owned())
        .collect()
}

#[test]
fn a_guild_of_processes_keeps_its_secrets_and_notices_a_killed_member() {
    let receiver = OtlpReceiver::start();
    let otlp = receiver.endpoint();
    let dir = tempfile::tempdir().expect("tempdir");
    // Heartbeats every 500 ms, down after 4 missed: a 2 s window, wide enough that nine
    // processes sharing two cores do not miss it, short enough for a test.
    let (coordinator, id, config) = guild_coordinator(
        dir.path(),
        "guild-coordinator",
        "[guild]\nheartbeat_interval_ms = 500\nmissed_heartbeats = 4\n",
        "render farm",
        &otlp,
    );
    let listen = "/ip4/127.0.0.1/tcp/0";
    let coordinator_addr = coordinator.tcp_address();
    let target = format!("{id}@{coordinator_addr}");
    let members: Vec<NodeProcess> = (1..=3)
        .map(|i| {
            NodeProcess::start(
                dir.path(),
                &format!("guild-member-{i}"),
                &[
                    "--listen",
                    listen,
                    "--bootstrap",
                    &coordinator_addr,
                    "--config",
                    &config,
                    "--join-guild",
                    &target,
                    "--invitation",
                    &invitation(&coordinator, &id),
                ],
                &otlp,
            )
        })
        .collect();
    let outsider = NodeProcess::start(
        dir.path(),
        "outsider",
        &[
            "--listen",
            listen,
            "--bootstrap",
            &coordinator_addr,
            "--config",
            &config,
        ],
        &otlp,
    );
    let (status, body) = outsider.post(
        &format!("/v1/guilds/{id}/watch"),
        &serde_json::json!({}),
        &[],
    );
    assert_eq!(status, 204, "{body}");

    eventually("four members everywhere", || {
        let all = std::iter::once(&coordinator).chain(&members).all(|n| {
            guild(n, &id)["members"]
                .as_array()
                .is_some_and(|m| m.len() == 4)
        });
        all.then_some(())
    });
    let topic = format!("zerostate%2Fguild%2F{id}");
    for n in members.iter().chain([&outsider]) {
        eventually(&format!("{} in the guild's mesh", n.name), || {
            let (status, body) = n.get(&format!("/v1/p2p/mesh/{topic}"));
            (status == 200 && body != "[]").then_some(())
        });
    }

    // One member's message opens on every other member, in the sender's trace.
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let (status, body) = members[0].post(
        &format!("/v1/guilds/{id}/messages"),
        &serde_json::json!({ "type": "note", "payload": "frame 1" }),
        &[("traceparent", &format!("00-{trace_id}-b7ad6b7169203331-01"))],
    );
    assert_eq!(status, 200, "{body}");
    for n in [&coordinator, &members[1], &members[2]] {
        eventually(&format!("{} to read the message", n.name), || {
            messages(n, &id)
                .contains(&"frame 1".to_owned())
                .then_some(())
        });
    }
    let (send, receivers) = eventually("guild.send_message and three receive children", || {
        let spans = receiver.spans();
        let send = spans.iter().find(|s| {
            s.service == "guild-member-1"
                && s.span.name == "guild.send_message"
                && hex(&s.span.trace_id) == trace_id
        })?;
        let mut receivers: Vec<String> = spans
            .iter()
            .filter(|s| {
                s.span.name == "guild.receive_message" && s.span.parent_span_id == send.span.span_id
            })
            .map(|s| s.service.clone())
            .collect();
        receivers.sort();
        (receivers.len() == 3).then(|| (send.clone(), receivers))
    });
    assert_eq!(
        receivers,
        ["guild-coordinator", "guild-member-2", "guild-member-3"]
    );
    assert_eq!(send.attribute("guild.id").as_deref(), Some(id.as_str()));

    // The outsider sees ciphertext only, and its spans stay out of the guild's trace.
    let seen = eventually("the outsider to see the ciphertext", || {
        let g = guild(&outsider, &id);
        (g["ciphertexts_seen"].as_u64()? >= 1).then_some(g)
    });
    assert_eq!(seen["undecryptable"], seen["ciphertexts_seen"]);
    assert!(messages(&outsider, &id).is_empty());
    assert!(
        receiver
            .spans()
            .iter()
            .filter(|s| s.service == "outsider")
            .all(|s| hex(&s.span.trace_id) != trace_id),
        "the outsider's spans must not join the guild's trace"
    );

    // A member leaves: the key rotates and it cannot read what follows.
    let epoch = guild(&coordinator, &id)["key_epoch"]
        .as_u64()
        .expect("epoch");
    let leaver = &members[2];
    let (status, body) = leaver.post(
        &format!("/v1/guilds/{id}/leave"),
        &serde_json::json!({}),
        &[],
    );
    assert_eq!(status, 204, "{body}");
    eventually("the remaining members on the new key", || {
        let e = guild(&coordinator, &id)["key_epoch"].as_u64()?;
        let all = e > epoch
            && members[..2]
                .iter()
                .all(|m| guild(m, &id)["key_epoch"].as_u64() == Some(e));
        all.then_some(())
    });
    let before = guild(leaver, &id);
    assert_eq!(before["status"], "left");
    let (status, body) = members[1].post(
        &format!("/v1/guilds/{id}/messages"),
        &serde_json::json!({ "type": "note", "payload": "frame 2" }),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    for n in [&coordinator, &members[0]] {
        eventually(&format!("{} to read frame 2", n.name), || {
            messages(n, &id)
                .contains(&"frame 2".to_owned())
                .then_some(())
        });
    }
    eventually("the leaver to see and fail to open frame 2", || {
        let g = guild(leaver, &id);
        (g["undecryptable"].as_u64()? > before["undecryptable"].as_u64()?).then_some(())
    });
    assert!(!messages(leaver, &id).contains(&"frame 2".to_owned()));

    // A member killed with SIGKILL is marked down and removed within the heartbeat window.
    let mut members = members;
    let killed = members.remove(1);
    let killed_id = killed.peer_id.clone();
    let t = Instant::now();
    killed.kill();
    eventually("the killed member removed", || {
        let gone = |n: &NodeProcess| {
            guild(n, &id)["members"]
                .as_array()
                .is_some_and(|m| m.iter().all(|m| m["peer_id"] != killed_id.as_str()))
        };
        (gone(&coordinator) && gone(&members[0])).then_some(())
    });
    let took = t.elapsed();
    // The window is 2 s; the check runs on the next heartbeat (500 ms), and the removal
    // then travels as a membership update.
    assert!(
        took < Duration::from_millis(2000 + 500 + 2500),
        "took {took:?}"
    );
    let (_, stats) = coordinator.get("/v1/guilds/stats");
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("json");
    assert!(stats["members_marked_down"].as_u64() >= Some(1), "{stats}");

    // The coordinator's operator removes the last member by hand, from the command line:
    // the reason reaches the member, the key rotates.
    let epoch = guild(&coordinator, &id)["key_epoch"]
        .as_u64()
        .expect("epoch");
    let (status, body) = crate::cluster::http(
        &coordinator.api,
        "DELETE",
        &format!("/v1/guilds/{id}/members/{}", outsider.peer_id),
        None,
        &[("authorization", &format!("Bearer {}", coordinator.token))],
    );
    assert_eq!(status, 404, "not a member: {body}");
    let removed = &members[0];
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_zerostate"))
        .args([
            "guild",
            "remove",
            &id,
            &removed.peer_id,
            "--reason",
            "kept the GPU busy",
        ])
        .args(["--api", coordinator.api.trim_start_matches("http://")])
        .arg("--data-dir")
        .arg(dir.path().join("guild-coordinator"))
        .output()
        .expect("zerostate guild remove runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let after: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the guild");
    assert!(after["key_epoch"].as_u64() > Some(epoch), "{after}");
    assert!(
        after["members"]
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["peer_id"] != removed.peer_id.as_str())),
        "{after}"
    );
    let told = eventually("the member to learn why it was removed", || {
        let g = guild(removed, &id);
        (g["status"] == "removed").then_some(g)
    });
    assert!(
        told["reason"]
            .as_str()
            .is_some_and(|r| r.contains("kept the GPU busy")),
        "{told}"
    );

    crate::cluster::stop_cleanly(members.into_iter().chain([outsider, coordinator]).collect());
}

#[test]
fn a_member_says_coordinator_handover_until_its_successor_takes_over() {
    let receiver = OtlpReceiver::start();
    let otlp = receiver.endpoint();
    let dir = tempfile::tempdir().expect("tempdir");
    // Down after 3 s; the second successor's slot is one interval (1 s) more.
    let (coordinator, id, config) = guild_coordinator(
        dir.path(),
        "coordinator",
        "[guild]\nheartbeat_interval_ms = 1000\nmissed_heartbeats = 3\n",
        "handover",
        &otlp,
    );
    let listen = "/ip4/127.0.0.1/tcp/0";
    let boot = coordinator.tcp_address();
    // One after the other, so that the first is the first successor.
    let join = |name: &str| {
        let node = NodeProcess::start(
            dir.path(),
            name,
            &[
                "--listen",
                listen,
                "--bootstrap",
                &boot,
                "--config",
                &config,
                "--join-guild",
                &format!("{id}@{boot}"),
                "--invitation",
                &invitation(&coordinator, &id),
            ],
            &otlp,
        );
        eventually(&format!("{name} in the guild"), || {
            (guild(&node, &id)["status"] == "member").then_some(())
        });
        node
    };
    let first = join("first");
    let second = join("second");
    let third = join("third");
    eventually("the successors named in order", || {
        let view = guild(&second, &id);
        (view["successors"] == serde_json::json!([first.peer_id, second.peer_id, third.peer_id]))
            .then_some(())
    });
    // As once the DHT has run: the members reach each other, not only the coordinator.
    let (status, body) = second.post(
        "/v1/p2p/dial",
        &serde_json::json!({ "address": third.tcp_address() }),
        &[],
    );
    assert!(status < 300, "{status} {body}");
    let (status, ready) = crate::operations::readiness(&second);
    assert_eq!(status, 200, "{ready}");

    // The coordinator and the first successor gone at once: the second (hearing the third,
    // half of the others) waits out the first's slot, and says why it is not ready
    // meanwhile.
    let second_peer = second.peer_id.clone();
    coordinator.kill();
    first.kill();
    let start = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    while start.elapsed() < Duration::from_secs(20) {
        let (status, answer) = crate::operations::readiness(&second);
        let said = format!(
            "{status} {}",
            crate::operations::component(&answer, "guild")
        );
        if seen.last() != Some(&said) {
            seen.push(said);
        }
        if guild(&second, &id)["status"] == "coordinator" && status == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(
        seen.iter()
            .any(|s| s == "503 not ready: coordinator handover"),
        "{seen:?}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("200 ok"), "{seen:?}");
    let view = guild(&second, &id);
    assert_eq!(view["coordinator"], second_peer.as_str(), "{view}");
    assert_eq!(view["term"], 1, "{view}");
    assert_eq!(view["handover"], false, "{view}");
}
