//! Running `zerostate node` processes for multi-node tests: start, read the ready line,
//! talk to the HTTP API, stop with a signal.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

pub(crate) struct NodeProcess {
    pub(crate) name: String,
    pub(crate) child: Child,
    pub(crate) api: String,
    /// The API token the node created in its data directory.
    pub(crate) token: String,
    pub(crate) peer_id: String,
    pub(crate) listen: Vec<String>,
    pub(crate) stderr: std::path::PathBuf,
    /// Every line the node wrote on stdout so far.
    pub(crate) stdout: Arc<Mutex<Vec<String>>>,
}

impl NodeProcess {
    pub(crate) fn start(dir: &Path, name: &str, args: &[&str], otlp: &str) -> Self {
        let stderr = dir.join(format!("{name}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_zerostate"))
            .arg("node")
            .args(["--name", name, "--api", "127.0.0.1:0"])
            .args(["--data-dir", &dir.join(name).to_string_lossy()])
            .args(args)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("RUST_LOG", "info")
            .env("ZEROSTATE_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("log file"))
            .spawn()
            .expect("zerostate node starts");
        // Every stdout line is kept (a node writes one JSON line per event); the pipe is
        // drained for the node's whole life so that it never writes into a closed pipe.
        let stdout = child.stdout.take().expect("stdout");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        // Room for the first line only; later ones are not waited for (try_send drops them).
        let (first_tx, first_rx) = std::sync::mpsc::sync_channel(1);
        let keep = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = first_tx.try_send(line.clone());
                keep.lock().expect("lock").push(line);
            }
        });
        let line = first_rx.recv_timeout(DEADLINE).unwrap_or_default();
        let ready: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "{name} did not say it was ready ({e}): {line:?}\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        });
        let node = &ready["node"];
        NodeProcess {
            name: name.to_owned(),
            child,
            api: node["api"].as_str().expect("api").to_owned(),
            token: std::fs::read_to_string(node["api_token_file"].as_str().expect("token file"))
                .expect("the node wrote its API token")
                .trim()
                .to_owned(),
            peer_id: node["peer_id"].as_str().expect("peer id").to_owned(),
            listen: node["listen"]
                .as_array()
                .expect("listen")
                .iter()
                .map(|a| a.as_str().expect("address").to_owned())
                .collect(),
            stderr,
            stdout: lines,
        }
    }

    /// The first stdout event of this kind (`ready`, `guild_created`), within the deadline.
    pub(crate) fn event(&self, kind: &str) -> serde_json::Value {
        eventually(&format!("{} to report {kind}", self.name), || {
            self.stdout.lock().expect("lock").iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["event"] == kind).then_some(v)
            })
        })
    }

    pub(crate) fn tcp_address(&self) -> String {
        self.listen
            .iter()
            .find(|a| a.contains("/tcp/") && !a.contains("p2p-circuit"))
            .unwrap_or_else(|| panic!("{} has no TCP address: {:?}", self.name, self.listen))
            .clone()
    }

    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        let auth = format!("Bearer {}", self.token);
        http(&self.api, "GET", path, None, &[("authorization", &auth)])
    }

    pub(crate) fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let auth = format!("Bearer {}", self.token);
        let mut headers = headers.to_vec();
        headers.push(("authorization", &auth));
        http(&self.api, "POST", path, Some(&body.to_string()), &headers)
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub(crate) fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
                assert!(
                    status.success(),
                    "{} exited with {status}:\n{log}",
                    self.name
                );
                assert!(log.contains("shutting down"), "{}:\n{log}", self.name);
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{} did not stop within 15 s of SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 exchange; returns the status and the body.
pub(crate) fn http(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let host = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).expect("connect to the API");
    stream
        .set_read_timeout(Some(Duration::from_secs(40)))
        .expect("timeout");
    let body = body.unwrap_or("");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub(crate) fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
