//! What a node's network does. Every field says its default.

use std::time::Duration;

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::envelope::DEFAULT_MAX_BYTES;

/// What part a node plays in the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A well-known entry point: other nodes bootstrap from it; it serves the DHT.
    Bootnode,
    /// Serves relay circuits so that nodes nobody can dial are still reachable; serves the
    /// DHT.
    Relay,
    /// An ordinary node: runs tasks, may sit behind NAT and listen through a relay.
    #[default]
    Edge,
}

impl Role {
    /// The name used for `zerostate.node.role`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Bootnode => "bootnode",
            Role::Relay => "relay",
            Role::Edge => "edge",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bootnode" => Ok(Role::Bootnode),
            "relay" => Ok(Role::Relay),
            "edge" => Ok(Role::Edge),
            other => Err(format!(
                "unknown role {other:?}: expected bootnode, relay or edge"
            )),
        }
    }
}

/// How a node's network is set up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// The node's role. Default `edge`.
    pub role: Role,
    /// Addresses to listen on. Default TCP and QUIC on port 4001 of 127.0.0.1 (loopback:
    /// a node is reachable from other machines only when told to listen there).
    pub listen: Vec<Multiaddr>,
    /// Addresses other nodes can reach this one at, announced to them. A relay needs at
    /// least one: reservations carry them. Default: none, except that a relay listening on
    /// concrete addresses announces those.
    pub external: Vec<Multiaddr>,
    /// Nodes to connect to on start, each ending in `/p2p/<peer id>`. Default: none.
    pub bootstrap: Vec<Multiaddr>,
    /// Relays to listen through, each ending in `/p2p/<relay peer id>`: the node becomes
    /// reachable at `<relay>/p2p-circuit/p2p/<its id>`. Default: none.
    pub relays: Vec<Multiaddr>,
    /// Largest envelope sent or accepted, in bytes. Default 1 MiB.
    pub max_message_bytes: usize,
    /// Messages accepted from one peer per second, on average; more are dropped, counted and
    /// lower the peer's score. Default 5000.
    pub peer_messages_per_second: u32,
    /// Messages one peer may send in a burst above the average rate. Default 10000.
    pub peer_message_burst: u32,
    /// How long a request waits for its response, in milliseconds. Default 10000.
    pub request_timeout_ms: u64,
    /// Time between health checks (pings) of each connected peer, in milliseconds.
    /// Default 15000.
    pub ping_interval_ms: u64,
    /// Time between gossip mesh maintenance rounds, in milliseconds. Default 1000.
    pub gossip_heartbeat_ms: u64,
    /// How long an idle connection stays open, in milliseconds. Default 60000.
    pub idle_connection_timeout_ms: u64,
    /// Score lost by a peer for each message it sent (or, for gossip, authored) that this
    /// node dropped. Default 10.
    pub penalty_per_offence: f64,
    /// Connections open at once, in and out; more are refused and counted
    /// (`connections_denied`). Default 512.
    pub max_connections: u32,
    /// Connections open at once with one peer. Default 4.
    pub max_connections_per_peer: u32,
    /// Connections being set up at once, each way (handshakes in progress). Default 128.
    pub max_pending_connections: u32,
    /// Time in which a penalty decays to half, in milliseconds: a peer that stops offending
    /// recovers. Default 60000.
    pub penalty_half_life_ms: u64,
    /// Message types whose spans are not recorded, sent or received: periodic background
    /// traffic, counted in metrics instead, so that traces show the work. Empty it to trace
    /// them too. Default `["guild_heartbeat"]`.
    pub quiet_message_types: Vec<String>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            role: Role::Edge,
            listen: vec![
                "/ip4/127.0.0.1/tcp/4001".parse().expect("valid literal"),
                "/ip4/127.0.0.1/udp/4001/quic-v1"
                    .parse()
                    .expect("valid literal"),
            ],
            external: Vec::new(),
            bootstrap: Vec::new(),
            relays: Vec::new(),
            max_message_bytes: DEFAULT_MAX_BYTES,
            peer_messages_per_second: 5000,
            peer_message_burst: 10_000,
            request_timeout_ms: 10_000,
            ping_interval_ms: 15_000,
            gossip_heartbeat_ms: 1000,
            idle_connection_timeout_ms: 60_000,
            penalty_per_offence: 10.0,
            penalty_half_life_ms: 60_000,
            max_connections: 512,
            max_connections_per_peer: 4,
            max_pending_connections: 128,
            quiet_message_types: vec!["guild_heartbeat".to_owned()],
        }
    }
}

impl NetworkConfig {
    /// The penalty half-life.
    pub fn penalty_half_life(&self) -> Duration {
        Duration::from_millis(self.penalty_half_life_ms)
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Checks values a node cannot run with; every problem in one message.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.max_message_bytes < 64 {
            problems.push(format!(
                "max_message_bytes is {}, below the smallest useful 64",
                self.max_message_bytes
            ));
        }
        if self.peer_messages_per_second == 0 || self.peer_message_burst == 0 {
            problems.push("peer_messages_per_second and peer_message_burst must be above 0".into());
        }
        for (what, v) in [
            ("max_connections", u64::from(self.max_connections)),
            (
                "max_connections_per_peer",
                u64::from(self.max_connections_per_peer),
            ),
            (
                "max_pending_connections",
                u64::from(self.max_pending_connections),
            ),
            ("request_timeout_ms", self.request_timeout_ms),
            ("ping_interval_ms", self.ping_interval_ms),
            ("gossip_heartbeat_ms", self.gossip_heartbeat_ms),
            ("penalty_half_life_ms", self.penalty_half_life_ms),
        ] {
            if v == 0 {
                problems.push(format!("{what} must be above 0"));
            }
        }
        for addr in self.bootstrap.iter().chain(&self.relays) {
            if crate::peer_of(addr).is_none() {
                problems.push(format!("{addr} does not end in /p2p/<peer id>"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}
