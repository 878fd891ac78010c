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
    let start = Instant::now();
    for pid in pids {
        while Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .expect("kill -0")
            .success()
        {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "process {pid} outlived the devnet"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A GET over a plain TCP connection (the node's tests carry no HTTP client).
fn get_body(url: &str) -> String {
    let (status, body) = crate::cluster::http(
        url.trim_start_matches("http://")
            .split('/')
            .next()
            .expect("host"),
        "GET",
        &format!(
            "/{}",
            url.trim_start_matches("http://")
                .split_once('/')
                .expect("path")
                .1
        ),
        None,
        &[],
    );
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
    let start = Instant::now();
    for pid in pids {
        while std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
        {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "process {pid} outlived a killed devnet"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
