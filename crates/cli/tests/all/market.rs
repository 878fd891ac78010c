//! The market against peers that lie, on real `zerostate node` processes: bills that do not
//! hold are not paid and their executors are refused; executors run only against money the
//! ledger locked, a requester that does not pay is served no more than its credit, and a
//! payer that closes on less than it paid is answered by the payee's watchtower.

use zerostate_telemetry::testing::OtlpReceiver;

use crate::cluster::{GuildCluster, NodeProcess, eventually, guild_cluster, hex};
use crate::journey::{CONFIG, fund, member_with, run_task};

/// `CONFIG` with these lines added to its `[tasks]`.
fn tasks_config(dir: &std::path::Path, name: &str, lines: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        CONFIG.replacen("[tasks]\n", &format!("[tasks]\n{lines}"), 1),
    )
    .expect("config");
    path
}

/// Waits until `nodes` are all in the guild's gossip mesh and the guild has `members`.
fn meshed(coordinator: &NodeProcess, id: &str, nodes: &[&NodeProcess], members: usize) {
    eventually("every node in the guild's mesh", || {
        let topic = format!("zerostate%2Fguild%2F{id}");
        let count = crate::guild::guild(coordinator, id)["members"]
            .as_array()?
            .len();
        let all = nodes.iter().all(|n| {
            let (status, body) = n.get(&format!("/v1/p2p/mesh/{topic}"));
            status == 200 && body != "[]"
        });
        (all && count == members).then_some(())
    });
}

/// A guild's coordinator (the ledger), a funded requester that reruns every receipt and
/// tries up to five executors, and the guild's id.
fn rerunning_requester(dir: &std::path::Path, otlp: &str) -> (NodeProcess, NodeProcess, String) {
    let requester_config = CONFIG.replacen(
        "[tasks]\n",
        "[tasks]\nverify_share = 1.0\nmax_attempts = 5\n",
        1,
    );
    let GuildCluster {
        coordinator,
        members,
        id,
    } = guild_cluster(dir, &requester_config, 1, otlp);
    let requester = members.into_iter().next().expect("requester");
    fund(&coordinator, &requester);
    (coordinator, requester, id)
}

fn outcome_of(record: &serde_json::Value, peer: &str) -> Option<String> {
    record["attempts"]
        .as_array()?
        .iter()
        .find(|a| a["executor"] == peer)
        .and_then(|a| a["outcome"].as_str())
        .map(str::to_owned)
}

fn paid_to(node: &NodeProcess) -> u64 {
    let (_, channels) = node.get("/v1/channels");
    let channels: serde_json::Value = serde_json::from_str(&channels).expect("json");
    channels
        .as_array()
        .expect("channels")
        .iter()
        .filter(|c| c["side"] == "payee")
        .filter_map(|c| c["cumulative"].as_u64())
        .sum()
}

#[test]
fn bills_that_do_not_hold_are_not_paid_and_their_executors_are_refused() {
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (coordinator, requester, id) = rerunning_requester(dir.path(), &receiver.endpoint());
    // The cheats are cheaper than the honest member, so they are tried first.
    let cheap = tasks_config(dir.path(), "cheap", "price = 1\n");
    let honest_config = tasks_config(dir.path(), "honest", "price = 2\n");
    let [inflater, faker, overpricer] = [
        ("inflater", "inflate-fuel"),
        ("faker", "fake-output"),
        ("overpricer", "overprice"),
    ]
    .map(|(name, misbehave)| {
        member_with(
            dir.path(),
            (&coordinator, &id),
            name,
            &cheap,
            &receiver.endpoint(),
            &[misbehave],
        )
    });
    let honest = member_with(
        dir.path(),
        (&coordinator, &id),
        "honest",
        &honest_config,
        &receiver.endpoint(),
        &[],
    );
    meshed(
        &coordinator,
        &id,
        &[&inflater, &faker, &overpricer, &honest],
        6,
    );
    // A misbehaving node says so.
    let (_, info) = inflater.get("/v1/node");
    assert!(
        info.contains("\"misbehaving\":[\"inflate-fuel\"]"),
        "{info}"
    );
    let (_, ready) = crate::cluster::http(&inflater.admin, "GET", "/readyz", None, &[]);
    assert!(ready.contains("on (tests only): inflate-fuel"), "{ready}");

    // A hundredfold fuel is above this task's limit; made-up output fails the rerun; an
    // offer above the maximum price is not taken.
    let task = serde_json::json!({
        "module": "builtin:primes",
        "input": "1000",
        "fuel": 1_000_000,
        "limits": { "fuel": 1_000_000 },
    });
    let first = run_task(&requester, &task);
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(first["executor"], honest.peer_id.as_str(), "{first}");
    assert_eq!(first["payment"]["status"], "paid", "{first}");
    let inflated = outcome_of(&first, &inflater.peer_id).expect("the inflater was tried");
    assert!(
        inflated.contains("the bill does not hold") && inflated.contains("above the task's limit"),
        "{inflated}"
    );
    let faked = outcome_of(&first, &faker.peer_id).expect("the faker was tried");
    assert!(
        faked.contains("spot check does not match") && faked.contains("output"),
        "{faked}"
    );
    assert!(
        outcome_of(&first, &overpricer.peer_id).is_none(),
        "an offer above the maximum price is never taken: {first}"
    );
    // The mismatch is in the trace as an error `task.verify`.
    let trace = first["trace_id"].as_str().expect("trace").to_owned();
    eventually("the spot check's mismatch in the trace", || {
        receiver
            .spans()
            .iter()
            .any(|s| {
                hex(&s.span.trace_id) == trace
                    && s.span.name == "task.verify"
                    && s.attribute("status").as_deref() == Some("mismatch")
                    && s.span.status.as_ref().is_some_and(|st| st.code == 2)
            })
            .then_some(())
    });

    // The requester handed the evidence to the coordinator, which reran it and removed
    // both liars in the signed membership, saying why; they see the reason themselves.
    eventually("the liars removed from the guild", || {
        let members = crate::guild::guild(&coordinator, &id)["members"].clone();
        let members = members.as_array()?;
        let gone = [&inflater, &faker]
            .iter()
            .all(|c| !members.iter().any(|m| m["peer_id"] == c.peer_id.as_str()));
        gone.then_some(())
    });
    for liar in [&inflater, &faker] {
        let seen = eventually("the liar's own view of its removal", || {
            let g = crate::guild::guild(liar, &id);
            (g["status"] == "removed").then_some(g)
        });
        assert!(
            seen["reason"]
                .as_str()
                .is_some_and(|r| r.contains("removed by the coordinator: cheated")),
            "{}: {seen}",
            liar.name
        );
    }
    assert!(
        crate::guild::guild(&coordinator, &id)["members"]
            .as_array()
            .expect("members")
            .iter()
            .any(|m| m["peer_id"] == overpricer.peer_id.as_str()),
        "an overpricer only asked too much: it stays a member"
    );

    // The cheats are refused from now on: the next task goes to the honest member at once.
    let second = run_task(&requester, &task);
    assert_eq!(second["state"], "succeeded", "{second}");
    let attempts = second["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{second}");
    assert_eq!(attempts[0]["executor"], honest.peer_id.as_str(), "{second}");
    // Nothing was paid to a cheat.
    for cheat in [&inflater, &faker, &overpricer] {
        assert_eq!(paid_to(cheat), 0, "{} was paid", cheat.name);
    }
    assert!(paid_to(&honest) > 0);
    crate::cluster::stop_cleanly(vec![
        requester,
        inflater,
        faker,
        overpricer,
        honest,
        coordinator,
    ]);
}

#[test]
fn executors_serve_only_against_locked_money_and_a_non_payer_no_more_than_its_credit() {
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // The coordinator (the ledger, runs no task) and one executor.
    let GuildCluster {
        coordinator,
        members,
        id,
    } = guild_cluster(dir.path(), CONFIG, 1, &receiver.endpoint());
    let executor = members.into_iter().next().expect("executor");
    let config = tasks_config(dir.path(), "requesters", "execute = false\n");
    // One requester never pays; one opens channels the ledger never locked.
    let [non_payer, unlocked] =
        [("non-payer", "never-pay"), ("unlocked", "skip-ledger-open")].map(|(name, misbehave)| {
            member_with(
                dir.path(),
                (&coordinator, &id),
                name,
                &config,
                &receiver.endpoint(),
                &[misbehave],
            )
        });
    fund(&coordinator, &non_payer);
    fund(&coordinator, &unlocked);
    meshed(&coordinator, &id, &[&executor, &non_payer, &unlocked], 4);
    let task = serde_json::json!({ "module": "builtin:crc32", "input": "zerostate" });

    // No money locked, no work.
    let refused = run_task(&unlocked, &task);
    assert_eq!(refused["state"], "failed", "{refused}");
    let outcome = outcome_of(&refused, &executor.peer_id).expect("the executor was tried");
    assert!(
        outcome.contains("the ledger did not confirm the channel"),
        "{outcome}"
    );

    // The non-payer's first task is served (its credit), then it gets no more offers.
    let served = run_task(&non_payer, &task);
    assert_eq!(served["state"], "succeeded", "{served}");
    assert_eq!(served["payment"]["status"], "unpaid", "{served}");
    let next = run_task(&non_payer, &task);
    assert_eq!(next["state"], "failed", "{next}");
    assert!(
        next["error"]
            .as_str()
            .is_some_and(|e| e.contains("offered")),
        "{next}"
    );
    assert_eq!(paid_to(&executor), 0);
    crate::cluster::stop_cleanly(vec![non_payer, unlocked, executor, coordinator]);
}

/// Sends a direct request of `kind` with `payload` from `from` (through its API) to `to`;
/// the refusal's text (the API answers 502 with the peer's reason).
fn refusal(from: &NodeProcess, to: &NodeProcess, kind: &str, payload: &str) -> String {
    let (status, body) = from.post(
        "/v1/p2p/request",
        &serde_json::json!({
            "peer": to.peer_id,
            "addresses": [to.tcp_address()],
            "type": kind,
            "payload": payload,
        }),
        &[],
    );
    assert_eq!(status, 502, "a refusal: {body}");
    body
}

#[test]
fn outsiders_can_neither_open_channels_nor_offer_and_members_hand_over_only_what_was_offered() {
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let GuildCluster {
        coordinator,
        members,
        id,
    } = guild_cluster(dir.path(), CONFIG, 2, &receiver.endpoint());
    let [requester, executor]: [NodeProcess; 2] = members.try_into().ok().expect("two members");
    fund(&coordinator, &requester);
    // A node on the network, in no guild.
    let outsider = NodeProcess::start(
        dir.path(),
        "outsider",
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            &coordinator.tcp_address(),
            "--ledger-peer",
            &coordinator.peer_id,
        ],
        &receiver.endpoint(),
    );
    meshed(&coordinator, &id, &[&requester, &executor], 3);

    // An outsider opens no channel (each would be a synced row on the executor's disk).
    let answer = refusal(&outsider, &executor, "channel_open", "{}");
    assert!(
        answer.contains("only members of this node's guilds may open channels"),
        "{answer}"
    );
    // Nor hands the executor a task.
    let run = serde_json::json!({
        "task_id": "0123456789abcdef",
        "module": { "builtin": "crc32" },
        "input": "",
        "limits": { "wall_time_ms": 1000 },
    })
    .to_string();
    let answer = refusal(&outsider, &executor, "task_run", &run);
    assert!(answer.contains("only members"), "{answer}");
    // A member's task the executor never offered on is refused, and so is a wall time
    // longer than a requester waits for.
    let answer = refusal(&requester, &executor, "task_run", &run);
    assert!(
        answer.contains("made no offer for task 0123456789abcdef"),
        "{answer}"
    );
    let long = run.replace("\"wall_time_ms\":1000", "\"wall_time_ms\":600000");
    let answer = refusal(&requester, &executor, "task_run", &long);
    assert!(
        answer.contains("more than a requester waits for"),
        "{answer}"
    );

    // An outsider that learnt a task's id (task ids are in exported spans) cannot offer on
    // it: the task, which no member is cheap enough for, collects offers for a while.
    let (status, submitted) = requester.post(
        "/v1/tasks",
        &serde_json::json!({ "module": "builtin:crc32", "input": "x", "max_price": 0 }),
        &[],
    );
    assert_eq!(status, 202, "{submitted}");
    let submitted: serde_json::Value = serde_json::from_str(&submitted).expect("json");
    let offer = serde_json::json!({
        "task_id": submitted["task_id"],
        "price": 0,
        "running": 0,
    })
    .to_string();
    let answer = refusal(&outsider, &requester, "task_offer", &offer);
    assert!(answer.contains("only members of guild"), "{answer}");
    crate::cluster::stop_cleanly(vec![outsider, requester, executor, coordinator]);
}

/// Writes `real` to `/output/result.txt` (descriptor 3: the task has no input files) and
/// `ok` to stdout.
const WRITES_AN_OUTPUT_FILE: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "result.txt")
  (data (i32.const 120) "real\n")
  (data (i32.const 130) "ok")
  (func (export "_start")
    (drop (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 10)
      (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 200)))
    (i32.store (i32.const 8) (i32.const 120))
    (i32.store (i32.const 12) (i32.const 5))
    (drop (call $write (i32.load (i32.const 200)) (i32.const 8) (i32.const 1) (i32.const 16)))
    (i32.store (i32.const 8) (i32.const 130))
    (i32.store (i32.const 12) (i32.const 2))
    (drop (call $write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))))"#;

#[test]
fn made_up_output_files_fail_the_rerun_and_the_honest_executor_is_paid() {
    use base64::Engine as _;
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // The faker is cheaper, so it is tried first.
    let (coordinator, requester, id) = rerunning_requester(dir.path(), &receiver.endpoint());
    let cheap = tasks_config(dir.path(), "cheap", "price = 1\n");
    let dear = tasks_config(dir.path(), "dear", "price = 2\n");
    let faker = member_with(
        dir.path(),
        (&coordinator, &id),
        "faker",
        &cheap,
        &receiver.endpoint(),
        &["fake-output"],
    );
    let honest = member_with(
        dir.path(),
        (&coordinator, &id),
        "honest",
        &dear,
        &receiver.endpoint(),
        &[],
    );
    meshed(&coordinator, &id, &[&requester, &faker, &honest], 4);
    let module = base64::engine::general_purpose::STANDARD.encode(WRITES_AN_OUTPUT_FILE);
    let record = run_task(
        &requester,
        &serde_json::json!({ "module": { "base64": module }, "output_files": true }),
    );
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(record["executor"], honest.peer_id.as_str(), "{record}");
    let faked = outcome_of(&record, &faker.peer_id).expect("the faker was tried");
    assert!(faked.contains("output files"), "{faked}");
    let file = base64::engine::general_purpose::STANDARD
        .decode(
            record["output_files"]["result.txt"]
                .as_str()
                .expect("the file"),
        )
        .expect("base64");
    assert_eq!(file, b"real\n");
    assert_eq!(record["payment"]["status"], "paid", "{record}");
}

/// What `node` holds on the ledger.
fn ledger_balance(node: &NodeProcess) -> u64 {
    let (status, body) = node.get("/v1/ledger/balance");
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
    body["balance"].as_u64().expect("a balance")
}

#[test]
fn a_payers_close_on_nothing_is_disputed_and_paid_out_by_the_payees_watchtower() {
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // Watchtowers look every second; a unilateral close may be disputed for 10 s.
    let config = CONFIG
        .replacen("challenge_period_s = 3\n", "challenge_period_s = 10\n", 1)
        .replacen("[payments]\n", "[payments]\nwatch_interval_s = 1\n", 1);
    let GuildCluster {
        coordinator,
        members,
        id,
    } = guild_cluster(dir.path(), &config, 1, &receiver.endpoint());
    let executor = members.into_iter().next().expect("executor");
    let cheat_config = dir.path().join("cheat.toml");
    std::fs::write(
        &cheat_config,
        config.replacen("[tasks]\n", "[tasks]\nexecute = false\n", 1),
    )
    .expect("config");
    // A requester that, closing alone, names none of what it paid.
    let cheat = member_with(
        dir.path(),
        (&coordinator, &id),
        "cheat",
        &cheat_config,
        &receiver.endpoint(),
        &["close-on-nothing"],
    );
    fund(&coordinator, &cheat);
    meshed(&coordinator, &id, &[&executor, &cheat], 3);
    let task = serde_json::json!({ "module": "builtin:crc32", "input": "zerostate" });
    let record = run_task(&cheat, &task);
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(record["payment"]["status"], "paid", "{record}");
    let owed = record["payment"]["amount"].as_u64().expect("an amount");
    assert!(owed > 0, "{record}");
    let channel = record["payment"]["channel"].as_str().expect("a channel");
    let before = ledger_balance(&executor);

    let (status, closing) = cheat.post(
        &format!("/v1/channels/{channel}/close"),
        &serde_json::json!({ "unilateral": true }),
        &[],
    );
    assert_eq!(status, 200, "{closing}");
    // Nobody acts: the executor's watchtower disputes with the state it holds, and pays
    // the close out once the window ends, at what the cheat signed.
    eventually("the executor to be paid out what it holds", || {
        (ledger_balance(&executor) == before + owed).then_some(())
    });
    let (_, metrics) = crate::cluster::http(&executor.admin, "GET", "/metrics", None, &[]);
    assert!(
        metrics.contains("payment_settlements_total{result=\"dispute\"} 1"),
        "{metrics}"
    );
    crate::cluster::stop_cleanly(vec![cheat, executor, coordinator]);
}
