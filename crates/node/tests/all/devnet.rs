//! `zerostate devnet`: the collector and four nodes as processes, a guild formed, one
//! message's trace across them, and everything stopped by one SIGTERM.

use std::process::Command;
use std::time::{Duration, Instant};

use zerostate::process::{Child, stop_all};

/// A devnet of one edge on ephemeral ports, its data and logs in `dir`, once it is ready.
fn start_devnet(dir: &std::path::Path) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_zerostate"));
    command
        .args(["devnet", "--edges", "1", "--otlp-http", "127.0.0.1:0"])
        .args(["--ui", "127.0.0.1:0", "--dir"])
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
    let d = zerostate::console::Ready::parse(&ready)
        .expect("a ready line")
        .devnet
        .expect("a devnet's ready line");
    assert_eq!(d.nodes, ["bootnode", "relay-node", "edge-node-1"]);
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

    let pids = d.pids;
    assert_eq!(pids.len(), 4);
    let exits = stop_all(vec![devnet], Duration::from_secs(30));
    let status = exits[0].1.expect("the devnet stops on SIGTERM");
    assert!(status.success(), "{status}");
    all_gone(&pids, Duration::from_secs(5), "the devnet");
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
    let pids = zerostate::console::Ready::parse(&ready)
        .expect("a ready line")
        .devnet
        .expect("a devnet's ready line")
        .pids;
    // SIGKILL: the devnet cannot stop anything itself; its children notice it is gone.
    devnet.kill();
    all_gone(&pids, Duration::from_secs(15), "a killed devnet");
}
