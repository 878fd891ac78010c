//! The one way this crate starts a network, typed end to end: a [`Launcher`] runs `zerostate`
//! processes under one directory with one environment; [`Guild`] is a guild they form (a
//! coordinator that created it, members that joined with its invitations); a [`Spec`]
//! describes a whole network (coordinator, ledger, members, faucet) and [`Cluster::start`]
//! starts it. Every answer is read through [`NodeClient`] as the API's own types.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use zerostate_node::client::NodeClient;
use zerostate_node::console::Ready;
use zerostate_node::process::{Child, stop_all};
use zerostate_node::runtime::NodeInfo;

/// How long a child has to say it is ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a guild has to form.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an invitation the harness asks for stays valid.
const INVITATION_TTL_S: u64 = 7200;

/// Starts `zerostate` processes with their data and logs under one directory.
#[derive(Clone, Debug)]
pub struct Launcher {
    exe: PathBuf,
    dir: PathBuf,
    env: Vec<(String, Option<String>)>,
    start_timeout: Duration,
}

impl Launcher {
    /// Runs the `zerostate` executable at `exe`, keeping everything under `dir` (created).
    pub fn new(exe: impl Into<PathBuf>, dir: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            exe: exe.into(),
            dir,
            env: Vec::new(),
            start_timeout: START_TIMEOUT,
        })
    }

    /// Runs the executable this process runs (`zerostate devnet`, `bench`, `chaos`).
    pub fn this_binary(dir: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the zerostate executable")?;
        Self::new(exe, dir)
    }

    /// Sets `key` to `value` in every child's environment; `None` removes it there.
    pub fn env(mut self, key: &str, value: Option<&str>) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.map(str::to_owned)));
        self
    }

    /// Gives each child `timeout` to say it is ready (default [`START_TIMEOUT`]).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Where the children keep their data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `zerostate` executable.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// Starts `zerostate <args>`, its stderr in `log`, and waits for its ready line.
    pub fn spawn(&self, name: &str, args: &[String], log: &Path) -> anyhow::Result<Child> {
        self.spawn_through(name, Command::new(&self.exe), args, log, &[])
    }

    /// [`Self::spawn`] through `cmd`, a program that runs the executable (`ip netns exec NS
    /// zerostate`), with `env` besides the launcher's.
    pub fn spawn_through(
        &self,
        name: &str,
        mut cmd: Command,
        args: &[String],
        log: &Path,
        env: &[(&str, Option<&str>)],
    ) -> anyhow::Result<Child> {
        cmd.args(args);
        let launcher = self.env.iter().map(|(k, v)| (k.as_str(), v.as_deref()));
        for (key, value) in launcher.chain(env.iter().copied()) {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        Child::spawn(name, cmd, log, self.start_timeout)
    }

    /// Starts a collector keeping its traces under the directory, listening on `otlp_http`
    /// and `ui` (`127.0.0.1:0` for any port), `extra` flags after them.
    pub fn collector(
        &self,
        otlp_http: &str,
        ui: &str,
        extra: &[String],
    ) -> anyhow::Result<Collector> {
        let mut args = strings(&["collector", "--otlp-http", otlp_http, "--ui", ui]);
        args.extend(["--data-dir".to_owned(), self.dir.display().to_string()]);
        args.extend_from_slice(extra);
        let child = self.spawn("collector", &args, &self.dir.join("collector.log"))?;
        let listening = Ready::parse(child.ready())?
            .collector
            .context("the collector did not say where it listens")?;
        Ok(Collector {
            child,
            otlp: listening.otlp,
            ui: listening.ui,
        })
    }

    /// The flags every node of the launcher gets: its name, the API and the operations
    /// listener on `host` (any port), its data directory.
    pub fn node_args(&self, name: &str, host: &str) -> Vec<String> {
        let any = format!("{host}:0");
        let mut args = strings(&["node", "--name", name, "--api", &any, "--admin", &any]);
        args.extend([
            "--data-dir".to_owned(),
            self.dir.join(name).display().to_string(),
        ]);
        args
    }

    /// Starts node `name` listening on loopback (any port) with `extra` flags, its data in
    /// `DIR/name` and its log in `DIR/name.log`.
    pub fn node(&self, name: &str, extra: &[String]) -> anyhow::Result<Node> {
        let mut args = self.node_args(name, "127.0.0.1");
        args.extend(strings(&["--listen", "/ip4/127.0.0.1/tcp/0"]));
        args.extend_from_slice(extra);
        Node::new(self.spawn(name, &args, &self.dir.join(format!("{name}.log")))?)
    }
}

/// A running collector.
#[derive(Debug)]
pub struct Collector {
    /// Its process.
    pub child: Child,
    /// Its OTLP/HTTP endpoint.
    pub otlp: String,
    /// Its viewer and query API.
    pub ui: String,
}

/// A running node: its process, what it said it is, and a client of its API.
#[derive(Debug)]
pub struct Node {
    /// Its process.
    pub child: Child,
    /// Its ready line.
    pub info: NodeInfo,
    /// Its API.
    pub api: NodeClient,
}

impl Node {
    /// The node `child` is, from its ready line.
    pub fn new(child: Child) -> anyhow::Result<Self> {
        let info = Ready::parse(child.ready())?.node.with_context(|| {
            // A node that could not start says why in its log's last line.
            let log = std::fs::read_to_string(child.log()).unwrap_or_default();
            let last = log.lines().last().unwrap_or_default();
            format!(
                "{} did not start ({}): {last}",
                child.name(),
                child.log().display()
            )
        })?;
        let api = NodeClient::from_ready(child.ready())?;
        Ok(Self { child, info, api })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// Its first listen address (ending in its peer id), where others bootstrap.
    pub fn address(&self) -> anyhow::Result<&str> {
        self.info
            .listen
            .first()
            .map(String::as_str)
            .with_context(|| format!("{} has no listen address", self.name()))
    }
}

/// A guild: its id, where its coordinator is reached, and the coordinator's API, which
/// signs the invitations.
#[derive(Clone, Debug)]
pub struct Guild {
    /// Its id.
    pub id: String,
    /// The coordinator's address others bootstrap from.
    pub boot: String,
    /// The coordinator's API.
    pub coordinator: NodeClient,
}

impl Guild {
    /// The guild `coordinator` created (or resumed from its data), within `timeout`.
    pub fn created(coordinator: &Node, timeout: Duration) -> anyhow::Result<Self> {
        let created = coordinator
            .child
            .event_of(&["guild_created", "guild_resumed"], timeout)
            .with_context(|| format!("{} did not create the guild", coordinator.name()))?;
        Ok(Self {
            id: created["guild"]["id"]
                .as_str()
                .context("the guild_created event has no guild id")?
                .to_owned(),
            boot: coordinator.address()?.to_owned(),
            coordinator: coordinator.api.clone(),
        })
    }

    /// The flags that make a node join: bootstrap from `boot` (the coordinator's address,
    /// or another of its addresses), an invitation the coordinator signs now, and the
    /// ledger to pay through.
    pub async fn join_args(&self, boot: &str, ledger: Option<&str>) -> anyhow::Result<Vec<String>> {
        let invitation = self
            .coordinator
            .invite(&self.id, INVITATION_TTL_S)
            .await
            .context("asking the coordinator for an invitation")?;
        let mut args = strings(&["--bootstrap", boot]);
        args.extend([
            "--join-guild".to_owned(),
            format!("{}@{boot}", self.id),
            "--invitation".to_owned(),
            invitation.invitation,
        ]);
        if let Some(ledger) = ledger {
            args.extend(["--ledger-peer".to_owned(), ledger.to_owned()]);
        }
        Ok(args)
    }

    /// Waits until the coordinator lists `members` members (itself included).
    pub async fn wait_members(&self, members: usize, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let seen = self.coordinator.guild(&self.id).await?;
            let count = seen.as_ref().map_or(0, |g| g.members.len());
            if count == members {
                return Ok(());
            }
            anyhow::ensure!(
                start.elapsed() < timeout,
                "the guild did not reach {members} members within {} s (it has {count})",
                timeout.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A network to start: a coordinator that creates the guild, where the ledger runs,
/// members that join with invitations, and what the ledger's faucet gives whom.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The guild's name.
    pub guild: String,
    /// The coordinator: its name and flags besides `--create-guild`.
    pub coordinator: Member,
    /// Whether the coordinator runs the ledger and its faucet (`--ledger
    /// --ledger-faucet`); otherwise members pay through no ledger.
    pub ledger: bool,
    /// The members, started in order.
    pub members: Vec<Member>,
    /// What the faucet gives each node (the coordinator included) once all are in.
    pub faucet: Option<u64>,
    /// A chain every node settles on instead of the ledger (`ledger` is then false).
    pub chain: Option<ChainSpec>,
}

/// A chain with the channel contract, and the account that funds the nodes on it.
#[derive(Clone, Debug)]
pub struct ChainSpec {
    /// Its JSON-RPC URL.
    pub url: String,
    /// The channel contract.
    pub contract: zerostate_chain::Address,
    /// The account that funds each node's settlement account once all are in.
    pub faucet: zerostate_chain::SettlementKey,
    /// Whole coins it sends each.
    pub coins: u64,
}

impl ChainSpec {
    /// The flags that make a node settle on it.
    pub fn node_args(&self) -> Vec<String> {
        vec![
            "--set".to_owned(),
            format!("payments.chain={}", self.url),
            "--set".to_owned(),
            format!("payments.contract={}", self.contract),
        ]
    }
}

/// A node of a [`Spec`]: its name and its own flags.
#[derive(Clone, Debug)]
pub struct Member {
    /// Its name.
    pub name: String,
    /// Its flags besides those the harness gives.
    pub args: Vec<String>,
}

impl Member {
    /// Node `name` with `args`.
    pub fn new(name: &str, args: &[String]) -> Self {
        Self {
            name: name.to_owned(),
            args: args.to_vec(),
        }
    }
}

/// A running network: its guild and its nodes, the coordinator first.
#[derive(Debug)]
pub struct Cluster {
    /// The guild every node is in.
    pub guild: Guild,
    /// Every node, the coordinator first, then the members in the spec's order.
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Starts `spec` with `launcher` on `runtime`: the coordinator, then each member with
    /// its invitation; waits until the coordinator lists them all, then funds them.
    pub fn start(
        launcher: &Launcher,
        spec: &Spec,
        runtime: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Self> {
        let chain_args = spec
            .chain
            .as_ref()
            .map(ChainSpec::node_args)
            .unwrap_or_default();
        let mut args = spec.coordinator.args.clone();
        args.extend(strings(&["--create-guild", &spec.guild]));
        if spec.ledger {
            args.extend(strings(&["--ledger", "--ledger-faucet"]));
        }
        args.extend_from_slice(&chain_args);
        let coordinator = launcher.node(&spec.coordinator.name, &args)?;
        let guild = Guild::created(&coordinator, START_TIMEOUT)?;
        let ledger = spec.ledger.then(|| coordinator.info.peer_id.clone());
        let mut nodes = vec![coordinator];
        for member in &spec.members {
            let mut args = runtime.block_on(guild.join_args(&guild.boot, ledger.as_deref()))?;
            args.extend_from_slice(&member.args);
            args.extend_from_slice(&chain_args);
            nodes.push(launcher.node(&member.name, &args)?);
        }
        runtime.block_on(guild.wait_members(nodes.len(), FORM_TIMEOUT))?;
        if let Some(chain) = &spec.chain {
            runtime.block_on(fund_on_chain(chain, &nodes))?;
        }
        if let Some(amount) = spec.faucet {
            for node in &nodes {
                runtime
                    .block_on(nodes[0].api.fund(&node.info.peer_id, amount))
                    .with_context(|| format!("funding {} from the faucet", node.name()))?;
            }
        }
        Ok(Self { guild, nodes })
    }

    /// Node `name`.
    pub fn node(&self, name: &str) -> anyhow::Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name() == name)
            .with_context(|| format!("no node {name} in the cluster"))
    }

    /// Stops every node at once (SIGTERM, then SIGKILL after `grace`).
    pub fn stop(self, grace: Duration) {
        stop_all(self.nodes.into_iter().map(|n| n.child).collect(), grace);
    }
}

/// Sends each node's settlement account `chain.coins` coins from the chain's faucet.
async fn fund_on_chain(chain: &ChainSpec, nodes: &[Node]) -> anyhow::Result<()> {
    let faucet =
        zerostate_chain::Chain::connect(&chain.url, chain.contract, chain.faucet.clone(), 1)
            .await
            .context("connecting the chain's faucet")?;
    for node in nodes {
        let address = node
            .info
            .settlement
            .address
            .parse()
            .with_context(|| format!("{}'s settlement address", node.name()))?;
        faucet
            .transfer(address, zerostate_chain::coins_to_wei(chain.coins))
            .await
            .with_context(|| format!("funding {} on the chain", node.name()))?;
    }
    Ok(())
}

/// `&str`s as the `String`s a command line takes.
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|&a| a.to_owned()).collect()
}
