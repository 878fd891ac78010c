//! What an honest network does.

use zerostate_p2p::{Event, Role};

use crate::harness::{config, eventually, next_gossip, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_reaches_every_subscriber_and_requests_get_answers() {
    let boot = start(config(Role::Bootnode)).await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let mut c = config(Role::Edge);
        c.bootstrap = vec![boot.addr.clone()];
        nodes.push(start(c).await);
    }
    boot.network.subscribe("tasks").await.expect("subscribe");
    for n in &nodes {
        n.network.subscribe("tasks").await.expect("subscribe");
    }
    for n in &nodes {
        eventually("a gossip mesh", || async {
            (!n.network
                .mesh_peers("tasks")
                .await
                .expect("mesh")
                .is_empty())
            .then_some(())
        })
        .await;
    }
    let publisher = nodes[0].network.peer_id();
    nodes[0]
        .network
        .publish("tasks", "task_request", b"hello".to_vec())
        .await
        .expect("publish");
    for n in nodes.iter_mut().skip(1) {
        let m = next_gossip(n).await;
        assert_eq!(m.envelope.message_type, "task_request");
        assert_eq!(m.envelope.payload, b"hello");
        assert_eq!(m.source, Some(publisher));
    }

    // A request and its response.
    let (asker, answerer) = nodes.split_at_mut(2);
    let target = answerer[0].network.peer_id();
    let network = answerer[0].network.clone();
    let mut events = std::mem::replace(&mut answerer[0].events, tokio::sync::mpsc::channel(1).1);
    let server = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let Event::Request(r) = event {
                let reply = [r.envelope.payload.as_slice(), b" back"].concat();
                network
                    .respond(r, "echo_reply", reply)
                    .await
                    .expect("respond");
                return;
            }
        }
    });
    let response = asker[0]
        .network
        .request(
            target,
            vec![answerer[0].addr.clone()],
            "echo",
            b"ping".to_vec(),
        )
        .await
        .expect("response");
    assert_eq!(response.message_type, "echo_reply");
    assert_eq!(response.payload, b"ping back");
    server.await.expect("server");
    assert_eq!(asker[0].network.stats().requests_sent, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_put_on_one_node_is_read_on_another() {
    let boot = start(config(Role::Bootnode)).await;
    let mut a = config(Role::Edge);
    a.bootstrap = vec![boot.addr.clone()];
    let a = start(a).await;
    let mut b = config(Role::Edge);
    b.bootstrap = vec![boot.addr.clone()];
    let b = start(b).await;
    eventually("peers connected", || async {
        (!a.network.peers().await.expect("peers").is_empty()).then_some(())
    })
    .await;
    eventually("the record stored", || async {
        a.network
            .put_record(b"guild/alpha", b"members".to_vec())
            .await
            .ok()
    })
    .await;
    let value = eventually("the record read", || async {
        b.network.get_record(b"guild/alpha").await.ok().flatten()
    })
    .await;
    assert_eq!(value.value, b"members");
    assert_eq!(
        value.publisher,
        a.network.peer_id(),
        "signed by its publisher"
    );

    assert_eq!(
        b.network.get_record(b"nothing/here").await.expect("get"),
        None
    );
    let found = eventually("the peer found", || async {
        b.network.find_peer(a.network.peer_id()).await.ok()
    })
    .await;
    assert!(!found.is_empty());
    drop(boot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_is_reached_through_a_relay_circuit() {
    let relay = start(config(Role::Relay)).await;
    let mut hidden = config(Role::Edge);
    hidden.relays = vec![relay.addr.clone()];
    let mut hidden = start(hidden).await;
    let circuit = eventually("a reservation on the relay", || async {
        hidden
            .network
            .listen_addresses()
            .await
            .expect("addresses")
            .into_iter()
            .find(|a| a.to_string().contains("p2p-circuit"))
    })
    .await;
    let circuit = circuit
        .with_p2p(hidden.network.peer_id())
        .expect("circuit address");

    let caller = start(config(Role::Edge)).await;
    let network = hidden.network.clone();
    let server = tokio::spawn(async move {
        while let Some(event) = hidden.events.recv().await {
            if let Event::Request(r) = event {
                network.respond(r, "pong", vec![]).await.expect("respond");
                return;
            }
        }
    });
    let peer = caller
        .network
        .dial(circuit.clone())
        .await
        .expect("dial through the relay");
    assert_eq!(peer, network_peer(&circuit));
    let peers = caller.network.peers().await.expect("peers");
    let hidden_info = peers
        .iter()
        .find(|p| p.peer_id == peer.to_string())
        .expect("connected");
    assert!(hidden_info.relayed, "{hidden_info:?}");
    let reply = caller
        .network
        .request(peer, vec![], "ping", vec![])
        .await
        .expect("response through the circuit");
    assert_eq!(reply.message_type, "pong");
    server.await.expect("server");
}

fn network_peer(addr: &zerostate_p2p::Multiaddr) -> zerostate_p2p::PeerId {
    zerostate_p2p::peer_of(addr).expect("ends in a peer id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_talk_over_quic() {
    let quic = || {
        let mut c = config(Role::Edge);
        c.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr")];
        c
    };
    let mut server = start(quic()).await;
    assert!(
        server.addr.to_string().contains("/quic-v1/"),
        "{}",
        server.addr
    );
    let client = start(quic()).await;
    let network = server.network.clone();
    let responder = tokio::spawn(async move {
        while let Some(event) = server.events.recv().await {
            if let Event::Request(r) = event {
                network.respond(r, "pong", vec![]).await.expect("respond");
                return;
            }
        }
    });
    let peer = client
        .network
        .dial(server.addr.clone())
        .await
        .expect("dial over QUIC");
    let reply = client
        .network
        .request(peer, vec![], "ping", vec![])
        .await
        .expect("response over QUIC");
    assert_eq!(reply.message_type, "pong");
    let peers = client.network.peers().await.expect("peers");
    assert!(peers[0].addresses[0].contains("/quic-v1"), "{peers:?}");
    responder.await.expect("responder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_bound_to_its_first_publisher() {
    // Two nodes: the only peer of each is the other, so a's record reaches b before a's put
    // returns (b's acknowledgement is what completes it).
    let a = start(config(Role::Bootnode)).await;
    let mut c = config(Role::Edge);
    c.bootstrap = vec![a.addr.clone()];
    let b = start(c).await;
    eventually("peers connected", || async {
        (!b.network.peers().await.expect("peers").is_empty()).then_some(())
    })
    .await;
    eventually("a's record stored", || async {
        a.network.put_record(b"owned", b"a's".to_vec()).await.ok()
    })
    .await;
    let err = b
        .network
        .put_record(b"owned", b"b's".to_vec())
        .await
        .expect_err("b cannot publish under a's key");
    let mut chain = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(c) = cause {
        chain.push_str(&format!(": {c}"));
        cause = c.source();
    }
    assert!(chain.contains("belongs to another publisher"), "{chain}");
    let read = b
        .network
        .get_record(b"owned")
        .await
        .expect("get")
        .expect("found");
    assert_eq!(read.value, b"a's");
    assert_eq!(read.publisher, a.network.peer_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialling_afresh_replaces_the_connection_and_an_unknown_peer_is_an_error() {
    let server = start(config(Role::Bootnode)).await;
    let client = start(config(Role::Edge)).await;
    let peer = client
        .network
        .dial(server.addr.clone())
        .await
        .expect("dial");
    assert_eq!(client.network.stats().connections_established, 1);
    let again = client
        .network
        .dial_afresh(peer, vec![server.addr.clone()])
        .await
        .expect("dial afresh");
    assert_eq!(again, peer);
    let stats = client.network.stats();
    assert_eq!(stats.connections_established, 2, "{stats:?}");
    // The old connection is gone: one left, and it answers.
    eventually("the old connection closed", || async {
        let peers = client.network.peers().await.expect("peers");
        (client.network.stats().connections_closed == 1
            && peers.len() == 1
            && peers[0].addresses.len() == 1)
            .then_some(())
    })
    .await;

    let stranger = zerostate_p2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let err = client
        .network
        .dial_afresh(stranger, vec![])
        .await
        .expect_err("no address for a stranger");
    assert!(err.to_string().contains(&stranger.to_string()), "{err}");
}
