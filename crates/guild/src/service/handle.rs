//! The handle applications hold: a cheap, cloneable front of the guild service, and the
//! commands it sends it, one variant per operation with named fields.

use std::sync::Arc;

use libp2p::PeerId;
use libp2p::identity::Keypair;
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, Span};
use zerostate_p2p::{Event, GossipMessage, IncomingRequest, Multiaddr, Network};
use zerostate_telemetry::SpanExt;
use zerostate_telemetry::names::span as names;

use super::stats::Counters;
use super::{
    COMMAND_QUEUE, GuildConfig, GuildError, GuildInfo, GuildMessage, GuildStats, OPENED_QUEUE,
    ReceivedMessage, Service, TOPIC_PREFIX,
};
use crate::crypto::ExchangeKey;
use crate::wire::{Invitation, JoinReply};

/// Where the service answers a command.
pub(super) type Reply<T> = oneshot::Sender<Result<T, GuildError>>;

/// What the handle (and the service's own helper tasks) ask the service to do.
pub(super) enum Command {
    /// Guild traffic from the network.
    Event(Event),
    /// Create a guild coordinated by this node.
    Create {
        name: String,
        span: Span,
        reply: Reply<GuildInfo>,
    },
    /// Ask a coordinator to admit this node.
    Join {
        guild: String,
        coordinator: PeerId,
        addresses: Vec<Multiaddr>,
        invitation: Option<Invitation>,
        span: Span,
        reply: Reply<GuildInfo>,
    },
    /// Sign an invitation to a guild this node coordinates.
    Invite {
        guild: String,
        invitee: Option<PeerId>,
        ttl: std::time::Duration,
        reply: Reply<Invitation>,
    },
    /// The coordinator's answer to a join (from the join's helper task).
    Joined {
        guild: String,
        coordinator: PeerId,
        answer: Result<JoinReply, GuildError>,
        span: Span,
        reply: Reply<GuildInfo>,
    },
    /// The coordinator's answer to a member's sync request (from its helper task).
    Synced {
        guild: String,
        from: PeerId,
        answer: Result<JoinReply, GuildError>,
    },
    /// What became of this member's heartbeat to its coordinator (from the beat's helper
    /// task).
    Beaten {
        guild: String,
        coordinator: PeerId,
        beat: super::heartbeats::Beat,
    },
    Leave {
        guild: String,
        reply: Reply<()>,
    },
    Dissolve {
        guild: String,
        reply: Reply<()>,
    },
    Remove {
        guild: String,
        peer: PeerId,
        reason: String,
        reply: Reply<()>,
    },
    /// The span is `guild.send_message`: its context goes inside the ciphertext and the
    /// network's own spans of the publish are its children.
    Send {
        guild: String,
        message_type: String,
        body: Vec<u8>,
        span: Span,
        reply: Reply<()>,
    },
    Watch {
        guild: String,
        reply: Reply<()>,
    },
    Info {
        guild: String,
        reply: Reply<GuildInfo>,
    },
    List {
        reply: oneshot::Sender<Vec<GuildInfo>>,
    },
    Messages {
        guild: String,
        reply: Reply<Vec<ReceivedMessage>>,
    },
    /// Stop the service: its helper tasks are aborted and its loop ends.
    Shutdown,
}

/// The guilds of one node: a cheap, cloneable handle to the guild service.
#[derive(Clone)]
pub struct Guilds {
    commands: mpsc::Sender<Command>,
    opened: tokio::sync::broadcast::Sender<GuildMessage>,
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
    /// Refused, with every setting out of range named, when `config` does not validate.
    pub fn start(
        network: Network,
        key: Keypair,
        config: GuildConfig,
    ) -> Result<Guilds, GuildError> {
        Self::start_kept(network, key, config, None)
    }

    /// [`Guilds::start`], keeping every guild this node coordinates or belongs to under
    /// `data_dir` (`guilds/`), written before each change is acknowledged, and resuming
    /// the guilds kept there before: a node restarted on its data directory is back in its
    /// guilds. Refused, naming the file, when a kept guild does not read.
    pub fn start_kept(
        network: Network,
        key: Keypair,
        config: GuildConfig,
        data_dir: Option<&std::path::Path>,
    ) -> Result<Guilds, GuildError> {
        config.validate().map_err(GuildError::InvalidConfig)?;
        let store = data_dir
            .map(super::store::Store::open)
            .transpose()
            .map_err(GuildError::Store)?;
        let kept = match &store {
            Some(store) => store
                .load(config.joins_per_second)
                .map_err(GuildError::Store)?,
            None => Vec::new(),
        };
        // The exchange key follows from the node key, so keys wrapped for this node before a
        // restart still open.
        let exchange = match key.clone().try_into_ed25519() {
            Ok(ed) => ExchangeKey::derived(ed.secret().as_ref()),
            Err(_) => ExchangeKey::generate(),
        };
        let counters = Arc::new(Counters::default());
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let (opened, _) = tokio::sync::broadcast::channel(OPENED_QUEUE);
        let service = Service {
            me: key.public().to_peer_id(),
            network,
            key,
            exchange: Arc::new(exchange),
            config,
            counters: counters.clone(),
            guilds: kept.into_iter().map(|g| (g.id.clone(), g)).collect(),
            store,
            loopback: commands.clone(),
            opened: opened.clone(),
            tasks: tokio::task::JoinSet::new(),
        };
        let task = tokio::spawn(service.run(rx));
        Ok(Guilds {
            commands,
            opened,
            counters,
            task: Arc::new(std::sync::Mutex::new(Some(task))),
        })
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
            Event::Request(r) => crate::wire::types::Call::of(&r.envelope.message_type).is_some(),
            _ => false,
        }
    }

    /// Hands guild traffic to the service.
    pub async fn deliver(&self, event: Event) {
        let _ = self.commands.send(Command::Event(event)).await;
    }

    /// Every guild message this node opens from now on, in order. A subscriber that falls
    /// more than 1024 messages behind loses the oldest (`RecvError::Lagged`).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<GuildMessage> {
        self.opened.subscribe()
    }

    /// What the service counted.
    pub fn stats(&self) -> GuildStats {
        self.counters.snapshot()
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, GuildError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| GuildError::Closed)?;
        rx.await.map_err(|_| GuildError::Closed)?
    }

    /// [`Self::ask`] inside `span`, whose status records a failure.
    async fn ask_in<T>(
        &self,
        span: &Span,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, GuildError> {
        let result = self.ask(make).instrument(span.clone()).await;
        if let Err(e) = &result {
            span.record_error(e);
        }
        result
    }

    /// Creates a guild with this node as its coordinator.
    pub async fn create(&self, name: &str) -> Result<GuildInfo, GuildError> {
        let span = tracing::info_span!(names::GUILD_CREATE, guild.id = tracing::field::Empty);
        self.ask_in(&span, |reply| Command::Create {
            name: name.to_owned(),
            span: span.clone(),
            reply,
        })
        .await
    }

    /// Joins a guild: asks its coordinator (at `addresses`, or wherever the network knows
    /// it), receives the membership and the guild key, and starts heartbeats. A guild that
    /// admits by invitation needs `invitation` (see [`Guilds::invite`]). A failed join
    /// leaves no subscription behind.
    pub async fn join(
        &self,
        guild_id: &str,
        coordinator: PeerId,
        addresses: Vec<zerostate_p2p::Multiaddr>,
        invitation: Option<Invitation>,
    ) -> Result<GuildInfo, GuildError> {
        let span = tracing::info_span!(
            names::GUILD_JOIN,
            guild.id = guild_id,
            peer.id = %coordinator,
            count = tracing::field::Empty,
        );
        let result = self
            .ask_in(&span, |reply| Command::Join {
                guild: guild_id.to_owned(),
                coordinator,
                addresses,
                invitation,
                span: span.clone(),
                reply,
            })
            .await;
        if let Ok(info) = &result {
            span.record("count", info.members.len());
        }
        result
    }

    /// Signs a single-use invitation to a guild this node coordinates, valid for `ttl` (at
    /// most [`super::MAX_INVITATION_TTL`]), for `invitee` or, without one, for whoever
    /// presents it first. Pass it on as [`Invitation::to_token`].
    pub async fn invite(
        &self,
        guild_id: &str,
        invitee: Option<PeerId>,
        ttl: std::time::Duration,
    ) -> Result<Invitation, GuildError> {
        self.ask(|reply| Command::Invite {
            guild: guild_id.to_owned(),
            invitee,
            ttl,
            reply,
        })
        .await
    }

    /// Leaves a guild. The coordinator removes this node and rotates the key; this node
    /// keeps its last key and keeps watching the topic, so what it can no longer read shows
    /// in its `undecryptable` count.
    pub async fn leave(&self, guild_id: &str) -> Result<(), GuildError> {
        let span = tracing::info_span!(names::GUILD_LEAVE, guild.id = guild_id);
        self.ask_in(&span, |reply| Command::Leave {
            guild: guild_id.to_owned(),
            reply,
        })
        .await
    }

    /// Ends a guild (coordinator only).
    pub async fn dissolve(&self, guild_id: &str) -> Result<(), GuildError> {
        let span = tracing::info_span!(names::GUILD_DISSOLVE, guild.id = guild_id);
        self.ask_in(&span, |reply| Command::Dissolve {
            guild: guild_id.to_owned(),
            reply,
        })
        .await
    }

    /// Removes `peer` from a guild this node coordinates, for `reason` (stated in the signed
    /// membership; the member sees it as its status's reason); it is not admitted again.
    /// Records `guild.membership.update`.
    pub async fn remove(
        &self,
        guild_id: &str,
        peer: PeerId,
        reason: &str,
    ) -> Result<(), GuildError> {
        let span = tracing::info_span!(
            names::GUILD_MEMBERSHIP_UPDATE,
            guild.id = guild_id,
            peer.id = %peer,
        );
        self.ask_in(&span, |reply| Command::Remove {
            guild: guild_id.to_owned(),
            peer,
            reason: reason.to_owned(),
            reply,
        })
        .await
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
        self.ask_in(&span, |reply| Command::Send {
            guild: guild_id.to_owned(),
            message_type: message_type.to_owned(),
            body,
            span: span.clone(),
            reply,
        })
        .await
    }

    /// Subscribes to a guild's topic without joining: this node sees the ciphertexts and
    /// counts them, and can open none.
    pub async fn watch(&self, guild_id: &str) -> Result<(), GuildError> {
        self.ask(|reply| Command::Watch {
            guild: guild_id.to_owned(),
            reply,
        })
        .await
    }

    /// One guild.
    pub async fn info(&self, guild_id: &str) -> Result<GuildInfo, GuildError> {
        self.ask(|reply| Command::Info {
            guild: guild_id.to_owned(),
            reply,
        })
        .await
    }

    /// Every guild this node knows.
    pub async fn list(&self) -> Result<Vec<GuildInfo>, GuildError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::List { reply: tx })
            .await
            .map_err(|_| GuildError::Closed)?;
        rx.await.map_err(|_| GuildError::Closed)
    }

    /// Whether `peer` is a member of a guild this node is in (as member or coordinator):
    /// who may hand this node work or open a payment channel to it.
    pub async fn shares_a_guild_with(&self, peer: PeerId) -> bool {
        let peer = peer.to_string();
        self.list().await.is_ok_and(|guilds| {
            guilds.iter().any(|g| {
                matches!(g.status.as_str(), "member" | "coordinator")
                    && g.members.iter().any(|m| m.peer_id == peer)
            })
        })
    }

    /// The last decrypted messages of a guild, oldest first.
    pub async fn messages(&self, guild_id: &str) -> Result<Vec<ReceivedMessage>, GuildError> {
        self.ask(|reply| Command::Messages {
            guild: guild_id.to_owned(),
            reply,
        })
        .await
    }
}

/// The guild protocol as the node's router serves it: requests and gossip are queued to
/// the guild service in the order they arrive.
impl zerostate_p2p::ProtocolHandler for Guilds {
    const NAME: &'static str = "guild";
    const REQUESTS: &'static [&'static str] = crate::wire::types::Call::TYPES;
    const TOPICS: Option<&'static str> = Some(super::TOPIC_PREFIX);
    const IN_ORDER: bool = true;

    async fn request(&self, request: IncomingRequest) {
        self.deliver(Event::Request(request)).await;
    }

    async fn gossip(&self, message: GossipMessage) {
        self.deliver(Event::Gossip(message)).await;
    }
}
