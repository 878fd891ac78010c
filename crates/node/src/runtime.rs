//! A running node: what it starts (network, guilds, payments, the market, the router, the
//! API and the operations listener), all owned here, and its shutdown in order: stop taking
//! work, let what is under way end (the node's own tasks with their payments, the runs it
//! does for others), stop answering the network, leave, flush.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use zerostate_guild::{GuildConfig, Guilds};
use zerostate_p2p::{IncomingRequest, Multiaddr, Network, NetworkConfig};
use zerostate_telemetry::SpanExt;

use crate::api;

/// A guild to join and where its coordinator is.
#[derive(Clone, Debug)]
pub struct GuildTarget {
    /// The guild's id.
    pub guild_id: String,
    /// The coordinator.
    pub coordinator: zerostate_p2p::PeerId,
    /// Where to reach it, if given.
    pub addresses: Vec<Multiaddr>,
    /// The coordinator's invitation, if it admits by invitation.
    pub invitation: Option<zerostate_guild::Invitation>,
}

impl std::str::FromStr for GuildTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (id, at) = s.split_once('@').ok_or(
            "expected GUILD_ID@COORDINATOR (a peer id or an address ending in /p2p/<peer id>)",
        )?;
        if at.starts_with('/') {
            let addr: Multiaddr = at.parse().map_err(|e| format!("{at}: {e}"))?;
            let coordinator = zerostate_p2p::peer_of(&addr)
                .ok_or_else(|| format!("{at} does not end in /p2p/<peer id>"))?;
            Ok(Self {
                guild_id: id.to_owned(),
                coordinator,
                addresses: vec![addr],
                invitation: None,
            })
        } else {
            Ok(Self {
                guild_id: id.to_owned(),
                coordinator: at.parse().map_err(|e| format!("peer id {at}: {e}"))?,
                addresses: Vec::new(),
                invitation: None,
            })
        }
    }
}

/// Everything a node starts with.
pub struct Plan {
    /// The p2p network: role, listen addresses, bootstrap, relays, limits.
    pub network: NetworkConfig,
    /// The node key: its peer id, and what signs receipts and payments.
    pub key: zerostate_p2p::identity::Keypair,
    /// The node's name, its `service.name` in traces.
    pub name: String,
    /// The HTTP API's address.
    pub api: SocketAddr,
    /// The operations listener's address.
    pub admin: SocketAddr,
    /// Reads the span export's counters.
    pub telemetry: zerostate_telemetry::StatsReader,
    /// The API token, extra host names, and the token's file.
    pub access: (String, Vec<String>, PathBuf),
    /// Gossip topics to join.
    pub topics: Vec<String>,
    /// Guild heartbeats and admission limits.
    pub guild: GuildConfig,
    /// The task market: offers, attempts, what this node runs for others.
    pub tasks: zerostate_market::TaskSettings,
    /// What pays and is paid.
    pub payments: zerostate_payment_protocol::PaymentSettings,
    /// The node key's seed (it is also the payment key), whether this node runs the ledger
    /// and its faucet, and the data directory.
    pub ledger: (bool, bool, PathBuf, [u8; 32]),
    /// The engine tasks run in, signing receipts with the node key.
    pub engine: std::sync::Arc<zerostate_execution::Engine>,
    /// A guild to create and coordinate, by name.
    pub create_guild: Option<String>,
    /// A guild to join and stay in.
    pub join_guild: Option<GuildTarget>,
    /// What it was told to do wrong (tests only).
    pub misbehave: crate::misbehave::Misbehaviour,
}

/// What a running node is, as printed on start and served at `/v1/node`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Its peer id.
    pub peer_id: String,
    /// Where its HTTP API listens.
    pub api: String,
    /// Where its operations listener (`/metrics`, `/healthz`, `/readyz`) listens.
    pub admin: String,
    /// The file holding the token its HTTP API asks for (`Authorization: Bearer`).
    pub api_token_file: String,
    /// Where it listens, each ending in its peer id.
    pub listen: Vec<String>,
    /// What it was told to do wrong (`--misbehave`, tests only); absent when nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub misbehaving: Vec<String>,
    /// Its account for settling on a chain.
    pub settlement: SettlementInfo,
}

/// A node's account for settling payment channels on an EVM chain: a secp256k1 key of its
/// own, made on first start, bound to its peer id by the node key's signature.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SettlementInfo {
    /// The account's address (`0x…`, checksummed).
    pub address: String,
    /// The file holding the key (`<data dir>/settlement.key`, readable by its owner only).
    pub key_file: String,
    /// The node key's ed25519 signature, hex, over the tag `zerostate/settlement-key/v1`,
    /// the node's ed25519 public key and the address's 20 bytes: who deals with the node by
    /// its peer id can check that the address is the node's.
    pub binding: String,
}

impl SettlementInfo {
    /// The settlement key in `dir` (made if there is none) bound to the node key `seed`.
    fn load(
        dir: &std::path::Path,
        seed: [u8; 32],
    ) -> anyhow::Result<(Self, zerostate_chain::SettlementKey)> {
        let path = dir.join("settlement.key");
        let key = zerostate_chain::SettlementKey::load_or_create(&path)
            .with_context(|| format!("the settlement key {}", path.display()))?;
        let binding = key.bind(&zerostate_payment::Keypair::from_seed(seed));
        let info = Self {
            address: binding.address.to_checksum(None),
            key_file: path.display().to_string(),
            binding: hex::encode(binding.signature.0),
        };
        Ok((info, key))
    }
}

/// Runs the node `plan` describes until SIGINT or SIGTERM, then stops it in order.
pub async fn serve(plan: Plan) -> anyhow::Result<()> {
    let Plan {
        network: config,
        key,
        name,
        api: api_addr,
        admin: admin_addr,
        telemetry,
        access: (token, api_hosts, token_file),
        topics,
        guild,
        tasks,
        payments,
        ledger: (run_ledger, faucet, dir, seed),
        engine,
        create_guild,
        join_guild,
        misbehave,
    } = plan;
    if misbehave.any() {
        tracing::warn!(
            "this node MISBEHAVES on purpose (tests only): {}",
            misbehave.items().join(", ")
        );
    }
    let role = config.role;
    let bootstrap = config.bootstrap.len();
    let heartbeat_interval = guild.interval();
    let ledger_peer = payments
        .ledger
        .as_deref()
        .and_then(|p| p.parse::<zerostate_p2p::PeerId>().ok())
        .filter(|_| !run_ledger);
    let metrics = crate::metrics::NodeMetrics::new();
    let (network, events) = Network::start(config, key.clone())
        .await
        .context("starting the network")?;
    let guilds =
        Guilds::start_kept(network.clone(), key, guild, Some(&dir)).context("starting guilds")?;
    let watch_every = payments.watch_interval().map_err(anyhow::Error::msg)?;
    let (settlement, settlement_key) = SettlementInfo::load(&dir, seed)?;
    let chain = match payments.chain().map_err(anyhow::Error::msg)? {
        Some(c) => Some(
            zerostate_chain::Chain::connect(&c.url, c.contract, settlement_key, c.confirmations)
                .await
                .context("connecting to the chain ([payments] chain)")?,
        ),
        None => None,
    };
    let payments = zerostate_payment_protocol::Payments::open(
        std::sync::Arc::new(zerostate_payment_protocol::P2p::new(
            network.clone(),
            guilds.clone(),
        )),
        seed,
        &dir,
        &payments,
        run_ledger,
        faucet,
        metrics.payments.clone(),
        misbehave.payments(),
        chain,
    )?;
    let tasks = zerostate_market::Tasks::start(
        &name,
        zerostate_market::P2p::new(network.clone(), guilds.clone()),
        engine,
        payments.clone(),
        tasks,
        metrics.market.clone(),
        misbehave.market(),
    );
    for topic in &topics {
        network
            .subscribe(topic)
            .await
            .with_context(|| format!("joining topic {topic}"))?;
    }
    let listener = tokio::net::TcpListener::bind(api_addr)
        .await
        .with_context(|| format!("binding the HTTP API to {api_addr}"))?;
    let bound = listener.local_addr()?;
    let api_url = format!("http://{bound}");
    let admin_listener = tokio::net::TcpListener::bind(admin_addr)
        .await
        .with_context(|| format!("binding the operations listener to {admin_addr}"))?;
    let admin_url = format!("http://{}", admin_listener.local_addr()?);
    let listen = network
        .dialable_addresses()
        .await?
        .iter()
        .map(Multiaddr::to_string)
        .collect();
    let info = NodeInfo {
        name: name.clone(),
        role: role.to_string(),
        peer_id: network.peer_id().to_string(),
        api: api_url,
        admin: admin_url,
        api_token_file: token_file.display().to_string(),
        listen,
        misbehaving: misbehave.items(),
        settlement,
    };
    // One JSON line on stdout says the node is up and where; logs go to stderr.
    crate::console::say(&crate::console::Ready {
        node: Some(info.clone()),
        ..Default::default()
    });
    tracing::info!(node = %name, peer.id = %network.peer_id(), api = %info.api, "node ready");

    let access = api::Access::new(token, bound, api_hosts);
    // Everything the node starts beside the market and the router: stopped by
    // `stopping`, waited for on the way out.
    let work = tokio_util::task::TaskTracker::new();
    let stopping = tokio_util::sync::CancellationToken::new();
    work.spawn(api::serve(
        listener,
        network.clone(),
        guilds.clone(),
        tasks.clone(),
        payments.clone(),
        info,
        access,
        stopping.clone().cancelled_owned(),
    ));
    let router = zerostate_p2p::Router::new(network.clone())
        .route(guilds.clone())
        .route(tasks.served_on(network.clone()))
        .route(payments.served_on(network.clone()))
        .route(Echo(network.clone()));
    work.spawn(crate::admin::serve(
        admin_listener,
        network.clone(),
        guilds.clone(),
        payments.clone(),
        router.stats(),
        metrics,
        telemetry,
        crate::admin::Expect {
            bootnode: role == zerostate_p2p::Role::Bootnode,
            bootstrap,
            guild: join_guild.as_ref().map(|t| t.guild_id.clone()),
            creates_guild: create_guild.is_some(),
            heartbeat_interval,
            ledger: ledger_peer,
            data_dir: dir.clone(),
            misbehaving: misbehave.items(),
        },
        stopping.clone().cancelled_owned(),
    ));
    let stop_routing = tokio_util::sync::CancellationToken::new();
    let routing =
        tokio::spawn(router.serve(events, stop_routing.clone().cancelled_owned(), ROUTER_DRAIN));
    work.spawn(recover_opening(payments.clone(), stopping.clone()));
    work.spawn(watch(payments.clone(), watch_every, stopping.clone()));
    if let Some(name) = create_guild {
        // A node restarted on its data directory goes on with the guild it created (kept
        // there), rather than creating another.
        let kept = guilds
            .list()
            .await
            .unwrap_or_default()
            .into_iter()
            .find(|g| g.name == name && matches!(g.status.as_str(), "coordinator" | "member"));
        match kept {
            Some(guild) => {
                crate::console::say(
                    &serde_json::json!({ "event": "guild_resumed", "guild": guild }),
                );
                tracing::info!(guild.id = %guild.id, status = %guild.status, "guild resumed");
            }
            None => {
                let created = guilds
                    .create(&name)
                    .await
                    .with_context(|| format!("creating guild {name}"))?;
                crate::console::say(
                    &serde_json::json!({ "event": "guild_created", "guild": created }),
                );
                tracing::info!(guild.id = %created.id, "guild created");
            }
        }
    }
    // Retried until admitted; stopped with the node if it is still trying.
    let joining = join_guild.map(|target| {
        let stay = stay_in_guild(guilds.clone(), target, heartbeat_interval);
        let stopping = stopping.clone();
        work.spawn(async move {
            tokio::select! {
                () = stopping.cancelled() => {}
                () = stay => {}
            }
        })
    });
    crate::console::shutdown_signal().await?;
    // In order: take no new work; let what is under way end (this node's tasks with
    // their payments, the runs it does for others); stop answering the network; leave.
    tracing::info!("shutting down");
    let started = std::time::Instant::now();
    stopping.cancel();
    let cut = tasks.drain(TASK_DRAIN).await;
    stop_routing.cancel();
    let aborted = routing.await.unwrap_or_default();
    drop(joining);
    work.close();
    if tokio::time::timeout(ROUTER_DRAIN, work.wait())
        .await
        .is_err()
    {
        tracing::warn!("the API or the operations listener did not stop in time");
    }
    guilds.shutdown().await;
    network.shutdown().await;
    tracing::info!(
        tasks_cut_off = cut,
        requests_aborted = aborted,
        "stopped in {} ms",
        started.elapsed().as_millis()
    );
    Ok(())
}

/// How long a stopping node waits for the tasks under way (its own, with their payments,
/// and those it runs for others) before it cuts them off.
const TASK_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a stopping node then waits for the answers it is still giving, and for its
/// listeners to close.
const ROUTER_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// `echo`: a request answered with its own payload (`zerostate node`'s liveness check
/// over the network).
#[derive(Clone)]
struct Echo(Network);

impl zerostate_p2p::ProtocolHandler for Echo {
    const NAME: &'static str = "echo";
    const REQUESTS: &'static [&'static str] = &["echo"];

    async fn request(&self, r: IncomingRequest) {
        let span = r.span.clone();
        let payload = r.envelope.payload.clone();
        if let Err(e) = self.0.respond(r, "echo_reply", payload).await {
            span.record_error(&e);
        }
    }
}

/// How long a node started with `--join-guild` keeps trying to reach the coordinator.
const JOIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// Joins the guild named by `--join-guild` and stays in it: when this node finds itself
/// removed, or the guild ended under it because its coordinator fell silent (this node or
/// the coordinator was paused or cut off), it says so (`guild_rejoining` on stdout) and
/// asks to join again, without the invitation it already used: a coordinator takes back,
/// once, a member it removed for silence. A guild its coordinator dissolved, or a refusal,
/// ends it. The guild's state is checked every `check`.
async fn stay_in_guild(guilds: Guilds, mut target: GuildTarget, check: std::time::Duration) {
    let mut patience = Some(JOIN_PATIENCE);
    while join_until_admitted(&guilds, &target, patience).await {
        // Once a member, a node keeps trying to get back for as long as it runs.
        patience = None;
        target.invitation = None;
        let reason = loop {
            tokio::time::sleep(check).await;
            let Ok(info) = guilds.info(&target.guild_id).await else {
                return;
            };
            if info.status.is_active() {
                continue;
            }
            if !info.may_rejoin() {
                return;
            }
            let reason = info.reason.clone().unwrap_or_default();
            // Back to whoever coordinates now: after a succession, not the node first
            // joined.
            if let Ok(current) = info.coordinator.parse::<zerostate_p2p::PeerId>()
                && current != target.coordinator
            {
                target.coordinator = current;
                target.addresses.clear();
            }
            break reason;
        };
        tracing::warn!(guild.id = %target.guild_id, "out of the guild ({reason}): joining again");
        crate::console::say(&serde_json::json!({
            "event": "guild_rejoining",
            "guild": target.guild_id,
            "reason": reason,
        }));
    }
}

/// Joins a guild, retrying with backoff (200 ms doubling to 10 s; to 2 s without
/// `patience`) while the coordinator cannot be reached (it may not be up yet, or cut off;
/// a node getting back in whose fresh dial timed out tries again at once), for at most
/// `patience` (`None`: until refused); true once admitted. A refusal, or
/// running out of patience, ends the attempts with an error line and a
/// `guild_join_failed` event on stdout; a failed attempt leaves no subscription behind.
async fn join_until_admitted(
    guilds: &Guilds,
    target: &GuildTarget,
    patience: Option<std::time::Duration>,
) -> bool {
    let mut wait = std::time::Duration::from_millis(200);
    let start = tokio::time::Instant::now();
    let failed = |why: String| {
        tracing::error!(guild.id = %target.guild_id, "joining the guild failed: {why}");
        crate::console::say(&serde_json::json!({
            "event": "guild_join_failed",
            "guild": target.guild_id,
            "reason": why,
        }));
    };
    loop {
        match guilds
            .join(
                &target.guild_id,
                target.coordinator,
                target.addresses.clone(),
                target.invitation.clone(),
            )
            .await
        {
            Ok(info) => {
                tracing::info!(guild.id = %info.id, count = info.members.len(), "joined guild");
                crate::console::say(&serde_json::json!({ "event": "guild_joined", "guild": info }));
                return true;
            }
            Err(e @ zerostate_guild::GuildError::Refused { .. }) => {
                failed(zerostate_telemetry::error_chain(&e));
                return false;
            }
            Err(e) if patience.is_some_and(|p| start.elapsed() + wait > p) => {
                failed(format!(
                    "{}; gave up after {} s",
                    zerostate_telemetry::error_chain(&e),
                    start.elapsed().as_secs()
                ));
                return false;
            }
            Err(e @ zerostate_guild::GuildError::Unreachable { .. }) => {
                // The attempt already waited out its dial (a heartbeat interval): trying again
                // at once is what gets a member back within moments of a partition's heal.
                tracing::warn!("{}; trying again", zerostate_telemetry::error_chain(&e));
            }
            Err(e) => {
                tracing::warn!(
                    "{}; trying again in {} ms",
                    zerostate_telemetry::error_chain(&e),
                    wait.as_millis()
                );
                tokio::time::sleep(wait).await;
                // Getting back into a guild is retried more often than a first join: the
                // node was a member, and the coordinator is probably there.
                let cap = if patience.is_some() { 10 } else { 2 };
                wait = (wait * 2).min(std::time::Duration::from_secs(cap));
            }
        }
    }
}

/// Asks the ledger, until it has answered for each, about the channels this node opened
/// without learning whether their deposits were locked (an answer lost, or the node
/// stopped before it came): the ledger may not be reachable at once.
async fn recover_opening(
    payments: zerostate_payment_protocol::Payments,
    stopping: tokio_util::sync::CancellationToken,
) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            _ = every.tick() => {}
        }
        match payments.recover_opening(None).await {
            Ok(0) => return,
            Ok(left) => tracing::debug!("{left} channel(s) still opening: asked again later"),
            Err(why) => tracing::debug!("asking the ledger about channels still opening: {why}"),
        }
    }
}

/// The payee's watchtower: looks at the ledger every `every` for the channels this node is
/// paid through (see [`zerostate_payment_protocol::Payments::watch`]).
async fn watch(
    payments: zerostate_payment_protocol::Payments,
    every: std::time::Duration,
    stopping: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            _ = tick.tick() => {}
        }
        let watched = tokio::select! {
            () = stopping.cancelled() => return,
            watched = payments.watch() => watched,
        };
        if watched.disputed + watched.finalized + watched.closed + watched.failed > 0 {
            tracing::info!(
                asked = watched.asked,
                disputed = watched.disputed,
                finalized = watched.finalized,
                closed = watched.closed,
                failed = watched.failed,
                "the watchtower looked at the ledger"
            );
        }
    }
}
