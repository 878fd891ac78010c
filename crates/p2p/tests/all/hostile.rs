//! Hostile peers: oversized envelopes, malformed bytes, unknown versions, bad types and
//! floods are dropped and counted, the sender's score falls, and the node carries on.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{PeerId, StreamProtocol, gossipsub, noise, request_response, tcp, yamux};
use tokio::sync::mpsc;
use zerostate_p2p::{Envelope, Event, Multiaddr, REQUEST_PROTOCOL, Role};

use crate::harness::{DEADLINE, Node, config, eventually, next_gossip, start};

/// Writes whatever it is given, with no size bound: the hostile side.
#[derive(Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read(io).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read(io).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        write(io, req).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        write(io, res).await
    }
}

async fn read<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: Vec<u8>) -> io::Result<()> {
    io.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    io.write_all(&bytes).await?;
    io.close().await
}

#[derive(NetworkBehaviour)]
struct Hostile {
    gossipsub: gossipsub::Behaviour,
    request: request_response::Behaviour<RawCodec>,
}

enum Attack {
    Request(Vec<u8>),
    Gossip(Vec<u8>),
}

/// A peer that speaks the protocols but sends whatever bytes it is told to. Returns the
/// channel of attacks, its peer id and the count of requests that ended (answered or not).
fn hostile(victim: Multiaddr) -> (mpsc::Sender<Attack>, PeerId, Arc<AtomicUsize>) {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|key| Hostile {
            gossipsub: gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossipsub::ConfigBuilder::default()
                    .heartbeat_interval(Duration::from_millis(200))
                    .max_transmit_size(4 << 20)
                    .build()
                    .expect("gossip config"),
            )
            .expect("gossip"),
            request: request_response::Behaviour::with_codec(
                RawCodec,
                [(REQUEST_PROTOCOL, request_response::ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
            ),
        })
        .expect("behaviour")
        .build();
    let peer = *swarm.local_peer_id();
    let victim_id = zerostate_p2p::peer_of(&victim).expect("peer id");
    swarm.dial(victim).expect("dial");
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&gossipsub::IdentTopic::new("tasks"))
        .expect("subscribe");
    let (tx, mut rx) = mpsc::channel(1024);
    let ended = Arc::new(AtomicUsize::new(0));
    let count = ended.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                attack = rx.recv() => match attack {
                    Some(Attack::Request(bytes)) => {
                        swarm.behaviour_mut().request.send_request(&victim_id, bytes);
                    }
                    Some(Attack::Gossip(bytes)) => {
                        // Fails until the victim's subscription is known; the test
                        // sends again until it lands.
                        let _ = swarm
                            .behaviour_mut()
                            .gossipsub
                            .publish(gossipsub::IdentTopic::new("tasks"), bytes);
                    }
                    None => return,
                },
                event = swarm.select_next_some() => {
                    if let SwarmEvent::Behaviour(HostileEvent::Request(
                        request_response::Event::Message { .. }
                        | request_response::Event::OutboundFailure { .. },
                    )) = event
                    {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }
    });
    (tx, peer, ended)
}

/// Answers every request with `ok`, as a node's application would.
fn answer_everything(node: &mut Node) {
    let network = node.network.clone();
    let mut events = std::mem::replace(&mut node.events, mpsc::channel(1).1);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let Event::Request(r) = event {
                let _ = network.respond(r, "ok", vec![]).await;
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bytes_are_dropped_counted_and_lower_the_score() {
    let mut c = config(Role::Edge);
    c.max_message_bytes = 4096;
    c.peer_messages_per_second = 20;
    c.peer_message_burst = 40;
    let mut victim = start(c).await;
    victim.network.subscribe("tasks").await.expect("subscribe");
    answer_everything(&mut victim);
    let (attack, hostile_id, ended) = hostile(victim.addr.clone());
    eventually("the hostile peer connected", || async {
        victim
            .network
            .peers()
            .await
            .expect("peers")
            .iter()
            .any(|p| p.peer_id == hostile_id.to_string())
            .then_some(())
    })
    .await;

    // Garbage gossip: rejected, not delivered, not forwarded.
    eventually("the hostile peer on the topic", || async {
        attack
            .send(Attack::Gossip(vec![1, 0xff, 0xff, fastrand::u8(..)]))
            .await
            .expect("attacker");
        (victim.network.stats().dropped_malformed >= 1).then_some(())
    })
    .await;
    assert_eq!(victim.network.stats().gossip_received, 0);

    let valid = Envelope::new("task_request", vec![], None).encode();
    let mut future_version = valid.clone();
    future_version[0] = 7;
    let bad_type = Envelope::new("Not A Type", vec![], None).encode();
    let attacks = [
        vec![0u8; 64 * 1024],      // oversized
        vec![1, 0xff, 0xff, 0xff], // malformed body
        future_version,
        bad_type,
    ];
    for bytes in attacks.iter().cloned() {
        attack.send(Attack::Request(bytes)).await.expect("attacker");
    }
    eventually("the requests to end", || async {
        (ended.load(Ordering::SeqCst) >= attacks.len()).then_some(())
    })
    .await;
    let stats = victim.network.stats();
    assert_eq!(stats.dropped_oversized, 1, "{stats:?}");
    assert!(stats.dropped_malformed >= 2, "{stats:?}");
    assert_eq!(stats.dropped_unknown_version, 1, "{stats:?}");
    assert_eq!(stats.dropped_bad_type, 1, "{stats:?}");
    assert_eq!(stats.requests_received, 0, "{stats:?}");

    // A flood of valid requests: the rate limit drops what is above it.
    let before = ended.load(Ordering::SeqCst);
    for _ in 0..200 {
        attack
            .send(Attack::Request(
                Envelope::new("task_request", vec![], None).encode(),
            ))
            .await
            .expect("attacker");
    }
    eventually("the flood to end", || async {
        (ended.load(Ordering::SeqCst) >= before + 200).then_some(())
    })
    .await;
    let stats = victim.network.stats();
    assert!(stats.dropped_flood >= 50, "{stats:?}");
    assert!(
        stats.requests_received >= 1,
        "some were within the rate: {stats:?}"
    );

    let info = victim
        .network
        .peers()
        .await
        .expect("peers")
        .into_iter()
        .find(|p| p.peer_id == hostile_id.to_string())
        .expect("still listed");
    assert!(info.offences >= 50, "{info:?}");
    assert!(info.score.expect("scored") < -80.0, "graylisted: {info:?}");

    // The node carries on: an honest peer is served.
    let honest = start(config(Role::Edge)).await;
    let reply = honest
        .network
        .request(
            victim.network.peer_id(),
            vec![victim.addr.clone()],
            "hello",
            vec![],
        )
        .await
        .expect("served");
    assert_eq!(reply.message_type, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_relay_of_a_flood_is_not_blamed_for_it() {
    // The victim takes five messages a second from each author (bursts of five); the relay
    // takes everything and forwards it.
    let mut strict = config(Role::Edge);
    strict.peer_messages_per_second = 5;
    strict.peer_message_burst = 5;
    let mut victim = start(strict).await;
    let relay = start(config(Role::Edge)).await;
    victim.network.subscribe("tasks").await.expect("subscribe");
    relay.network.subscribe("tasks").await.expect("subscribe");
    victim.network.dial(relay.addr.clone()).await.expect("dial");
    // Throwaway identities, connected to the relay only, each publishing twenty messages.
    let mut authors = Vec::new();
    for _ in 0..4 {
        let mut c = config(Role::Edge);
        c.bootstrap = vec![relay.addr.clone()];
        let author = start(c).await;
        author.network.subscribe("tasks").await.expect("subscribe");
        authors.push(author);
    }
    eventually("the relay meshed with the victim", || async {
        (!relay
            .network
            .mesh_peers("tasks")
            .await
            .expect("mesh")
            .is_empty())
        .then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    for (a, author) in authors.iter().enumerate() {
        let mut sent = 0;
        while sent < 20 {
            let body = format!("flood {a}.{sent}").into_bytes();
            if author.network.publish("tasks", "note", body).await.is_ok() {
                sent += 1;
            } else {
                // Not meshed with the relay yet.
                assert!(
                    started.elapsed() < DEADLINE,
                    "the authors could not publish"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    eventually("the victim to drop part of the flood", || async {
        (victim.network.stats().dropped_flood >= 10).then_some(())
    })
    .await;
    let relay_id = relay.network.peer_id().to_string();
    let seen = victim.network.peers().await.expect("peers");
    let relay_seen = seen
        .iter()
        .find(|p| p.peer_id == relay_id)
        .expect("the relay is still connected");
    assert_eq!(relay_seen.offences, 0, "the relay offended nobody");
    assert!(
        relay_seen.score.is_none_or(|s| s > -80.0),
        "the relay stays above the graylist threshold: {:?}",
        relay_seen.score
    );
    // And what the relay itself sends still arrives.
    relay
        .network
        .publish("tasks", "note", b"from the relay".to_vec())
        .await
        .expect("publish");
    loop {
        let m = next_gossip(&mut victim).await;
        if m.envelope.payload == b"from the relay" {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_and_counted() {
    let mut c = config(Role::Edge);
    c.max_connections = 2;
    let victim = start(c).await;
    let mut dialers = Vec::new();
    for _ in 0..4 {
        let d = start(config(Role::Edge)).await;
        // Some of these dials fail: the victim refuses them.
        let _ = d.network.dial(victim.addr.clone()).await;
        dialers.push(d);
    }
    eventually("refusals counted", || async {
        (victim.network.stats().connections_denied >= 1).then_some(())
    })
    .await;
    let connected = victim.network.peers().await.expect("peers").len();
    assert!(connected <= 2, "{connected} peers connected, limit 2");
}
