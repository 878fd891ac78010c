//! Tasks across real `zerostate node` processes: submitted on one node, run on another,
//! the receipt checked, all in one trace; and what happens when executors fail.

use std::collections::HashSet;

use zerostate_telemetry::testing::OtlpReceiver;

use crate::cluster::{GuildCluster, NodeProcess, eventually, guild_cluster, hex};

/// Heartbeats every 500 ms, a member removed only after 10 s of silence (a requester
/// waiting on a stalled executor while another test loads both cores once went quiet for
/// 3 s and was removed); offers collected for up to 10 s, 3 s after the first (a
/// member's first offer dials the requester, which takes a while when a dozen processes
/// share two cores); requests may take 30 s (a task run by a starved executor); a
/// unilateral close may be disputed for 3 s; an executor has 10 s past a task's wall time
/// to answer (a debug build compiling a module while a dozen processes share two cores).
pub(crate) const CONFIG: &str = "[network]\nrequest_timeout_ms = 30000\n\
                      [guild]\nheartbeat_interval_ms = 500\nmissed_heartbeats = 20\n\
                      [payments]\nchallenge_period_s = 3\n\
                      [tasks]\noffer_window_ms = 10000\noffer_grace_ms = 3000\n\
                      timeout_margin_ms = 10000\n";

/// Submits `body` on `node` and waits for the task's final record.
pub(crate) fn run_task(node: &NodeProcess, body: &serde_json::Value) -> serde_json::Value {
    let (status, answer) = node.post("/v1/tasks", body, &[]);
    assert_eq!(status, 202, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
    let id = answer["task_id"].as_str().expect("task id").to_owned();
    eventually(&format!("task {id} to end"), || {
        let (_, record) = node.get(&format!("/v1/tasks/{id}"));
        let record: serde_json::Value = serde_json::from_str(&record).ok()?;
        matches!(record["state"].as_str()?, "succeeded" | "failed").then_some(record)
    })
}

/// Starts `name`, which joins `guild` (its coordinator, which runs the ledger, and its
/// id) with settings file `config`, misbehaving as `misbehave` says (`--misbehave`).
pub(crate) fn member_with(
    dir: &std::path::Path,
    guild: (&NodeProcess, &str),
    name: &str,
    config: &std::path::Path,
    otlp: &str,
    misbehave: &[&str],
) -> NodeProcess {
    member_with_env(dir, guild, name, (config, otlp), misbehave, &[])
}

/// [`member_with`] with extra environment variables (`env`).
pub(crate) fn member_with_env(
    dir: &std::path::Path,
    (coordinator, id): (&NodeProcess, &str),
    name: &str,
    (config, otlp): (&std::path::Path, &str),
    misbehave: &[&str],
    env: &[(&str, &str)],
) -> NodeProcess {
    let bootstrap = coordinator.tcp_address();
    let config = config.to_string_lossy();
    let join = format!("{id}@{bootstrap}");
    let invitation = crate::guild::invitation(coordinator, id);
    let mut args = vec![
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--bootstrap",
        &bootstrap,
        "--config",
        &config,
        "--join-guild",
        &join,
        "--invitation",
        &invitation,
        "--ledger-peer",
        &coordinator.peer_id,
    ];
    for item in misbehave {
        args.extend(["--misbehave", item]);
    }
    NodeProcess::start_with_env(dir, name, &args, otlp, env)
}

/// Counts to 300 million (about a second of work, 1.2 billion fuel), then prints `done`.
const SPIN: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "done\n")
  (func (export "_start") (local $i i32)
    (loop $spin
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $spin (i32.lt_u (local.get $i) (i32.const 300000000))))
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 5))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// Submits [`SPIN`] on `node` and waits until an executor runs it: the task's id and the
/// executor's peer id.
fn spin_until_running(node: &NodeProcess) -> (String, String) {
    use base64::Engine as _;
    let (status, answer) = node.post(
        "/v1/tasks",
        &serde_json::json!({
            "module": { "base64": base64::engine::general_purpose::STANDARD.encode(SPIN) },
        }),
        &[],
    );
    assert_eq!(status, 202, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
    let id = answer["task_id"].as_str().expect("id").to_owned();
    let executor = eventually("the task running", || {
        let (_, record) = node.get(&format!("/v1/tasks/{id}"));
        let record: serde_json::Value = serde_json::from_str(&record).ok()?;
        (record["state"] == "running")
            .then(|| record["executor"].as_str().map(str::to_owned))
            .flatten()
    });
    (id, executor)
}

/// The devnet faucet of the ledger node credits `node`'s account.
pub(crate) fn fund(ledger: &NodeProcess, node: &NodeProcess) {
    let (status, body) = ledger.post(
        "/v1/ledger/faucet",
        &serde_json::json!({ "peer_id": node.peer_id, "amount": 10_000_000 }),
        &[],
    );
    assert_eq!(status, 200, "{body}");
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
    fund(&coordinator, requester);
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
    // Asked with a wait, a final record is answered at once; a wait longer than a request
    // may last is refused, saying so.
    let task = record["id"].as_str().expect("id");
    let asked = std::time::Instant::now();
    let (status, waited) = requester.get(&format!("/v1/tasks/{task}?wait_ms=20000"));
    assert_eq!(status, 200, "{waited}");
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(10),
        "it waited"
    );
    let waited: serde_json::Value = serde_json::from_str(&waited).expect("json");
    assert_eq!(waited["state"], "succeeded", "{waited}");
    let (status, refused) = requester.get(&format!("/v1/tasks/{task}?wait_ms=30001"));
    assert_eq!(status, 400, "{refused}");
    assert!(refused.contains("wait_ms = 30001"), "{refused}");

    // Paid for the fuel the receipt states, at the executor's price (1 per million).
    let fuel = receipt["fuel_consumed"].as_u64().expect("fuel");
    let owed = fuel.div_ceil(1_000_000);
    let payment = &record["payment"];
    assert_eq!(payment["status"], "paid", "{record}");
    assert_eq!(payment["amount"], owed);
    let channel = payment["channel"].as_str().expect("channel").to_owned();
    // The executor acknowledged the state only once it was on disk: its channel says so.
    let executor_node = std::iter::once(&coordinator)
        .chain(&members)
        .find(|n| n.peer_id == executor)
        .expect("the executor is one of the nodes");
    // The record names the executor as it named itself, for the user to read.
    assert_eq!(
        record["executor_name"],
        executor_node.name.as_str(),
        "{record}"
    );
    assert_eq!(
        record["attempts"][0]["executor_name"],
        executor_node.name.as_str()
    );
    let (_, channels) = executor_node.get("/v1/channels");
    let channels: serde_json::Value = serde_json::from_str(&channels).expect("json");
    let held = channels
        .as_array()
        .expect("channels")
        .iter()
        .find(|c| c["id"] == channel.as_str() && c["side"] == "payee")
        .expect("the executor holds the channel");
    assert_eq!(held["cumulative"], owed);
    assert_eq!(held["nonce"], 1);
    // Money and work point at each other: both sides' history of the channel names the
    // receipt the task record says was paid for.
    let paid_for = payment["receipt"].as_str().expect("receipt hash");
    assert_eq!(paid_for.len(), 64);
    for (node, side) in [(executor_node, "payee"), (requester, "payer")] {
        let (status, history) = node.get(&format!("/v1/channels/{channel}"));
        assert_eq!(status, 200, "{history}");
        let history: serde_json::Value = serde_json::from_str(&history).expect("json");
        assert_eq!(history["side"], side);
        let payments = history["payments"].as_array().expect("payments");
        assert_eq!(payments.len(), 1, "{history}");
        assert_eq!(payments[0]["receipt"], paid_for);
        assert_eq!(payments[0]["amount"], owed);
    }
    // A cooperative close settles the right amounts on the ledger.
    let (status, settled) = requester.post(
        &format!("/v1/channels/{channel}/close"),
        &serde_json::json!({}),
        &[],
    );
    assert_eq!(status, 200, "{settled}");
    let settled: serde_json::Value = serde_json::from_str(&settled).expect("json");
    assert_eq!(settled["to_payee"], owed);
    assert_eq!(settled["to_payer"], 1_000_000 - owed);

    // A settled channel takes no more payments: the next task is paid on a new one.
    let next = run_task(
        requester,
        &serde_json::json!({ "module": "builtin:primes", "input": "1000" }),
    );
    assert_eq!(next["payment"]["status"], "paid", "{next}");
    let second = next["payment"]["channel"]
        .as_str()
        .expect("channel")
        .to_owned();
    assert_ne!(second, channel, "{next}");
    // The executor settles it unilaterally; the payer has no higher state to dispute
    // with; after the challenge window anyone pays it out, the executor's amount intact.
    let payee = std::iter::once(&coordinator)
        .chain(&members)
        .find(|n| next["executor"] == n.peer_id.as_str())
        .expect("the executor is one of the nodes");
    let (status, closing) = payee.post(
        &format!("/v1/channels/{second}/close"),
        &serde_json::json!({ "unilateral": true }),
        &[],
    );
    assert_eq!(status, 200, "{closing}");
    assert!(closing.contains("challenge_ends"), "{closing}");
    let (status, refused) = requester.post(
        &format!("/v1/channels/{second}/dispute"),
        &serde_json::json!({}),
        &[],
    );
    assert_eq!(status, 502, "{refused}");
    let settled = eventually("the challenge window to end", || {
        let (status, settled) = requester.post(
            &format!("/v1/channels/{second}/finalize"),
            &serde_json::json!({}),
            &[],
        );
        (status == 200).then_some(settled)
    });
    let settled: serde_json::Value = serde_json::from_str(&settled).expect("json");
    assert_eq!(settled["to_payee"], next["payment"]["amount"], "{settled}");

    // Someone outside the guild cannot hand the executor work.
    let outsider = NodeProcess::start(
        dir.path(),
        "outsider",
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            &coordinator.tcp_address(),
        ],
        &receiver.endpoint(),
    );
    let run = serde_json::json!({
        "task_id": "x",
        "module": { "builtin": "primes" },
        "input": "",
        "limits": {},
    });
    let (status, refused) = outsider.post(
        "/v1/p2p/request",
        &serde_json::json!({
            "peer": executor,
            "addresses": executor_node.listen.clone(),
            "type": "task_run",
            "payload": run.to_string(),
        }),
        &[],
    );
    assert_eq!(status, 502, "{refused}");
    assert!(refused.contains("only members"), "{refused}");

    // A module uploaded once runs by its hash; the second time only the hash travels.
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "hi")
      (func (export "_start")
        (i32.store (i32.const 0) (i32.const 16))
        (i32.store (i32.const 4) (i32.const 2))
        (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
    let auth = format!("Bearer {}", requester.token);
    let (status, uploaded) = crate::cluster::http(
        &requester.api,
        "POST",
        "/v1/modules",
        Some(wat),
        &[("authorization", &auth)],
    );
    assert_eq!(status, 201, "{uploaded}");
    let uploaded: serde_json::Value = serde_json::from_str(&uploaded).expect("json");
    let sha256 = uploaded["sha256"].as_str().expect("sha256").to_owned();
    for sent in [true, false] {
        let run = run_task(
            requester,
            &serde_json::json!({ "module": { "sha256": sha256 } }),
        );
        assert_eq!(run["state"], "succeeded", "{run}");
        assert_eq!(output(&run), "hi");
        assert_eq!(run["receipt"]["module_sha256"], sha256.as_str());
        let attempts = run["attempts"].as_array().expect("attempts");
        assert_eq!(attempts[attempts.len() - 1]["module_sent"], sent, "{run}");
    }

    // One trace: no orphan, spans from three processes, the journey's spans.
    let trace = record["trace_id"].as_str().expect("trace").to_owned();
    let names = [
        "task.submit",
        "payment.flow",
        "payment.channel.open",
        "payment.transaction",
        "payment.signature.sign",
        "payment.verify",
        "guild.send_message",
        "p2p.message.task_request",
        "p2p.gossip.publish",
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
    // The task ran on another node; the requester's own run, if any, is a spot check's.
    let runs: Vec<_> = spans
        .iter()
        .filter(|s| s.span.name == "execution.task")
        .collect();
    assert!(
        runs.iter().any(|s| s.service != requester.name),
        "no execution.task on an executor"
    );
    for run in runs.iter().filter(|s| s.service == requester.name) {
        let parent = spans
            .iter()
            .find(|p| p.span.span_id == run.span.parent_span_id)
            .expect("the rerun's parent");
        assert_eq!(parent.span.name, "task.verify");
    }

    crate::cluster::stop_cleanly(members.into_iter().chain([coordinator, outsider]).collect());
}

#[test]
fn a_killed_executor_costs_an_attempt_and_nobody_offering_ends_failed() {
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let GuildCluster {
        coordinator,
        mut members,
        ..
    } = guild_cluster(dir.path(), CONFIG, 3, &receiver.endpoint());
    fund(&coordinator, &members[0]);
    // Nobody runs tasks for nothing: failed, with no receipt and the reason.
    let record = run_task(
        &members[0],
        &serde_json::json!({ "module": "builtin:primes", "input": "10", "max_price": 0 }),
    );
    assert_eq!(record["state"], "failed", "{record}");
    assert!(record["receipt"].is_null(), "{record}");
    // Every other member said why: its price is above the task's maximum.
    assert!(
        record["error"]
            .as_str()
            .expect("error")
            .contains("2 members asked more than the task's max_price 0 (the lowest 1 "),
        "{record}"
    );

    // A long task (about a second of work); its first executor is killed while it runs.
    let (id, first) = spin_until_running(&members[0]);
    // Whoever got it first dies with SIGKILL.
    let mut nodes: Vec<NodeProcess> = members.drain(1..).chain([coordinator]).collect();
    let at = nodes
        .iter()
        .position(|n| n.peer_id == first)
        .expect("the executor is one of the nodes");
    nodes.remove(at).kill();
    let record = eventually("the task to end", || {
        let (_, record) = members[0].get(&format!("/v1/tasks/{id}"));
        let record: serde_json::Value = serde_json::from_str(&record).ok()?;
        matches!(record["state"].as_str()?, "succeeded" | "failed").then_some(record)
    });
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(output(&record), "done\n");
    let attempts = record["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{record}");
    assert_eq!(attempts[0]["executor"], first.as_str());
    assert_ne!(attempts[0]["outcome"], "delivered", "{record}");
    assert_ne!(record["executor"], first.as_str());
    // Money is locked for an executor before it is handed the task; only the one that
    // delivered is paid.
    assert_eq!(record["payment"]["status"], "paid", "{record}");
    let (_, channels) = members[0].get("/v1/channels");
    let channels: serde_json::Value = serde_json::from_str(&channels).expect("json");
    let paid: Vec<u64> = channels
        .as_array()
        .expect("channels")
        .iter()
        .filter_map(|c| c["cumulative"].as_u64())
        .collect();
    // The first executor may be killed before its channel was open.
    assert!(paid.len() <= 2, "{channels}");
    assert_eq!(
        paid.iter().filter(|&&c| c > 0).count(),
        1,
        "only the executor that delivered is paid: {channels}"
    );
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

#[test]
fn executors_whose_receipt_does_not_verify_or_that_time_out_are_not_paid() {
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let GuildCluster {
        coordinator,
        members,
        ..
    } = guild_cluster(dir.path(), CONFIG, 2, &receiver.endpoint());
    fund(&coordinator, &members[0]);
    // Two dishonest members join, cheaper than everyone: one forges its receipts, one
    // holds its answers back far past the task's wall time.
    let config = dir.path().join("cheap.toml");
    std::fs::write(
        &config,
        CONFIG.replacen("[tasks]\n", "[tasks]\nprice = 0\n", 1),
    )
    .expect("config");
    // The requester waits 2 s of wall time plus 10 s for each answer; the staller holds
    // its answer for 60 s.
    let id = members[0].get("/v1/guilds").1;
    let id: serde_json::Value = serde_json::from_str(&id).expect("json");
    let id = id[0]["id"].as_str().expect("guild id").to_owned();
    let cheats = [
        ("liar", "forge-receipts"),
        ("staller", "stall-answers=60000"),
    ]
    .map(|(name, misbehave)| {
        member_with(
            dir.path(),
            (&coordinator, &id),
            name,
            &config,
            &receiver.endpoint(),
            &[misbehave],
        )
    });
    eventually("the cheats in the guild's mesh", || {
        let topic = format!("zerostate%2Fguild%2F{id}");
        let members = crate::guild::guild(&coordinator, &id)["members"]
            .as_array()?
            .len();
        let meshed = cheats.iter().all(|cheat| {
            let (status, body) = cheat.get(&format!("/v1/p2p/mesh/{topic}"));
            status == 200 && body != "[]"
        });
        (meshed && members == 5).then_some(())
    });
    let record = run_task(
        &members[0],
        &serde_json::json!({
            "module": "builtin:primes",
            "input": "1000",
            "limits": { "wall_time_ms": 2000 },
        }),
    );
    assert_eq!(record["state"], "succeeded", "{record}");
    let attempts = record["attempts"].as_array().expect("attempts");
    let outcome_of = |peer: &str| {
        attempts
            .iter()
            .find(|a| a["executor"] == peer)
            .and_then(|a| a["outcome"].as_str())
            .unwrap_or_else(|| panic!("no attempt on {peer}: {record}"))
            .to_owned()
    };
    assert!(
        outcome_of(&cheats[0].peer_id).contains("does not verify"),
        "{record}"
    );
    assert!(
        outcome_of(&cheats[1].peer_id).contains("timed out"),
        "{record}"
    );
    assert_eq!(attempts.len(), 3, "{record}");
    assert!(
        cheats
            .iter()
            .all(|c| record["executor"] != c.peer_id.as_str()),
        "{record}"
    );
    assert_eq!(record["payment"]["status"], "paid", "{record}");
    for cheat in &cheats {
        let (_, channels) = cheat.get("/v1/channels");
        let channels: serde_json::Value = serde_json::from_str(&channels).expect("json");
        assert!(
            channels
                .as_array()
                .expect("channels")
                .iter()
                .all(|c| c["cumulative"] == 0),
            "money was locked for the cheat, and it was never paid: {channels}"
        );
    }
    let [liar, staller] = cheats;
    crate::cluster::stop_cleanly(
        members
            .into_iter()
            .chain([liar, staller, coordinator])
            .collect(),
    );
}

#[test]
fn a_payment_whose_acknowledgement_was_lost_is_delivered_again_and_paid_once() {
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // The coordinator (the ledger, it runs no task) and a requester (gossip does not bring
    // its own task requests back to it).
    let GuildCluster {
        coordinator,
        members,
        id,
    } = guild_cluster(dir.path(), CONFIG, 1, &receiver.endpoint());
    fund(&coordinator, &members[0]);
    // The only executor keeps its first payment but answers it with an error, as if the
    // acknowledgement were lost.
    let config = dir.path().join("executor.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let executor = member_with(
        dir.path(),
        (&coordinator, &id),
        "executor",
        &config,
        &receiver.endpoint(),
        &["withhold-payment-acks=1"],
    );
    eventually("the executor in the guild", || {
        (crate::guild::guild(&coordinator, &id)["members"]
            .as_array()?
            .len()
            == 3)
            .then_some(())
    });
    let task = serde_json::json!({ "module": "builtin:crc32", "input": "zerostate" });
    let first = run_task(&members[0], &task);
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(first["payment"]["status"], "failed", "{first}");
    assert_eq!(first["payment"]["nonce"], 1, "{first}");
    let lost = first["payment"]["receipt"]
        .as_str()
        .expect("receipt")
        .to_owned();
    // The next payment on the channel carries the first state again; the executor holds
    // it already and says so; the first task's record now says paid.
    let second = run_task(&members[0], &task);
    assert_eq!(second["payment"]["status"], "paid", "{second}");
    assert_eq!(second["payment"]["nonce"], 2, "{second}");
    // The payment protocol tells the market as the delivery happens; the record follows.
    let first_id = first["id"].as_str().expect("id").to_owned();
    let first = eventually("the first task's record to say paid", || {
        let (_, first) = members[0].get(&format!("/v1/tasks/{first_id}"));
        let first: serde_json::Value = serde_json::from_str(&first).ok()?;
        (first["payment"]["status"] == "paid").then_some(first)
    });
    assert!(
        first["payment"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("first delivery failed")),
        "{first}"
    );
    // Each receipt paid once, on both sides.
    let channel = second["payment"]["channel"].as_str().expect("channel");
    for node in [&members[0], &executor] {
        let (status, history) = node.get(&format!("/v1/channels/{channel}?limit=10"));
        assert_eq!(status, 200, "{history}");
        let history: serde_json::Value = serde_json::from_str(&history).expect("json");
        let receipts: Vec<&str> = history["payments"]
            .as_array()
            .expect("payments")
            .iter()
            .filter_map(|p| p["receipt"].as_str())
            .collect();
        assert_eq!(
            receipts,
            [
                second["payment"]["receipt"].as_str().expect("receipt"),
                lost.as_str()
            ],
            "{}: {history}",
            node.name
        );
    }
    crate::cluster::stop_cleanly(vec![
        coordinator,
        executor,
        members.into_iter().next().expect("requester"),
    ]);
}

#[test]
fn a_node_stopped_while_its_task_runs_lets_the_task_end_paid_and_exits_in_time() {
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // The coordinator (the ledger, it runs no task), a requester and one executor.
    let GuildCluster {
        coordinator,
        members,
        id: _,
    } = guild_cluster(dir.path(), CONFIG, 2, &receiver.endpoint());
    let mut members = members.into_iter();
    let (requester, executor) = (
        members.next().expect("requester"),
        members.next().expect("executor"),
    );
    fund(&coordinator, &requester);
    spin_until_running(&requester);
    // SIGTERM while the executor runs it (about a second of work) and before it is paid.
    let stopping = std::time::Instant::now();
    requester.terminate();
    let account = requester.event("stopped");
    let took = stopping.elapsed();
    assert!(
        took < std::time::Duration::from_secs(10),
        "the requester took {took:?} to stop"
    );
    assert!(
        account["spans"]["exported"].as_u64().is_some_and(|n| n > 0),
        "its final span account: {account}"
    );
    let log = requester.log_text();
    let stopped = log
        .lines()
        .find(|l| l.contains("stopped in"))
        .unwrap_or_else(|| panic!("no stop line:\n{log}"));
    assert!(
        stopped.contains(r#""tasks_cut_off":0"#) && stopped.contains(r#""requests_aborted":0"#),
        "the task ended before the node stopped, nothing was cut off: {stopped}"
    );
    // It ended succeeded and paid: the executor holds the payment for it.
    let (status, channels) = executor.get("/v1/channels");
    assert_eq!(status, 200, "{channels}");
    let channels: serde_json::Value = serde_json::from_str(&channels).expect("json");
    let paid = channels
        .as_array()
        .expect("channels")
        .iter()
        .any(|c| c["side"] == "payee" && c["nonce"] == 1 && c["cumulative"].as_u64() > Some(0));
    assert!(paid, "the executor was paid for the task: {channels}");
    crate::cluster::stop_cleanly(vec![requester, coordinator, executor]);
}

/// Writes its argument count (the program's name included) as a digit, then exits with 1,
/// as `grep` does when nothing matches.
const ARGC_THEN_EXIT_1: &str = r#"(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (i32.store8 (i32.const 100) (i32.add (i32.const 48) (i32.load (i32.const 0))))
    (i32.store (i32.const 8) (i32.const 100))
    (i32.store (i32.const 12) (i32.const 1))
    (drop (call $write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))
    (call $exit (i32.const 1))))"#;

#[test]
fn arguments_travel_with_the_task_and_a_program_exit_keeps_its_output() {
    use base64::Engine as _;
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let GuildCluster {
        coordinator,
        members,
        ..
    } = guild_cluster(dir.path(), CONFIG, 2, &receiver.endpoint());
    let requester = &members[0];
    fund(&coordinator, requester);
    let module = base64::engine::general_purpose::STANDARD.encode(ARGC_THEN_EXIT_1);
    let record = run_task(
        requester,
        &serde_json::json!({ "module": { "base64": module }, "args": ["-v", "two words"] }),
    );
    // Run on another member with both arguments, its own exit kept with its output, the
    // receipt signing the arguments, and the bill for it paid.
    assert_ne!(record["executor"], requester.peer_id.as_str(), "{record}");
    assert_eq!(output(&record), "3", "{record}");
    assert_eq!(
        record["receipt"]["args"],
        serde_json::json!(["-v", "two words"])
    );
    assert!(
        record["receipt"]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("exited:")),
        "{record}"
    );
    assert_eq!(record["payment"]["status"], "paid", "{record}");

    // Another entry point than `_start` travels with the task and is signed.
    let go = r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 100) "went")
      (func (export "go")
        (i32.store (i32.const 8) (i32.const 100))
        (i32.store (i32.const 12) (i32.const 4))
        (drop (call $write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))))"#;
    let module = base64::engine::general_purpose::STANDARD.encode(go);
    let record = run_task(
        requester,
        &serde_json::json!({ "module": { "base64": module }, "entry": "go" }),
    );
    assert_eq!(output(&record), "went", "{record}");
    assert_eq!(record["receipt"]["entry"], "go", "{record}");
    assert_eq!(record["exit_code"], 0, "{record}");
    // A built-in has its own.
    let (status, body) = requester.post(
        "/v1/tasks",
        &serde_json::json!({ "module": "builtin:primes", "entry": "go" }),
        &[],
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("its own entry point"), "{body}");

    // An answer larger than one network message cannot come back: the executor says so,
    // and nothing is billed.
    let big = r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 16)
      (func (export "_start")
        (i32.store (i32.const 0) (i32.const 65536))
        (i32.store (i32.const 4) (i32.const 921600))
        (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
    let module = base64::engine::general_purpose::STANDARD.encode(big);
    let record = run_task(
        requester,
        &serde_json::json!({ "module": { "base64": module } }),
    );
    assert_eq!(record["state"], "failed", "{record}");
    assert!(
        record["error"]
            .as_str()
            .is_some_and(|e| e.contains("more than one network message carries")),
        "{record}"
    );
    assert!(record["payment"].is_null(), "{record}");

    // More arguments than a task carries are refused at submission.
    let (status, body) = requester.post(
        "/v1/tasks",
        &serde_json::json!({ "module": "builtin:primes", "args": vec!["x"; 2000] }),
        &[],
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("2000 arguments"), "{body}");
}

#[test]
fn files_and_environment_travel_with_the_task_and_its_output_files_come_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(module) = crate::c_program("files.c", dir.path()) else {
        return;
    };
    let receiver = OtlpReceiver::start();
    let GuildCluster {
        coordinator,
        members,
        ..
    } = guild_cluster(dir.path(), CONFIG, 2, &receiver.endpoint());
    let requester = &members[0];
    fund(&coordinator, requester);
    // Input files as a user has them: a file, and a directory of two.
    let wasm = dir.path().join("files.wasm");
    std::fs::write(&wasm, &module).expect("module");
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "alpha\n").expect("a file");
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("deeper")).expect("a directory");
    std::fs::write(data.join("numbers.csv"), "1,2,3\n").expect("a file");
    std::fs::write(data.join("deeper/more.txt"), "more\n").expect("a file");
    let out = dir.path().join("out");
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
    let run = crate::zerostate(
        &dir.path().join(&requester.name),
        &[
            "task",
            "submit",
            &path(&wasm),
            "--node",
            &if requester.api.starts_with("http") {
                requester.api.clone()
            } else {
                format!("http://{}", requester.api)
            },
            "--file",
            &format!("a.txt={}", path(&notes)),
            "--file",
            &format!("data={}", path(&data)),
            "--env",
            "GREETING=hello there",
            "--arg",
            "-v",
            "--output",
            &path(&out),
            "--json",
        ],
        b"",
    );
    let stdout = crate::text(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        crate::text(&run.stderr)
    );
    let record: serde_json::Value = serde_json::from_str(&stdout).expect("the record");
    // Run on another member, which read every file and met the environment; the files it
    // wrote came back into the output directory, and the receipt signs them all.
    assert_ne!(record["executor"], requester.peer_id.as_str(), "{record}");
    assert_eq!(record["exit_code"], 0, "{record}");
    let output = output(&record);
    assert!(output.contains("GREETING hello there\n"), "{output}");
    assert!(
        output.contains("file /input/data/deeper/more.txt 5 bytes, read 5"),
        "{output}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("copies/first")).expect("the copy came back"),
        "alpha\n"
    );
    let summary = std::fs::read_to_string(out.join("summary.txt")).expect("the summary");
    assert_eq!(summary.lines().count(), 3, "{summary}");
    let receipt = &record["receipt"];
    assert_eq!(receipt["env"], serde_json::json!(["GREETING=hello there"]));
    assert_eq!(receipt["files_sha256"].as_str().map(str::len), Some(64));
    assert_eq!(
        receipt["output_files_sha256"].as_str().map(str::len),
        Some(64)
    );
    assert_eq!(record["payment"]["status"], "paid", "{record}");

    // A file name that would escape /input is refused at submission, with the reason.
    let (status, body) = requester.post(
        "/v1/tasks",
        &serde_json::json!({ "module": "builtin:primes", "files": { "../x": "aGk=" } }),
        &[],
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a relative path"), "{body}");
}
