//! The guild service: one task that owns every guild this node is in, fed by the node's
//! p2p events and by the handle's commands. Network round trips run in their own tasks
//! and report back, so the service never waits on another node.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::identity::Keypair;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, Span};
use zerostate_p2p::{Event, GossipMessage, IncomingRequest, Network, NetworkError};
use zerostate_telemetry::names::span as names;
use zerostate_telemetry::{SpanExt, propagation};

use crate::crypto::{ExchangeKey, GuildKey};
use crate::wire::{
    Dissolve, Heartbeat, JoinReply, JoinRequest, KeyUpdate, LeaveRequest, Membership, Plain,
    Sealed, types,
};

/// Prefix of every guild's gossip topic; the guild id follows.
pub const TOPIC_PREFIX: &str = "zerostate/guild/";
/// Replay window: counters this far below a sender's highest are refused outright.
const REPLAY_WINDOW: u64 = 1024;
/// Room in the command queue; senders wait when it is full.
const COMMAND_QUEUE: usize = 256;

/// How guilds behave. Every field says its default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuildConfig {
    /// Time between heartbeats of each member, in milliseconds. Default 2000.
    pub heartbeat_interval_ms: u64,
    /// Heartbeats a member may miss before it is marked down. Default 3.
    pub missed_heartbeats: u32,
    /// Most members a guild admits. Default 64.
    pub max_members: usize,
    /// Join requests a coordinator handles per second per guild (bursts of twice that);
    /// more are refused and counted. Default 10.
    pub joins_per_second: u32,
    /// Decrypted messages kept per guild for the API. Default 256.
    pub received_kept: usize,
}

impl Default for GuildConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 2000,
            missed_heartbeats: 3,
            max_members: 64,
            joins_per_second: 10,
            received_kept: 256,
        }
    }
}

impl GuildConfig {
    fn down_after(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms * u64::from(self.missed_heartbeats))
    }
}

/// Why a guild operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuildError {
    /// No guild with that id here.
    #[error("this node is not in guild {0}")]
    Unknown(String),
    /// Only the coordinator may do this.
    #[error("only the coordinator of guild {0} may do this")]
    NotCoordinator(String),
    /// The coordinator cannot leave its own guild.
    #[error("the coordinator cannot leave guild {0}; dissolve it instead")]
    CoordinatorLeaving(String),
    /// This node is no longer a member.
    #[error("this node is no longer a member of guild {0} ({1})")]
    NotMember(String, String),
    /// The coordinator refused the join.
    #[error("joining guild {guild}: refused: {reason}")]
    Refused {
        /// The guild.
        guild: String,
        /// The coordinator's reason.
        reason: String,
    },
    /// The coordinator's answer did not check out.
    #[error("joining guild {guild}: {reason}")]
    BadReply {
        /// The guild.
        guild: String,
        /// What was wrong.
        reason: String,
    },
    /// The network failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The service has stopped.
    #[error("the guild service has stopped")]
    Closed,
}

/// A member as this node sees it.
#[derive(Clone, Debug, Serialize)]
pub struct MemberInfo {
    /// Its peer id.
    pub peer_id: String,
    /// Whether it has sent a heartbeat within the window.
    pub up: bool,
}

/// A guild as this node sees it.
#[derive(Clone, Debug, Serialize)]
pub struct GuildInfo {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `coordinator`, `member`, `left`, `removed`, `dissolved` or `watching`.
    pub status: String,
    /// Why it ended, when it did.
    pub reason: Option<String>,
    /// The coordinator's peer id.
    pub coordinator: String,
    /// The members (empty for a node that only watches).
    pub members: Vec<MemberInfo>,
    /// Membership version.
    pub version: u64,
    /// Key epoch this node holds.
    pub key_epoch: u32,
    /// Its gossip topic.
    pub topic: String,
    /// Sealed messages seen on the topic.
    pub ciphertexts_seen: u64,
    /// Of those, how many this node could not open (not a member, or a key it lacks).
    pub undecryptable: u64,
}

/// A decrypted guild message.
#[derive(Clone, Debug, Serialize)]
pub struct ReceivedMessage {
    /// Who sent it.
    pub from: String,
    /// The application's message type.
    pub message_type: String,
    /// The body, as text (lossy).
    pub body: String,
    /// The trace it belongs to.
    pub trace_id: Option<String>,
}

/// What the guild service counted. Every `rejected_*` counter is input dropped for being
/// hostile or wrong.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GuildStats {
    /// Guild messages this node sealed and published.
    pub messages_sent: u64,
    /// Guild messages this node opened.
    pub messages_received: u64,
    /// Membership updates or dissolutions not signed by the coordinator.
    pub rejected_forged: u64,
    /// Membership updates not newer than the one held.
    pub rejected_stale: u64,
    /// Sealed messages that did not open (tampered, or a wrong key).
    pub rejected_tampered: u64,
    /// Sealed messages whose counter was seen before.
    pub rejected_replayed: u64,
    /// Messages from a peer that is not a member, or whose sender field is not the peer
    /// that published it.
    pub rejected_not_member: u64,
    /// Bytes that were not a guild message.
    pub rejected_malformed: u64,
    /// Join requests refused (rate, capacity).
    pub joins_refused: u64,
    /// Join requests admitted.
    pub joins_admitted: u64,
    /// Members marked down for missing heartbeats.
    pub members_marked_down: u64,
}

#[derive(Default)]
struct Counters {
    messages_sent: AtomicU64,
    messages_received: AtomicU64,
    rejected_forged: AtomicU64,
    rejected_stale: AtomicU64,
    rejected_tampered: AtomicU64,
    rejected_replayed: AtomicU64,
    rejected_not_member: AtomicU64,
    rejected_malformed: AtomicU64,
    joins_refused: AtomicU64,
    joins_admitted: AtomicU64,
    members_marked_down: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> GuildStats {
        GuildStats {
            messages_sent: self.messages_sent.load(Relaxed),
            messages_received: self.messages_received.load(Relaxed),
            rejected_forged: self.rejected_forged.load(Relaxed),
            rejected_stale: self.rejected_stale.load(Relaxed),
            rejected_tampered: self.rejected_tampered.load(Relaxed),
            rejected_replayed: self.rejected_replayed.load(Relaxed),
            rejected_not_member: self.rejected_not_member.load(Relaxed),
            rejected_malformed: self.rejected_malformed.load(Relaxed),
            joins_refused: self.joins_refused.load(Relaxed),
            joins_admitted: self.joins_admitted.load(Relaxed),
            members_marked_down: self.members_marked_down.load(Relaxed),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Coordinator,
    Member,
    Left,
    Removed,
    Dissolved,
    Watching,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Coordinator => "coordinator",
            Status::Member => "member",
            Status::Left => "left",
            Status::Removed => "removed",
            Status::Dissolved => "dissolved",
            Status::Watching => "watching",
        }
    }

    fn active(self) -> bool {
        matches!(self, Status::Coordinator | Status::Member)
    }
}

struct Member {
    last_seen: Instant,
    up: bool,
    /// Its X25519 public key (known to the coordinator only).
    exchange: Option<[u8; 32]>,
}

struct Guild {
    id: String,
    name: String,
    status: Status,
    reason: Option<String>,
    coordinator: PeerId,
    members: BTreeMap<PeerId, Member>,
    version: u64,
    epoch: u32,
    key: Option<GuildKey>,
    /// The key of the epoch before, still accepted from current members: a message sealed
    /// just before a rotation reached its sender is not lost.
    previous: Option<(u32, GuildKey)>,
    /// Per (sender, epoch): highest counter and the counters seen within the window.
    replay: HashMap<(PeerId, u32), (u64, BTreeSet<u64>)>,
    received: VecDeque<ReceivedMessage>,
    ciphertexts_seen: u64,
    undecryptable: u64,
    join_tokens: f64,
    join_refilled: Instant,
    heartbeat_seq: u64,
}

impl Guild {
    fn topic(&self) -> String {
        format!("{TOPIC_PREFIX}{}", self.id)
    }

    fn info(&self) -> GuildInfo {
        GuildInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            status: self.status.as_str().to_owned(),
            reason: self.reason.clone(),
            coordinator: self.coordinator.to_string(),
            members: self
                .members
                .iter()
                .map(|(p, m)| MemberInfo {
                    peer_id: p.to_string(),
                    up: m.up,
                })
                .collect(),
            version: self.version,
            key_epoch: self.epoch,
            topic: self.topic(),
            ciphertexts_seen: self.ciphertexts_seen,
            undecryptable: self.undecryptable,
        }
    }

    fn membership(&self, key: &Keypair) -> Membership {
        Membership {
            guild_id: self.id.clone(),
            name: self.name.clone(),
            version: self.version,
            coordinator: self.coordinator.to_bytes(),
            members: self.members.keys().map(|p| p.to_bytes()).collect(),
            key_epoch: self.epoch,
            signature: Vec::new(),
        }
        .sign(key)
    }

    fn install_key(&mut self, epoch: u32, key: GuildKey) {
        if let Some(old) = self.key.take() {
            self.previous = Some((self.epoch, old));
        }
        self.epoch = epoch;
        self.key = Some(key);
    }

    /// The key a message of `epoch` opens with, if this node holds it.
    fn key_for(&self, epoch: u32) -> Option<&GuildKey> {
        if epoch == self.epoch {
            self.key.as_ref()
        } else {
            self.previous
                .as_ref()
                .filter(|(e, _)| *e == epoch)
                .map(|(_, k)| k)
        }
    }

    fn end(&mut self, status: Status, reason: &str) {
        self.status = status;
        self.reason = Some(reason.to_owned());
        self.members.clear();
    }
}

enum Command {
    Event(Event),
    Create(String, Span, oneshot::Sender<Result<GuildInfo, GuildError>>),
    Join(
        String,
        PeerId,
        Vec<zerostate_p2p::Multiaddr>,
        Span,
        oneshot::Sender<Result<GuildInfo, GuildError>>,
    ),
    Joined(
        String,
        PeerId,
        Result<JoinReply, GuildError>,
        Span,
        oneshot::Sender<Result<GuildInfo, GuildError>>,
    ),
    Leave(String, oneshot::Sender<Result<(), GuildError>>),
    Dissolve(String, oneshot::Sender<Result<(), GuildError>>),
    /// The span is `guild.send_message`: its context goes inside the ciphertext and the
    /// network's own spans of the publish are its children.
    Send(
        String,
        String,
        Vec<u8>,
        Span,
        oneshot::Sender<Result<(), GuildError>>,
    ),
    Watch(String, oneshot::Sender<Result<(), GuildError>>),
    Info(String, oneshot::Sender<Result<GuildInfo, GuildError>>),
    List(oneshot::Sender<Vec<GuildInfo>>),
    /// Stop the service: its helper tasks are aborted and its loop ends.
    Shutdown,
    Messages(
        String,
        oneshot::Sender<Result<Vec<ReceivedMessage>, GuildError>>,
    ),
}

/// The guilds of one node: a cheap, cloneable handle to the guild service.
#[derive(Clone)]
pub struct Guilds {
    commands: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    task: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Guilds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guilds").finish_non_exhaustive()
    }
}

impl Guilds {
    /// Starts the service on the current tokio runtime. `key` is the node's identity (the
    /// one the network runs with): it signs memberships of guilds this node coordinates.
    pub fn start(network: Network, key: Keypair, config: GuildConfig) -> Guilds {
        let counters = Arc::new(Counters::default());
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let service = Service {
            me: key.public().to_peer_id(),
            network,
            key,
            exchange: Arc::new(ExchangeKey::generate()),
            config,
            counters: counters.clone(),
            guilds: BTreeMap::new(),
            loopback: commands.clone(),
            tasks: tokio::task::JoinSet::new(),
        };
        let task = tokio::spawn(service.run(rx));
        Guilds {
            commands,
            counters,
            task: Arc::new(std::sync::Mutex::new(Some(task))),
        }
    }

    /// Stops the service: pending requests are answered [`GuildError::Closed`], its helper
    /// tasks (joins, key deliveries, leave notices) are aborted, and this returns once its
    /// task has ended. Every handle is closed afterwards; calling it again does nothing.
    pub async fn shutdown(&self) {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(task) = task else {
            return;
        };
        // A full queue still takes the command once the service drains it; a service that
        // already ended has nothing to stop.
        let _ = self.commands.send(Command::Shutdown).await;
        let _ = task.await;
    }

    /// Whether a p2p event is guild traffic (hand it to [`Guilds::deliver`]).
    pub fn wants(event: &Event) -> bool {
        match event {
            Event::Gossip(m) => m.topic.starts_with(TOPIC_PREFIX),
            Event::Request(r) => r.envelope.message_type.starts_with("guild_"),
            _ => false,
        }
    }

    /// Hands guild traffic to the service.
    pub async fn deliver(&self, event: Event) {
        let _ = self.commands.send(Command::Event(event)).await;
    }

    /// What the service counted.
    pub fn stats(&self) -> GuildStats {
        self.counters.snapshot()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, GuildError>>) -> Command,
    ) -> Result<T, GuildError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| GuildError::Closed)?;
        rx.await.map_err(|_| GuildError::Closed)?
    }

    /// Creates a guild with this node as its coordinator.
    pub async fn create(&self, name: &str) -> Result<GuildInfo, GuildError> {
        let span = tracing::info_span!(names::GUILD_CREATE, guild.id = tracing::field::Empty);
        let result = self
            .ask(|tx| Command::Create(name.to_owned(), span.clone(), tx))
            .instrument(span.clone())
            .await;
        finish(&span, &result);
        result
    }

    /// Joins a guild: asks its coordinator (at `addresses`, or wherever the network knows
    /// it), receives the membership and the guild key, and starts heartbeats.
    pub async fn join(
        &self,
        guild_id: &str,
        coordinator: PeerId,
        addresses: Vec<zerostate_p2p::Multiaddr>,
    ) -> Result<GuildInfo, GuildError> {
        let span = tracing::info_span!(
            names::GUILD_JOIN,
            guild.id = guild_id,
            peer.id = %coordinator,
            count = tracing::field::Empty,
        );
        let result = self
            .ask(|tx| {
                Command::Join(
                    guild_id.to_owned(),
                    coordinator,
                    addresses,
                    span.clone(),
                    tx,
                )
            })
            .instrument(span.clone())
            .await;
        if let Ok(info) = &result {
            span.record("count", info.members.len());
        }
        finish(&span, &result);
        result
    }

    /// Leaves a guild. The coordinator removes this node and rotates the key; this node
    /// keeps its last key and keeps watching the topic, so what it can no longer read shows
    /// in its `undecryptable` count.
    pub async fn leave(&self, guild_id: &str) -> Result<(), GuildError> {
        let span = tracing::info_span!(names::GUILD_LEAVE, guild.id = guild_id);
        let result = self
            .ask(|tx| Command::Leave(guild_id.to_owned(), tx))
            .instrument(span.clone())
            .await;
        finish(&span, &result);
        result
    }

    /// Ends a guild (coordinator only).
    pub async fn dissolve(&self, guild_id: &str) -> Result<(), GuildError> {
        let span = tracing::info_span!(names::GUILD_DISSOLVE, guild.id = guild_id);
        let result = self
            .ask(|tx| Command::Dissolve(guild_id.to_owned(), tx))
            .instrument(span.clone())
            .await;
        finish(&span, &result);
        result
    }

    /// Sends a message to every member, sealed under the guild key with the current trace
    /// context inside. Records `guild.send_message`; each member's `guild.receive_message`
    /// is its child.
    pub async fn send(
        &self,
        guild_id: &str,
        message_type: &str,
        body: Vec<u8>,
    ) -> Result<(), GuildError> {
        let span = tracing::info_span!(
            names::GUILD_SEND_MESSAGE,
            otel.kind = "producer",
            guild.id = guild_id,
            message.type = message_type,
            size.bytes = body.len(),
        );
        let result = self
            .ask(|tx| {
                Command::Send(
                    guild_id.to_owned(),
                    message_type.to_owned(),
                    body,
                    span.clone(),
                    tx,
                )
            })
            .instrument(span.clone())
            .await;
        finish(&span, &result);
        result
    }

    /// Subscribes to a guild's topic without joining: this node sees the ciphertexts and
    /// counts them, and can open none.
    pub async fn watch(&self, guild_id: &str) -> Result<(), GuildError> {
        self.ask(|tx| Command::Watch(guild_id.to_owned(), tx)).await
    }

    /// One guild.
    pub async fn info(&self, guild_id: &str) -> Result<GuildInfo, GuildError> {
        self.ask(|tx| Command::Info(guild_id.to_owned(), tx)).await
    }

    /// Every guild this node knows.
    pub async fn list(&self) -> Result<Vec<GuildInfo>, GuildError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::List(tx))
            .await
            .map_err(|_| GuildError::Closed)?;
        rx.await.map_err(|_| GuildError::Closed)
    }

    /// The last decrypted messages of a guild, oldest first.
    pub async fn messages(&self, guild_id: &str) -> Result<Vec<ReceivedMessage>, GuildError> {
        self.ask(|tx| Command::Messages(guild_id.to_owned(), tx))
            .await
    }
}

fn finish<T>(span: &Span, result: &Result<T, GuildError>) {
    if let Err(e) = result {
        span.record_error(e);
    }
}

struct Service {
    me: PeerId,
    network: Network,
    key: Keypair,
    exchange: Arc<ExchangeKey>,
    config: GuildConfig,
    counters: Arc<Counters>,
    guilds: BTreeMap<String, Guild>,
    loopback: mpsc::Sender<Command>,
    /// Helper tasks (a join's request, key deliveries, leave notices): bounded in time,
    /// and aborted when the service stops.
    tasks: tokio::task::JoinSet<()>,
}

impl Service {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut ticker =
            tokio::time::interval(Duration::from_millis(self.config.heartbeat_interval_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    Some(Command::Shutdown) | None => {
                        self.tasks.abort_all();
                        return;
                    }
                    Some(c) => self.command(c).await,
                },
                _ = ticker.tick() => self.heartbeat_round().await,
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
        }
    }

    fn guild(&mut self, id: &str) -> Result<&mut Guild, GuildError> {
        self.guilds
            .get_mut(id)
            .ok_or_else(|| GuildError::Unknown(id.to_owned()))
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Event(Event::Gossip(m)) => self.gossip(m).await,
            Command::Event(Event::Request(r)) => self.request(r).await,
            Command::Event(_) | Command::Shutdown => {}
            Command::Create(name, span, tx) => {
                let _ = tx.send(self.create(name, &span).await);
            }
            Command::Join(id, coordinator, addresses, span, tx) => {
                self.start_join(id, coordinator, addresses, span, tx).await
            }
            Command::Joined(id, coordinator, reply, span, tx) => {
                let result = self.finish_join(&id, coordinator, reply, &span).await;
                let _ = tx.send(result);
            }
            Command::Leave(id, tx) => {
                let _ = tx.send(self.leave(&id).await);
            }
            Command::Dissolve(id, tx) => {
                let _ = tx.send(self.dissolve(&id).await);
            }
            Command::Send(id, t, body, span, tx) => {
                let _ = tx.send(self.send(&id, t, body, span).await);
            }
            Command::Watch(id, tx) => {
                let _ = tx.send(self.watch(id).await);
            }
            Command::Info(id, tx) => {
                let _ = tx.send(self.guild(&id).map(|g| g.info()));
            }
            Command::List(tx) => {
                let _ = tx.send(self.guilds.values().map(Guild::info).collect());
            }
            Command::Messages(id, tx) => {
                let _ = tx.send(
                    self.guild(&id)
                        .map(|g| g.received.iter().cloned().collect()),
                );
            }
        }
    }

    fn new_guild(&self, id: String, name: String, coordinator: PeerId, status: Status) -> Guild {
        Guild {
            id,
            name,
            status,
            reason: None,
            coordinator,
            members: BTreeMap::new(),
            version: 0,
            epoch: 0,
            key: None,
            previous: None,
            replay: HashMap::new(),
            received: VecDeque::new(),
            ciphertexts_seen: 0,
            undecryptable: 0,
            join_tokens: f64::from(self.config.joins_per_second) * 2.0,
            join_refilled: Instant::now(),
            heartbeat_seq: 0,
        }
    }

    async fn create(&mut self, name: String, span: &Span) -> Result<GuildInfo, GuildError> {
        let mut h = Sha256::new();
        h.update(self.me.to_bytes());
        h.update(name.as_bytes());
        h.update(crate::crypto::random::<16>());
        let id = hex::encode(&h.finalize()[..8]);
        span.record("guild.id", id.as_str());
        let mut guild = self.new_guild(id.clone(), name, self.me, Status::Coordinator);
        guild.version = 1;
        guild.epoch = 1;
        guild.key = Some(GuildKey::generate());
        guild.members.insert(
            self.me,
            Member {
                last_seen: Instant::now(),
                up: true,
                exchange: Some(self.exchange.public()),
            },
        );
        self.network.subscribe(&guild.topic()).await?;
        let info = guild.info();
        self.guilds.insert(id, guild);
        Ok(info)
    }

    async fn start_join(
        &mut self,
        id: String,
        coordinator: PeerId,
        addresses: Vec<zerostate_p2p::Multiaddr>,
        span: Span,
        tx: oneshot::Sender<Result<GuildInfo, GuildError>>,
    ) {
        if let Some(g) = self.guilds.get(&id)
            && g.status.active()
        {
            let _ = tx.send(Ok(g.info()));
            return;
        }
        // Subscribe first, so that no membership update published after admission is missed.
        if let Err(e) = self.network.subscribe(&format!("{TOPIC_PREFIX}{id}")).await {
            let _ = tx.send(Err(e.into()));
            return;
        }
        let request = JoinRequest {
            guild_id: id.clone(),
            exchange_public: self.exchange.public().to_vec(),
        }
        .encode_to_vec();
        let network = self.network.clone();
        let loopback = self.loopback.clone();
        self.tasks.spawn(
            async move {
                let reply = network
                    .request(coordinator, addresses, types::JOIN, request)
                    .await
                    .map_err(GuildError::from)
                    .and_then(|env| {
                        JoinReply::decode(&env.payload[..]).map_err(|e| GuildError::BadReply {
                            guild: id.clone(),
                            reason: format!("malformed reply: {e}"),
                        })
                    });
                let _ = loopback
                    .send(Command::Joined(id, coordinator, reply, span, tx))
                    .await;
            }
            .instrument(Span::current()),
        );
    }

    async fn finish_join(
        &mut self,
        id: &str,
        coordinator: PeerId,
        reply: Result<JoinReply, GuildError>,
        span: &Span,
    ) -> Result<GuildInfo, GuildError> {
        let bad = |reason: &str| GuildError::BadReply {
            guild: id.to_owned(),
            reason: reason.to_owned(),
        };
        let reply = reply?;
        if !reply.refusal.is_empty() {
            return Err(GuildError::Refused {
                guild: id.to_owned(),
                reason: reply.refusal,
            });
        }
        let membership = reply
            .membership
            .ok_or_else(|| bad("no membership in the reply"))?;
        if membership.guild_id != id || !membership.verify(&coordinator) {
            bump(&self.counters.rejected_forged);
            return Err(bad("the membership is not signed by the coordinator"));
        }
        let members = membership.member_ids();
        if !members.contains(&self.me) {
            return Err(bad("the membership does not include this node"));
        }
        let update = reply.key.ok_or_else(|| bad("no key in the reply"))?;
        let exchange_span = tracing::info_span!(
            parent: span,
            names::GUILD_KEY_EXCHANGE,
            guild.id = id,
            peer.id = %coordinator,
        );
        let key = exchange_span.in_scope(|| self.unwrap_key(id, &update));
        let key = match key {
            Ok(k) => k,
            Err(e) => {
                exchange_span.record_error(&e);
                return Err(e);
            }
        };
        drop(exchange_span);
        let mut guild = self.new_guild(
            id.to_owned(),
            membership.name.clone(),
            coordinator,
            Status::Member,
        );
        let now = Instant::now();
        for m in members {
            guild.members.insert(
                m,
                Member {
                    last_seen: now,
                    up: true,
                    exchange: None,
                },
            );
        }
        guild.version = membership.version;
        guild.epoch = update.key_epoch;
        guild.key = Some(key);
        let info = guild.info();
        self.guilds.insert(id.to_owned(), guild);
        Ok(info)
    }

    fn unwrap_key(&self, id: &str, update: &KeyUpdate) -> Result<GuildKey, GuildError> {
        let public: [u8; 32] =
            update
                .exchange_public
                .as_slice()
                .try_into()
                .map_err(|_| GuildError::BadReply {
                    guild: id.to_owned(),
                    reason: "the coordinator's exchange key is not 32 bytes".into(),
                })?;
        self.exchange
            .unwrap(
                &public,
                &update.nonce,
                &update.wrapped,
                &KeyUpdate::context(id, update.key_epoch),
            )
            .map_err(|e| GuildError::BadReply {
                guild: id.to_owned(),
                reason: format!("the guild key: {e}"),
            })
    }

    async fn leave(&mut self, id: &str) -> Result<(), GuildError> {
        let guild = self.guild(id)?;
        match guild.status {
            Status::Coordinator => return Err(GuildError::CoordinatorLeaving(id.to_owned())),
            Status::Member => {}
            other => {
                return Err(GuildError::NotMember(
                    id.to_owned(),
                    other.as_str().to_owned(),
                ));
            }
        }
        let coordinator = guild.coordinator;
        guild.end(Status::Left, "left");
        let network = self.network.clone();
        let request = LeaveRequest {
            guild_id: id.to_owned(),
        }
        .encode_to_vec();
        // Best effort: if the coordinator does not hear it, heartbeats remove this node.
        self.tasks.spawn(
            async move {
                if let Err(e) = network
                    .request(coordinator, vec![], types::LEAVE, request)
                    .await
                {
                    tracing::warn!("telling the coordinator this node left: {e}");
                }
            }
            .instrument(Span::current()),
        );
        Ok(())
    }

    async fn dissolve(&mut self, id: &str) -> Result<(), GuildError> {
        let key = self.key.clone();
        let guild = self.guild(id)?;
        if guild.status != Status::Coordinator {
            return Err(GuildError::NotCoordinator(id.to_owned()));
        }
        let topic = guild.topic();
        guild.end(Status::Dissolved, "dissolved by the coordinator");
        let notice = Dissolve::signed(id, &key).encode_to_vec();
        if let Err(e) = self.network.publish(&topic, types::DISSOLVE, notice).await {
            tracing::warn!(guild.id = id, "announcing the dissolution: {e}");
        }
        Ok(())
    }

    async fn send(
        &mut self,
        id: &str,
        message_type: String,
        body: Vec<u8>,
        span: Span,
    ) -> Result<(), GuildError> {
        let cx = span.context();
        let me = self.me;
        let guild = self.guild(id)?;
        if !guild.status.active() {
            return Err(GuildError::NotMember(
                id.to_owned(),
                guild.status.as_str().to_owned(),
            ));
        }
        let Some(key) = guild.key.clone() else {
            return Err(GuildError::NotMember(id.to_owned(), "no key yet".into()));
        };
        let mut headers = HashMap::new();
        if let Some(cx) = &cx {
            propagation::inject(cx, &mut headers);
        }
        let mut take = |k: &str| headers.remove(k).unwrap_or_default();
        let plain = Plain {
            message_type,
            body,
            traceparent: take(propagation::TRACEPARENT),
            tracestate: take(propagation::TRACESTATE),
            baggage: take(propagation::BAGGAGE),
        };
        let mut sealed = Sealed {
            guild_id: id.to_owned(),
            key_epoch: guild.epoch,
            sender: me.to_bytes(),
            counter: next_counter(),
            nonce: Vec::new(),
            ciphertext: Vec::new(),
        };
        let (nonce, ct) = key.seal(&plain.encode_to_vec(), &sealed.aad());
        sealed.nonce = nonce.to_vec();
        sealed.ciphertext = ct;
        let topic = guild.topic();
        self.network
            .publish_opaque(&topic, types::MESSAGE, sealed.encode_to_vec())
            .instrument(span)
            .await?;
        bump(&self.counters.messages_sent);
        Ok(())
    }

    async fn watch(&mut self, id: String) -> Result<(), GuildError> {
        if !self.guilds.contains_key(&id) {
            let guild = self.new_guild(id.clone(), String::new(), self.me, Status::Watching);
            self.network.subscribe(&guild.topic()).await?;
            self.guilds.insert(id, guild);
        }
        Ok(())
    }

    /// Publishes the current membership (coordinator only).
    async fn announce(&mut self, id: &str) {
        let key = self.key.clone();
        let Some(guild) = self.guilds.get(id) else {
            return;
        };
        let span = tracing::info_span!(
            names::GUILD_MEMBERSHIP_UPDATE,
            guild.id = id,
            count = guild.members.len(),
            version = guild.version,
        );
        let bytes = guild.membership(&key).encode_to_vec();
        let topic = guild.topic();
        if let Err(e) = self
            .network
            .publish(&topic, types::MEMBERSHIP, bytes)
            .instrument(span.clone())
            .await
        {
            // No other member connected yet is normal right after creation.
            tracing::debug!(guild.id = id, "announcing the membership: {e}");
        }
    }

    /// Rotates the key (coordinator only) and delivers it to every remaining member.
    fn rotate_key(&mut self, id: &str) {
        let exchange = self.exchange.clone();
        let me = self.me;
        let Some(guild) = self.guilds.get_mut(id) else {
            return;
        };
        let key = GuildKey::generate();
        guild.install_key(guild.epoch + 1, key.clone());
        let epoch = guild.epoch;
        for (peer, member) in &guild.members {
            if *peer == me {
                continue;
            }
            let Some(public) = member.exchange else {
                continue;
            };
            let Some((nonce, wrapped)) =
                exchange.wrap(&public, &key, &KeyUpdate::context(id, epoch))
            else {
                continue;
            };
            let update = KeyUpdate {
                guild_id: id.to_owned(),
                key_epoch: epoch,
                exchange_public: exchange.public().to_vec(),
                nonce: nonce.to_vec(),
                wrapped,
            }
            .encode_to_vec();
            let network = self.network.clone();
            let peer = *peer;
            let span = tracing::info_span!(
                names::GUILD_KEY_EXCHANGE,
                guild.id = id,
                peer.id = %peer,
                key.epoch = epoch,
            );
            self.tasks.spawn(
                async move {
                    // A lost delivery would leave the member unable to read the guild, so it
                    // is retried; a member that stays unreachable is removed by heartbeats.
                    let mut wait = Duration::from_millis(250);
                    for attempt in 1..=4 {
                        match network
                            .request(peer, vec![], types::KEY, update.clone())
                            .await
                        {
                            Ok(_) => return,
                            Err(e) if attempt == 4 => Span::current().record_error(&e),
                            Err(e) => {
                                tracing::debug!(
                                    "delivering the guild key (attempt {attempt}): {e}"
                                );
                                tokio::time::sleep(wait).await;
                                wait *= 2;
                            }
                        }
                    }
                }
                .instrument(span),
            );
        }
    }

    /// Removes a member (coordinator only): new version, new key, announced.
    async fn remove_member(&mut self, id: &str, peer: PeerId) {
        let Some(guild) = self.guilds.get_mut(id) else {
            return;
        };
        if guild.members.remove(&peer).is_none() {
            return;
        }
        guild.version += 1;
        self.rotate_key(id);
        self.announce(id).await;
    }

    async fn heartbeat_round(&mut self) {
        let now = Instant::now();
        let down_after = self.config.down_after();
        let me = self.me;
        let ids: Vec<String> = self
            .guilds
            .iter()
            .filter(|(_, g)| g.status.active())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let Some(guild) = self.guilds.get_mut(&id) else {
                continue;
            };
            guild.heartbeat_seq += 1;
            let beat = Heartbeat {
                guild_id: id.clone(),
                seq: guild.heartbeat_seq,
            }
            .encode_to_vec();
            let topic = guild.topic();
            let mut down = Vec::new();
            for (peer, m) in guild.members.iter_mut() {
                if *peer != me && m.up && now.duration_since(m.last_seen) > down_after {
                    m.up = false;
                    down.push(*peer);
                }
            }
            let coordinating = guild.status == Status::Coordinator;
            let coordinator = guild.coordinator;
            let span = tracing::debug_span!(names::GUILD_HEARTBEAT, guild.id = id.as_str());
            let _ = self
                .network
                .publish(&topic, types::HEARTBEAT, beat)
                .instrument(span)
                .await;
            for peer in down {
                bump(&self.counters.members_marked_down);
                let span = tracing::info_span!(
                    names::GUILD_HEARTBEAT,
                    guild.id = id.as_str(),
                    peer.id = %peer,
                    status = "down",
                    missed = self.config.missed_heartbeats,
                );
                let _entered = span.enter();
                tracing::warn!(
                    guild.id = id.as_str(),
                    peer.id = %peer,
                    "a member missed {} heartbeats: marked down",
                    self.config.missed_heartbeats
                );
                if coordinating {
                    self.remove_member(&id, peer).await;
                } else if peer == coordinator {
                    // The coordinator is gone: without it nobody can admit, rotate keys or
                    // sign memberships, so the guild ends for this member.
                    let dissolve = tracing::info_span!(
                        names::GUILD_DISSOLVE,
                        guild.id = id.as_str(),
                        reason = "coordinator lost",
                    );
                    let _in = dissolve.enter();
                    if let Some(g) = self.guilds.get_mut(&id) {
                        g.end(Status::Dissolved, "coordinator lost (missed heartbeats)");
                        let topic = g.topic();
                        let _ = self.network.unsubscribe(&topic).await;
                    }
                }
            }
        }
    }

    async fn gossip(&mut self, m: GossipMessage) {
        let Some(id) = m.topic.strip_prefix(TOPIC_PREFIX).map(str::to_owned) else {
            return;
        };
        let Some(source) = m.source else {
            bump(&self.counters.rejected_not_member);
            return;
        };
        match m.envelope.message_type.as_str() {
            types::MESSAGE => self.sealed_message(&id, source, m),
            types::HEARTBEAT => {
                if let Some(g) = self.guilds.get_mut(&id)
                    && let Some(member) = g.members.get_mut(&source)
                {
                    member.last_seen = Instant::now();
                    member.up = true;
                }
            }
            types::MEMBERSHIP => self.membership_update(&id, source, m).await,
            types::DISSOLVE => {
                let Ok(notice) = Dissolve::decode(&m.envelope.payload[..]) else {
                    bump(&self.counters.rejected_malformed);
                    return;
                };
                let Some(g) = self.guilds.get_mut(&id) else {
                    return;
                };
                if notice.guild_id != id || !notice.verify(&g.coordinator) {
                    bump(&self.counters.rejected_forged);
                    return;
                }
                let _in = m.span.enter();
                let span = tracing::info_span!(names::GUILD_DISSOLVE, guild.id = id.as_str());
                let _entered = span.enter();
                g.end(Status::Dissolved, "dissolved by the coordinator");
            }
            _ => bump(&self.counters.rejected_malformed),
        }
    }

    async fn membership_update(&mut self, id: &str, source: PeerId, m: GossipMessage) {
        let me = self.me;
        let Ok(update) = Membership::decode(&m.envelope.payload[..]) else {
            bump(&self.counters.rejected_malformed);
            return;
        };
        let Some(g) = self.guilds.get_mut(id) else {
            return;
        };
        if !g.status.active() || g.status == Status::Coordinator {
            return;
        }
        if update.guild_id != id || source != g.coordinator || !update.verify(&g.coordinator) {
            bump(&self.counters.rejected_forged);
            tracing::warn!(guild.id = id, peer.id = %source, "rejected a membership update not signed by the coordinator");
            return;
        }
        if update.version <= g.version {
            bump(&self.counters.rejected_stale);
            return;
        }
        let span = tracing::info_span!(
            parent: &m.span,
            names::GUILD_MEMBERSHIP_UPDATE,
            guild.id = id,
            version = update.version,
            count = update.members.len(),
        );
        let _entered = span.enter();
        let members = update.member_ids();
        g.version = update.version;
        if !members.contains(&me) {
            g.end(Status::Removed, "removed by the coordinator");
            return;
        }
        let now = Instant::now();
        g.members.retain(|p, _| members.contains(p));
        for p in members {
            g.members.entry(p).or_insert(Member {
                last_seen: now,
                up: true,
                exchange: None,
            });
        }
    }

    fn sealed_message(&mut self, id: &str, source: PeerId, m: GossipMessage) {
        let Some(g) = self.guilds.get_mut(id) else {
            return;
        };
        g.ciphertexts_seen += 1;
        let Ok(sealed) = Sealed::decode(&m.envelope.payload[..]) else {
            bump(&self.counters.rejected_malformed);
            return;
        };
        if sealed.guild_id != id || sealed.sender != source.to_bytes() {
            bump(&self.counters.rejected_not_member);
            return;
        }
        let key = match g.key_for(sealed.key_epoch) {
            Some(k) if g.status != Status::Watching => k.clone(),
            _ => {
                g.undecryptable += 1;
                return;
            }
        };
        if g.status.active() && !g.members.contains_key(&source) {
            bump(&self.counters.rejected_not_member);
            return;
        }
        let Ok(bytes) = key.open(&sealed.nonce, &sealed.ciphertext, &sealed.aad()) else {
            bump(&self.counters.rejected_tampered);
            return;
        };
        if let Some(member) = g.members.get_mut(&source) {
            // An authentic message is as good a sign of life as a heartbeat.
            member.last_seen = Instant::now();
            member.up = true;
        }
        // Replay check only after the message proved authentic, so that forged counters
        // cannot poison the window.
        let (highest, seen) = g
            .replay
            .entry((source, sealed.key_epoch))
            .or_insert((0, BTreeSet::new()));
        if sealed.counter + REPLAY_WINDOW <= *highest || !seen.insert(sealed.counter) {
            bump(&self.counters.rejected_replayed);
            return;
        }
        *highest = (*highest).max(sealed.counter);
        let floor = highest.saturating_sub(REPLAY_WINDOW);
        seen.retain(|&c| c > floor);
        let Ok(plain) = Plain::decode(&bytes[..]) else {
            bump(&self.counters.rejected_malformed);
            return;
        };
        let mut headers = HashMap::new();
        headers.insert(
            propagation::TRACEPARENT.to_owned(),
            plain.traceparent.clone(),
        );
        headers.insert(propagation::TRACESTATE.to_owned(), plain.tracestate.clone());
        headers.insert(propagation::BAGGAGE.to_owned(), plain.baggage.clone());
        let cx = propagation::extract(&headers);
        let span = tracing::info_span!(
            parent: None,
            names::GUILD_RECEIVE_MESSAGE,
            otel.kind = "consumer",
            guild.id = id,
            peer.id = %source,
            message.type = plain.message_type.as_str(),
            size.bytes = plain.body.len(),
        );
        if let Some(cx) = &cx {
            // The network's receive span had nothing to go on (the context was sealed);
            // now both join the sender's trace.
            m.span.set_parent(cx);
            span.set_parent(cx);
        }
        let _entered = span.enter();
        tracing::info!(
            guild.id = id,
            from = %source,
            message.type = plain.message_type.as_str(),
            "guild message received"
        );
        bump(&self.counters.messages_received);
        g.received.push_back(ReceivedMessage {
            from: source.to_string(),
            message_type: plain.message_type,
            body: String::from_utf8_lossy(&plain.body).into_owned(),
            trace_id: cx.map(|c| c.trace_id.to_string()),
        });
        while g.received.len() > self.config.received_kept {
            g.received.pop_front();
        }
    }

    async fn request(&mut self, r: IncomingRequest) {
        let (reply_type, reply) = match r.envelope.message_type.as_str() {
            types::JOIN => (types::JOIN_REPLY, self.join_request(&r).await),
            types::LEAVE => (types::ACK, self.leave_request(&r).await),
            types::KEY => (types::ACK, self.key_request(&r)),
            other => (
                "error",
                format!("this node has no handler for message type {other}").into_bytes(),
            ),
        };
        if let Err(e) = self.network.respond(r, reply_type, reply).await {
            tracing::debug!("answering a guild request: {e}");
        }
    }

    async fn join_request(&mut self, r: &IncomingRequest) -> Vec<u8> {
        let refuse = |reason: &str| {
            JoinReply {
                refusal: reason.to_owned(),
                membership: None,
                key: None,
            }
            .encode_to_vec()
        };
        let Ok(req) = JoinRequest::decode(&r.envelope.payload[..]) else {
            bump(&self.counters.rejected_malformed);
            return refuse("malformed join request");
        };
        let Ok(public): Result<[u8; 32], _> = req.exchange_public.as_slice().try_into() else {
            bump(&self.counters.rejected_malformed);
            return refuse("the exchange key must be 32 bytes");
        };
        let config = self.config.clone();
        let sign_key = self.key.clone();
        let exchange = self.exchange.clone();
        let Some(g) = self.guilds.get_mut(&req.guild_id) else {
            bump(&self.counters.joins_refused);
            return refuse("no such guild here");
        };
        if g.status != Status::Coordinator {
            bump(&self.counters.joins_refused);
            return refuse("this node does not coordinate that guild");
        }
        let now = Instant::now();
        let rate = f64::from(config.joins_per_second);
        g.join_tokens = (g.join_tokens + now.duration_since(g.join_refilled).as_secs_f64() * rate)
            .min(rate * 2.0);
        g.join_refilled = now;
        let already = g.members.contains_key(&r.peer);
        if !already {
            if g.join_tokens < 1.0 {
                bump(&self.counters.joins_refused);
                return refuse("too many join requests: try again later");
            }
            g.join_tokens -= 1.0;
            if g.members.len() >= config.max_members {
                bump(&self.counters.joins_refused);
                return refuse("the guild is full");
            }
        }
        let span = tracing::info_span!(
            parent: &r.span,
            names::GUILD_JOIN,
            guild.id = req.guild_id.as_str(),
            peer.id = %r.peer,
            count = tracing::field::Empty,
        );
        let _entered = span.enter();
        g.members.insert(
            r.peer,
            Member {
                last_seen: now,
                up: true,
                exchange: Some(public),
            },
        );
        if !already {
            g.version += 1;
        }
        span.record("count", g.members.len());
        let key = g.key.clone().expect("a coordinator always holds the key");
        let wrapped = {
            let _x = tracing::info_span!(
                names::GUILD_KEY_EXCHANGE,
                guild.id = req.guild_id.as_str(),
                peer.id = %r.peer,
            )
            .entered();
            exchange.wrap(&public, &key, &KeyUpdate::context(&g.id, g.epoch))
        };
        let Some((nonce, wrapped)) = wrapped else {
            g.members.remove(&r.peer);
            bump(&self.counters.rejected_malformed);
            return refuse("the exchange key is a low-order point");
        };
        let reply = JoinReply {
            refusal: String::new(),
            membership: Some(g.membership(&sign_key)),
            key: Some(KeyUpdate {
                guild_id: g.id.clone(),
                key_epoch: g.epoch,
                exchange_public: exchange.public().to_vec(),
                nonce: nonce.to_vec(),
                wrapped,
            }),
        }
        .encode_to_vec();
        bump(&self.counters.joins_admitted);
        let id = g.id.clone();
        drop(_entered);
        if !already {
            self.announce(&id).await;
        }
        reply
    }

    async fn leave_request(&mut self, r: &IncomingRequest) -> Vec<u8> {
        let Ok(req) = LeaveRequest::decode(&r.envelope.payload[..]) else {
            bump(&self.counters.rejected_malformed);
            return Vec::new();
        };
        let coordinates = self
            .guilds
            .get(&req.guild_id)
            .is_some_and(|g| g.status == Status::Coordinator && g.members.contains_key(&r.peer));
        if coordinates {
            let span = tracing::info_span!(
                parent: &r.span,
                names::GUILD_LEAVE,
                guild.id = req.guild_id.as_str(),
                peer.id = %r.peer,
            );
            self.remove_member(&req.guild_id, r.peer)
                .instrument(span)
                .await;
        }
        Vec::new()
    }

    fn key_request(&mut self, r: &IncomingRequest) -> Vec<u8> {
        let Ok(update) = KeyUpdate::decode(&r.envelope.payload[..]) else {
            bump(&self.counters.rejected_malformed);
            return Vec::new();
        };
        let Some(g) = self.guilds.get(&update.guild_id) else {
            return Vec::new();
        };
        if g.status != Status::Member || r.peer != g.coordinator {
            bump(&self.counters.rejected_forged);
            return Vec::new();
        }
        if update.key_epoch == g.epoch {
            // A retried delivery of the key this node already holds.
            return Vec::new();
        }
        if update.key_epoch < g.epoch {
            bump(&self.counters.rejected_stale);
            return Vec::new();
        }
        let span = tracing::info_span!(
            parent: &r.span,
            names::GUILD_KEY_EXCHANGE,
            guild.id = update.guild_id.as_str(),
            peer.id = %r.peer,
            key.epoch = update.key_epoch,
        );
        let _entered = span.enter();
        match self.unwrap_key(&update.guild_id, &update) {
            Ok(key) => {
                if let Some(g) = self.guilds.get_mut(&update.guild_id) {
                    g.install_key(update.key_epoch, key);
                }
            }
            Err(e) => {
                span.record_error(&e);
                bump(&self.counters.rejected_tampered);
            }
        }
        Vec::new()
    }
}

/// A process-wide message counter: never repeats within a run, so replays are detectable
/// per sender.
fn next_counter() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    COUNTER.fetch_add(1, Relaxed)
}
