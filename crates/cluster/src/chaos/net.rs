//! The network a chaos scenario runs on: a collector, a coordinator that creates the guild,
//! a ledger node, a requester and executors, each its own `zerostate` process on loopback
//! with a fixed p2p port, so that a node killed and started again is found where it was.
//! It kills, pauses, resumes and restarts them, samples their resident memory, and keeps
//! the span accounts of every process it ends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use zerostate_guild::GuildInfo;
use zerostate_node::client::NodeClient;
use zerostate_node::console::Ready;
use zerostate_node::process::{Child, signal, stop_all};

use crate::harness::{Guild, Launcher};

/// How long a node or the collector has to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long the guild has to form.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the members have to be in the guild: as long as a node started with
/// `--join-guild` keeps trying (under a whole test run's load a first join was once not
/// answered within 60 s).
const JOIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The guild's heartbeats in every scenario: every 500 ms, a member silent for four of them
/// (2 s) is marked down, and a silent coordinator succeeded: short enough for a handover
/// within 3 s, wide enough for seven processes on two cores.
pub(super) const HEARTBEAT_MS: u64 = 500;
pub(super) const MISSED_HEARTBEATS: u32 = 4;
const GUILD_SETTINGS: &str = "[guild]\nheartbeat_interval_ms = 500\nmissed_heartbeats = 4\n";

/// The requester tries five executors before a task fails, and waits 3 s past a task's
/// wall-time limit for an answer.
const TASK_SETTINGS: &str = "max_attempts = 5\ntimeout_margin_ms = 3000\n";

/// What a process that ended said about its spans.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SpanAccount {
    /// Spans the collector acknowledged.
    pub(super) exported: u64,
    /// Spans dropped because the export queue was full.
    pub(super) dropped: u64,
    /// Spans in exports that failed and were not spooled.
    pub(super) export_failed: u64,
    /// Spans the processes made (exported, lost or still spooled; those an earlier run of
    /// a node left in its spool counted once).
    pub(super) made: u64,
    /// Spans lost for good: dropped, failed unspooled, or deleted from a full spool.
    pub(super) lost: u64,
    /// Spans still in a spool when the process ended.
    pub(super) spooled: u64,
    /// Spans a process found in its spool at start (an earlier run's).
    pub(super) found: u64,
}

impl SpanAccount {
    fn add(&mut self, other: SpanAccount) {
        self.exported += other.exported;
        self.dropped += other.dropped;
        self.export_failed += other.export_failed;
        self.made += other.made;
        self.lost += other.lost;
        self.spooled += other.spooled;
        self.found += other.found;
    }

    /// A node's account from its metrics (`/metrics` text).
    fn scraped(text: &str) -> Self {
        let m = |name| metric(text, name).unwrap_or(0);
        let exported = m("telemetry_spans_exported_total");
        let dropped = m("telemetry_spans_dropped_total");
        let export_failed = m("telemetry_spans_export_failed_total");
        let lost = dropped + export_failed + m("telemetry_spans_spool_lost_total");
        let spooled = m("telemetry_spool_spans");
        let found = m("telemetry_spool_found_spans");
        Self {
            exported,
            dropped,
            export_failed,
            made: (exported + lost + spooled).saturating_sub(found),
            lost,
            spooled,
            found,
        }
    }

    /// A node's account from its `stopped` event.
    fn stopped(event: &serde_json::Value) -> Self {
        let n = |key| event["spans"][key].as_u64().unwrap_or(0);
        Self {
            exported: n("exported"),
            dropped: n("dropped"),
            export_failed: n("export_failed"),
            made: n("made"),
            lost: n("dropped") + n("export_failed") + n("spool_lost"),
            spooled: n("spooled"),
            found: n("spool_found"),
        }
    }
}

/// One node: how it is started and, while it runs, its process.
struct Slot {
    args: Vec<String>,
    /// Whether it runs on the island.
    island: bool,
    child: Option<Child>,
    peer_id: String,
    client: Option<NodeClient>,
    admin: String,
}

/// Peak resident memory (VmHWM, KiB) by node name, over every process it ran as.
type Peaks = Arc<Mutex<BTreeMap<String, u64>>>;

/// A running chaos network.
pub(super) struct Net {
    dir: PathBuf,
    /// The guild every member is in.
    guild: String,
    /// Starts the collector.
    launcher: Launcher,
    /// Starts the nodes: the launcher with the nodes' environment.
    nodes_launcher: Launcher,
    collector: Option<Child>,
    collector_args: Vec<String>,
    /// The collector's query API and viewer.
    ui: String,
    nodes: BTreeMap<String, Slot>,
    /// Spans of processes that ended (killed ones as last scraped).
    pub(super) spans: SpanAccount,
    /// Whether some node's span account is only as good as its last scrape.
    pub(super) spans_scraped: bool,
    peaks: Peaks,
    pids: Arc<Mutex<BTreeMap<String, u32>>>,
    /// Why the island was not made, when it was asked for.
    pub(super) island_refused: Option<String>,
    /// Where the island sends its spans.
    island_otlp: Option<String>,
    /// How many times each node was started.
    starts: BTreeMap<String, u32>,
    sampling: Arc<std::sync::atomic::AtomicBool>,
    /// The runtime the harness's HTTP calls run on.
    pub(super) runtime: tokio::runtime::Runtime,
    /// The namespace one executor runs in, when asked for and this machine allows it.
    pub(super) island: Option<super::island::Island>,
    /// The chain the nodes settle on, when the plan says so: anvil, and the contract.
    pub(super) chain: Option<(zerostate_chain::Anvil, crate::harness::ChainSpec)>,
}

/// How the network is built.
pub(super) struct Plan<'a> {
    /// Where every process keeps its data and log.
    pub(super) dir: &'a Path,
    /// Executors (members that run tasks).
    pub(super) executors: usize,
    /// `OTEL_TRACES_SAMPLER_ARG` for every node (parent-based trace-id ratio).
    pub(super) sampling: f64,
    /// When set, nodes send spans through a proxy in front of the collector that holds its
    /// answers as long as this says.
    pub(super) otlp_via: Option<super::proxy::Delay>,
    /// The node to run in a network namespace of its own (see [`super::island`]): the
    /// partition scenarios' [`ISLANDER`], or the coordinator; if the namespace cannot be
    /// made, [`Net::island`] stays `None` and the reason is in [`Net::island_refused`].
    pub(super) island: Option<&'static str>,
    /// Whether the coordinator runs tasks too; it then holds each answer back
    /// [`COORDINATOR_STALL_MS`] (`--misbehave stall-answers`), and the executors ask 2, the
    /// coordinator 1.
    pub(super) coordinator_executes: bool,
    /// Misbehaviours (`--misbehave` items) of every member that joins the guild.
    pub(super) members_misbehave: &'static [&'static str],
    /// Add the cheaters of [`super::cheaters`]: three lying executors (cheaper than the
    /// honest ones, which then ask 2) and a requester that never pays.
    pub(super) cheaters: bool,
    /// Settle on a local anvil (its state in `DIR/anvil.json`) instead of the ledger node.
    pub(super) chain: bool,
}

/// Starts anvil with its state in `DIR/anvil.json` and deploys the channel contract with
/// its development account, which also funds the nodes.
async fn start_chain(
    dir: &Path,
) -> anyhow::Result<(zerostate_chain::Anvil, crate::harness::ChainSpec)> {
    let anvil = zerostate_chain::Anvil::start(31337, Some(&dir.join("anvil.json")))
        .await
        .context("starting anvil (--chain anvil)")?;
    let faucet = anvil.dev_key();
    let (contract, _) = zerostate_chain::Chain::deploy(anvil.url(), &faucet)
        .await
        .context("deploying the channel contract")?;
    let spec = crate::harness::ChainSpec {
        url: anvil.url().to_owned(),
        contract,
        faucet,
        coins: 100,
    };
    Ok((anvil, spec))
}

/// How long a coordinator that runs tasks holds each answer back
/// ([`Plan::coordinator_executes`]).
pub(super) const COORDINATOR_STALL_MS: u64 = 1500;

/// The node the island holds, when there is one.
pub(super) const ISLANDER: &str = "executor-1";

/// A free TCP port on `ip` (bound and released; the kernel does not hand it out again
/// soon).
fn free_port_on(ip: &str) -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// A free loopback TCP port.
fn free_port() -> anyhow::Result<u16> {
    free_port_on("127.0.0.1")
}

fn s(v: &str) -> String {
    v.to_owned()
}

/// The first `name value` pair of a Prometheus text exposition.
pub(super) fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split_whitespace()
            .next()?
            .parse::<f64>()
            .ok()
            .map(|v| v as u64)
    })
}

/// VmHWM of a process, KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix("VmHWM:")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}

impl Net {
    /// Starts the collector, then the coordinator (which creates the guild), the ledger
    /// node, the requester and the executors; waits until the guild has them all, funds
    /// the requester, and starts sampling memory.
    pub(super) fn start(plan: Plan<'_>) -> anyhow::Result<Net> {
        let dir = plan.dir.to_owned();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        // The collector on fixed ports, so that it comes back where the nodes send.
        let collector_args = vec![
            s("collector"),
            s("--otlp-http"),
            format!("127.0.0.1:{}", free_port()?),
            s("--ui"),
            format!("127.0.0.1:{}", free_port()?),
            s("--data-dir"),
            dir.display().to_string(),
        ];
        let launcher = Launcher::this_binary(&dir)?;
        let collector = launcher.spawn("collector", &collector_args, &dir.join("collector.log"))?;
        let ready = Ready::parse(collector.ready())?
            .collector
            .context("the collector did not say where it listens")?;
        let otlp = match plan.otlp_via.clone() {
            Some(delay) => super::proxy::start(&runtime, "127.0.0.1", &ready.otlp, delay)?,
            None => ready.otlp.clone(),
        };
        let nodes_launcher = launcher
            .clone()
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", Some(&otlp))
            .env("OTEL_BSP_SCHEDULE_DELAY", Some("500"))
            .env("OTEL_TRACES_SAMPLER", Some("parentbased_traceidratio"))
            .env("OTEL_TRACES_SAMPLER_ARG", Some(&plan.sampling.to_string()))
            .env("RUST_LOG", None);
        let mut net = Net {
            dir,
            guild: String::new(),
            launcher,
            nodes_launcher,
            collector: Some(collector),
            collector_args,
            ui: ready.ui,
            nodes: BTreeMap::new(),
            spans: SpanAccount::default(),
            spans_scraped: false,
            peaks: Peaks::default(),
            pids: Arc::default(),
            sampling: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            runtime,
            island: None,
            island_refused: None,
            island_otlp: None,
            starts: BTreeMap::new(),
            chain: None,
        };
        if plan.chain {
            net.chain = Some(net.runtime.block_on(start_chain(&net.dir))?);
        }
        if plan.island.is_some() {
            net.make_island(&otlp)?;
        }
        net.sample_memory();
        net.start_nodes(&plan)?;
        Ok(net)
    }

    /// Makes the island, or says why it could not be made.
    fn make_island(&mut self, otlp: &str) -> anyhow::Result<()> {
        match super::island::Island::create() {
            Ok(island) => {
                // The collector listens on loopback: the island sends its spans to a plain
                // proxy on the link.
                self.island_otlp = Some(super::proxy::start(
                    &self.runtime,
                    &island.host_ip,
                    otlp,
                    super::proxy::Delay::default(),
                )?);
                self.island = Some(island);
            }
            Err(e) => self.island_refused = Some(format!("{e:#}")),
        }
        Ok(())
    }

    /// `--listen` flags of a node on this side: loopback `port`, and the island's link
    /// (where the island reaches it) when there is one.
    fn listen_here(&self, port: u16) -> anyhow::Result<Vec<String>> {
        let mut args = vec![s("--listen"), format!("/ip4/127.0.0.1/tcp/{port}")];
        if let Some(i) = &self.island {
            args.extend([
                s("--listen"),
                format!("/ip4/{}/tcp/{}", i.host_ip, free_port_on(&i.host_ip)?),
            ]);
        }
        Ok(args)
    }

    /// Writes node `name`'s settings file, with `extra` lines in `[tasks]`; returns its path.
    fn config(&self, name: &str, execute: bool, extra: &str) -> anyhow::Result<String> {
        let path = self.dir.join(format!("{name}.toml"));
        let payments = match &self.chain {
            Some((_, chain)) => format!(
                "[payments]\nchain = \"{}\"\ncontract = \"{}\"\n",
                chain.url, chain.contract
            ),
            None => String::new(),
        };
        std::fs::write(
            &path,
            format!(
                "{GUILD_SETTINGS}{payments}[tasks]\nexecute = {execute}\n{TASK_SETTINGS}{extra}"
            ),
        )?;
        Ok(path.display().to_string())
    }

    /// Starts the coordinator (it creates the guild), the ledger node, the requester and
    /// the executors (they join with invitations), waits for the guild to hold them all and
    /// funds the requester.
    fn start_nodes(&mut self, plan: &Plan<'_>) -> anyhow::Result<()> {
        let (executors, cheaters) = (plan.executors, plan.cheaters);
        let on_island = |net: &Net, name: &str| plan.island == Some(name) && net.island.is_some();
        let coordinator_away = on_island(self, "coordinator");
        let mut args = match &self.island {
            Some(i) if coordinator_away => {
                vec![s("--listen"), format!("/ip4/{}/tcp/4001", i.node_ip)]
            }
            _ => self.listen_here(free_port()?)?,
        };
        // Its address on loopback, and on the island's link; or on the island only.
        let addresses: Vec<String> = args.iter().skip(1).step_by(2).cloned().collect();
        args.extend([
            s("--role"),
            s("bootnode"),
            s("--config"),
            self.config("coordinator", plan.coordinator_executes, "")?,
            s("--create-guild"),
            s("chaos"),
        ]);
        self.add("coordinator", args, coordinator_away)?;
        let created = self.nodes["coordinator"]
            .child
            .as_ref()
            .context("no coordinator")?
            .event_of(&["guild_created", "guild_resumed"], FORM_TIMEOUT)
            .context("the coordinator did not create the guild")?;
        self.guild = created["guild"]["id"]
            .as_str()
            .context("no guild id")?
            .to_owned();
        let peer = self.nodes["coordinator"].peer_id.clone();
        let boot = format!("{}/p2p/{peer}", addresses[0]);
        let island_boot = addresses.get(1).map(|a| format!("{a}/p2p/{peer}"));
        let mut args = self.listen_here(free_port()?)?;
        args.extend([
            s("--bootstrap"),
            boot.clone(),
            s("--config"),
            self.config("ledger", false, "")?,
        ]);
        // On a chain the ledger node is a member like the others: the chain is the ledger.
        if self.chain.is_none() {
            args.extend([s("--ledger"), s("--ledger-faucet")]);
        }
        self.add("ledger", args, false)?;
        let ledger = self.nodes["ledger"].peer_id.clone();
        // On a chain nobody names the ledger node.
        let ledger_peer = self.chain.is_none().then(|| ledger.clone());
        if plan.coordinator_executes {
            // An executor is paid through the ledger, which started after it: the
            // coordinator starts again knowing it, and resumes its guild (no member yet).
            self.kill("coordinator")?;
            // Each answer held back, so that a kill at a random moment finds a task under
            // way on it rather than one already answered.
            if let Some(slot) = self.nodes.get_mut("coordinator") {
                if let Some(ledger) = &ledger_peer {
                    slot.args.extend([s("--ledger-peer"), ledger.clone()]);
                }
                slot.args.extend([
                    s("--misbehave"),
                    format!("stall-answers={COORDINATOR_STALL_MS}"),
                ]);
            }
            self.restart("coordinator")?;
            self.nodes["coordinator"]
                .child
                .as_ref()
                .context("no coordinator")?
                .event_of(&["guild_resumed"], FORM_TIMEOUT)
                .context("the coordinator did not resume the guild")?;
            // The ledger dials its bootstrap node again; members find it through the
            // coordinator, so not before that.
            let client = self.client("coordinator")?;
            let start = Instant::now();
            while !self
                .runtime
                .block_on(client.get("/v1/p2p/peers"))
                .ok()
                .flatten()
                .is_some_and(|p| p.to_string().contains(&ledger))
            {
                if start.elapsed() > FORM_TIMEOUT {
                    bail!("the ledger did not come back to the restarted coordinator");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Name, runs tasks, extra `[tasks]` lines, misbehaviour. A coordinator that runs
        // tasks asks less than the executors: it wins every round while it has a free slot,
        // so that a kill finds it working (tasks otherwise stay on the standing offers of
        // whichever executor delivered last).
        let honest_price = if cheaters || plan.coordinator_executes {
            "price = 2\n"
        } else {
            ""
        };
        let mut members: Vec<(String, bool, &str, Option<&str>)> =
            vec![(s("requester"), false, "", None)];
        members
            .extend((1..=executors).map(|i| (format!("executor-{i}"), true, honest_price, None)));
        if cheaters {
            for (i, (_, misbehave)) in super::scenarios::CHEATS.iter().enumerate() {
                members.push((
                    format!("executor-{}", executors + 1 + i),
                    true,
                    "price = 1\n",
                    Some(*misbehave),
                ));
            }
            members.push((s(super::scenarios::NON_PAYER), false, "", Some("never-pay")));
        }
        for (name, execute, extra, misbehave) in &members {
            let on_island = on_island(self, name);
            let (mut args, boot) = match (&self.island, &island_boot) {
                (Some(i), Some(island_boot)) if on_island => (
                    vec![s("--listen"), format!("/ip4/{}/tcp/4001", i.node_ip)],
                    island_boot.clone(),
                ),
                _ => (self.listen_here(free_port()?)?, boot.clone()),
            };
            args.extend([s("--config"), self.config(name, *execute, extra)?]);
            let guild = Guild {
                id: self.guild.clone(),
                boot: boot.clone(),
                coordinator: self.client("coordinator")?,
            };
            args.extend(
                self.runtime
                    .block_on(guild.join_args(&boot, ledger_peer.as_deref()))?,
            );
            for item in misbehave.iter().chain(plan.members_misbehave) {
                args.extend([s("--misbehave"), (*item).to_owned()]);
            }
            self.add(name, args, on_island)?;
        }
        let everyone: Vec<String> = members.into_iter().map(|(n, ..)| n).collect();
        self.wait_members(&everyone, JOIN_TIMEOUT)?;
        if let Some((_, chain)) = &self.chain {
            // Every node pays gas; the payers lock deposits.
            let faucet = self.runtime.block_on(zerostate_chain::Chain::connect(
                &chain.url,
                chain.contract,
                chain.faucet.clone(),
                1,
            ))?;
            let names: Vec<String> = self.nodes.keys().cloned().collect();
            for name in names {
                let node = self.client(&name)?;
                let info = self
                    .runtime
                    .block_on(node.get("/v1/node"))?
                    .with_context(|| format!("{name} did not describe itself"))?;
                let address = info["settlement"]["address"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .with_context(|| format!("{name} showed no settlement address"))?;
                self.runtime
                    .block_on(faucet.transfer(address, zerostate_chain::coins_to_wei(100)))
                    .with_context(|| format!("funding {name} on the chain"))?;
            }
            return Ok(());
        }
        let ledger = self.client("ledger")?;
        let payers = if cheaters {
            vec!["requester", super::scenarios::NON_PAYER]
        } else {
            vec!["requester"]
        };
        for payer in payers {
            let peer = self.peer(payer)?;
            self.runtime
                .block_on(ledger.fund(&peer, 1_000_000_000_000))
                .with_context(|| format!("funding {payer}"))?;
        }
        Ok(())
    }

    /// Starts node `name` with `args` (besides its name, API, operations listener and data
    /// directory) and keeps how it was started.
    fn add(&mut self, name: &str, args: Vec<String>, island: bool) -> anyhow::Result<()> {
        self.nodes.insert(
            name.to_owned(),
            Slot {
                args,
                island,
                child: None,
                peer_id: String::new(),
                client: None,
                admin: String::new(),
            },
        );
        self.restart(name)
    }

    /// Starts node `name` again, as it was started first (same data, same p2p port).
    pub(super) fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let slot = self.nodes.get(name).context("no such node")?;
        let island = self.island.as_ref().filter(|_| slot.island);
        // The island's API and operations listener are on its link, where this side
        // reaches them.
        let host = island.map_or("127.0.0.1", |i| i.node_ip.as_str());
        let mut args = self.nodes_launcher.node_args(name, host);
        args.extend(slot.args.iter().cloned());
        // Each start its own log: `NAME.log`, then `NAME.2.log`, ...
        let starts = self.starts.entry(name.to_owned()).or_default();
        *starts += 1;
        let log = match *starts {
            1 => self.dir.join(format!("{name}.log")),
            n => self.dir.join(format!("{name}.{n}.log")),
        };
        let launcher = &self.nodes_launcher;
        let child = match island {
            // The island reaches the collector through the proxy on its link.
            Some(i) => launcher.spawn_through(
                name,
                i.command(launcher.exe()),
                &args,
                &log,
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", self.island_otlp.as_deref())],
            )?,
            None => launcher.spawn(name, &args, &log)?,
        };
        let info = Ready::parse(child.ready())?
            .node
            .with_context(|| format!("{name} did not describe itself"))?;
        self.pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), child.pid());
        let slot = self.nodes.get_mut(name).context("no such node")?;
        slot.peer_id = info.peer_id;
        slot.admin = info.admin;
        slot.client = Some(NodeClient::from_ready(child.ready())?);
        slot.child = Some(child);
        Ok(())
    }

    /// Node `name`'s API client.
    pub(super) fn client(&self, name: &str) -> anyhow::Result<NodeClient> {
        self.nodes
            .get(name)
            .and_then(|s| s.client.clone())
            .with_context(|| format!("{name} is not running"))
    }

    /// Node `name`'s peer id.
    pub(super) fn peer(&self, name: &str) -> anyhow::Result<String> {
        Ok(self
            .nodes
            .get(name)
            .context("no such node")?
            .peer_id
            .clone())
    }

    /// The name of the node with this peer id.
    pub(super) fn name_of(&self, peer: &str) -> Option<&str> {
        self.nodes
            .iter()
            .find(|(_, s)| s.peer_id == peer)
            .map(|(n, _)| n.as_str())
    }

    /// Node `name`'s process id, while it runs.
    pub(super) fn pid(&self, name: &str) -> Option<u32> {
        self.nodes.get(name)?.child.as_ref().map(Child::pid)
    }

    /// What the running nodes' spools hold now: (spans, bytes), from their metrics.
    pub(super) fn spooled(&self) -> (u64, u64) {
        self.nodes
            .iter()
            .filter(|(_, s)| s.child.is_some())
            .filter_map(|(n, _)| self.metrics(n).ok())
            .fold((0, 0), |(spans, bytes), text| {
                (
                    spans + metric(&text, "telemetry_spool_spans").unwrap_or(0),
                    bytes + metric(&text, "telemetry_spool_bytes").unwrap_or(0),
                )
            })
    }

    /// Names of the executors.
    pub(super) fn executors(&self) -> Vec<String> {
        self.nodes
            .keys()
            .filter(|n| n.starts_with("executor-"))
            .cloned()
            .collect()
    }

    /// The body of `GET url` (no token: the operations listener and the collector's query
    /// API), within 5 s.
    fn fetch(&self, url: &str) -> anyhow::Result<String> {
        self.runtime.block_on(async {
            let text = reqwest::Client::new()
                .get(url)
                .timeout(Duration::from_secs(5))
                .send()
                .await?
                .text()
                .await?;
            anyhow::Ok(text)
        })
    }

    /// Node `name`'s `/metrics` text.
    pub(super) fn metrics(&self, name: &str) -> anyhow::Result<String> {
        let admin = &self.nodes.get(name).context("no such node")?.admin;
        self.fetch(&format!("{admin}/metrics"))
    }

    /// The guild as the coordinator sees it.
    pub(super) fn guild_view(&self, from: &str) -> anyhow::Result<GuildInfo> {
        let client = self.client(from)?;
        self.runtime
            .block_on(client.guild(&self.guild))?
            .context("the guild is unknown there")
    }

    /// Whether `name` is in the guild and converged: the coordinator lists it as an up
    /// member, and its own view is `member` at the coordinator's membership version.
    pub(super) fn converged(&self, name: &str) -> bool {
        let (Ok(coordinator), Ok(own), Ok(peer)) = (
            self.guild_view("coordinator"),
            self.guild_view(name),
            self.peer(name),
        ) else {
            return false;
        };
        let listed = coordinator
            .members
            .iter()
            .any(|m| m.peer_id == peer && m.up);
        listed && own.status == "member" && own.version == coordinator.version
    }

    /// The guild as node `from` sees it, as JSON text for a report; why not, when it
    /// cannot say.
    pub(super) fn guild_text(&self, from: &str) -> String {
        match self.guild_view(from) {
            Ok(view) => serde_json::to_string(&view).unwrap_or_default(),
            Err(e) => format!("{from} cannot say: {e:#}"),
        }
    }

    /// Waits until every member named is in the guild and converged.
    fn wait_members(&self, names: &[String], within: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let waiting: Vec<&String> = names.iter().filter(|n| !self.converged(n)).collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if start.elapsed() > within {
                bail!(
                    "{waiting:?} not in the guild within {} s: {}",
                    within.as_secs(),
                    self.guild_text("coordinator")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills node `name` with SIGKILL, as a crash would; its span account is taken from a
    /// scrape just before.
    pub(super) fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let scraped = self.metrics(name).ok();
        let slot = self.nodes.get_mut(name).context("no such node")?;
        let mut child = slot
            .child
            .take()
            .with_context(|| format!("{name} is not running"))?;
        child.kill();
        slot.client = None;
        if let Some(text) = scraped {
            self.spans.add(SpanAccount::scraped(&text));
        }
        self.spans_scraped = true;
        Ok(())
    }

    /// Cuts node `name` off (`true`) or heals it (`false`): its island's link down or up
    /// when it runs on the island, SIGSTOP or SIGCONT otherwise. Returns how.
    pub(super) fn partition(&self, name: &str, cut: bool) -> anyhow::Result<&'static str> {
        match &self.island {
            Some(i) if self.nodes.get(name).is_some_and(|s| s.island) => {
                i.cut(cut)?;
                Ok("its network namespace's veth link down")
            }
            _ => {
                self.pause(name, cut)?;
                Ok("SIGSTOP")
            }
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) to node `name`.
    pub(super) fn pause(&self, name: &str, paused: bool) -> anyhow::Result<()> {
        let pid = self
            .pid(name)
            .with_context(|| format!("{name} is not running"))?;
        signal(&[pid], if paused { "STOP" } else { "CONT" })
    }

    /// Kills the collector with SIGKILL.
    pub(super) fn kill_collector(&mut self) {
        if let Some(mut c) = self.collector.take() {
            c.kill();
        }
    }

    /// Starts the collector again on its ports and data.
    pub(super) fn restart_collector(&mut self) -> anyhow::Result<()> {
        self.collector = Some(self.launcher.spawn(
            "collector",
            &self.collector_args,
            &self.dir.join("collector-restarted.log"),
        )?);
        Ok(())
    }

    /// Spans the running collector has stored since it started.
    pub(super) fn collector_stored(&self) -> anyhow::Result<u64> {
        let body: serde_json::Value =
            serde_json::from_str(&self.fetch(&format!("{}/api/zerostate/stats", self.ui))?)?;
        body["spans_stored"]
            .as_u64()
            .context("no spans_stored in the collector's stats")
    }

    /// Samples every node's peak resident memory every 250 ms until stopped.
    fn sample_memory(&self) {
        let (peaks, pids, on) = (self.peaks.clone(), self.pids.clone(), self.sampling.clone());
        std::thread::spawn(move || {
            while on.load(std::sync::atomic::Ordering::Relaxed) {
                let now: Vec<(String, u32)> = pids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|(n, p)| (n.clone(), *p))
                    .collect();
                for (name, pid) in now {
                    if let Some(kib) = peak_kib(pid) {
                        let mut peaks = peaks.lock().unwrap_or_else(|e| e.into_inner());
                        let peak = peaks.entry(name).or_default();
                        *peak = (*peak).max(kib);
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
    }

    /// Peak resident memory by node, MiB.
    pub(super) fn peaks_mib(&self) -> BTreeMap<String, f64> {
        self.peaks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, k)| (n.clone(), *k as f64 / 1024.0))
            .collect()
    }

    /// Stops every node (SIGTERM: each flushes its spans and says its account), then the
    /// collector; returns the spans the collector's store holds.
    pub(super) fn stop(&mut self) -> anyhow::Result<u64> {
        // Last samples first.
        std::thread::sleep(Duration::from_millis(300));
        self.sampling
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let mut children = Vec::new();
        for slot in self.nodes.values_mut() {
            slot.client = None;
            if let Some(c) = slot.child.take() {
                children.push(c);
            }
        }
        // A paused node would never see its SIGTERM, a cut-off one could not export.
        let pids: Vec<u32> = children.iter().map(Child::pid).collect();
        let _ = signal(&pids, "CONT");
        if let Some(i) = &self.island {
            let _ = i.cut(false);
        }
        let _ = signal(&pids, "TERM");
        for c in &children {
            match c.event("stopped", STOP_GRACE) {
                Some(a) => self.spans.add(SpanAccount::stopped(&a)),
                None => bail!(
                    "{} did not stop within {} s",
                    c.name(),
                    STOP_GRACE.as_secs()
                ),
            }
        }
        stop_all(children, STOP_GRACE);
        if let Some(c) = self.collector.take() {
            stop_all(vec![c], STOP_GRACE);
        }
        let stored = zerostate_collector::Store::reader(&self.dir.join("traces"))
            .and_then(|s| s.span_count())
            .context("reading the collector's store")?;
        Ok(stored)
    }

    /// A node's data directory.
    pub(super) fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.sampling
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let paused: Vec<u32> = self
            .nodes
            .values()
            .filter_map(|s| s.child.as_ref().map(Child::pid))
            .collect();
        let _ = signal(&paused, "CONT");
    }
}
