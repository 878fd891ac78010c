//! How the market reaches other nodes. [`Tasks`] does no network I/O of its own: it asks,
//! announces and learns about its guilds through a [`Transport`], and answers what
//! [`Tasks::handle`] is given. A node wires it to its p2p network and guilds ([`P2p`],
//! served by [`Served`]); the unit tests wire nodes to each other in memory.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tracing::Instrument;
use zerostate_guild::{GuildInfo, GuildMessage, Guilds};
use zerostate_p2p::{IncomingRequest, Multiaddr, Network, PeerId};
use zerostate_telemetry::{SpanExt, error_chain};

use crate::Tasks;
use crate::wire;

/// A future a [`Transport`] returns.
pub type Reply<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Another node's answer to a request: its type and its bytes.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The answer's message type (`task_offer_taken`, `task_result`, `error`, ...).
    pub kind: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// A request to this node's market, as [`Tasks::handle`] takes it.
#[derive(Clone, Debug)]
pub struct Incoming {
    /// Who asked.
    pub peer: PeerId,
    /// The request's bytes.
    pub payload: Vec<u8>,
    /// The request's span (`p2p.message.<type>`): the work done for it is its child.
    pub span: tracing::Span,
}

/// What the market answers a request with: its type and bytes, or `None` when it answers
/// nothing and the connection is dropped instead (`drop-chunk-connection`, tests only).
pub type Response = Option<(&'static str, Vec<u8>)>;

/// What the market needs of the network and of the guilds.
pub trait Transport: Send + Sync + 'static {
    /// This node's peer id.
    fn local_peer(&self) -> PeerId;

    /// Sends `peer` a request of type `kind` (dialling `addresses` if not connected): its
    /// answer, or what the network said.
    fn ask(
        &self,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        kind: &'static str,
        body: Vec<u8>,
    ) -> Reply<'_, Result<Answer, String>>;

    /// Sends a message of type `kind` to every member of `guild`.
    fn announce(
        &self,
        guild: &str,
        kind: &'static str,
        body: Vec<u8>,
    ) -> Reply<'_, Result<(), String>>;

    /// `guild` as this node sees it.
    fn guild(&self, guild: &str) -> Reply<'_, Result<GuildInfo, String>>;

    /// Every guild this node is in.
    fn guilds(&self) -> Reply<'_, Vec<GuildInfo>>;

    /// Whether `peer` is a member of a guild this node is in.
    fn is_member(&self, peer: PeerId) -> Reply<'_, bool>;

    /// Removes `peer` from `guild`, which this node coordinates, saying `why`.
    fn remove(&self, guild: &str, peer: PeerId, why: &str) -> Reply<'_, Result<(), String>>;

    /// The guild messages this node receives, from now on.
    fn messages(&self) -> broadcast::Receiver<GuildMessage>;

    /// Addresses others may dial this node at.
    fn addresses(&self) -> Reply<'_, Vec<String>>;

    /// Drops every connection to `peer` and dials it again.
    fn redial(&self, peer: PeerId) -> Reply<'_, ()>;

    /// The largest message the network carries, bytes.
    fn max_message_bytes(&self) -> usize;

    /// How long the network waits for an answer to a request.
    fn request_timeout(&self) -> Duration;
}

/// The transport of a node: requests over its p2p network, guilds from its guild service.
pub struct P2p {
    network: Network,
    guilds: Guilds,
}

impl P2p {
    /// Asks over `network`; guilds are those of `guilds`.
    pub fn new(network: Network, guilds: Guilds) -> Arc<Self> {
        Arc::new(Self { network, guilds })
    }
}

impl Transport for P2p {
    fn local_peer(&self) -> PeerId {
        self.network.peer_id()
    }

    fn ask(
        &self,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        kind: &'static str,
        body: Vec<u8>,
    ) -> Reply<'_, Result<Answer, String>> {
        Box::pin(async move {
            let answer = self
                .network
                .request(peer, addresses, kind, body)
                .await
                .map_err(|e| error_chain(&e))?;
            Ok(Answer {
                kind: answer.message_type,
                payload: answer.payload,
            })
        })
    }

    fn announce(
        &self,
        guild: &str,
        kind: &'static str,
        body: Vec<u8>,
    ) -> Reply<'_, Result<(), String>> {
        let guild = guild.to_owned();
        Box::pin(async move {
            self.guilds
                .send(&guild, kind, body)
                .await
                .map_err(|e| error_chain(&e))
        })
    }

    fn guild(&self, guild: &str) -> Reply<'_, Result<GuildInfo, String>> {
        let guild = guild.to_owned();
        Box::pin(async move { self.guilds.info(&guild).await.map_err(|e| error_chain(&e)) })
    }

    fn guilds(&self) -> Reply<'_, Vec<GuildInfo>> {
        Box::pin(async move { self.guilds.list().await.unwrap_or_default() })
    }

    fn is_member(&self, peer: PeerId) -> Reply<'_, bool> {
        Box::pin(self.guilds.shares_a_guild_with(peer))
    }

    fn remove(&self, guild: &str, peer: PeerId, why: &str) -> Reply<'_, Result<(), String>> {
        let (guild, why) = (guild.to_owned(), why.to_owned());
        Box::pin(async move {
            self.guilds
                .remove(&guild, peer, &why)
                .await
                .map_err(|e| error_chain(&e))
        })
    }

    fn messages(&self) -> broadcast::Receiver<GuildMessage> {
        self.guilds.subscribe()
    }

    fn addresses(&self) -> Reply<'_, Vec<String>> {
        Box::pin(async move {
            self.network
                .dialable_addresses()
                .await
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect()
        })
    }

    fn redial(&self, peer: PeerId) -> Reply<'_, ()> {
        Box::pin(async move {
            let _ = self.network.dial_afresh(peer, vec![]).await;
        })
    }

    fn max_message_bytes(&self) -> usize {
        self.network.max_message_bytes()
    }

    fn request_timeout(&self) -> Duration {
        self.network.request_timeout()
    }
}

/// The market as a node's router serves it: each request answered by [`Tasks::handle`] and
/// the answer sent back over `network`.
#[derive(Clone)]
pub struct Served {
    tasks: Tasks,
    network: Network,
}

impl Tasks {
    /// This node's market, answering over `network`.
    pub fn served_on(&self, network: Network) -> Served {
        Served {
            tasks: self.clone(),
            network,
        }
    }
}

impl zerostate_p2p::ProtocolHandler for Served {
    const NAME: &'static str = "tasks";
    const REQUESTS: &'static [&'static str] = wire::Call::TYPES;

    async fn request(&self, request: IncomingRequest) {
        let span = request.span.clone();
        let peer = request.peer;
        let answer = match wire::Call::of(&request.envelope.message_type) {
            Some(call) => {
                let incoming = Incoming {
                    peer,
                    payload: request.envelope.payload.clone(),
                    span: span.clone(),
                };
                self.tasks
                    .handle(call, incoming)
                    .instrument(span.clone())
                    .await
            }
            // The router hands over only the types above; answered all the same.
            None => Some((wire::ERROR, b"not a request of the task market".to_vec())),
        };
        let Some((kind, body)) = answer else {
            // Under test: the connection goes, the question is never answered.
            let _ = self.network.dial_afresh(peer, vec![]).await;
            return;
        };
        if let Err(e) = self.network.respond(request, kind, body).await {
            span.record_error(&e);
            tracing::debug!("answering a market request: {}", error_chain(&e));
        }
    }
}
