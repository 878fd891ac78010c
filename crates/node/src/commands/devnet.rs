//! `zerostate devnet`: a whole network on this machine — the collector, a bootnode that
//! coordinates a guild, a relay, and edge nodes that join it — one guild message sent
//! through it, and its trace drawn, until SIGINT or SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use crate::data;

/// Run a local network with its collector and viewer until SIGINT or SIGTERM.
#[derive(Debug, Args)]
pub struct DevnetCommand {
    /// Edge nodes besides the bootnode and the relay [default: 2].
    #[arg(long, default_value_t = 2)]
    edges: usize,
    /// The collector's OTLP/HTTP address [default: 127.0.0.1:4318].
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4318")]
    otlp_http: SocketAddr,
    /// The viewer and query API address [default: 127.0.0.1:16686].
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:16686")]
    ui: SocketAddr,
    /// Where the devnet keeps its nodes' data and traces [default: <data dir>/devnet].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// A child process and the JSON line it said it was ready with.
struct Process {
    name: String,
    child: Child,
    ready: serde_json::Value,
    more: std::sync::mpsc::Receiver<String>,
}

impl Drop for Process {
    fn drop(&mut self) {
        // SIGTERM first, so that each flushes its telemetry; SIGKILL after 10 s.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `zerostate <args>` and waits for its ready line; its log goes to `log`.
fn spawn(name: &str, args: &[String], log: &Path, otlp: Option<&str>) -> anyhow::Result<Process> {
    let exe = std::env::current_exe().context("finding the zerostate executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?);
    if let Some(endpoint) = otlp {
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("OTEL_BSP_SCHEDULE_DELAY", "500");
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    // Room for the ready line and a few events; later lines wait for the reader.
    let (tx, rx) = std::sync::mpsc::sync_channel(16);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut process = Process {
        name: name.to_owned(),
        child,
        ready: serde_json::Value::Null,
        more: rx,
    };
    let line = process
        .more
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| {
            anyhow::anyhow!(
                "{name} did not start; its log is {}:\n{}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })?;
    process.ready = serde_json::from_str(&line)
        .with_context(|| format!("{} said {line:?} instead of its ready line", process.name))?;
    Ok(process)
}

impl DevnetCommand {
    /// Runs the devnet until a signal.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let dir = match &self.dir {
            Some(d) => d.clone(),
            None => data::data_dir(None)?.join("devnet"),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let s = |v: &str| v.to_owned();
        let collector = spawn(
            "collector",
            &[
                s("collector"),
                s("--otlp-http"),
                self.otlp_http.to_string(),
                s("--ui"),
                self.ui.to_string(),
                s("--data-dir"),
                dir.display().to_string(),
            ],
            &dir.join("collector.log"),
            None,
        )?;
        let otlp = collector.ready["collector"]["otlp"]
            .as_str()
            .context("the collector did not say where it listens")?
            .to_owned();
        let ui = collector.ready["collector"]["ui"]
            .as_str()
            .context("the collector did not say where its viewer is")?
            .to_owned();
        let node = |name: &str, extra: &[String]| -> anyhow::Result<Process> {
            let mut args = vec![
                s("node"),
                s("--name"),
                s(name),
                s("--listen"),
                s("/ip4/127.0.0.1/tcp/0"),
                s("--api"),
                s("127.0.0.1:0"),
                s("--data-dir"),
                dir.join(name).display().to_string(),
            ];
            args.extend_from_slice(extra);
            spawn(name, &args, &dir.join(format!("{name}.log")), Some(&otlp))
        };
        let boot = node(
            "bootnode",
            &[s("--role"), s("bootnode"), s("--create-guild"), s("devnet")],
        )?;
        let guild_line = boot
            .more
            .recv_timeout(Duration::from_secs(30))
            .context("the bootnode did not create the guild")?;
        let guild: serde_json::Value = serde_json::from_str(&guild_line)?;
        let guild_id = guild["guild"]["id"]
            .as_str()
            .context("no guild id")?
            .to_owned();
        let boot_addr = first_address(&boot)?;
        let join = format!("{guild_id}@{boot_addr}");
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
            ],
        )?);
        for i in 1..=self.edges {
            nodes.push(node(
                &format!("edge-node-{i}"),
                &[
                    s("--bootstrap"),
                    boot_addr.clone(),
                    s("--join-guild"),
                    join.clone(),
                ],
            )?);
        }
        let client = |p: &Process| crate::client::NodeClient::from_ready(&p.ready);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let members = nodes.len();
        let sender = client(&nodes[nodes.len() - 1])?;
        let coordinator = client(&nodes[0])?;
        let trace_id = runtime.block_on(async {
            let start = Instant::now();
            loop {
                let body = coordinator
                    .get(&format!("/v1/guilds/{guild_id}"))
                    .await?
                    .unwrap_or_default();
                if body["members"].as_array().map(Vec::len) == Some(members) {
                    break;
                }
                if start.elapsed() > Duration::from_secs(60) {
                    bail!("the guild did not reach {members} members within 60 s: {body}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // Give the gossip mesh a heartbeat to form before the first message.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let body = sender
                .post(
                    &format!("/v1/guilds/{guild_id}/messages"),
                    &serde_json::json!({ "type": "task_request", "payload": "hello, devnet" }),
                )
                .await
                .context("sending the first guild message")?;
            let trace_id = body["trace_id"].as_str().context("no trace id")?.to_owned();
            // Every node exports within its batch delay (500 ms).
            tokio::time::sleep(Duration::from_secs(2)).await;
            anyhow::Ok(trace_id)
        })?;
        let tree = runtime
            .block_on(crate::commands::trace::fetch(&format!(
                "{ui}/api/v3/traces/{trace_id}"
            )))?
            .map(|t| crate::commands::trace::render(&t["result"]))
            .unwrap_or_default();
        let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        crate::commands::node::say(&serde_json::json!({
            "event": "ready",
            "devnet": {
                "viewer": ui,
                "otlp": otlp,
                "guild": guild_id,
                "nodes": names,
                "trace": trace_id,
                "pids": nodes.iter().map(|n| n.child.id()).chain([collector.child.id()]).collect::<Vec<_>>(),
            }
        }));
        eprintln!(
            "devnet: {} nodes in guild {guild_id}, traces to {otlp}, logs in {}\n\
             the first guild message's trace ({ui}/trace/{trace_id}):\n\n{tree}\n\
             viewer: {ui}   map: {ui}/map   operations: {ui}/operations\n\
             Ctrl-C stops everything.",
            names.len(),
            dir.display()
        );
        runtime.block_on(crate::commands::node::shutdown_signal())?;
        eprintln!("devnet: stopping");
        // Nodes first (their last spans go to the collector), then the collector.
        drop(nodes);
        drop(collector);
        Ok(ExitCode::SUCCESS)
    }
}

fn first_address(p: &Process) -> anyhow::Result<String> {
    p.ready["node"]["listen"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|a| a.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{} has no listen address", p.name))
}
