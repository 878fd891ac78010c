//! Nodes with a network and a guild service, on loopback.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use zerostate_guild::{GuildConfig, Guilds};
use zerostate_p2p::{Event, Multiaddr, Network, NetworkConfig, Role, identity::Keypair};

pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

pub(crate) struct Node {
    pub(crate) network: Network,
    pub(crate) guilds: Guilds,
    pub(crate) addr: Multiaddr,
}

pub(crate) fn guild_config() -> GuildConfig {
    GuildConfig {
        heartbeat_interval_ms: 200,
        missed_heartbeats: 3,
        ..GuildConfig::default()
    }
}

/// A network on loopback with its key; the first node of a test is the bootnode.
async fn network(
    bootstrap: Option<&Multiaddr>,
    key: Keypair,
) -> (Network, mpsc::Receiver<Event>, Multiaddr) {
    let mut config = NetworkConfig::default();
    config.role = if bootstrap.is_none() {
        Role::Bootnode
    } else {
        Role::Edge
    };
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")];
    config.gossip_heartbeat_ms = 200;
    config.bootstrap = bootstrap.into_iter().cloned().collect();
    let (network, events) = Network::start(config, key).await.expect("network starts");
    let addr = network
        .dialable_addresses()
        .await
        .expect("addresses")
        .into_iter()
        .next()
        .expect("an address");
    (network, events, addr)
}

/// A plain network node (no guild service); its events come back raw.
pub(crate) async fn raw(
    bootstrap: Option<&Multiaddr>,
) -> (Network, mpsc::Receiver<Event>, Multiaddr) {
    network(bootstrap, Keypair::generate_ed25519()).await
}

/// A node with a guild service fed by its network.
pub(crate) async fn node(bootstrap: Option<&Multiaddr>, config: GuildConfig) -> Node {
    let key = Keypair::generate_ed25519();
    let (network, mut events, addr) = network(bootstrap, key.clone()).await;
    let guilds = Guilds::start(network.clone(), key, config);
    let pump = guilds.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if Guilds::wants(&event) {
                pump.deliver(event).await;
            }
        }
    });
    Node {
        network,
        guilds,
        addr,
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` at the deadline.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `node` has a gossip mesh peer on the guild's topic.
pub(crate) async fn meshed(network: &Network, guild_id: &str) {
    let topic = format!("{}{guild_id}", zerostate_guild::TOPIC_PREFIX);
    eventually("a mesh on the guild topic", || async {
        (!network.mesh_peers(&topic).await.expect("mesh").is_empty()).then_some(())
    })
    .await;
}
