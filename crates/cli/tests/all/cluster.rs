//! Running `zerostate node` processes for multi-node tests: start, read the ready line,
//! talk to the HTTP API, stop with a signal.

use std::path::Path;
use std::time::{Duration, Instant};

use zerostate_cluster::harness::{Guild, Launcher, Node};
use zerostate_node::client::NodeClient;
use zerostate_node::process::{Child, stop_all};

pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

pub(crate) struct NodeProcess {
    pub(crate) name: String,
    pub(crate) api: String,
    /// The operations listener (`/metrics`, `/healthz`, `/readyz`).
    pub(crate) admin: String,
    /// The API token the node created in its data directory.
    pub(crate) token: String,
    pub(crate) peer_id: String,
    pub(crate) listen: Vec<String>,
    /// The typed client of its API.
    pub(crate) client: NodeClient,
    process: Child,
}

impl NodeProcess {
    pub(crate) fn start(dir: &Path, name: &str, args: &[&str], otlp: &str) -> Self {
        Self::start_with_env(dir, name, args, otlp, &[])
    }

    /// [`Self::start`] with extra environment variables.
    pub(crate) fn start_with_env(
        dir: &Path,
        name: &str,
        args: &[&str],
        otlp: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let mut launcher = Launcher::new(env!("CARGO_BIN_EXE_zerostate"), dir)
            .expect("the test's directory")
            .start_timeout(DEADLINE)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", Some(otlp))
            .env("OTEL_BSP_SCHEDULE_DELAY", Some("100"))
            .env("RUST_LOG", Some("info"))
            .env("ZEROSTATE_LOG_FORMAT", Some("json"));
        for (key, value) in env {
            launcher = launcher.env(key, Some(value));
        }
        let mut all = launcher.node_args(name, "127.0.0.1");
        all.extend(args.iter().map(|&a| a.to_owned()));
        let log = dir.join(format!("{name}.log"));
        let node = launcher
            .spawn(name, &all, &log)
            .and_then(Node::new)
            .unwrap_or_else(|e| panic!("{name} did not start: {e:#}"));
        NodeProcess {
            name: name.to_owned(),
            token: std::fs::read_to_string(&node.info.api_token_file)
                .expect("the node wrote its API token")
                .trim()
                .to_owned(),
            api: node.info.api.clone(),
            admin: node.info.admin.clone(),
            peer_id: node.info.peer_id.clone(),
            listen: node.info.listen.clone(),
            client: node.api,
            process: node.child,
        }
    }

    /// The first stdout event of this kind (`ready`, `guild_created`), within the deadline.
    pub(crate) fn event(&self, kind: &str) -> serde_json::Value {
        self.process
            .event(kind, DEADLINE)
            .unwrap_or_else(|| panic!("{} did not report {kind}", self.name))
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

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends the process SIGTERM, as a service manager stopping it would.
    pub(crate) fn terminate(&self) {
        zerostate_node::process::signal(&[self.process.pid()], "TERM").expect("SIGTERM sent");
    }

    /// What it has written to its log so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(self.process.log()).unwrap_or_default()
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub(crate) fn kill(mut self) {
        self.process.kill();
    }
}

/// Writes the settings `settings` (TOML) to `<dir>/guild.toml` and starts node `name`, a
/// bootnode on loopback with them that creates guild `guild`: the node, the guild's id and
/// the settings file's path (for the members).
pub(crate) fn guild_coordinator(
    dir: &Path,
    name: &str,
    settings: &str,
    guild: &str,
    otlp: &str,
) -> (NodeProcess, String, String) {
    let config = dir.join("guild.toml");
    std::fs::write(&config, settings).expect("settings");
    let config = config.to_string_lossy().into_owned();
    let coordinator = NodeProcess::start(
        dir,
        name,
        &[
            "--role",
            "bootnode",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--config",
            &config,
            "--create-guild",
            guild,
        ],
        otlp,
    );
    let id = coordinator.event("guild_created")["guild"]["id"]
        .as_str()
        .expect("guild id")
        .to_owned();
    (coordinator, id, config)
}

/// Stops `nodes` all at once with SIGTERM and checks that each exits cleanly within 15 s.
pub(crate) fn stop_cleanly(nodes: Vec<NodeProcess>) {
    let logs: Vec<_> = nodes.iter().map(|n| n.process.log().to_owned()).collect();
    let exits = stop_all(
        nodes.into_iter().map(|n| n.process).collect(),
        Duration::from_secs(15),
    );
    for ((name, status), log) in exits.into_iter().zip(logs) {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        let status = status.unwrap_or_else(|| panic!("{name} did not stop within 15 s of SIGTERM"));
        assert!(status.success(), "{name} exited with {status}:\n{log}");
        assert!(log.contains("shutting down"), "{name}:\n{log}");
    }
}

/// One HTTP request with the project's client; returns the status and the body. `base` is
/// `http://host:port` or `host:port`.
pub(crate) fn http(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let base = if base.starts_with("http") {
        base.to_owned()
    } else {
        format!("http://{base}")
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the request");
    runtime.block_on(async {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = reqwest::Client::new()
            .request(method, format!("{base}{path}"))
            .timeout(Duration::from_secs(40))
            .header("content-type", "application/json")
            .body(body.unwrap_or("").to_owned());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    })
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

/// A coordinator that created a guild and runs the payment ledger (with the devnet faucet)
/// but no tasks (so that the ledger stays up when a test kills an executor), and `members`
/// nodes that joined the guild with invitations and pay through that ledger,
/// all with the configuration file `config` (TOML), once the coordinator sees them all.
pub(crate) struct GuildCluster {
    pub(crate) coordinator: NodeProcess,
    pub(crate) members: Vec<NodeProcess>,
    pub(crate) id: String,
}

pub(crate) fn guild_cluster(dir: &Path, config: &str, members: usize, otlp: &str) -> GuildCluster {
    let file = dir.join("cluster.toml");
    std::fs::write(&file, config).expect("config");
    let file = file.to_string_lossy().into_owned();
    let ledger_file = dir.join("ledger.toml");
    let ledger_config = if config.contains("[tasks]\n") {
        config.replacen("[tasks]\n", "[tasks]\nexecute = false\n", 1)
    } else {
        format!("{config}\n[tasks]\nexecute = false\n")
    };
    std::fs::write(&ledger_file, ledger_config).expect("config");
    let ledger_file = ledger_file.to_string_lossy().into_owned();
    let listen = "/ip4/127.0.0.1/tcp/0";
    let coordinator = NodeProcess::start(
        dir,
        "coordinator",
        &[
            "--role",
            "bootnode",
            "--listen",
            listen,
            "--config",
            &ledger_file,
            "--create-guild",
            "cluster",
            "--ledger",
            "--ledger-faucet",
        ],
        otlp,
    );
    let id = coordinator.event("guild_created")["guild"]["id"]
        .as_str()
        .expect("guild id")
        .to_owned();
    let boot = coordinator.tcp_address();
    let guild = Guild {
        id: id.clone(),
        boot: boot.clone(),
        coordinator: coordinator.client.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let members: Vec<NodeProcess> = (1..=members)
        .map(|i| {
            let joining = runtime
                .block_on(guild.join_args(&boot, Some(&coordinator.peer_id)))
                .expect("an invitation from the coordinator");
            let mut args = vec!["--listen", listen, "--config", &file];
            args.extend(joining.iter().map(String::as_str));
            NodeProcess::start(dir, &format!("member-{i}"), &args, otlp)
        })
        .collect();
    runtime
        .block_on(guild.wait_members(members.len() + 1, DEADLINE))
        .expect("every member at the coordinator");
    let topic = format!("zerostate%2Fguild%2F{id}");
    for n in std::iter::once(&coordinator).chain(&members) {
        eventually(&format!("{} in the guild's mesh", n.name), || {
            let (status, body) = n.get(&format!("/v1/p2p/mesh/{topic}"));
            (status == 200 && body != "[]").then_some(())
        });
    }
    GuildCluster {
        coordinator,
        members,
        id,
    }
}
