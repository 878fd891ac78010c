//! The handle the rest of a node uses: publish, subscribe, request, respond, the DHT, and
//! what arrives. Every method that sends wraps the message in an envelope carrying the
//! current span's context; every message that arrives comes with a span already parented
//! to the sender's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId, identity::Keypair, request_response::ResponseChannel};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, Span};
use zerostate_telemetry::SpanExt;
use zerostate_telemetry::names::{p2p_message, span as names};

use crate::config::NetworkConfig;
use crate::driver::{Command, Driver};
use crate::envelope::{Envelope, valid_type};
use crate::record::DhtRecord;
use crate::stats::{Counters, NetworkStats};

/// Room in the command queue between the handle and the swarm; senders wait when full.
const COMMAND_QUEUE: usize = 256;
/// Room in the queue of arrived messages; when full, new messages are dropped and counted
/// in `dropped_app_busy`.
const EVENT_QUEUE: usize = 1024;

/// What caused a failed operation: the library's own error where there is one, else a
/// sentence. Read it through `std::error::Error::source` (or print the whole chain with
/// `zerostate_telemetry::error_chain`, or `{:#}` under `anyhow`).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// A cause that is only a sentence.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Reason(pub String);

impl Reason {
    /// A boxed cause from a sentence.
    pub fn cause(text: impl Into<String>) -> Cause {
        Box::new(Self(text.into()))
    }
}

/// Why a network operation failed. Each variant names the operation; what caused it is its
/// `source`, printed once by a chain printer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// The network could not start.
    #[error("starting the network")]
    Start {
        /// Why.
        #[source]
        source: Cause,
    },
    /// The network has shut down.
    #[error("the network has shut down")]
    Closed,
    /// A message type outside `[a-z0-9_]{1,64}`.
    #[error("invalid message type {0:?}: expected 1 to 64 of [a-z0-9_]")]
    BadType(String),
    /// A message larger than the configured bound.
    #[error("message of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge {
        /// Its encoded size.
        size: usize,
        /// The bound.
        limit: usize,
    },
    /// Gossip refused to publish (no peers on the topic, duplicate, ...).
    #[error("publishing on {topic}")]
    Publish {
        /// The topic.
        topic: String,
        /// What gossip said.
        #[source]
        source: Cause,
    },
    /// A request got no valid response.
    #[error("request to {peer}")]
    Request {
        /// The peer asked.
        peer: PeerId,
        /// What went wrong.
        #[source]
        source: Cause,
    },
    /// A DHT operation failed.
    #[error("DHT {operation}")]
    Dht {
        /// `put`, `get` or `find_peer`.
        operation: &'static str,
        /// What went wrong.
        #[source]
        source: Cause,
    },
    /// Dialing failed.
    #[error("dialing {address}")]
    Dial {
        /// The address dialed.
        address: String,
        /// What went wrong.
        #[source]
        source: Cause,
    },
}

/// A gossip message that arrived.
#[derive(Debug)]
pub struct GossipMessage {
    /// Its topic.
    pub topic: String,
    /// The peer that published it.
    pub source: Option<PeerId>,
    /// The peer that forwarded it to this node.
    pub forwarded_by: PeerId,
    /// The envelope.
    pub envelope: Envelope,
    /// `p2p.message.<type>`, a child of the publisher's `p2p.gossip.publish`; enter it
    /// while handling the message. It ends when dropped.
    pub span: Span,
}

/// A request that arrived; answer it with [`Network::respond`].
#[derive(Debug)]
pub struct IncomingRequest {
    /// Who asked.
    pub peer: PeerId,
    /// The envelope.
    pub envelope: Envelope,
    /// `p2p.message.<type>`, a child of the requester's span; the response carries it.
    pub span: Span,
    pub(crate) channel: ResponseChannel<crate::behaviour::Frame>,
}

/// What arrives from the network.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A gossip message on a subscribed topic.
    Gossip(GossipMessage),
    /// A direct request.
    Request(IncomingRequest),
}

/// A connected peer as this node sees it.
#[derive(Clone, Debug, Serialize)]
pub struct PeerInfo {
    /// Its id.
    pub peer_id: String,
    /// The addresses of the connections to it.
    pub addresses: Vec<String>,
    /// Whether every connection to it goes through a relay circuit.
    pub relayed: bool,
    /// Round-trip time of the last health check, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Its gossip score (negative after it sent what this node dropped).
    pub score: Option<f64>,
    /// Messages from it that this node dropped.
    pub offences: u64,
    /// What it says it runs.
    pub agent: Option<String>,
}

/// The network of one node: a cheap, cloneable handle to the swarm task.
#[derive(Clone, Debug)]
pub struct Network {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
    counters: Arc<Counters>,
    max_bytes: usize,
    request_timeout: Duration,
    /// Message types recorded without spans (`quiet_message_types`).
    quiet: Arc<Vec<String>>,
}

impl Network {
    /// Starts the swarm on the current tokio runtime: listens, connects to the bootstrap
    /// nodes and listens through the relays of `config`. Returns the handle and the stream
    /// of arriving messages.
    pub async fn start(
        config: NetworkConfig,
        key: Keypair,
    ) -> Result<(Network, mpsc::Receiver<Event>), NetworkError> {
        let start = |text: String| NetworkError::Start {
            source: Reason::cause(text),
        };
        config.validate().map_err(start)?;
        let peer_id = key.public().to_peer_id();
        let counters = Arc::new(Counters::default());
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (event_tx, events) = mpsc::channel(EVENT_QUEUE);
        let max_bytes = config.max_message_bytes;
        let request_timeout = config.request_timeout();
        let quiet = Arc::new(config.quiet_message_types.clone());
        let driver = Driver::new(config, key, counters.clone(), event_tx).map_err(start)?;
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(driver.run(command_rx, ready_tx));
        ready_rx
            .await
            .map_err(|_| NetworkError::Closed)?
            .map_err(start)?;
        Ok((
            Network {
                commands,
                peer_id,
                counters,
                max_bytes,
                request_timeout,
                quiet,
            },
            events,
        ))
    }

    /// How long a request this node sends waits for its answer.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The largest message this node sends or takes, bytes (its envelope included).
    pub fn max_message_bytes(&self) -> usize {
        self.max_bytes
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// How long gossip took to reach this node: a live histogram, for a metrics registry.
    pub fn delivery_latency(&self) -> crate::stats::DeliveryLatency {
        self.counters.delivery.clone()
    }

    /// Valid messages sent and received by type, as metric families
    /// (`p2p_messages_by_type_total{type, direction}`); at most
    /// [`crate::MAX_COUNTED_TYPES`] types, the rest as `other`.
    pub fn type_families(&self, f: &mut zerostate_telemetry::metrics::Families) {
        const NAME: &str = "p2p_messages_by_type";
        const HELP: &str = "Valid messages by envelope type and direction.";
        for (t, inbound, outbound) in self.counters.by_type.snapshot() {
            f.counter_with(NAME, HELP, &[("type", &t), ("direction", "in")], inbound)
                .counter_with(NAME, HELP, &[("type", &t), ("direction", "out")], outbound);
        }
    }

    /// Whether messages of this type are sent without spans (`quiet_message_types`).
    fn is_quiet(&self, message_type: &str) -> bool {
        self.quiet.iter().any(|q| q == message_type)
    }

    /// What the network counted so far.
    pub fn stats(&self) -> NetworkStats {
        self.counters.snapshot()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetworkError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetworkError::Closed)?;
        rx.await.map_err(|_| NetworkError::Closed)
    }

    /// The addresses this node listens on, relay circuits included.
    pub async fn listen_addresses(&self) -> Result<Vec<Multiaddr>, NetworkError> {
        self.ask(Command::ListenAddresses).await
    }

    /// The addresses other nodes can dial this one at, each ending in `/p2p/<its id>`:
    /// what to hand out as a bootstrap or join address.
    pub async fn dialable_addresses(&self) -> Result<Vec<Multiaddr>, NetworkError> {
        let id = self.peer_id;
        Ok(self
            .listen_addresses()
            .await?
            .into_iter()
            .filter_map(|a| a.with_p2p(id).ok())
            .collect())
    }

    /// The connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NetworkError> {
        self.ask(Command::Peers).await
    }

    /// The gossip topics this node is subscribed to.
    pub async fn topics(&self) -> Result<Vec<String>, NetworkError> {
        self.ask(Command::Topics).await
    }

    /// The peers in this node's gossip mesh for `topic`.
    pub async fn mesh_peers(&self, topic: &str) -> Result<Vec<PeerId>, NetworkError> {
        self.ask(|tx| Command::MeshPeers(topic.to_owned(), tx))
            .await
    }

    /// Connects to `address` (which may be a relay circuit,
    /// `<relay>/p2p-circuit/p2p/<peer>`), returning once the connection is up.
    pub async fn dial(&self, address: Multiaddr) -> Result<PeerId, NetworkError> {
        self.ask(|tx| Command::Dial(address, tx)).await?
    }

    /// Closes every connection to `peer`, abandons the dials to it in progress, and dials
    /// it again on a new connection (at `addresses` and wherever else it is known to be),
    /// returning once that connection is up. For a peer whose connection may have stalled:
    /// through a cut link TCP keeps a connection open for minutes, every request to the
    /// peer rides it and waits out its timeout, and a dial made during the cut waits behind
    /// its lost SYN. Any request in flight to the peer fails.
    pub async fn dial_afresh(
        &self,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
    ) -> Result<PeerId, NetworkError> {
        self.ask(|tx| Command::DialAfresh(peer, addresses, tx))
            .await?
    }

    /// Subscribes to a gossip topic.
    pub async fn subscribe(&self, topic: &str) -> Result<(), NetworkError> {
        let span = tracing::info_span!(names::P2P_GOSSIP_SUBSCRIBE, topic = topic);
        let result = self
            .ask(|tx| Command::Subscribe(topic.to_owned(), tx))
            .instrument(span.clone())
            .await
            .and_then(|r| r);
        finish(&span, &result);
        result
    }

    /// Leaves a gossip topic.
    pub async fn unsubscribe(&self, topic: &str) -> Result<(), NetworkError> {
        self.ask(|tx| Command::Unsubscribe(topic.to_owned(), tx))
            .await
    }

    fn envelope(
        &self,
        message_type: &str,
        payload: Vec<u8>,
        span: &Span,
    ) -> Result<Vec<u8>, NetworkError> {
        if !valid_type(message_type) {
            return Err(NetworkError::BadType(message_type.to_owned()));
        }
        let bytes = Envelope::new(message_type, payload, span.context().as_ref()).encode();
        if bytes.len() > self.max_bytes {
            return Err(NetworkError::TooLarge {
                size: bytes.len(),
                limit: self.max_bytes,
            });
        }
        Ok(bytes)
    }

    /// Publishes a message on a gossip topic. Records `p2p.message.<type>` (producer) with
    /// `p2p.gossip.publish` inside it; every receiving node's span is a child of the latter.
    /// Returns the message id (its content hash, hex).
    pub async fn publish(
        &self,
        topic: &str,
        message_type: &str,
        payload: Vec<u8>,
    ) -> Result<String, NetworkError> {
        self.publish_inner(topic, message_type, message_type, payload, true)
            .await
    }

    /// Publishes like [`Network::publish`], but the envelope carries no trace context: for
    /// payloads that carry their own inside a ciphertext (guild messages), so that outsiders
    /// cannot link messages by trace id. The sender's spans are recorded as usual; the
    /// receivers' spans start without a parent until the payload's owner sets one.
    pub async fn publish_opaque(
        &self,
        topic: &str,
        message_type: &str,
        payload: Vec<u8>,
    ) -> Result<String, NetworkError> {
        self.publish_inner(topic, message_type, message_type, payload, false)
            .await
    }

    /// Publishes like [`Network::publish_opaque`], with the sender's message span named
    /// after `inner_type`, the type sealed inside the payload (`p2p.message.task_request`
    /// for a guild's `task_request`), while the envelope on the wire says only
    /// `message_type`. The name stays in the sender's own spans; outsiders see nothing new.
    /// An inner type that is not a valid message type (lowercase, digits, `_`) is shown as
    /// `message_type`, so that no caller's string becomes a span name.
    pub async fn publish_sealed(
        &self,
        topic: &str,
        message_type: &str,
        inner_type: &str,
        payload: Vec<u8>,
    ) -> Result<String, NetworkError> {
        let shown_as = if valid_type(inner_type) {
            inner_type
        } else {
            message_type
        };
        self.publish_inner(topic, message_type, shown_as, payload, false)
            .await
    }

    async fn publish_inner(
        &self,
        topic: &str,
        message_type: &str,
        shown_as: &str,
        payload: Vec<u8>,
        carry_context: bool,
    ) -> Result<String, NetworkError> {
        let started = Instant::now();
        let quiet = self.is_quiet(message_type);
        let message = if quiet {
            Span::none()
        } else {
            tracing::info_span!(
                "p2p.message",
                otel.name = p2p_message(shown_as),
                otel.kind = "producer",
                message.type = shown_as,
                topic = topic,
            )
        };
        let publish = if quiet {
            Span::none()
        } else {
            tracing::info_span!(
                parent: &message,
                names::P2P_GOSSIP_PUBLISH,
                otel.kind = "producer",
                message.type = message_type,
                topic = topic,
                size.bytes = tracing::field::Empty,
            )
        };
        let result = async {
            let bytes = if carry_context {
                self.envelope(message_type, payload, &publish)?
            } else {
                self.envelope(message_type, payload, &Span::none())?
            };
            publish.record("size.bytes", bytes.len());
            self.ask(|tx| Command::Publish(topic.to_owned(), bytes, tx))
                .await?
        }
        .instrument(publish.clone())
        .await;
        finish_timed(&publish, &result, started);
        drop(publish);
        finish_timed(&message, &result, started);
        if result.is_ok() {
            self.counters.gossip_published();
            self.counters.by_type.count(message_type, false);
        }
        result
    }

    /// Sends a request to `peer` and waits for its response (at most the configured
    /// request timeout). `addresses` are extra ways to reach it (a relay circuit, say).
    /// Records `p2p.message.<type>` (client), unless the type is quiet; the responder's span
    /// is its child.
    pub async fn request(
        &self,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        message_type: &str,
        payload: Vec<u8>,
    ) -> Result<Envelope, NetworkError> {
        let started = Instant::now();
        let span = if self.is_quiet(message_type) {
            Span::none()
        } else {
            tracing::info_span!(
                "p2p.message",
                otel.name = p2p_message(message_type),
                otel.kind = "client",
                message.type = message_type,
                peer.id = %peer,
                size.bytes = tracing::field::Empty,
            )
        };
        let result = async {
            let bytes = self.envelope(message_type, payload, &span)?;
            span.record("size.bytes", bytes.len());
            self.counters.requests_sent();
            self.counters.by_type.count(message_type, false);
            self.ask(|tx| Command::Request(peer, addresses, bytes, tx))
                .await?
        }
        .instrument(span.clone())
        .await;
        if result.is_err() {
            self.counters.requests_failed();
        }
        finish_timed(&span, &result, started);
        result
    }

    /// Answers a request. The response carries the request's span context.
    pub async fn respond(
        &self,
        request: IncomingRequest,
        message_type: &str,
        payload: Vec<u8>,
    ) -> Result<(), NetworkError> {
        let bytes = self.envelope(message_type, payload, &request.span)?;
        let result = self
            .ask(|tx| Command::Respond(request.channel, request.peer, bytes, tx))
            .await
            .and_then(|r| r);
        if let Err(e) = &result {
            request.span.record_error(e);
        }
        result
    }

    /// Stores a record in the DHT (locally and on the closest peers), signed by this node. A
    /// key another publisher's record already holds here is refused.
    pub async fn put_record(&self, key: &[u8], value: Vec<u8>) -> Result<(), NetworkError> {
        let started = Instant::now();
        let span = tracing::info_span!(
            names::P2P_DHT_PUT,
            dht.key = %String::from_utf8_lossy(key),
            size.bytes = value.len(),
        );
        let result = self
            .ask(|tx| Command::PutRecord(key.to_vec(), value, tx))
            .instrument(span.clone())
            .await
            .and_then(|r| r);
        finish_timed(&span, &result, started);
        result
    }

    /// Reads a record from the DHT with the peer that signed it; `None` when no peer has a
    /// record under `key` whose signature checks.
    pub async fn get_record(&self, key: &[u8]) -> Result<Option<DhtRecord>, NetworkError> {
        let started = Instant::now();
        let span = tracing::info_span!(
            names::P2P_DHT_GET,
            dht.key = %String::from_utf8_lossy(key),
            found = tracing::field::Empty,
        );
        let result = self
            .ask(|tx| Command::GetRecord(key.to_vec(), tx))
            .instrument(span.clone())
            .await
            .and_then(|r| r);
        if let Ok(found) = &result {
            span.record("found", found.is_some());
        }
        finish_timed(&span, &result, started);
        result
    }

    /// Looks up a peer's addresses in the DHT.
    pub async fn find_peer(&self, peer: PeerId) -> Result<Vec<Multiaddr>, NetworkError> {
        let started = Instant::now();
        let span = tracing::info_span!(names::P2P_DHT_FIND_PEER, peer.id = %peer);
        let result = self
            .ask(|tx| Command::FindPeer(peer, tx))
            .instrument(span.clone())
            .await
            .and_then(|r| r);
        finish_timed(&span, &result, started);
        result
    }

    /// Stops the swarm: connections close and the event stream ends.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }
}

fn finish<T>(span: &Span, result: &Result<T, NetworkError>) {
    if let Err(e) = result {
        span.record_error(e);
    }
}

fn finish_timed<T>(span: &Span, result: &Result<T, NetworkError>, started: Instant) {
    match result {
        Ok(_) => span.record_success(started.elapsed()),
        Err(e) => span.record_error(e),
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;

    #[test]
    fn an_error_names_its_operation_and_keeps_its_cause_for_the_chain() {
        let e = NetworkError::Dht {
            operation: "put",
            source: Reason::cause("no other node took the record"),
        };
        assert_eq!(e.to_string(), "DHT put");
        assert_eq!(
            zerostate_telemetry::error_chain(&e),
            "DHT put: no other node took the record"
        );
    }
}
