//! The operations listener of real node processes: readiness that names what is missing
//! and recovers, metrics with trace exemplars scraped by Debian's real Prometheus, and
//! JSON log lines that carry the trace id across nodes.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use zerostate_node::process::{Child, stop_all};
use zerostate_telemetry::testing::OtlpReceiver;

use crate::cluster::{GuildCluster, NodeProcess, eventually, guild_cluster, http};

/// `/readyz` of `node`: the status and the JSON answer.
pub(crate) fn readiness(node: &NodeProcess) -> (u16, serde_json::Value) {
    let (status, body) = http(&node.admin, "GET", "/readyz", None, &[]);
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

pub(crate) fn component(answer: &serde_json::Value, name: &str) -> String {
    answer["components"][name]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn readiness_names_a_missing_peer_and_a_dead_collector_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = OtlpReceiver::start();
    // A bootstrap node that is gone by the time the node starts.
    let gone = NodeProcess::start(
        dir.path(),
        "gone",
        &["--role", "bootnode", "--listen", "/ip4/127.0.0.1/tcp/0"],
        &receiver.endpoint(),
    );
    let gone_address = gone.tcp_address();
    gone.kill();
    let port = free_port();
    let collector_url = format!("http://127.0.0.1:{port}");
    let node = NodeProcess::start(
        dir.path(),
        "lonely",
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            &gone_address,
        ],
        &collector_url,
    );
    assert_eq!(
        http(&node.admin, "GET", "/healthz", None, &[]),
        (200, "ok\n".into())
    );
    let answer = eventually("not ready for want of a peer and a collector", || {
        let (status, answer) = readiness(&node);
        (status == 503
            && component(&answer, "peers").starts_with("not ready")
            && component(&answer, "span_export").starts_with("not ready"))
        .then_some(answer)
    });
    assert_eq!(answer["ready"], false);
    assert_eq!(component(&answer, "listening"), "ok");
    assert_eq!(component(&answer, "data_dir"), "ok");
    assert_eq!(component(&answer, "guild"), "off");
    // The operations listener is open: no token, and it serves nothing else.
    let (status, _) = http(&node.admin, "GET", "/v1/node", None, &[]);
    assert_eq!(status, 404);

    // Fixed: a collector on that address, and a peer that dials the node.
    let mut collector = Command::new(env!("CARGO_BIN_EXE_zerostate"));
    collector
        .args(["collector", "--otlp-http", &format!("127.0.0.1:{port}")])
        .args(["--ui", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("collector"));
    let collector = Child::spawn(
        "collector",
        collector,
        &dir.path().join("collector.log"),
        Duration::from_secs(60),
    )
    .expect("the collector starts");
    let friend = NodeProcess::start(
        dir.path(),
        "friend",
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            &node.tcp_address(),
        ],
        &receiver.endpoint(),
    );
    let answer = eventually("ready once both are back", || {
        let (status, answer) = readiness(&node);
        (status == 200).then_some(answer)
    });
    assert_eq!(answer["ready"], true, "{answer}");
    assert_eq!(component(&answer, "peers"), "ok");
    assert_eq!(component(&answer, "span_export"), "ok");
    crate::cluster::stop_cleanly(vec![node, friend]);
    let _ = stop_all(vec![collector], Duration::from_secs(15));
}

/// Heartbeats every 300 ms: a member that has heard nothing from its coordinator for
/// 900 ms is not ready, and gives it up after 6 s; offers collected for up to 10 s (two
/// cores shared by a dozen processes).
const CONFIG: &str = "[network]\nrequest_timeout_ms = 30000\n\
                      [guild]\nheartbeat_interval_ms = 300\nmissed_heartbeats = 20\n\
                      [tasks]\noffer_window_ms = 10000\noffer_grace_ms = 3000\n";

/// The JSON log lines of `node` that name `trace`.
fn lines_of(dir: &std::path::Path, node: &NodeProcess, trace: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join(format!("{}.log", node.name)))
        .expect("log")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["trace_id"] == trace)
        .collect()
}

#[test]
fn a_task_shows_in_metrics_and_logs_and_a_lost_coordinator_makes_members_unready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = OtlpReceiver::start();
    let GuildCluster {
        coordinator,
        members,
        id,
    } = guild_cluster(dir.path(), CONFIG, 2, &receiver.endpoint());
    let (status, body) = coordinator.post(
        "/v1/ledger/faucet",
        &serde_json::json!({ "peer_id": members[0].peer_id, "amount": 10_000_000 }),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    for m in &members {
        eventually(&format!("{} ready", m.name), || {
            let (status, answer) = readiness(m);
            (status == 200 && component(&answer, "guild") == "ok").then_some(())
        });
    }
    let (status, answer) = members[0].post(
        "/v1/tasks",
        &serde_json::json!({ "module": "builtin:primes", "input": "1000" }),
        &[],
    );
    assert_eq!(status, 202, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
    let task = answer["task_id"].as_str().expect("task id").to_owned();
    let trace = answer["trace_id"].as_str().expect("trace id").to_owned();
    let record = eventually("the task to be paid", || {
        let (_, record) = members[0].get(&format!("/v1/tasks/{task}"));
        let record: serde_json::Value = serde_json::from_str(&record).ok()?;
        (record["payment"]["status"] == "paid").then_some(record)
    });
    assert_eq!(record["executor"], members[1].peer_id.as_str(), "{record}");

    // Metrics: the executor counted the task, its duration bucket names the trace.
    let (status, text) = http(&members[1].admin, "GET", "/metrics", None, &[]);
    assert_eq!(status, 200);
    assert!(
        text.contains("execution_tasks_total{result=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(&format!("trace_id=\"{trace}\"")),
        "no exemplar names the task's trace:\n{text}"
    );
    assert!(text.contains("payment_amount_total{direction=\"in\"}"));
    assert!(
        text.contains("p2p_messages_by_type_total{type=\"task_run\",direction=\"in\"} 1"),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("p2p_peers ")), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let (_, text) = http(&members[0].admin, "GET", "/metrics", None, &[]);
    assert!(
        text.contains("tasks_ended_total{result=\"succeeded\"} 1"),
        "{text}"
    );
    assert!(text.contains("payment_payments_total{direction=\"out\"} 1"));

    // Logs: both nodes wrote JSON lines with the task's trace id, each naming itself.
    for node in &members {
        let lines = lines_of(dir.path(), node, &trace);
        assert!(!lines.is_empty(), "{} logged nothing of {trace}", node.name);
        for l in &lines {
            assert_eq!(l["service"], node.name.as_str(), "{l}");
            assert_eq!(l["peer_id"], node.peer_id.as_str(), "{l}");
            for field in ["timestamp", "level", "target", "message", "span_id"] {
                assert!(l.get(field).is_some(), "{field} missing: {l}");
            }
        }
    }
    let requester: HashSet<String> = lines_of(dir.path(), &members[0], &trace)
        .iter()
        .filter_map(|l| l["message"].as_str().map(str::to_owned))
        .collect();
    assert!(requester.contains("task submitted"), "{requester:?}");

    // Heartbeats are counted, not traced (a failed beat would be, as an error).
    assert!(
        receiver
            .spans()
            .iter()
            .all(|s| s.span.name != "p2p.message.guild_heartbeat"),
        "a heartbeat was exported as a span"
    );

    // The coordinator stops answering: the members say so, and are ready again once it
    // is back.
    let signal = |name: &str| {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &coordinator.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    };
    signal("STOP");
    for m in &members {
        let answer = eventually(&format!("{} unready", m.name), || {
            let (status, answer) = readiness(m);
            (status == 503).then_some(answer)
        });
        let guild = component(&answer, "guild");
        assert!(
            guild.contains(&id) && guild.contains("nothing heard from its coordinator"),
            "{answer}"
        );
    }
    signal("CONT");
    for m in &members {
        eventually(&format!("{} ready again", m.name), || {
            (readiness(m).0 == 200).then_some(())
        });
    }

    // The coordinator dies: the members' guild ends and they say so.
    coordinator.kill();
    for m in &members {
        let answer = eventually(&format!("{} unready", m.name), || {
            let (status, answer) = readiness(m);
            (status == 503 && component(&answer, "guild").starts_with("not ready"))
                .then_some(answer)
        });
        assert!(
            component(&answer, "guild").contains(&id),
            "the guild is named: {answer}"
        );
        assert!(
            component(&answer, "ledger").starts_with("not ready"),
            "{answer}"
        );
    }
    crate::cluster::stop_cleanly(members);
}

/// Prometheus's HTTP API answer at `path` (`data` of a success).
fn prometheus(base: &str, path: &str) -> serde_json::Value {
    let (status, body) = http(base, "GET", path, None, &[]);
    assert_eq!(status, 200, "{path}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["status"], "success", "{body}");
    v["data"].clone()
}

#[test]
fn prometheus_scrapes_the_devnet_and_its_exemplars_lead_to_traces() {
    let Some(bin) = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Prometheus is missing: apt-get install prometheus (scripts/test-deps.sh does)"
        );
        eprintln!("skipped: prometheus is not installed");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut devnet = Command::new(env!("CARGO_BIN_EXE_zerostate"));
    devnet
        .args(["devnet", "--nodes", "3", "--tasks", "2"])
        .args([
            "--otlp-http",
            "127.0.0.1:0",
            "--ui",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(dir.path());
    let devnet = Child::spawn(
        "devnet",
        devnet,
        &dir.path().join("devnet.log"),
        Duration::from_secs(180),
    )
    .expect("the devnet starts");
    let ready = zerostate_node::console::Ready::parse(devnet.ready())
        .expect("a ready line")
        .devnet
        .expect("a devnet's ready line");
    assert_eq!(ready.tasks.len(), 2);
    let file: zerostate_cluster::devnet::DevnetFile =
        serde_json::from_slice(&std::fs::read(dir.path().join("devnet.json")).expect("file"))
            .expect("devnet.json");
    for n in &file.nodes {
        assert!(n.admin.starts_with("http://127.0.0.1:"), "{n:?}");
    }
    let web = format!("127.0.0.1:{}", free_port());
    let mut command = Command::new(bin);
    command
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .arg("--enable-feature=exemplar-storage");
    let mut prometheus_process = command
        .stdout(std::process::Stdio::null())
        .stderr(
            std::fs::File::create(dir.path().join("prometheus.log"))
                .expect("log")
                .try_clone()
                .expect("log"),
        )
        .spawn()
        .expect("prometheus starts");
    let base = format!("http://{web}");
    eventually("prometheus listening", || {
        std::net::TcpStream::connect(&web).ok().map(drop)
    });
    // Every target up: three nodes and the collector.
    eventually("every target up", || {
        let (status, body) = http(&base, "GET", "/api/v1/targets", None, &[]);
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let targets = v["data"]["activeTargets"].as_array()?;
        (targets.len() == 4 && targets.iter().all(|t| t["health"] == "up")).then_some(())
    });
    let ran = eventually("the tasks counted", || {
        let data = prometheus(&base, "/api/v1/query?query=sum(execution_tasks_total)");
        let value = data["result"][0]["value"][1]
            .as_str()?
            .parse::<f64>()
            .ok()?;
        (value >= 2.0).then_some(value)
    });
    assert_eq!(ran, 2.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let traces: Vec<String> = eventually("exemplars stored", || {
        let data = prometheus(
            &base,
            &format!(
                "/api/v1/query_exemplars?query=execution_task_duration_seconds_bucket\
                 &start={}&end={}",
                now - 3600,
                now + 3600
            ),
        );
        let ids: Vec<String> = data
            .as_array()?
            .iter()
            .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["labels"]["trace_id"].as_str().map(str::to_owned))
            .collect();
        (!ids.is_empty()).then_some(ids)
    });
    for trace in &traces {
        let (status, body) = http(
            &file.collector.ui,
            "GET",
            &format!("/api/v3/traces/{trace}"),
            None,
            &[],
        );
        assert_eq!(status, 200, "the collector has no trace {trace}: {body}");
        assert!(body.contains("execution.task"), "{body}");
    }
    // The example dashboard asks only for metrics the network exposes.
    let mut exposed = String::new();
    for url in file
        .nodes
        .iter()
        .map(|n| n.admin.clone())
        .chain([file.collector.ui.clone()])
    {
        let (status, text) = http(&url, "GET", "/metrics", None, &[]);
        assert_eq!(status, 200, "{url}");
        exposed.push_str(&text);
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../../../docs/grafana/zerostate.json"))
            .expect("the dashboard is JSON");
    let mut asked = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            for metric in metric_names(expr) {
                asked += 1;
                assert!(
                    exposed.contains(&format!("# TYPE {metric} ")),
                    "the dashboard asks for {metric}, which no target exposes ({expr})"
                );
            }
        }
    }
    assert!(asked > 20, "{asked}");
    let _ = prometheus_process.kill();
    let _ = prometheus_process.wait();
    let exits = stop_all(vec![devnet], Duration::from_secs(30));
    assert!(exits[0].1.is_some_and(|s| s.success()), "{exits:?}");
}

/// The metric families an expression reads (`execution_tasks_total{..}` is
/// `execution_tasks`), by the prefixes ZeroState's metrics have.
fn metric_names(expr: &str) -> Vec<String> {
    const PREFIXES: [&str; 7] = [
        "execution_",
        "p2p_",
        "guild_",
        "payment_",
        "telemetry_",
        "collector_",
        "tasks_",
    ];
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| PREFIXES.iter().any(|p| w.starts_with(p)))
        .map(|w| {
            ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s))
                .unwrap_or(w)
                .to_owned()
        })
        .collect()
}

#[test]
fn the_shipped_alert_rules_are_valid_prometheus_rules() {
    if !std::path::Path::new("/usr/bin/promtool").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool is missing: apt-get install prometheus (scripts/test-deps.sh does)"
        );
        eprintln!("skipped: promtool is not installed");
        return;
    }
    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/prometheus/alerts.yml"
    );
    let out = Command::new("/usr/bin/promtool")
        .args(["check", "rules", rules])
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS: 4 rules found"), "{text}");
}
