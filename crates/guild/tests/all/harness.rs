//! Nodes with a network and a guild service, on loopback.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use zerostate_guild::{GuildConfig, Guilds};
use zerostate_p2p::{Event, Multiaddr, Network, Role, identity::Keypair, testing};

pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// Held for the whole of each test: each runs up to a dozen nodes with sub-second
/// heartbeat windows, and two of them at once on two cores starve each other's timers.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for the other tests of this binary to finish; hold the guard for the test.
pub(crate) async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

pub(crate) struct Node {
    pub(crate) network: Network,
    pub(crate) guilds: Guilds,
    pub(crate) addr: Multiaddr,
}

pub(crate) fn guild_config() -> GuildConfig {
    GuildConfig {
        // A 2 s window: several nodes in one process on two cores can miss a 600 ms one
        // without anything being wrong, and then a healthy guild falls apart.
        heartbeat_interval_ms: 250,
        missed_heartbeats: 8,
        ..GuildConfig::default()
    }
}

/// A network on loopback with its key; the first node of a test is the bootnode.
async fn network(
    bootstrap: Option<&Multiaddr>,
    key: Keypair,
) -> (Network, mpsc::Receiver<Event>, Multiaddr) {
    let role = if bootstrap.is_none() {
        Role::Bootnode
    } else {
        Role::Edge
    };
    let bootstrap: Vec<Multiaddr> = bootstrap.into_iter().cloned().collect();
    let mut config = testing::loopback_config(role, &bootstrap);
    config.gossip_heartbeat_ms = 200;
    testing::start(config, key).await
}

/// A plain network node (no guild service); its events come back raw.
pub(crate) async fn raw(
    bootstrap: Option<&Multiaddr>,
) -> (Network, mpsc::Receiver<Event>, Multiaddr) {
    network(bootstrap, Keypair::generate_ed25519()).await
}

/// A node with a guild service fed by its network.
pub(crate) async fn node(bootstrap: Option<&Multiaddr>, config: GuildConfig) -> Node {
    node_with_key(bootstrap, config, Keypair::generate_ed25519()).await
}

/// [`node`] with a given identity (a restarted node keeps its own).
pub(crate) async fn node_with_key(
    bootstrap: Option<&Multiaddr>,
    config: GuildConfig,
    key: Keypair,
) -> Node {
    node_kept(bootstrap, config, key, None).await
}

/// [`node_with_key`] keeping its guilds under `data_dir` (a node restarted on it resumes
/// them).
pub(crate) async fn node_kept(
    bootstrap: Option<&Multiaddr>,
    config: GuildConfig,
    key: Keypair,
    data_dir: Option<&std::path::Path>,
) -> Node {
    let (network, mut events, addr) = network(bootstrap, key.clone()).await;
    let guilds =
        Guilds::start_kept(network.clone(), key, config, data_dir).expect("valid settings");
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
pub(crate) async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    testing::eventually(what, DEADLINE, check).await
}

/// Waits until `node` has a gossip mesh peer on the guild's topic.
pub(crate) async fn meshed(network: &Network, guild_id: &str) {
    let topic = format!("{}{guild_id}", zerostate_guild::TOPIC_PREFIX);
    eventually("a mesh on the guild topic", || async {
        (!network.mesh_peers(&topic).await.expect("mesh").is_empty()).then_some(())
    })
    .await;
}

/// `member` joins the guild `guild_id` coordinated by `coordinator`, with an invitation the
/// coordinator signs for it.
pub(crate) async fn join(
    member: &Node,
    coordinator: &Node,
    guild_id: &str,
) -> zerostate_guild::GuildInfo {
    let invitation = coordinator
        .guilds
        .invite(
            guild_id,
            Some(member.network.peer_id()),
            Duration::from_secs(60),
        )
        .await
        .expect("invite");
    member
        .guilds
        .join(
            guild_id,
            coordinator.network.peer_id(),
            vec![coordinator.addr.clone()],
            Some(invitation),
        )
        .await
        .expect("join")
}

/// Waits until `node` has opened a guild message whose body is `body`.
pub(crate) async fn read_eventually(node: &Node, guild_id: &str, body: &str) {
    eventually(&format!("a message {body:?} opened"), || async {
        let msgs = node.guilds.messages(guild_id).await.expect("messages");
        msgs.iter().any(|m| m.body == body).then_some(())
    })
    .await;
}

/// The next gossip payload of `message_type` that a plain node sees.
pub(crate) async fn capture(events: &mut mpsc::Receiver<Event>, message_type: &str) -> Vec<u8> {
    loop {
        match tokio::time::timeout(DEADLINE, events.recv()).await {
            Ok(Some(Event::Gossip(m))) if m.envelope.message_type == message_type => {
                return m.envelope.payload;
            }
            Ok(Some(_)) => continue,
            _ => panic!("the spy saw no {message_type}"),
        }
    }
}

/// A coordinator with a new guild, and a spy: a plain node on the guild's topic that sees
/// its traffic as it travels.
pub(crate) struct Spied {
    pub(crate) coordinator: Node,
    pub(crate) guild: zerostate_guild::GuildInfo,
    pub(crate) topic: String,
    pub(crate) spy: Network,
    pub(crate) spy_events: mpsc::Receiver<Event>,
}

pub(crate) async fn spied_guild(config: GuildConfig) -> Spied {
    let coordinator = node(None, config).await;
    let guild = coordinator.guilds.create("g").await.expect("create");
    let topic = format!("{}{}", zerostate_guild::TOPIC_PREFIX, guild.id);
    let (spy, spy_events, _) = raw(Some(&coordinator.addr)).await;
    spy.subscribe(&topic).await.expect("subscribe");
    meshed(&spy, &guild.id).await;
    Spied {
        coordinator,
        guild,
        topic,
        spy,
        spy_events,
    }
}

/// A new node with identity `key` that joins `coordinator`'s guild and is in its mesh.
pub(crate) async fn member_with_key(coordinator: &Node, guild_id: &str, key: Keypair) -> Node {
    let m = node_with_key(Some(&coordinator.addr), guild_config(), key).await;
    join(&m, coordinator, guild_id).await;
    meshed(&m.network, guild_id).await;
    m
}
