//! Four `zerostate node` processes on loopback (a bootnode, a relay and two edge nodes, one
//! of them reachable only through the relay) exporting to an OTLP receiver in the test.

use zerostate_telemetry::testing::{OtlpReceiver, ReceivedSpan, SpanKind};

use crate::cluster::{NodeProcess, eventually, hex, http};

#[test]
fn four_nodes_gossip_in_one_trace_share_the_dht_and_reach_an_edge_through_the_relay() {
    let receiver = OtlpReceiver::start();
    let otlp = receiver.endpoint();
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = [
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--listen",
        "/ip4/127.0.0.1/udp/0/quic-v1",
    ];

    let boot = NodeProcess::start(
        dir.path(),
        "bootnode",
        &[&["--role", "bootnode"][..], &listen].concat(),
        &otlp,
    );
    let boot_addr = boot.tcp_address();
    let relay = NodeProcess::start(
        dir.path(),
        "relay-node",
        &[&["--role", "relay", "--bootstrap", &boot_addr][..], &listen].concat(),
        &otlp,
    );
    let relay_addr = relay.tcp_address();
    // Edge 1 listens on nothing of its own, as behind a NAT: only through the relay. Its
    // configuration comes from a file.
    let config = dir.path().join("edge-node-1.toml");
    std::fs::write(
        &config,
        format!(
            "[network]\nrole = \"edge\"\nlisten = []\nbootstrap = [\"{boot_addr}\"]\n\
             relays = [\"{relay_addr}\"]\n"
        ),
    )
    .expect("config");
    let edge1 = NodeProcess::start(
        dir.path(),
        "edge-node-1",
        &["--config", &config.to_string_lossy()],
        &otlp,
    );
    let edge2 = NodeProcess::start(
        dir.path(),
        "edge-node-2",
        &[&["--bootstrap", &boot_addr][..], &listen].concat(),
        &otlp,
    );
    let nodes = [&boot, &relay, &edge1, &edge2];

    // Gossip: one publish, a receive span on every other node, parented to the publish.
    for n in nodes {
        eventually(&format!("{} in the gossip mesh", n.name), || {
            let (status, body) = n.get("/v1/p2p/mesh/zerostate");
            (status == 200 && body != "[]").then_some(())
        });
    }
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (status, body) = edge1.post(
        "/v1/p2p/publish",
        &serde_json::json!({ "type": "devnet_hello", "payload": "hello, guild" }),
        &[("traceparent", &format!("00-{trace_id}-00f067aa0ba902b7-01"))],
    );
    assert_eq!(status, 200, "{body}");
    let (publish, receives) = eventually("the publish and three receive spans", || {
        let spans = receiver.spans();
        let in_trace: Vec<&ReceivedSpan> = spans
            .iter()
            .filter(|s| hex(&s.span.trace_id) == trace_id)
            .collect();
        let publish = in_trace
            .iter()
            .find(|s| s.span.name == "p2p.gossip.publish" && s.service == "edge-node-1")?;
        let receives: Vec<ReceivedSpan> = in_trace
            .iter()
            .filter(|s| {
                s.span.name == "p2p.message.devnet_hello"
                    && s.span.kind == SpanKind::Consumer as i32
                    && s.span.parent_span_id == publish.span.span_id
            })
            .map(|s| (*s).clone())
            .collect();
        (receives.len() >= 3).then(|| ((*publish).clone(), receives))
    });
    let mut services: Vec<&str> = receives.iter().map(|s| s.service.as_str()).collect();
    services.sort();
    assert_eq!(services, ["bootnode", "edge-node-2", "relay-node"]);
    for r in &receives {
        assert_eq!(r.attribute("message.type").as_deref(), Some("devnet_hello"));
        let from = r.attribute("peer.id").expect("peer.id");
        assert!(nodes.iter().any(|n| n.peer_id == from), "{from}");
        assert!(r.attribute("size.bytes").is_some());
    }
    // The publish continues the HTTP caller's trace.
    assert_eq!(hex(&publish.span.trace_id), trace_id);

    // The DHT: a record put on edge 2 is read on edge 1.
    eventually("the record stored", || {
        let (status, _) = http(
            &edge2.api,
            "PUT",
            "/v1/dht/greeting",
            Some("hello from edge 2"),
            &[("authorization", &format!("Bearer {}", edge2.token))],
        );
        (status == 204).then_some(())
    });
    let value = eventually("the record read on edge 1", || {
        let (status, body) = edge1.get("/v1/dht/greeting");
        (status == 200).then_some(body)
    });
    assert_eq!(value, "hello from edge 2");

    // The relay: edge 2 reaches edge 1 only over a circuit through the relay.
    let circuit = eventually("edge 1 reachable through the relay", || {
        let (_, body) = edge1.get("/v1/node");
        let info: serde_json::Value = serde_json::from_str(&body).ok()?;
        info["listen"]
            .as_array()?
            .iter()
            .filter_map(|a| a.as_str())
            .find(|a| a.contains("/p2p-circuit/"))
            .map(str::to_owned)
    });
    assert!(
        circuit.contains(&format!("/p2p/{}/p2p-circuit/", relay.peer_id)),
        "{circuit}"
    );
    let (status, body) = edge2.post(
        "/v1/p2p/dial",
        &serde_json::json!({ "address": circuit }),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&edge1.peer_id), "{body}");
    let (status, body) = edge2.post(
        "/v1/p2p/request",
        &serde_json::json!({
            "peer": edge1.peer_id, "type": "echo", "payload": "through the relay"
        }),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(reply["type"], "echo_reply");
    assert_eq!(reply["payload"], "through the relay");
    let (_, peers) = edge2.get("/v1/p2p/peers");
    let peers: Vec<serde_json::Value> = serde_json::from_str(&peers).expect("json");
    let edge1_seen = peers
        .iter()
        .find(|p| p["peer_id"] == edge1.peer_id.as_str())
        .expect("edge 1 connected");
    // Edge 1 may also have dialed edge 2 itself (a DHT query); the connection edge 2
    // opened can only be the circuit, since edge 1 listens on nothing else.
    assert!(
        edge1_seen["addresses"]
            .as_array()
            .expect("addresses")
            .iter()
            .any(|a| a.as_str().is_some_and(|a| a.contains("/p2p-circuit/"))),
        "{edge1_seen}"
    );
    // The request and its response share one trace: the responder's span is a child of
    // the requester's.
    let request_trace = reply["trace_id"].as_str().expect("trace id").to_owned();
    eventually("the request's spans on both edges", || {
        let spans = receiver.spans();
        let client = spans.iter().find(|s| {
            s.service == "edge-node-2"
                && s.span.name == "p2p.message.echo"
                && hex(&s.span.trace_id) == request_trace
        })?;
        spans
            .iter()
            .any(|s| {
                s.service == "edge-node-1"
                    && s.span.name == "p2p.message.echo"
                    && s.span.kind == SpanKind::Server as i32
                    && s.span.parent_span_id == client.span.span_id
            })
            .then_some(())
    });
    eventually("the relay's circuit span", || {
        receiver
            .spans()
            .iter()
            .any(|s| s.service == "relay-node" && s.span.name == "p2p.relay.circuit")
            .then_some(())
    });

    // The other operations' spans, from the nodes that did them.
    for (service, name) in [
        ("edge-node-2", "p2p.dht.put"),
        ("edge-node-1", "p2p.dht.get"),
        ("edge-node-1", "p2p.gossip.subscribe"),
        ("edge-node-1", "p2p.relay.reservation"),
        ("relay-node", "p2p.relay.reservation"),
        ("edge-node-2", "p2p.connection.establish"),
        ("bootnode", "p2p.connection.establish"),
    ] {
        eventually(&format!("{name} from {service}"), || {
            receiver
                .spans()
                .iter()
                .any(|s| s.service == service && s.span.name == name)
                .then_some(())
        });
    }

    // Connections closing on shutdown are traced by the nodes still running: stop one
    // edge first (stopping all at once, a node may be gone before it sees a close).
    crate::cluster::stop_cleanly(vec![edge2]);
    eventually("p2p.connection.close", || {
        receiver
            .spans()
            .iter()
            .any(|s| s.span.name == "p2p.connection.close")
            .then_some(())
    });
    crate::cluster::stop_cleanly(vec![edge1, relay, boot]);
}
