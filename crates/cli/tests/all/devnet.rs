//! `zerostate devnet`: the collector and four nodes as processes, a guild formed, one
//! message's trace across them, and everything stopped by one SIGTERM.

use std::process::Command;
use std::time::{Duration, Instant};

use zerostate_node::process::{Child, stop_all};

/// A devnet of one edge on ephemeral ports, its data and logs in `dir`, once it is ready.
fn start_devnet(dir: &std::path::Path) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_zerostate"));
    command
        .args(["devnet", "--nodes", "3", "--otlp-http", "127.0.0.1:0"])
        .args(["--ui", "127.0.0.1:0", "--data-dir"])
        .arg(dir);
    Child::spawn(
        "devnet",
        command,
        &dir.join("devnet.log"),
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("the devnet did not start: {e:#}"))
}

#[test]
fn the_devnet_runs_a_guild_traces_it_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let devnet = start_devnet(dir.path());
    let ready = devnet.ready().clone();
    let d = zerostate_node::console::Ready::parse(&ready)
        .expect("a ready line")
        .devnet
        .expect("a devnet's ready line");
    assert_eq!(d.nodes, ["bootnode", "relay-node", "edge-node-1"]);
    // devnet.json says where everything is.
    let file: zerostate_cluster::devnet::DevnetFile = serde_json::from_slice(
        &std::fs::read(dir.path().join("devnet.json")).expect("devnet.json"),
    )
    .expect("devnet.json parses");
    assert_eq!(file.guild, d.guild);
    assert_eq!(file.collector.ui, d.viewer);
    let roles: Vec<&str> = file.nodes.iter().map(|n| n.role.as_str()).collect();
    assert_eq!(roles, ["bootnode", "relay", "edge"]);
    for n in &file.nodes {
        assert!(d.pids.contains(&n.pid), "{n:?}");
        assert!(n.data_dir.join("api.token").exists(), "{n:?}");
        assert!(n.api.starts_with("http://127.0.0.1:"), "{n:?}");
    }
    let (viewer, trace) = (&d.viewer, &d.trace);
    let body = get_body(&format!("{viewer}/api/v3/traces/{trace}"));
    for service in ["bootnode", "relay-node"] {
        assert!(body.contains(service), "{service} missing from {body}");
    }
    assert_eq!(
        body.matches("\"guild.receive_message\"").count(),
        2,
        "{body}"
    );
    assert!(body.contains("\"guild.send_message\""));
    // The guild's announcement: one publish, a receive span on each of the other two nodes.
    let announced = get_body(&format!("{viewer}/api/v3/traces/{}", d.announcement));
    assert_eq!(
        announced
            .matches("\"p2p.message.guild_invitation\"")
            .count(),
        3,
        "{announced}"
    );
    assert_eq!(announced.matches("\"p2p.gossip.publish\"").count(), 1);
    // Three tasks ran, each in its own trace, on a member other than the edge.
    assert_eq!(d.tasks.len(), 3, "{ready}");
    commands_find_the_devnet(dir.path(), viewer);

    let pids = d.pids;
    assert_eq!(pids.len(), 4);
    let exits = stop_all(vec![devnet], Duration::from_secs(30));
    let status = exits[0].1.expect("the devnet stops on SIGTERM");
    assert!(status.success(), "{status}");
    all_gone(&pids, Duration::from_secs(5), "the devnet");
}

/// Run in the devnet's directory, or given `--devnet`, the commands need no address, data
/// directory or collector: they talk to its last edge, name executors by node name and link
/// to its viewer.
fn commands_find_the_devnet(dir: &std::path::Path, viewer: &str) {
    let home = tempfile::tempdir().expect("home");
    let input = home.path().join("input.txt");
    std::fs::write(&input, "hello").expect("input");
    let run = |cwd: &std::path::Path, args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_zerostate"));
        command.args(args).current_dir(cwd).env("HOME", home.path());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ZEROSTATE_") {
                command.env_remove(name);
            }
        }
        let out = command.output().expect("zerostate runs");
        (
            out.status.code(),
            crate::text(&out.stdout),
            crate::text(&out.stderr),
        )
    };
    let input = input.to_str().expect("utf-8");
    let (code, stdout, stderr) = run(dir, &["task", "submit", "builtin:crc32", "--input", input]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(stdout, "3610a686\n");
    assert!(
        stderr.contains("succeeded on bootnode") || stderr.contains("succeeded on relay-node"),
        "{stderr}"
    );
    let trace = stderr
        .split("trace ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .expect("a trace id")
        .to_owned();
    assert!(
        stderr.contains(&format!("({viewer}/trace/{trace})")),
        "{stderr}"
    );
    let id = stderr
        .strip_prefix("task ")
        .and_then(|t| t.split(':').next())
        .expect("a task id")
        .to_owned();

    // From elsewhere, with --devnet, and a node named as the devnet names it.
    let devnet = dir.to_str().expect("utf-8");
    let elsewhere = home.path();
    let (code, stdout, stderr) = run(
        elsewhere,
        &[
            "task",
            "show",
            &id,
            "--devnet",
            devnet,
            "--node",
            "edge-node-1",
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let record: serde_json::Value = serde_json::from_str(&stdout).expect("the record");
    assert_eq!(record["trace_id"], trace.as_str(), "{record}");
    let (code, stdout, stderr) = run(elsewhere, &["task", "list", "--devnet", devnet]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&id), "{stdout}");
    let (code, _, stderr) = run(
        elsewhere,
        &["task", "list", "--devnet", devnet, "--node", "nowhere"],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("its nodes: bootnode, relay-node, edge-node-1"),
        "{stderr}"
    );
    let (code, _, stderr) = run(
        elsewhere,
        &["task", "show", "0000000000000000", "--devnet", devnet],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("the node has no task 0000000000000000"),
        "{stderr}"
    );

    // trace show finds the devnet's collector (the export is batched: give it a moment).
    let start = Instant::now();
    loop {
        let (code, stdout, stderr) = run(dir, &["trace", "show", &trace]);
        if code == Some(0) && stdout.contains("execution.wasm.execute") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{code:?} {stdout}{stderr}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until every process of `pids` has exited (or is a zombie), within `within`.
fn all_gone(pids: &[u32], within: Duration, after: &str) {
    let start = Instant::now();
    for pid in pids {
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| !stat.contains(") Z "))
        };
        while alive() {
            assert!(start.elapsed() < within, "process {pid} outlived {after}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The body of a GET that must answer 200.
fn get_body(url: &str) -> String {
    let (status, body) = crate::cluster::http(url, "GET", "", None, &[]);
    assert_eq!(status, 200, "{url}: {body}");
    body
}

#[test]
fn a_killed_devnet_leaves_no_process_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut devnet = start_devnet(dir.path());
    let ready = devnet.ready().clone();
    let pids = zerostate_node::console::Ready::parse(&ready)
        .expect("a ready line")
        .devnet
        .expect("a devnet's ready line")
        .pids;
    // SIGKILL: the devnet cannot stop anything itself; its children notice it is gone.
    devnet.kill();
    all_gone(&pids, Duration::from_secs(15), "a killed devnet");
}

#[test]
fn with_exit_the_devnet_stops_by_itself_and_runs_again_on_the_same_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    for run in 1..=2 {
        let output = Command::new(env!("CARGO_BIN_EXE_zerostate"))
            .args([
                "devnet",
                "--nodes",
                "3",
                "--exit",
                "--otlp-http",
                "127.0.0.1:0",
            ])
            .args(["--ui", "127.0.0.1:0", "--data"])
            .arg(dir.path())
            .output()
            .expect("the devnet runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "run {run}: {stderr}");
        assert!(stderr.contains("guild.send_message"), "run {run}: {stderr}");
        assert!(dir.path().join("devnet.json").exists());
    }
}

#[test]
fn with_chain_anvil_the_devnets_tasks_are_paid_through_channels_locked_on_the_chain() {
    if !zerostate_chain::anvil_for_tests() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_zerostate"))
        .args(["devnet", "--nodes", "3", "--tasks", "2", "--exit"])
        .args(["--chain", "anvil", "--otlp-http", "127.0.0.1:0"])
        .args(["--ui", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .output()
        .expect("the devnet runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // --exit fails unless every task succeeded and was paid.
    assert!(output.status.success(), "{stderr}");
    // A channel settled on chain, its trace drawn: the payee's close with its transaction.
    assert!(stderr.contains("a channel settled on chain"), "{stderr}");
    assert!(stderr.contains("payment.settlement"), "{stderr}");
    assert!(stderr.contains("(tx.hash=0x"), "{stderr}");
    let file: zerostate_cluster::devnet::DevnetFile = serde_json::from_slice(
        &std::fs::read(dir.path().join("devnet.json")).expect("devnet.json"),
    )
    .expect("devnet.json parses");
    let chain = file.chain.expect("devnet.json names the chain");
    assert_eq!(chain.chain_id, 31337);
    assert!(chain.url.starts_with("http://127.0.0.1:"), "{}", chain.url);
    chain
        .contract
        .parse::<zerostate_chain::Address>()
        .expect("the contract's address");
    // Each node kept its channels on chain in its book.
    assert!(
        file.nodes
            .iter()
            .any(|n| n.data_dir.join("chain.db").exists())
    );
}
