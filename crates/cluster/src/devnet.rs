//! `zerostate devnet`: a whole network on this machine — the collector, a bootnode that
//! coordinates a guild, a relay, and edge nodes that join it — one guild message sent
//! through it, and its trace drawn, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use zerostate_node::console::{DevnetReady, Ready};
use zerostate_node::data;
use zerostate_node::process::{Child, stop_all};

/// Run a local network with its collector and viewer until SIGINT or SIGTERM.
#[derive(Debug, Args)]
pub struct DevnetCommand {
    /// Nodes in all: the bootnode (which creates the guild), a relay, and N-2 edges.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(3..=64))]
    nodes: u16,
    /// Tasks submitted from the last edge once the network is up (built-in tasks, in turn
    /// primes, matmul, crc32), so that they run on other members.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(0..=1000))]
    tasks: u16,
    /// Stop once the tasks have ended and the traces are drawn, instead of running until a
    /// signal; the exit code is 0 only if every task succeeded and every trace was drawn.
    #[arg(long)]
    exit: bool,
    /// The collector's OTLP/HTTP address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4318")]
    otlp_http: SocketAddr,
    /// The viewer and query API address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:16686")]
    ui: SocketAddr,
    /// Where the devnet keeps its nodes' data, logs and traces, and `devnet.json`
    /// [default: <data dir>/devnet].
    #[arg(long, value_name = "DIR", alias = "dir")]
    data: Option<PathBuf>,
}

/// `DIR/devnet.json`, written as soon as the network is up: where everything is.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct DevnetFile {
    /// The guild every node is in.
    pub guild: String,
    /// The collector's addresses.
    pub collector: DevnetCollector,
    /// Every node.
    pub nodes: Vec<DevnetNode>,
}

/// The collector in `devnet.json`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct DevnetCollector {
    /// Its OTLP/HTTP endpoint.
    pub otlp: String,
    /// Its viewer and query API.
    pub ui: String,
}

/// A node in `devnet.json`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct DevnetNode {
    /// Its name (`service.name` in traces).
    pub name: String,
    /// `bootnode`, `relay` or `edge`.
    pub role: String,
    /// Its peer id.
    pub peer_id: String,
    /// Its HTTP API.
    pub api: String,
    /// Its operations listener: `/metrics`, `/healthz`, `/readyz`.
    pub admin: String,
    /// Its data directory (its API token is `api.token` there).
    pub data_dir: PathBuf,
    /// Its process id.
    pub pid: u32,
}

/// How long a child has to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the children have to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long the guild has to reach every member.
const GUILD_TIMEOUT: Duration = Duration::from_secs(60);

/// Environment a child starts with besides this process's: `None` removes a variable.
pub(crate) type ChildEnv<'a> = &'a [(&'a str, Option<&'a str>)];

/// Starts `zerostate <args>` and waits for its ready line; its log goes to `log`.
pub(crate) fn spawn(
    name: &str,
    args: &[String],
    log: &Path,
    env: ChildEnv<'_>,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("finding the zerostate executable")?;
    spawn_with(name, Command::new(exe), args, log, env)
}

/// [`spawn`] through `cmd`: `zerostate` itself, or a program that runs it (`ip netns exec
/// NS zerostate`).
pub(crate) fn spawn_with(
    name: &str,
    mut cmd: Command,
    args: &[String],
    log: &Path,
    env: ChildEnv<'_>,
) -> anyhow::Result<Child> {
    cmd.args(args);
    for (key, value) in env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    Child::spawn(name, cmd, log, START_TIMEOUT)
}

/// Starts a collector keeping its traces under `dir` (`extra`: more flags), its log in
/// `dir/collector.log`; returns it and its OTLP and viewer URLs.
pub(crate) fn spawn_collector(
    dir: &Path,
    otlp_http: &str,
    ui: &str,
    extra: &[String],
) -> anyhow::Result<(Child, String, String)> {
    let mut args: Vec<String> = [
        "collector",
        "--otlp-http",
        otlp_http,
        "--ui",
        ui,
        "--data-dir",
    ]
    .map(str::to_owned)
    .to_vec();
    args.push(dir.display().to_string());
    args.extend_from_slice(extra);
    let collector = spawn("collector", &args, &dir.join("collector.log"), &[])?;
    let listening = Ready::parse(collector.ready())?
        .collector
        .context("the collector did not say where it listens")?;
    Ok((collector, listening.otlp, listening.ui))
}

/// Starts node `name` on loopback ports (`extra`: more flags), its data in `dir/name` and
/// its log in `dir/name.log`.
pub(crate) fn spawn_node(
    dir: &Path,
    name: &str,
    extra: &[String],
    env: ChildEnv<'_>,
) -> anyhow::Result<Child> {
    let mut args: Vec<String> = [
        "node",
        "--name",
        name,
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--api",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--data-dir",
    ]
    .map(str::to_owned)
    .to_vec();
    args.push(dir.join(name).display().to_string());
    args.extend_from_slice(extra);
    spawn(name, &args, &dir.join(format!("{name}.log")), env)
}

impl DevnetCommand {
    /// Runs the devnet until a signal.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let dir = match &self.data {
            Some(d) => d.clone(),
            None => data::data_dir(None)?.join("devnet"),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let s = |v: &str| v.to_owned();
        // The user's own backend, if they named one, gets every span too.
        let forward = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Ok(endpoint) if !endpoint.trim().is_empty() => vec![s("--forward"), endpoint],
            _ => Vec::new(),
        };
        let (collector, otlp, ui) = spawn_collector(
            &dir,
            &self.otlp_http.to_string(),
            &self.ui.to_string(),
            &forward,
        )?;
        let node = |name: &str, extra: &[String]| -> anyhow::Result<Child> {
            spawn_node(
                &dir,
                name,
                extra,
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", Some(&otlp)),
                    ("OTEL_BSP_SCHEDULE_DELAY", Some("500")),
                ],
            )
        };
        let boot = node(
            "bootnode",
            &[
                s("--role"),
                s("bootnode"),
                s("--create-guild"),
                s("devnet"),
                s("--ledger"),
                s("--ledger-faucet"),
            ],
        )?;
        let guild = boot
            .event_of(&["guild_created", "guild_resumed"], START_TIMEOUT)
            .context("the bootnode did not create the guild")?;
        let guild_id = guild["guild"]["id"]
            .as_str()
            .context("no guild id")?
            .to_owned();
        let boot_addr = first_address(&boot)?;
        let boot_peer = Ready::parse(boot.ready())?
            .node
            .context("the bootnode did not describe itself")?
            .peer_id;
        let join = format!("{guild_id}@{boot_addr}");
        let client = |p: &Child| zerostate_node::client::NodeClient::from_ready(p.ready());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        // The guild admits by invitation: the bootnode signs one for each node that joins.
        let bootnode = client(&boot)?;
        let invitation = || -> anyhow::Result<String> {
            let answer = runtime
                .block_on(bootnode.post(
                    &format!("/v1/guilds/{guild_id}/invitations"),
                    &serde_json::json!({ "ttl_s": 600 }),
                ))
                .context("asking the bootnode for an invitation")?;
            Ok(answer["invitation"]
                .as_str()
                .context("no invitation in the bootnode's answer")?
                .to_owned())
        };
        let mut nodes = vec![boot];
        nodes.push(node(
            "relay-node",
            &[
                s("--role"),
                s("relay"),
                s("--bootstrap"),
                boot_addr.clone(),
                s("--join-guild"),
                join.clone(),
                s("--invitation"),
                invitation()?,
                s("--ledger-peer"),
                boot_peer.clone(),
            ],
        )?);
        for i in 1..=usize::from(self.nodes) - 2 {
            nodes.push(node(
                &format!("edge-node-{i}"),
                &[
                    s("--bootstrap"),
                    boot_addr.clone(),
                    s("--join-guild"),
                    join.clone(),
                    s("--invitation"),
                    invitation()?,
                    s("--ledger-peer"),
                    boot_peer.clone(),
                ],
            )?);
        }
        let members = nodes.len();
        let sender = client(&nodes[nodes.len() - 1])?;
        let coordinator = client(&nodes[0])?;
        runtime.block_on(async {
            let start = Instant::now();
            loop {
                let body = coordinator
                    .get(&format!("/v1/guilds/{guild_id}"))
                    .await?
                    .unwrap_or_default();
                if body["members"].as_array().map(Vec::len) == Some(members) {
                    break;
                }
                if start.elapsed() > GUILD_TIMEOUT {
                    bail!(
                        "the guild did not reach {members} members within {} s: {body}",
                        GUILD_TIMEOUT.as_secs()
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            anyhow::Ok(())
        })?;
        write_devnet_file(&dir, &guild_id, &otlp, &ui, &nodes)?;
        // The devnet's faucet: every node gets funds on the bootnode's ledger.
        runtime.block_on(async {
            for p in &nodes {
                let peer = Ready::parse(p.ready())?
                    .node
                    .context("a node did not describe itself")?
                    .peer_id;
                coordinator
                    .post(
                        "/v1/ledger/faucet",
                        &serde_json::json!({ "peer_id": peer, "amount": DEVNET_FUNDS }),
                    )
                    .await
                    .with_context(|| format!("funding {} from the devnet faucet", p.name()))?;
            }
            anyhow::Ok(())
        })?;
        let (trace_id, announcement) = runtime.block_on(async {
            // Give the gossip mesh a heartbeat to form before the first message.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let body = sender
                .post(
                    &format!("/v1/guilds/{guild_id}/messages"),
                    &serde_json::json!({ "type": "greeting", "payload": "hello, devnet" }),
                )
                .await
                .context("sending the first guild message")?;
            let trace_id = body["trace_id"].as_str().context("no trace id")?.to_owned();
            // The coordinator announces the guild to the whole network: plain gossip,
            // every receiver's span a child of the publish.
            let body = coordinator
                .post(
                    &format!("/v1/guilds/{guild_id}/announce"),
                    &serde_json::json!({}),
                )
                .await
                .context("announcing the guild")?;
            let announcement = body["trace_id"].as_str().context("no trace id")?.to_owned();
            anyhow::Ok((trace_id, announcement))
        })?;
        let tasks = runtime.block_on(run_tasks(&sender, self.tasks))?;
        // Every node exports within its batch delay (500 ms).
        std::thread::sleep(Duration::from_secs(2));
        let draw = |trace: &str| -> anyhow::Result<String> {
            Ok(runtime
                .block_on(zerostate_collector::text::fetch(&format!(
                    "{ui}/api/v3/traces/{trace}"
                )))?
                .map(|t| zerostate_collector::text::render(&t["result"]))
                .unwrap_or_default())
        };
        let tree = draw(&trace_id)?;
        let announced = draw(&announcement)?;
        let first_task = match tasks.first() {
            Some(t) => draw(t["trace_id"].as_str().unwrap_or_default())?,
            None => String::new(),
        };
        let names: Vec<String> = nodes.iter().map(|n| n.name().to_owned()).collect();
        zerostate_node::console::say(&Ready {
            devnet: Some(DevnetReady {
                viewer: ui.clone(),
                otlp: otlp.clone(),
                guild: guild_id.clone(),
                nodes: names.clone(),
                trace: trace_id.clone(),
                announcement: announcement.clone(),
                tasks: tasks
                    .iter()
                    .filter_map(|t| t["id"].as_str().map(str::to_owned))
                    .collect(),
                pids: nodes
                    .iter()
                    .map(Child::pid)
                    .chain([collector.pid()])
                    .collect(),
            }),
            ..Default::default()
        });
        eprintln!(
            "devnet: {} nodes in guild {guild_id}, traces to {otlp}, logs and {DEVNET_FILE} in \
             {}\nthe first guild message's trace ({ui}/trace/{trace_id}):\n\n{tree}\n\
             the guild announced to the network ({ui}/trace/{announcement}):\n\n{announced}\n\
             {}viewer: {ui}   map: {ui}/map   operations: {ui}/operations\n\
             metrics: prometheus --config.file {} --enable-feature=exemplar-storage\n{}",
            names.len(),
            dir.display(),
            task_report(&tasks, &names_by_peer(&nodes), &first_task, &ui),
            dir.join(PROMETHEUS_FILE).display(),
            if self.exit {
                "--exit: stopping now."
            } else {
                "Ctrl-C stops everything."
            }
        );
        if !self.exit {
            runtime.block_on(zerostate_node::console::shutdown_signal())?;
        }
        eprintln!("devnet: stopping");
        // Nodes first, all at once (their last spans go to the collector), then the
        // collector.
        stop_all(nodes, STOP_GRACE);
        stop_all(vec![collector], STOP_GRACE);
        if tree.is_empty() || announced.is_empty() || (!tasks.is_empty() && first_task.is_empty()) {
            eprintln!("devnet: a trace did not reach the collector");
            return Ok(ExitCode::FAILURE);
        }
        if tasks
            .iter()
            .any(|t| t["state"] != "succeeded" || t["payment"]["status"] != "paid")
        {
            eprintln!("devnet: not every task succeeded and was paid");
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// What the devnet faucet gives each node, in base units.
const DEVNET_FUNDS: u64 = 1_000_000_000;

/// The built-in tasks the devnet runs, in turn, with their inputs.
const DEVNET_TASKS: [(&str, &str); 3] = [
    ("builtin:primes", "1000000"),
    ("builtin:matmul", "64"),
    ("builtin:crc32", "hello, devnet"),
];

/// Submits `count` tasks on `node`, one after another, and returns their final records.
async fn run_tasks(
    node: &zerostate_node::client::NodeClient,
    count: u16,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut records = Vec::new();
    for i in 0..usize::from(count) {
        let (module, input) = DEVNET_TASKS[i % DEVNET_TASKS.len()];
        let record = node
            .run_task(
                &serde_json::json!({ "module": module, "input": input }),
                Duration::from_millis(50),
                GUILD_TIMEOUT,
            )
            .await
            .with_context(|| format!("task {} ({module})", i + 1))?;
        records.push(record);
    }
    Ok(records)
}

/// Each node's name by its peer id.
fn names_by_peer(nodes: &[Child]) -> std::collections::HashMap<String, String> {
    nodes
        .iter()
        .filter_map(|p| Ready::parse(p.ready()).ok()?.node)
        .map(|n| (n.peer_id, n.name))
        .collect()
}

/// The first task's trace and a table of every task; nothing without tasks.
fn task_report(
    tasks: &[serde_json::Value],
    names: &std::collections::HashMap<String, String>,
    first_trace: &str,
    ui: &str,
) -> String {
    use std::fmt::Write as _;
    let Some(first) = tasks.first() else {
        return String::new();
    };
    let mut out = format!(
        "the first task's trace ({ui}/trace/{}):\n\n{first_trace}\n",
        first["trace_id"].as_str().unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "{:<18} {:<14} {:<12} {:>12} {:>9} {:>10}",
        "task", "module", "executor", "fuel", "paid", "duration"
    );
    for t in tasks {
        let executor = t["executor"].as_str().unwrap_or_default();
        let module = t["receipt"]["entry"].as_str().unwrap_or("?");
        let _ = writeln!(
            out,
            "{:<18} {:<14} {:<12} {:>12} {:>9} {:>8}ms  {}",
            t["id"].as_str().unwrap_or_default(),
            module,
            names.get(executor).map_or("-", String::as_str),
            t["receipt"]["fuel_consumed"].as_u64().unwrap_or(0),
            match t["payment"]["status"].as_str() {
                Some("paid") => t["payment"]["amount"].as_u64().unwrap_or(0).to_string(),
                Some(other) => other.to_owned(),
                None => "-".to_owned(),
            },
            t["duration_ms"].as_f64().unwrap_or(0.0).round(),
            t["state"].as_str().unwrap_or_default(),
        );
    }
    out.push('\n');
    out
}

/// Writes `DIR/devnet.json` (through a temporary file, so a reader never sees half of it).
fn write_devnet_file(
    dir: &Path,
    guild: &str,
    otlp: &str,
    ui: &str,
    nodes: &[Child],
) -> anyhow::Result<()> {
    let nodes = nodes
        .iter()
        .map(|p| {
            let node = Ready::parse(p.ready())?
                .node
                .with_context(|| format!("{} did not describe itself", p.name()))?;
            Ok(DevnetNode {
                data_dir: dir.join(&node.name),
                name: node.name,
                role: node.role,
                peer_id: node.peer_id,
                api: node.api,
                admin: node.admin,
                pid: p.pid(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let file = DevnetFile {
        guild: guild.to_owned(),
        collector: DevnetCollector {
            otlp: otlp.to_owned(),
            ui: ui.to_owned(),
        },
        nodes,
    };
    let path = dir.join(DEVNET_FILE);
    let partial = dir.join(format!("{DEVNET_FILE}.partial"));
    std::fs::write(&partial, serde_json::to_vec_pretty(&file)?)
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
    let scrape = dir.join(PROMETHEUS_FILE);
    std::fs::write(&scrape, prometheus_config(&file))
        .with_context(|| format!("writing {}", scrape.display()))?;
    Ok(())
}

/// The devnet's Prometheus configuration, next to `devnet.json`.
pub const PROMETHEUS_FILE: &str = "prometheus.yml";

/// A Prometheus configuration that scrapes every node's and the collector's `/metrics`
/// every 5 s, each target labelled with its node name and role.
fn prometheus_config(file: &DevnetFile) -> String {
    let host = |url: &str| url.trim_start_matches("http://").to_owned();
    let mut out = String::from(
        "# Written by `zerostate devnet`: scrapes every node and the collector.\n\
         # prometheus --config.file prometheus.yml --enable-feature=exemplar-storage\n\
         global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n\
         scrape_configs:\n  - job_name: zerostate-nodes\n    static_configs:\n",
    );
    for n in &file.nodes {
        out.push_str(&format!(
            "      - targets: ['{}']\n        labels: {{node: '{}', role: '{}'}}\n",
            host(&n.admin),
            n.name,
            n.role
        ));
    }
    out.push_str(&format!(
        "  - job_name: zerostate-collector\n    static_configs:\n      - targets: ['{}']\n",
        host(&file.collector.ui)
    ));
    out
}

/// The devnet's description in its data directory.
pub const DEVNET_FILE: &str = "devnet.json";

fn first_address(p: &Child) -> anyhow::Result<String> {
    Ready::parse(p.ready())?
        .node
        .and_then(|n| n.listen.into_iter().next())
        .with_context(|| format!("{} has no listen address", p.name()))
}
