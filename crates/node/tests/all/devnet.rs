//! `zerostate devnet`: the collector and four nodes as processes, a guild formed, one
//! message's trace across them, and everything stopped by one SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_devnet_runs_a_guild_traces_it_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut devnet = Command::new(env!("CARGO_BIN_EXE_zerostate"))
        .args([
            "devnet",
            "--edges",
            "1",
            "--otlp-http",
            "127.0.0.1:0",
            "--ui",
            "127.0.0.1:0",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("devnet starts");
    let mut line = String::new();
    BufReader::new(devnet.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
        let _ = devnet.kill();
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut devnet.stderr.take().expect("stderr"), &mut err);
        panic!("no ready line ({e}): {line:?}\n{err}")
    });
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
    Command::new("kill")
        .args(["-TERM", &devnet.id().to_string()])
        .status()
        .expect("kill");
    let status = devnet.wait().expect("devnet exits");
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
    let mut devnet = Command::new(env!("CARGO_BIN_EXE_zerostate"))
        .args([
            "devnet",
            "--edges",
            "1",
            "--otlp-http",
            "127.0.0.1:0",
            "--ui",
            "127.0.0.1:0",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("devnet starts");
    let mut line = String::new();
    BufReader::new(devnet.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let ready: serde_json::Value = serde_json::from_str(&line).expect("ready line");
    let pids = zerostate::console::Ready::parse(&ready)
        .expect("a ready line")
        .devnet
        .expect("a devnet's ready line")
        .pids;
    // SIGKILL: the devnet cannot stop anything itself; its children notice it is gone.
    devnet.kill().expect("SIGKILL");
    let _ = devnet.wait();
    all_gone(&pids, Duration::from_secs(15), "a killed devnet");
}
