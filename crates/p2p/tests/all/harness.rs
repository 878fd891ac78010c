//! Starting nodes on loopback with ephemeral ports, and waiting with a deadline.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use zerostate_p2p::{Event, Multiaddr, Network, NetworkConfig, Role, identity::Keypair, testing};

pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

pub(crate) struct Node {
    pub(crate) network: Network,
    pub(crate) events: mpsc::Receiver<Event>,
    pub(crate) addr: Multiaddr,
}

pub(crate) fn config(role: Role) -> NetworkConfig {
    let mut config = testing::loopback_config(role, &[]);
    config.gossip_heartbeat_ms = 200;
    config
}

/// Starts a node; its address ends in its peer id.
pub(crate) async fn start(config: NetworkConfig) -> Node {
    let (network, events, addr) = testing::start(config, Keypair::generate_ed25519()).await;
    Node {
        network,
        events,
        addr,
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` at the deadline.
pub(crate) async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    testing::eventually(what, DEADLINE, check).await
}

/// The next gossip message, within the deadline.
pub(crate) async fn next_gossip(node: &mut Node) -> zerostate_p2p::GossipMessage {
    loop {
        match tokio::time::timeout(DEADLINE, node.events.recv()).await {
            Ok(Some(Event::Gossip(m))) => return m,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("network closed"),
            Err(_) => panic!("no gossip message within the deadline"),
        }
    }
}
