//! `zerostate collector` as a process: a task run exports its trace to it, and
//! `zerostate trace list` and `trace show` read it back.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::text;

/// A `zerostate collector` process on loopback ports, its data in `dir`: the process,
/// its OTLP/HTTP address and its query address.
pub(crate) fn start_collector(dir: &std::path::Path) -> (std::process::Child, String, String) {
    let mut collector = Command::new(env!("CARGO_BIN_EXE_zerostate"))
        .args([
            "collector",
            "--otlp-http",
            "127.0.0.1:0",
            "--ui",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("collector starts");
    let mut line = String::new();
    BufReader::new(collector.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let ready: serde_json::Value = serde_json::from_str(&line).expect("ready json");
    let otlp = ready["collector"]["otlp"]
        .as_str()
        .expect("otlp")
        .to_owned();
    let ui = ready["collector"]["ui"].as_str().expect("ui").to_owned();
    (collector, otlp, ui)
}

#[test]
fn a_task_trace_lands_in_the_collector_and_draws_in_the_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = env!("CARGO_BIN_EXE_zerostate");
    let (mut collector, otlp, ui) = start_collector(dir.path());

    let input = dir.path().join("input.txt");
    std::fs::write(&input, "1000\n").expect("input");
    let run = Command::new(bin)
        .args(["task", "run", "builtin:primes", "--input"])
        .arg(&input)
        .env("ZEROSTATE_DATA_DIR", dir.path().join("data"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .stdin(Stdio::null())
        .output()
        .expect("task runs");
    assert!(run.status.success(), "{}", text(&run.stderr));

    // The export is flushed when the task command exits, and the collector answered it only
    // once stored: the trace is there at once.
    let out = Command::new(bin)
        .args([
            "trace",
            "list",
            "--collector",
            &ui,
            "--service",
            "zerostate-cli",
        ])
        .output()
        .expect("trace list runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert!(
        listed.contains("task.submit"),
        "the trace is missing: {listed}"
    );
    let trace_id = listed
        .lines()
        .find(|l| l.contains("task.submit"))
        .and_then(|l| l.split_whitespace().next())
        .expect("a trace id")
        .to_owned();
    let shown = Command::new(bin)
        .args(["trace", "show", "--collector", &ui, &trace_id])
        .output()
        .expect("trace show runs");
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let tree = text(&shown.stdout);
    let first = tree.lines().next().expect("a line");
    assert!(
        first.starts_with("task.submit [") && first.ends_with("@ zerostate-cli"),
        "{tree}"
    );
    for name in [
        "execution.task",
        "execution.manifest.validate",
        "execution.wasm.execute",
        "execution.receipt.generate",
    ] {
        assert!(
            tree.contains(&format!("─ {name} [")),
            "{name} missing:\n{tree}"
        );
    }

    let missing = Command::new(bin)
        .args(["trace", "show", "--collector", &ui, &"ab".repeat(16)])
        .output()
        .expect("trace show runs");
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("not found"));

    let _ = Command::new("kill")
        .args(["-TERM", &collector.id().to_string()])
        .status();
    let status = collector.wait().expect("collector exits");
    assert!(status.success(), "{status}");
}

#[test]
fn a_busy_port_is_reported_with_its_cause_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let out = Command::new(env!("CARGO_BIN_EXE_zerostate"))
        .args(["collector", "--ui", "127.0.0.1:0", "--otlp-http"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("collector runs");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains(&format!("binding 127.0.0.1:{port}")), "{err}");
    assert_eq!(
        err.matches("in use").count(),
        1,
        "the cause printed once: {err}"
    );
}
