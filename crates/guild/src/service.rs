//! The guild service: one task that owns every guild this node is in, fed by the node's
//! p2p events and by the handle's commands. Network round trips run in helper tasks it
//! owns and report back, so the service never waits on another node.
//!
//! One module per responsibility: [`handle`] (the public handle and its commands),
//! [`state`] (what is known of each guild), [`membership`], [`joins`], [`keys`] (delivery
//! and rotation), [`messages`] (sealing, opening, the replay window), [`heartbeats`],
//! [`sync`] (a member that missed an update catching up), [`succession`] (a successor
//! taking over a silent coordinator's guild), [`store`] (guilds kept on disk);
//! [`config`], [`error`] and [`stats`] hold the public types. This file runs the loop and
//! routes each command and each piece of traffic to the module that handles it.

mod config;
mod error;
mod handle;
mod heartbeats;
mod joins;
mod keys;
mod membership;
mod messages;
mod refusal;
mod state;
mod stats;
mod store;
mod succession;
mod sync;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use zerostate_telemetry::error_chain;
use zerostate_telemetry::names::span as names;

use libp2p::PeerId;
use libp2p::identity::Keypair;
use tokio::sync::mpsc;
use zerostate_p2p::{Event, GossipMessage, IncomingRequest, Network, REFUSAL};

pub use config::{Admission, GuildConfig};
pub use error::GuildError;
pub use handle::Guilds;
pub use joins::MAX_INVITATION_TTL;
pub use state::{
    GuildInfo, GuildMessage, MemberInfo, ReceivedMessage, SILENT_COORDINATOR, Status as GuildStatus,
};
pub use stats::GuildStats;

use crate::crypto::ExchangeKey;
use crate::wire::types;
use handle::Command;
use state::{Guild, Member, Status};
use stats::{Counters, bump};

/// Prefix of every guild's gossip topic; the guild id follows.
pub const TOPIC_PREFIX: &str = "zerostate/guild/";
/// Room in the command queue; senders wait when it is full.
const COMMAND_QUEUE: usize = 256;
/// Opened messages a subscriber may fall behind by before it loses the oldest.
const OPENED_QUEUE: usize = 1024;
/// Attempts a node makes to get back into a guild it was left out of by a succession
/// (see `Service::rejoin`) while the network fails them.
const REJOIN_ATTEMPTS: u32 = 20;

struct Service {
    me: PeerId,
    network: Network,
    key: Keypair,
    exchange: Arc<ExchangeKey>,
    config: GuildConfig,
    counters: Arc<Counters>,
    guilds: BTreeMap<String, Guild>,
    loopback: mpsc::Sender<Command>,
    /// Every message this node opens, for the applications that subscribed.
    opened: tokio::sync::broadcast::Sender<GuildMessage>,
    /// Helper tasks (a join's request, key deliveries, leave notices): bounded in time,
    /// and aborted when the service stops.
    tasks: tokio::task::JoinSet<()>,
    /// Where guilds are kept across restarts, when the node has a data directory.
    store: Option<store::Store>,
}

impl Service {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        self.resume().await;
        let mut ticker =
            tokio::time::interval(Duration::from_millis(self.config.heartbeat_interval_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Commands first: a heartbeat waiting in the queue is taken before the next round
            // decides who is overdue, so a busy moment does not mark a live member down.
            tokio::select! {
                biased;
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

    /// The ids of the guilds this node coordinates or is a member of.
    fn active_ids(&self) -> Vec<String> {
        self.guilds
            .iter()
            .filter(|(_, g)| g.status.is_active())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Writes guild `id` to the store (when there is one), before the change it records is
    /// acknowledged. A write that fails is logged as an error and counted: the guild goes
    /// on in memory, and the next change writes it whole again.
    fn persist(&self, id: &str) {
        let (Some(store), Some(g)) = (&self.store, self.guilds.get(id)) else {
            return;
        };
        if let Err(e) = store.save(g) {
            bump(&self.counters.persist_failed);
            tracing::error!(guild.id = id, "keeping the guild on disk: {e}");
        }
    }

    /// Picks up the guilds kept before a restart: a coordinator resumes its guild (same id
    /// and members, a new key epoch, announced); a member catches up with its coordinator
    /// (and, should it be silent, the succession takes its course). Everyone gets a full
    /// heartbeat window.
    async fn resume(&mut self) {
        let now = std::time::Instant::now();
        for id in self.active_ids() {
            let Some(g) = self.guilds.get_mut(&id) else {
                continue;
            };
            for m in g.members.values_mut() {
                m.last_seen = now;
                m.up = true;
            }
            let topic = g.topic();
            let coordinating = g.status == Status::Coordinator;
            if coordinating {
                g.version = g.version.saturating_add(1);
                g.choose_successors();
            }
            tracing::info!(
                guild.id = id.as_str(),
                status = g.status.as_str(),
                members = g.members.len(),
                "resuming a guild kept before the restart"
            );
            if let Err(e) = self.network.subscribe(&topic).await {
                tracing::error!(
                    guild.id = id.as_str(),
                    "resuming the guild's topic: {}",
                    error_chain(&e)
                );
            }
            if coordinating {
                self.rotate_key(&id);
                self.announce(&id);
                self.persist(&id);
            } else if let Some(coordinator) = self.guilds.get(&id).map(|g| g.coordinator) {
                self.start_sync_from(&id, coordinator);
            }
        }
    }

    /// Asks `coordinator` to let this node back into guild `id` (no invitation: a member it
    /// removed for silence, or the coordinator it replaced, comes back once). An attempt the
    /// network failed (each dials afresh, given a heartbeat interval) is made again, every
    /// interval, up to [`REJOIN_ATTEMPTS`] times; the answer is logged; a refusal leaves
    /// the guild ended here with its reason.
    fn rejoin(&mut self, id: &str, coordinator: PeerId) {
        let loopback = self.loopback.clone();
        let guild = id.to_owned();
        let interval = self.config.interval();
        self.tasks.spawn(async move {
            for attempt in 1..=REJOIN_ATTEMPTS {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let span = tracing::info_span!(names::GUILD_JOIN, guild.id = guild.as_str(), peer.id = %coordinator, count = tracing::field::Empty);
                let command = Command::Join {
                    guild: guild.clone(),
                    coordinator,
                    addresses: Vec::new(),
                    invitation: None,
                    span,
                    reply: tx,
                };
                if loopback.send(command).await.is_err() {
                    return;
                }
                match rx.await {
                    Ok(Ok(_)) => {
                        tracing::info!(
                            guild.id = guild.as_str(),
                            "back in the guild under its new coordinator"
                        );
                        return;
                    }
                    Ok(Err(e @ (GuildError::Unreachable { .. } | GuildError::Network(_))))
                        if attempt < REJOIN_ATTEMPTS =>
                    {
                        tracing::debug!(
                            guild.id = guild.as_str(),
                            "getting back into the guild (attempt {attempt}): {}",
                            error_chain(&e)
                        );
                        tokio::time::sleep(interval).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(
                            guild.id = guild.as_str(),
                            "getting back into the guild: {}",
                            error_chain(&e)
                        );
                        return;
                    }
                    Err(_) => return,
                }
            }
        });
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
            Command::Create { name, span, reply } => {
                let _ = reply.send(self.create(name, &span).await);
            }
            Command::Join {
                guild,
                coordinator,
                addresses,
                invitation,
                span,
                reply,
            } => {
                self.start_join(guild, coordinator, addresses, invitation, span, reply)
                    .await
            }
            Command::Joined {
                guild,
                coordinator,
                answer,
                span,
                reply,
            } => {
                let result = self.finish_join(&guild, coordinator, answer, &span).await;
                if result.is_err() {
                    self.abandon_join(&guild).await;
                }
                let _ = reply.send(result);
            }
            Command::Synced {
                guild,
                from,
                answer,
            } => self.finish_sync(&guild, from, answer),
            Command::Beaten {
                guild,
                coordinator,
                beat,
            } => self.heartbeat_answered(&guild, coordinator, beat),
            Command::Leave { guild, reply } => {
                let _ = reply.send(self.leave(&guild).await);
            }
            Command::Invite {
                guild,
                invitee,
                ttl,
                reply,
            } => {
                let _ = reply.send(self.invite(&guild, invitee, ttl));
            }
            Command::Dissolve { guild, reply } => {
                let _ = reply.send(self.dissolve(&guild).await);
            }
            Command::Remove {
                guild,
                peer,
                reason,
                reply,
            } => {
                let _ = reply.send(self.remove_for(&guild, peer, reason).await);
            }
            Command::Send {
                guild,
                message_type,
                body,
                span,
                reply,
            } => {
                let _ = reply.send(self.send(&guild, message_type, body, span).await);
            }
            Command::Watch { guild, reply } => {
                let _ = reply.send(self.watch(guild).await);
            }
            Command::Info { guild, reply } => {
                let me = self.me;
                let _ = reply.send(self.guild(&guild).map(|g| g.info(&me)));
            }
            Command::List { reply } => {
                let _ = reply.send(self.guilds.values().map(|g| g.info(&self.me)).collect());
            }
            Command::Messages { guild, reply } => {
                let _ = reply.send(
                    self.guild(&guild)
                        .map(|g| g.received.iter().cloned().collect()),
                );
            }
        }
    }

    /// Routes guild gossip to the module that handles its type.
    async fn gossip(&mut self, m: GossipMessage) {
        let Some(id) = m.topic.strip_prefix(TOPIC_PREFIX).map(str::to_owned) else {
            return;
        };
        let Some(source) = m.source else {
            bump(&self.counters.rejected_not_member);
            return;
        };
        match m.envelope.message_type.as_str() {
            types::MESSAGE => self.sealed_message(&id, source, m, false),
            types::HEARTBEAT => self.heartbeat_seen(&id, source, &m.envelope.payload),
            types::MEMBERSHIP => self.membership_update(&id, source, m).await,
            types::DISSOLVE => self.dissolve_notice(&id, m),
            _ => bump(&self.counters.rejected_malformed),
        }
    }

    /// Routes a direct request to the module that handles its type, and answers it.
    async fn request(&mut self, r: IncomingRequest) {
        let Some(call) = types::Call::of(&r.envelope.message_type) else {
            // The router hands the service only the types it answers.
            let why = format!("{} is not a guild request", r.envelope.message_type);
            let _ = self.network.respond(r, REFUSAL, why.into_bytes()).await;
            return;
        };
        let (reply_type, reply) = match call {
            types::Call::Join => (types::JOIN_REPLY, self.join_request(&r).await),
            types::Call::Sync => (types::JOIN_REPLY, self.sync_request(&r)),
            types::Call::Leave => (types::ACK, self.leave_request(&r).await),
            types::Call::Key => self.key_request(&r),
            types::Call::Heartbeat => self.heartbeat_request(&r),
        };
        if let Err(e) = self.network.respond(r, reply_type, reply).await {
            tracing::debug!("answering a guild request: {}", error_chain(&e));
        }
    }
}
