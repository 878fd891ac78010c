//! `zerostate devnet`: a whole network on this machine — the collector, a bootnode that
//! coordinates a guild, a relay, and edge nodes that join it — one guild message sent
//! through it, and its trace drawn, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use zerostate_market::{TaskRecord, TaskState};
use zerostate_node::api::answers::Published;
use zerostate_node::client::NodeClient;
use zerostate_node::console::{DevnetReady, Ready};
use zerostate_node::data;
use zerostate_node::process::stop_all;

use crate::harness::{ChainSpec, Cluster, Launcher, Member, Node, Spec};

/// Run a local network with its collector and viewer until SIGINT or SIGTERM.
#[derive(Debug, Args)]
pub struct DevnetCommand {
    /// Nodes in all: the bootnode (which creates the guild), a relay, and N-2 edges.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(3..=64))]
    nodes: u16,
    /// Tasks submitted from the last edge once the network is up.
    ///
    /// Built-in tasks, in turn primes, matmul, crc32, so that they run on other members.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(0..=1000))]
    tasks: u16,
    /// Stop once the tasks have ended and the traces are drawn.
    ///
    /// Instead of running until a signal; the exit code is 0 only if every task succeeded and
    /// every trace was drawn.
    #[arg(long)]
    exit: bool,
    /// The collector's OTLP/HTTP address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4318", value_parser = zerostate_node::address::listen_addr)]
    otlp_http: SocketAddr,
    /// The viewer and query API address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:16686", value_parser = zerostate_node::address::listen_addr)]
    ui: SocketAddr,
    /// Where the devnet keeps its nodes' data, logs, traces and devnet.json [default: see --help].
    ///
    /// <data dir>/devnet.
    #[arg(
        long = "data-dir",
        visible_alias = "data",
        alias = "dir",
        value_name = "DIR"
    )]
    data: Option<PathBuf>,
    /// Settle payments on a chain instead of the bootnode's ledger: `anvil`.
    ///
    /// `anvil` starts Foundry's anvil from PATH (`npm install -g @foundry-rs/anvil`), deploys the
    /// channel contract and funds every node's settlement account.
    #[arg(long, value_name = "CHAIN", value_parser = ["anvil"])]
    chain: Option<String>,
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
    /// The chain the nodes settle on (`--chain`); absent when they use the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<DevnetChain>,
}

impl DevnetFile {
    /// The devnet in `dir` (a directory holding `devnet.json`), which must be running;
    /// `None` when no directory is given.
    pub fn find_explicit(dir: Option<&Path>) -> anyhow::Result<Option<Self>> {
        let Some(dir) = dir else { return Ok(None) };
        let file = Self::read(dir)?;
        anyhow::ensure!(
            file.running(),
            "the devnet in {} is not running (its bootnode, process {}, has ended)",
            dir.display(),
            file.nodes.first().map_or(0, |n| n.pid)
        );
        Ok(Some(file))
    }

    /// The first running devnet of `./devnet.json` and `<data dir>/devnet/devnet.json`.
    pub fn find_running() -> Option<Self> {
        let mut candidates = vec![PathBuf::from(".")];
        if let Ok(dir) = data::data_dir(None) {
            candidates.push(dir.join("devnet"));
        }
        candidates
            .iter()
            .filter(|dir| dir.join(DEVNET_FILE).exists())
            .filter_map(|dir| Self::read(dir).ok())
            .find(Self::running)
    }

    /// `dir/devnet.json`.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(DEVNET_FILE);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "reading {} (is {} a devnet's directory?)",
                path.display(),
                dir.display()
            )
        })?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a devnet's description", path.display()))
    }

    /// Whether its bootnode still runs (on a system without `/proc`, assumed so).
    pub fn running(&self) -> bool {
        let proc = Path::new("/proc");
        !proc.exists()
            || self
                .nodes
                .first()
                .is_some_and(|n| proc.join(n.pid.to_string()).exists())
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&DevnetNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node whose API is `base` (a base URL).
    pub fn node_at(&self, base: &str) -> Option<&DevnetNode> {
        self.nodes
            .iter()
            .find(|n| n.api.trim_end_matches('/') == base)
    }

    /// The node commands use when none is named: the last edge, from which the devnet
    /// submits its own tasks, so that they run on the other members.
    pub fn default_node(&self) -> Option<&DevnetNode> {
        self.nodes.iter().rev().find(|n| n.role == "edge")
    }
}

/// The chain in `devnet.json`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct DevnetChain {
    /// Its JSON-RPC URL.
    pub url: String,
    /// Its chain id.
    pub chain_id: u64,
    /// The channel contract's address.
    pub contract: String,
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

/// How long the children have to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a task has to end.
const TASK_TIMEOUT: Duration = Duration::from_secs(60);

impl DevnetCommand {
    /// Runs the devnet until a signal.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let dir = match &self.data {
            Some(d) => d.clone(),
            None => data::data_dir(None)?.join("devnet"),
        };
        let s = |v: &str| v.to_owned();
        let launcher = Launcher::this_binary(&dir)?;
        // The user's own backend, if they named one, gets every span too.
        let forward = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Ok(endpoint) if !endpoint.trim().is_empty() => vec![s("--forward"), endpoint],
            _ => Vec::new(),
        };
        let collector =
            launcher.collector(&self.otlp_http.to_string(), &self.ui.to_string(), &forward)?;
        let (otlp, ui) = (collector.otlp.clone(), collector.ui.clone());
        let launcher = launcher
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", Some(&otlp))
            .env("OTEL_BSP_SCHEDULE_DELAY", Some("500"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        // The bootnode creates the guild, runs the ledger and its faucet, and signs an
        // invitation for each node that joins; every node gets funds from the faucet.
        let mut members = vec![Member::new("relay-node", &[s("--role"), s("relay")])];
        members.extend(
            (1..=usize::from(self.nodes) - 2).map(|i| Member::new(&format!("edge-node-{i}"), &[])),
        );
        // With --chain anvil: a fresh local chain with the contract on it, stopped with the
        // devnet.
        let anvil = match self.chain.as_deref() {
            Some(_) => Some(runtime.block_on(start_chain())?),
            None => None,
        };
        let spec = Spec {
            guild: s("devnet"),
            coordinator: Member::new("bootnode", &[s("--role"), s("bootnode")]),
            ledger: anvil.is_none(),
            members,
            faucet: anvil.is_none().then_some(DEVNET_FUNDS),
            chain: anvil.as_ref().map(|(_, chain)| chain.clone()),
        };
        let cluster = Cluster::start(&launcher, &spec, &runtime)?;
        let guild_id = cluster.guild.id.clone();
        let chain = anvil.as_ref().map(|(anvil, chain)| DevnetChain {
            url: chain.url.clone(),
            chain_id: anvil.chain_id(),
            contract: chain.contract.to_checksum(None),
        });
        write_devnet_file(&dir, &guild_id, &otlp, &ui, &cluster.nodes, chain)?;
        let nodes = &cluster.nodes;
        let sender = &nodes[nodes.len() - 1].api;
        let coordinator = &nodes[0].api;
        let (trace_id, announcement) = runtime.block_on(async {
            // Give the gossip mesh a heartbeat to form before the first message.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let sent = sender
                .send_to_guild(&guild_id, "greeting", "hello, devnet")
                .await
                .context("sending the first guild message")?;
            // The coordinator announces the guild to the whole network: plain gossip,
            // every receiver's span a child of the publish.
            let announced = coordinator
                .announce(&guild_id)
                .await
                .context("announcing the guild")?;
            let traced = |p: Published| p.trace_id.context("the node did not trace it");
            anyhow::Ok((traced(sent)?, traced(announced)?))
        })?;
        let tasks = runtime.block_on(run_tasks(sender, self.tasks))?;
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
            Some(t) => draw(&t.trace_id)?,
            None => String::new(),
        };
        // On a chain: the sender closes its channel, and the settlement's trace is drawn
        // (the payee's close on chain, its transaction and block).
        let settlement = match (&anvil, tasks.is_empty()) {
            (Some(_), false) => {
                let trace = runtime.block_on(settle_one(sender))?;
                std::thread::sleep(Duration::from_secs(2));
                Some((draw(&trace)?, trace))
            }
            _ => None,
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
                tasks: tasks.iter().map(|t| t.id.clone()).collect(),
                pids: nodes
                    .iter()
                    .map(|n| n.child.pid())
                    .chain([collector.child.pid()])
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
            task_report(&tasks, &names_by_peer(nodes), &first_task, &ui)
                + &settlement
                    .as_ref()
                    .map(|(tree, trace)| format!(
                        "a channel settled on chain ({ui}/trace/{trace}):\n\n{tree}\n"
                    ))
                    .unwrap_or_default(),
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
        cluster.stop(STOP_GRACE);
        stop_all(vec![collector.child], STOP_GRACE);
        drop(anvil);
        let unsettled = settlement.as_ref().is_some_and(|(tree, _)| tree.is_empty());
        if tree.is_empty()
            || announced.is_empty()
            || (!tasks.is_empty() && first_task.is_empty())
            || unsettled
        {
            eprintln!("devnet: a trace did not reach the collector");
            return Ok(ExitCode::FAILURE);
        }
        if tasks
            .iter()
            .any(|t| t.state != TaskState::Succeeded || !is_paid(t))
        {
            eprintln!("devnet: not every task succeeded and was paid");
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Closes `node`'s first channel with payments on it, cooperatively: its payee settles it
/// on chain. The close's trace id.
async fn settle_one(node: &NodeClient) -> anyhow::Result<String> {
    let channels = node.channels().await.context("listing the channels")?;
    let channel = channels
        .iter()
        .find(|c| c.side == "payer" && c.nonce > 0 && !c.closing)
        .context("the sender paid through no channel")?;
    let closed = node
        .post(
            &format!("/v1/channels/{}/close", channel.id),
            &serde_json::json!({}),
        )
        .await
        .context("closing a channel on chain")?;
    closed["trace_id"]
        .as_str()
        .map(str::to_owned)
        .context("the close was not traced")
}

/// The devnet chain's id (anvil's own default).
const DEVNET_CHAIN_ID: u64 = 31337;

/// Whole coins each node's settlement account gets on the devnet chain.
const DEVNET_COINS: u64 = 100;

/// Starts anvil and deploys the channel contract with its development account, which also
/// funds the nodes.
async fn start_chain() -> anyhow::Result<(zerostate_chain::Anvil, ChainSpec)> {
    let anvil = zerostate_chain::Anvil::start(DEVNET_CHAIN_ID, None)
        .await
        .context("starting anvil (--chain anvil)")?;
    let faucet = anvil.dev_key();
    let (contract, _) = zerostate_chain::Chain::deploy(anvil.url(), &faucet)
        .await
        .context("deploying the channel contract")?;
    let spec = ChainSpec {
        url: anvil.url().to_owned(),
        contract,
        faucet,
        coins: DEVNET_COINS,
    };
    Ok((anvil, spec))
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
async fn run_tasks(node: &NodeClient, count: u16) -> anyhow::Result<Vec<TaskRecord>> {
    let mut records = Vec::new();
    for i in 0..usize::from(count) {
        let (module, input) = DEVNET_TASKS[i % DEVNET_TASKS.len()];
        let record = node
            .run_task(
                &serde_json::json!({ "module": module, "input": input }),
                TASK_TIMEOUT,
            )
            .await
            .with_context(|| format!("task {} ({module})", i + 1))?;
        records.push(record);
    }
    Ok(records)
}

/// Each node's name by its peer id.
fn names_by_peer(nodes: &[Node]) -> std::collections::HashMap<String, String> {
    nodes
        .iter()
        .map(|n| (n.info.peer_id.clone(), n.info.name.clone()))
        .collect()
}

/// Whether `task`'s payment went through.
fn is_paid(task: &TaskRecord) -> bool {
    task.payment.as_ref().is_some_and(|p| p.status == "paid")
}

/// The first task's trace and a table of every task; nothing without tasks.
fn task_report(
    tasks: &[TaskRecord],
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
        first.trace_id
    );
    let _ = writeln!(
        out,
        "{:<18} {:<14} {:<12} {:>12} {:>9} {:>10}",
        "task", "module", "executor", "fuel", "paid", "duration"
    );
    for t in tasks {
        let executor = t.executor.as_deref().unwrap_or_default();
        let receipt = t.receipt.as_ref();
        let module = receipt.map_or("?", |r| r.entry.as_str());
        let _ = writeln!(
            out,
            "{:<18} {:<14} {:<12} {:>12} {:>9} {:>8}ms  {}",
            t.id,
            module,
            names.get(executor).map_or("-", String::as_str),
            receipt.map_or(0, |r| r.fuel_consumed),
            match &t.payment {
                Some(p) if p.status == "paid" => p.amount.to_string(),
                Some(p) => p.status.clone(),
                None => "-".to_owned(),
            },
            t.duration_ms.unwrap_or(0.0).round(),
            t.state.as_str(),
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
    nodes: &[Node],
    chain: Option<DevnetChain>,
) -> anyhow::Result<()> {
    let nodes = nodes
        .iter()
        .map(|n| DevnetNode {
            data_dir: dir.join(&n.info.name),
            name: n.info.name.clone(),
            role: n.info.role.clone(),
            peer_id: n.info.peer_id.clone(),
            api: n.info.api.clone(),
            admin: n.info.admin.clone(),
            pid: n.child.pid(),
        })
        .collect();
    let file = DevnetFile {
        guild: guild.to_owned(),
        collector: DevnetCollector {
            otlp: otlp.to_owned(),
            ui: ui.to_owned(),
        },
        nodes,
        chain,
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
