//! Tasks across real `zerostate node` processes: submitted on one node, run on another,
//! the receipt checked, all in one trace; and what happens when executors fail.

use std::collections::HashSet;

use zerostate_telemetry::testing::OtlpReceiver;

use crate::cluster::{GuildCluster, NodeProcess, eventually, guild_cluster, hex};

const CONFIG: &str = "[guild]\nheartbeat_interval_ms = 500\nmissed_heartbeats = 6\n";

/// Submits `body` on `node` and waits for the task's final record.
fn run_task(node: &NodeProcess, body: &serde_json::Value) -> serde_json::Value {
    let (status, answer) = node.post("/v1/tasks", body, &[]);
    assert_eq!(status, 202, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
    let id = answer["task_id"].as_str().expect("task id").to_owned();
    eventually(&format!("task {id} to end"), || {
        let (_, record) = node.get(&format!("/v1/tasks/{id}"));
        let record: serde_json::Value = serde_json::from_str(&record).ok()?;
        matches!(
            record["state"].as_str()?,
            "succeeded" | "failed" | "undelivered"
        )
        .then_some(record)
    })
}

fn output(record: &serde_json::Value) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(record["output"].as_str().expect("output"))
        .expect("base64");
    String::from_utf8(bytes).expect("text")
}

#[test]
fn a_task_submitted_on_one_node_runs_on_another_in_one_trace() {
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let GuildCluster {
        coordinator,
        members,
        id,
    } = guild_cluster(dir.path(), CONFIG, 2, &receiver.endpoint());
    let requester = &members[0];
    let record = run_task(
        requester,
        &serde_json::json!({ "module": "builtin:primes", "input": "1000000" }),
    );
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(output(&record), "78498\n");
    let executor = record["executor"].as_str().expect("executor");
    assert_ne!(executor, requester.peer_id, "run on another member");
    let receipt = &record["receipt"];
    assert_eq!(receipt["executor"], executor);
    assert_eq!(receipt["trace_id"], record["trace_id"]);
    assert!(receipt["fuel_consumed"].as_u64() > Some(0));
    assert_eq!(record["guild"], id.as_str());

    // One trace: no orphan, spans from three processes, the journey's spans.
    let trace = record["trace_id"].as_str().expect("trace").to_owned();
    let names = [
        "task.submit",
        "guild.send_message",
        "p2p.message.guild_message",
        "guild.receive_message",
        "task.offer",
        "p2p.message.task_offer",
        "task.attempt",
        "p2p.message.task_run",
        "execution.task",
        "execution.manifest.validate",
        "execution.wasm.compile",
        "execution.wasm.instantiate",
        "execution.wasm.execute",
        "execution.receipt.generate",
        "execution.resources.measure",
    ];
    let spans = eventually("the journey's spans exported", || {
        let spans: Vec<_> = receiver
            .spans()
            .into_iter()
            .filter(|s| hex(&s.span.trace_id) == trace)
            .collect();
        let have: HashSet<&str> = spans.iter().map(|s| s.span.name.as_str()).collect();
        names.iter().all(|n| have.contains(n)).then_some(spans)
    });
    let ids: HashSet<Vec<u8>> = spans.iter().map(|s| s.span.span_id.clone()).collect();
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| s.span.parent_span_id.is_empty())
        .map(|s| s.span.name.clone())
        .collect();
    assert_eq!(roots, ["POST /v1/tasks"], "one root");
    for s in &spans {
        assert!(
            s.span.parent_span_id.is_empty() || ids.contains(&s.span.parent_span_id),
            "{} @ {} is an orphan",
            s.span.name,
            s.service
        );
    }
    let services: HashSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    assert!(services.len() >= 3, "{services:?}");
    let ran_on = spans
        .iter()
        .find(|s| s.span.name == "execution.task")
        .expect("execution.task");
    assert_ne!(ran_on.service, requester.name);

    crate::cluster::stop_cleanly(members.into_iter().chain([coordinator]).collect());
}

#[test]
fn a_killed_executor_costs_an_attempt_and_nobody_offering_ends_undelivered() {
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let GuildCluster {
        coordinator,
        mut members,
        ..
    } = guild_cluster(dir.path(), CONFIG, 2, &receiver.endpoint());
    // Nobody runs tasks for nothing: undelivered, with the reason.
    let record = run_task(
        &members[0],
        &serde_json::json!({ "module": "builtin:primes", "input": "10", "max_price": 0 }),
    );
    assert_eq!(record["state"], "undelivered", "{record}");
    assert!(
        record["error"].as_str().expect("error").contains("offered"),
        "{record}"
    );

    // A long task; its first executor is killed while it runs.
    let (status, answer) = members[0].post(
        "/v1/tasks",
        &serde_json::json!({
            "module": "builtin:primes",
            "input": "100000000",
            "limits": { "memory_bytes": 134217728 },
        }),
        &[],
    );
    assert_eq!(status, 202, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
    let id = answer["task_id"].as_str().expect("id").to_owned();
    let first = eventually("the task running", || {
        let (_, record) = members[0].get(&format!("/v1/tasks/{id}"));
        let record: serde_json::Value = serde_json::from_str(&record).ok()?;
        (record["state"] == "running")
            .then(|| record["executor"].as_str().map(str::to_owned))
            .flatten()
    });
    // Whoever got it first (the coordinator or the other member) dies with SIGKILL.
    let mut nodes: Vec<NodeProcess> = members.drain(1..).chain([coordinator]).collect();
    let at = nodes
        .iter()
        .position(|n| n.peer_id == first)
        .expect("the executor is one of the nodes");
    nodes.remove(at).kill();
    let record = eventually("the task to end", || {
        let (_, record) = members[0].get(&format!("/v1/tasks/{id}"));
        let record: serde_json::Value = serde_json::from_str(&record).ok()?;
        matches!(
            record["state"].as_str()?,
            "succeeded" | "failed" | "undelivered"
        )
        .then_some(record)
    });
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(output(&record), "5761455\n");
    let attempts = record["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{record}");
    assert_eq!(attempts[0]["executor"], first.as_str());
    assert_ne!(attempts[0]["outcome"], "delivered", "{record}");
    assert_ne!(record["executor"], first.as_str());
    let trace = record["trace_id"].as_str().expect("trace").to_owned();
    eventually("the failed attempt as an error span", || {
        receiver
            .spans()
            .iter()
            .any(|s| {
                hex(&s.span.trace_id) == trace
                    && s.span.name == "task.attempt"
                    && s.span.status.as_ref().is_some_and(|st| st.code == 2)
            })
            .then_some(())
    });
    crate::cluster::stop_cleanly(members.into_iter().chain(nodes).collect());
}
