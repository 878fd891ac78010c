//! The task that owns the swarm: runs commands from the handle, turns swarm events into
//! spans, counters and delivered messages, and defends the node against hostile peers.

mod connections;
mod dht;
mod dials;
mod peers;
mod redial;
mod relays;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, gossipsub, identify, identity::Keypair, kad, noise, ping,
    request_response, tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};
use tracing::Span;
use zerostate_telemetry::SpanExt;
use zerostate_telemetry::names::{p2p_message, span as names};

use crate::behaviour::{Behaviour, BehaviourEvent, Frame, KAD_PROTOCOL};
use crate::config::{NetworkConfig, Role};
use crate::envelope::{Envelope, EnvelopeError};
use crate::network::{
    Cause, Event, GossipMessage, IncomingRequest, NetworkError, PeerInfo, Reason,
};
use crate::record::DhtRecord;
use crate::stats::Counters;
use connections::ConnectionSpans;
use peers::{PeerState, REMEMBERED_PEERS};
use relays::{is_relayed, relay_client_event, relay_server_event};

type Reply<T> = oneshot::Sender<Result<T, NetworkError>>;

/// How often penalties are decayed and the scores handed to gossipsub.
const SCORE_DECAY_EVERY: Duration = Duration::from_secs(5);

pub(crate) enum Command {
    ListenAddresses(oneshot::Sender<Vec<Multiaddr>>),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    MeshPeers(String, oneshot::Sender<Vec<PeerId>>),
    Topics(oneshot::Sender<Vec<String>>),
    Dial(Multiaddr, oneshot::Sender<Result<PeerId, NetworkError>>),
    /// Closes every connection to the peer, abandons the dials to it in progress, and dials
    /// it again on a new connection.
    DialAfresh(
        PeerId,
        Vec<Multiaddr>,
        oneshot::Sender<Result<PeerId, NetworkError>>,
    ),
    Subscribe(String, oneshot::Sender<Result<(), NetworkError>>),
    Unsubscribe(String, oneshot::Sender<()>),
    Publish(
        String,
        Vec<u8>,
        oneshot::Sender<Result<String, NetworkError>>,
    ),
    Request(
        PeerId,
        Vec<Multiaddr>,
        Vec<u8>,
        oneshot::Sender<Result<Envelope, NetworkError>>,
    ),
    Respond(
        request_response::ResponseChannel<Frame>,
        PeerId,
        Vec<u8>,
        oneshot::Sender<Result<(), NetworkError>>,
    ),
    PutRecord(Vec<u8>, Vec<u8>, Reply<()>),
    GetRecord(Vec<u8>, Reply<Option<DhtRecord>>),
    FindPeer(PeerId, Reply<Vec<Multiaddr>>),
    Shutdown(oneshot::Sender<()>),
}

enum KadPending {
    Put(Reply<()>),
    Get(Reply<Option<DhtRecord>>),
    Find(PeerId, Reply<Vec<Multiaddr>>),
}

pub(crate) struct Driver {
    swarm: Swarm<Behaviour>,
    /// This node's identity: it signs the DHT records it publishes.
    key: libp2p::identity::Keypair,
    config: NetworkConfig,
    counters: Arc<Counters>,
    events: mpsc::Sender<Event>,
    peers: HashMap<PeerId, PeerState>,
    bootstrap_peers: HashSet<PeerId>,
    bootstrapped: bool,
    connection_spans: ConnectionSpans,
    /// Dials waited for, with what was dialled (an address, or a peer).
    dials: HashMap<ConnectionId, (String, oneshot::Sender<Result<PeerId, NetworkError>>)>,
    requests: HashMap<
        request_response::OutboundRequestId,
        (PeerId, oneshot::Sender<Result<Envelope, NetworkError>>),
    >,
    kad: HashMap<kad::QueryId, KadPending>,
    pending_listeners: HashSet<ListenerId>,
    /// Bootstrap nodes to dial again.
    redial: redial::Redial,
}

impl Driver {
    pub(crate) fn new(
        config: NetworkConfig,
        key: Keypair,
        counters: Arc<Counters>,
        events: mpsc::Sender<Event>,
    ) -> Result<Self, String> {
        let idle = Duration::from_millis(config.idle_connection_timeout_ms);
        let behaviour_config = config.clone();
        let signer = key.clone();
        let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| format!("TCP transport: {e}"))?
            .with_quic()
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| format!("relay transport: {e}"))?
            .with_behaviour(|key, relay_client| {
                Behaviour::new(key, relay_client, &behaviour_config)
                    .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
            })
            .map_err(|e| format!("protocols: {e}"))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build();
        Ok(Self {
            swarm,
            config,
            counters,
            events,
            peers: HashMap::new(),
            bootstrap_peers: HashSet::new(),
            bootstrapped: false,
            redial: redial::Redial::default(),
            connection_spans: ConnectionSpans::default(),
            dials: HashMap::new(),
            requests: HashMap::new(),
            kad: HashMap::new(),
            pending_listeners: HashSet::new(),
            key: signer,
        })
    }

    fn start(&mut self) -> Result<(), String> {
        for addr in self.config.listen.clone() {
            let id = self
                .swarm
                .listen_on(addr.clone())
                .map_err(|e| format!("listening on {addr}: {e}"))?;
            self.pending_listeners.insert(id);
        }
        for addr in self.config.external.clone() {
            self.swarm.add_external_address(addr);
        }
        for addr in self.config.bootstrap.clone() {
            if let Some(peer) = crate::peer_of(&addr) {
                self.bootstrap_peers.insert(peer);
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::warn!(address = %addr, "cannot dial bootstrap node: {e}");
            }
        }
        for relay in self.config.relays.clone() {
            let circuit = relay.clone().with(Protocol::P2pCircuit);
            if let Err(e) = self.swarm.listen_on(circuit) {
                tracing::warn!(relay = %relay, "cannot listen through relay: {e}");
            }
        }
        Ok(())
    }

    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        ready: oneshot::Sender<Result<(), String>>,
    ) {
        if let Err(e) = self.start() {
            let _ = ready.send(Err(e));
            return;
        }
        let mut ready = Some(ready);
        let listen_deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(listen_deadline);
        let mut decay = tokio::time::interval(SCORE_DECAY_EVERY);
        decay.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut redial = tokio::time::interval(Duration::from_millis(250));
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.pending_listeners.is_empty()
                && let Some(r) = ready.take()
            {
                let _ = r.send(Ok(()));
            }
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Shutdown(done)) => {
                        let _ = done.send(());
                        break;
                    }
                    Some(c) => self.command(c),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.swarm_event(event),
                _ = decay.tick() => self.decay_scores(),
                _ = redial.tick(), if self.redial.waiting() => self.redial_due(),
                () = &mut listen_deadline, if ready.is_some() => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err("no listen address came up within 5 s".into()));
                    }
                    return;
                }
            }
        }
        tracing::debug!("network stopped");
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::ListenAddresses(tx) => {
                let mut addrs: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
                for a in self.swarm.external_addresses() {
                    if !addrs.contains(a) {
                        addrs.push(a.clone());
                    }
                }
                let _ = tx.send(addrs);
            }
            Command::Peers(tx) => {
                let _ = tx.send(self.peer_infos());
            }
            Command::Topics(tx) => {
                let topics = self
                    .swarm
                    .behaviour()
                    .gossipsub
                    .topics()
                    .map(ToString::to_string)
                    .collect();
                let _ = tx.send(topics);
            }
            Command::MeshPeers(topic, tx) => {
                let hash = gossipsub::IdentTopic::new(topic).hash();
                let peers = self
                    .swarm
                    .behaviour()
                    .gossipsub
                    .mesh_peers(&hash)
                    .copied()
                    .collect();
                let _ = tx.send(peers);
            }
            Command::Dial(addr, tx) => {
                self.dial_waited(DialOpts::from(addr.clone()), addr.to_string(), tx);
            }
            Command::DialAfresh(peer, addresses, tx) => self.dial_afresh(peer, addresses, tx),
            Command::Subscribe(topic, tx) => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .subscribe(&gossipsub::IdentTopic::new(topic.clone()))
                    .map(|_| ())
                    .map_err(|e| NetworkError::Publish {
                        topic,
                        source: Box::new(e),
                    });
                let _ = tx.send(result);
            }
            Command::Unsubscribe(topic, tx) => {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .unsubscribe(&gossipsub::IdentTopic::new(topic));
                let _ = tx.send(());
            }
            Command::Publish(topic, bytes, tx) => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(gossipsub::IdentTopic::new(topic.clone()), bytes)
                    .map(|id| id.to_string())
                    .map_err(|e| NetworkError::Publish {
                        topic,
                        source: publish_error(e),
                    });
                let _ = tx.send(result);
            }
            Command::Request(peer, addresses, bytes, tx) => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .request
                    .send_request_with_addresses(&peer, Frame::Bytes(bytes), addresses);
                self.requests.insert(id, (peer, tx));
            }
            Command::Respond(channel, peer, bytes, tx) => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .request
                    .send_response(channel, Frame::Bytes(bytes))
                    .map_err(|_| NetworkError::Request {
                        peer,
                        source: Reason::cause(
                            "the requester is gone (connection closed or timed out)",
                        ),
                    });
                let _ = tx.send(result);
            }
            Command::PutRecord(key, value, tx) => {
                let me = self.swarm.local_peer_id().to_owned();
                if let Some(owner) = self.record_owner(&key)
                    && owner != me
                {
                    let _ = tx.send(Err(NetworkError::Dht {
                        operation: "put",
                        source: Reason::cause(format!(
                            "the key belongs to another publisher ({owner})"
                        )),
                    }));
                    return;
                }
                let sealed = crate::record::seal(&key, value, &self.key);
                let record = kad::Record::new(key, sealed);
                match self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .put_record(record, kad::Quorum::One)
                {
                    Ok(id) => {
                        self.kad.insert(id, KadPending::Put(tx));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(NetworkError::Dht {
                            operation: "put",
                            source: Box::new(e),
                        }));
                    }
                }
            }
            Command::GetRecord(key, tx) => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_record(kad::RecordKey::new(&key));
                self.kad.insert(id, KadPending::Get(tx));
            }
            Command::FindPeer(peer, tx) => {
                let id = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                self.kad.insert(id, KadPending::Find(peer, tx));
            }
            Command::Shutdown(_) => {}
        }
    }

    fn receive_span(
        &self,
        envelope: &Envelope,
        peer: PeerId,
        kind: &'static str,
        size: usize,
    ) -> Span {
        if self
            .config
            .quiet_message_types
            .contains(&envelope.message_type)
        {
            return Span::none();
        }
        let span = tracing::info_span!(
            parent: None,
            "p2p.message",
            otel.name = p2p_message(&envelope.message_type),
            otel.kind = kind,
            message.type = %envelope.message_type,
            peer.id = %peer,
            size.bytes = size,
            message.age_ms = envelope.age().as_secs_f64() * 1000.0,
        );
        if let Some(cx) = envelope.trace_context() {
            span.set_parent(&cx);
        }
        span
    }

    fn deliver(&mut self, event: Event) {
        if self.events.try_send(event).is_err() {
            self.counters.dropped_app_busy();
        }
    }

    fn swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(event) => self.behaviour_event(event),
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                self.pending_listeners.remove(&listener_id);
                tracing::info!(%address, "listening");
                if self.config.role == Role::Relay
                    && self.config.external.is_empty()
                    && !is_relayed(&address)
                {
                    self.swarm.add_external_address(address);
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                self.pending_listeners.remove(&listener_id);
                if let Err(e) = reason {
                    tracing::warn!(?addresses, "a listener closed: {e}");
                }
            }
            SwarmEvent::Dialing {
                peer_id,
                connection_id,
            } => self.connection_spans.dialing(connection_id, peer_id),
            SwarmEvent::IncomingConnection {
                connection_id,
                send_back_addr,
                ..
            } => self
                .connection_spans
                .incoming(connection_id, &send_back_addr),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                established_in,
                ..
            } => {
                self.counters.connections_established();
                self.redial.back(&peer_id);
                let address = endpoint.get_remote_address().clone();
                self.connection_spans
                    .established(connection_id, peer_id, &address, established_in);
                if let Some((_, tx)) = self.dials.remove(&connection_id) {
                    let _ = tx.send(Ok(peer_id));
                }
                let burst = self.config.peer_message_burst;
                let state = self
                    .peers
                    .entry(peer_id)
                    .or_insert_with(|| PeerState::new(burst));
                state.connections.insert(connection_id, address);
                let score = state.app_score;
                if score != 0.0 {
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .set_application_score(&peer_id, score);
                }
                if let ConnectedPoint::Dialer { address, .. } = &endpoint {
                    tracing::debug!(peer.id = %peer_id, %address, "connected");
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                endpoint,
                cause,
                ..
            } => {
                self.counters.connections_closed();
                ConnectionSpans::closed(
                    peer_id,
                    endpoint.get_remote_address(),
                    cause.as_ref().map(ToString::to_string),
                );
                if let Some(state) = self.peers.get_mut(&peer_id) {
                    state.connections.remove(&connection_id);
                    if state.connections.is_empty() && state.offences == 0 {
                        self.peers.remove(&peer_id);
                    }
                }
                if self.peers.len() > REMEMBERED_PEERS {
                    self.forget_least_offending();
                }
                self.maybe_redial(peer_id);
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                self.counters.connections_failed();
                self.connection_spans.failed(connection_id, peer_id, &error);
                if let Some((what, tx)) = self.dials.remove(&connection_id) {
                    let _ = tx.send(Err(NetworkError::Dial {
                        address: what,
                        source: Box::new(error),
                    }));
                }
            }
            SwarmEvent::IncomingConnectionError {
                connection_id,
                error,
                ..
            } => {
                self.counters.connections_failed();
                if let libp2p::swarm::ListenError::Denied { cause } = &error
                    && cause
                        .downcast_ref::<libp2p::connection_limits::Exceeded>()
                        .is_some()
                {
                    self.counters.connections_denied();
                    let denied = self.counters.snapshot().connections_denied;
                    if zerostate_telemetry::is_power_of_ten(denied) {
                        tracing::warn!(
                            "refused an incoming connection: {cause} (connection limits; \
                             logged at 1, 10, 100, ... refusals)"
                        );
                    }
                }
                self.connection_spans.failed(connection_id, None, &error);
            }
            _ => {}
        }
    }

    fn behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Limits(never) => match never {},
            BehaviourEvent::Gossipsub(e) => self.gossip_event(e),
            BehaviourEvent::Request(e) => self.request_event(e),
            BehaviourEvent::Kad(e) => self.kad_event(e),
            BehaviourEvent::Identify(e) => self.identify_event(e),
            BehaviourEvent::Ping(e) => self.ping_event(e),
            BehaviourEvent::RelayServer(e) => relay_server_event(e),
            BehaviourEvent::RelayClient(e) => relay_client_event(e),
        }
    }

    fn gossip_event(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = event
        else {
            return;
        };
        // Rate and penalties are the signed author's: an honest neighbour that relays a flood
        // from throwaway identities is not blamed for it. (A forwarder of invalid messages
        // still loses gossipsub's own score through the Reject verdict.)
        let author = message.source.unwrap_or(propagation_source);
        let verdict = if !self.admit(author) {
            self.counters.dropped_flood();
            self.penalize(author, "more messages per second than allowed");
            // The refusal shows in the author's trace, at its 1st, 10th, 100th, ...
            // offence: a flood cannot flood the exporter either.
            if zerostate_telemetry::is_power_of_ten(self.peer(author).offences)
                && let Ok(envelope) = Envelope::decode(&message.data, self.config.max_message_bytes)
            {
                let span = self.receive_span(
                    &envelope,
                    propagation_source,
                    "consumer",
                    message.data.len(),
                );
                span.record_error(&Reason(format!(
                    "refused: {author} sends more messages per second than allowed \
                     (recorded at its 1st, 10th, 100th, ... refusal)"
                )));
            }
            gossipsub::MessageAcceptance::Ignore
        } else {
            match Envelope::decode(&message.data, self.config.max_message_bytes) {
                Err(e) => {
                    self.counters.dropped(&e);
                    self.penalize(author, &e.to_string());
                    gossipsub::MessageAcceptance::Reject
                }
                Ok(envelope) => {
                    let span = self.receive_span(
                        &envelope,
                        propagation_source,
                        "consumer",
                        message.data.len(),
                    );
                    self.counters.gossip_received();
                    self.counters.by_type.count(&envelope.message_type, true);
                    self.counters
                        .delivery
                        .0
                        .observe(envelope.age().as_secs_f64());
                    self.deliver(Event::Gossip(GossipMessage {
                        topic: message.topic.to_string(),
                        source: message.source,
                        forwarded_by: propagation_source,
                        envelope,
                        span,
                    }));
                    gossipsub::MessageAcceptance::Accept
                }
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &propagation_source, verdict);
    }

    fn refuse(&mut self, channel: request_response::ResponseChannel<Frame>, why: &str) {
        let reply = Envelope::new(crate::REFUSAL, why.as_bytes().to_vec(), None).encode();
        let _ = self
            .swarm
            .behaviour_mut()
            .request
            .send_response(channel, Frame::Bytes(reply));
    }

    fn request_event(&mut self, event: request_response::Event<Frame, Frame>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    if !self.admit(peer) {
                        self.counters.dropped_flood();
                        self.penalize(peer, "more messages per second than allowed");
                        self.refuse(channel, "too many messages: slow down");
                        return;
                    }
                    match self.decode_frame(request) {
                        Err(e) => {
                            self.counters.dropped(&e);
                            self.penalize(peer, &e.to_string());
                            self.refuse(channel, &e.to_string());
                        }
                        Ok((envelope, size)) => {
                            self.counters.requests_received();
                            self.counters.by_type.count(&envelope.message_type, true);
                            let span = self.receive_span(&envelope, peer, "server", size);
                            let event = Event::Request(IncomingRequest {
                                peer,
                                envelope,
                                span,
                                channel,
                            });
                            if let Err(mpsc::error::TrySendError::Full(Event::Request(r))) =
                                self.events.try_send(event)
                            {
                                self.counters.dropped_app_busy();
                                self.refuse(r.channel, "the node is busy: try again later");
                            }
                        }
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    let Some((peer, tx)) = self.requests.remove(&request_id) else {
                        return;
                    };
                    let result = match self.decode_frame(response).map(|(e, _)| e) {
                        Err(e) => {
                            self.counters.dropped(&e);
                            self.penalize(peer, &e.to_string());
                            Err(NetworkError::Request {
                                peer,
                                source: Reason::cause(format!("invalid response: {e}")),
                            })
                        }
                        Ok(envelope) if envelope.message_type == crate::REFUSAL => {
                            Err(NetworkError::Request {
                                peer,
                                source: Reason::cause(format!(
                                    "refused: {}",
                                    String::from_utf8_lossy(&envelope.payload)
                                )),
                            })
                        }
                        Ok(envelope) => Ok(envelope),
                    };
                    let _ = tx.send(result);
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some((peer, tx)) = self.requests.remove(&request_id) {
                    let _ = tx.send(Err(NetworkError::Request {
                        peer,
                        source: Box::new(error),
                    }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(peer.id = %peer, "an incoming request failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn decode_frame(&self, frame: Frame) -> Result<(Envelope, usize), EnvelopeError> {
        match frame {
            Frame::Oversized { size } => Err(EnvelopeError::Oversized {
                size,
                limit: self.config.max_message_bytes,
            }),
            Frame::Bytes(bytes) => {
                Envelope::decode(&bytes, self.config.max_message_bytes).map(|e| (e, bytes.len()))
            }
        }
    }

    fn identify_event(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else {
            return;
        };
        self.peer(peer_id).agent = Some(info.agent_version.clone());
        if info.protocols.contains(&KAD_PROTOCOL) {
            for addr in info.listen_addrs {
                self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
            }
        }
        if !self.bootstrapped && self.bootstrap_peers.contains(&peer_id) {
            self.bootstrapped = true;
            if let Err(e) = self.swarm.behaviour_mut().kad.bootstrap() {
                tracing::debug!("DHT bootstrap: {e}");
            }
        }
    }

    fn ping_event(&mut self, event: ping::Event) {
        match event.result {
            Ok(rtt) => {
                if let Some(state) = self.peers.get_mut(&event.peer) {
                    state.rtt = Some(rtt);
                }
                let span = tracing::debug_span!(
                    target: "zerostate_p2p::health",
                    parent: None,
                    names::P2P_HEALTH_CHECK,
                    peer.id = %event.peer,
                    rtt.ms = rtt.as_secs_f64() * 1000.0,
                );
                span.record_success(rtt);
            }
            Err(e) => {
                let span = tracing::warn_span!(
                    target: "zerostate_p2p::health",
                    parent: None,
                    names::P2P_HEALTH_CHECK,
                    peer.id = %event.peer,
                );
                span.record_error(&e);
            }
        }
    }
}

fn publish_error(e: gossipsub::PublishError) -> Cause {
    match e {
        gossipsub::PublishError::NoPeersSubscribedToTopic => {
            Reason::cause("no connected peer is subscribed to the topic yet")
        }
        other => Box::new(other),
    }
}
