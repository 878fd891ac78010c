//! Gossip propagation on loopback: how long a published message takes to reach every node,
//! and how many messages per second one publisher gets to all of them.
//!
//! ```text
//! cargo bench -p zerostate-p2p --bench gossip
//! ```
//!
//! Real swarms (TCP, noise, yamux, gossipsub with the node's default settings, heartbeat
//! 1 s) in one process on one tokio runtime with two worker threads. Latency is measured
//! from the send time in the envelope to the moment each receiving node's application gets
//! the message, on the same clock. Prints a table; the figures go to `docs/benchmarks.md`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use zerostate_p2p::{Event, Multiaddr, Network, Role, identity::Keypair, testing};

const TOPIC: &str = "bench";
/// Messages timed for latency, one every 10 ms.
const LATENCY_MESSAGES: usize = 300;
/// Messages sent back to back for throughput.
const BURST_MESSAGES: usize = 5000;

type Arrivals = Arc<Mutex<HashMap<u64, Vec<Duration>>>>;

struct Net {
    nodes: Vec<Network>,
    arrivals: Arrivals,
}

async fn network(n: usize) -> Net {
    let arrivals: Arrivals = Arc::default();
    let mut nodes: Vec<Network> = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..n {
        // Each node joins through the bootnode and one earlier node: a connected graph
        // that is not a star, so some messages take more than one hop.
        let mut bootstrap: Vec<Multiaddr> = addrs.iter().take(1).cloned().collect();
        if i > 1 {
            bootstrap.push(addrs[fastrand::usize(1..i)].clone());
        }
        let role = if i == 0 { Role::Bootnode } else { Role::Edge };
        let config = testing::loopback_config(role, &bootstrap);
        let (net, events, addr) = testing::start(config, Keypair::generate_ed25519()).await;
        addrs.push(addr);
        net.subscribe(TOPIC).await.expect("subscribe");
        tokio::spawn(record(events, arrivals.clone()));
        nodes.push(net);
    }
    for (i, node) in nodes.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        while node.mesh_peers(TOPIC).await.expect("mesh").is_empty() {
            assert!(Instant::now() < deadline, "node {i} found no mesh peer");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Let the mesh settle over a few heartbeats.
    tokio::time::sleep(Duration::from_secs(3)).await;
    Net { nodes, arrivals }
}

async fn record(mut events: mpsc::Receiver<Event>, arrivals: Arrivals) {
    while let Some(event) = events.recv().await {
        if let Event::Gossip(m) = event {
            let age = m.envelope.age();
            let seq = u64::from_be_bytes(m.envelope.payload[..8].try_into().expect("8 bytes"));
            arrivals
                .lock()
                .expect("lock")
                .entry(seq)
                .or_default()
                .push(age);
        }
    }
}

fn payload(seq: u64) -> Vec<u8> {
    let mut p = seq.to_be_bytes().to_vec();
    p.resize(128, 0xab);
    p
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

struct Row {
    nodes: usize,
    delivered: usize,
    expected: usize,
    each_p50: f64,
    each_p95: f64,
    all_p50: f64,
    all_p95: f64,
    burst_delivered: usize,
    burst_expected: usize,
    burst_per_second: f64,
    app_busy: u64,
}

async fn measure(n: usize) -> Row {
    let net = network(n).await;
    let publisher = &net.nodes[1];
    let receivers = n - 1;
    for seq in 0..LATENCY_MESSAGES as u64 {
        publisher
            .publish(TOPIC, "bench", payload(seq))
            .await
            .expect("publish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut each, mut all, delivered) = {
        let arrivals = net.arrivals.lock().expect("lock");
        let mut each = Vec::new();
        let mut all = Vec::new();
        let mut delivered = 0;
        for seq in 0..LATENCY_MESSAGES as u64 {
            let got = arrivals.get(&seq).cloned().unwrap_or_default();
            delivered += got.len();
            if got.len() == receivers {
                all.push(*got.iter().max().expect("not empty"));
            }
            each.extend(got);
        }
        (each, all, delivered)
    };
    each.sort();
    all.sort();

    net.arrivals.lock().expect("lock").clear();
    let base = 1_000_000u64;
    let started = Instant::now();
    for seq in base..base + BURST_MESSAGES as u64 {
        publisher
            .publish(TOPIC, "bench", payload(seq))
            .await
            .expect("publish");
    }
    // Wait until every node has every message, or nothing new arrived for 3 s.
    let mut last_count = 0;
    let mut last_change = Instant::now();
    let mut last_arrival = Duration::ZERO;
    let burst_delivered = loop {
        let count: usize = net
            .arrivals
            .lock()
            .expect("lock")
            .values()
            .map(Vec::len)
            .sum();
        if count != last_count {
            last_count = count;
            last_change = Instant::now();
            last_arrival = started.elapsed();
        }
        if count >= BURST_MESSAGES * receivers || last_change.elapsed() > Duration::from_secs(3) {
            break count;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let app_busy: u64 = net.nodes.iter().map(|n| n.stats().dropped_app_busy).sum();
    for node in &net.nodes {
        node.shutdown().await;
    }
    Row {
        nodes: n,
        delivered,
        expected: LATENCY_MESSAGES * receivers,
        each_p50: percentile(&each, 0.50),
        each_p95: percentile(&each, 0.95),
        all_p50: percentile(&all, 0.50),
        all_p95: percentile(&all, 0.95),
        burst_delivered,
        burst_expected: BURST_MESSAGES * receivers,
        burst_per_second: burst_delivered as f64 / receivers as f64 / last_arrival.as_secs_f64(),
        app_busy,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let rows: Vec<Row> = [4, 16]
        .into_iter()
        .map(|n| runtime.block_on(measure(n)))
        .collect();
    println!(
        "\n| nodes | delivered | each node p50 ms | each node p95 ms | all nodes p50 ms | all nodes p95 ms | burst delivered | burst msgs/s | dropped, app queue full |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {}/{} | {:.2} | {:.2} | {:.2} | {:.2} | {}/{} | {:.0} | {} |",
            r.nodes,
            r.delivered,
            r.expected,
            r.each_p50,
            r.each_p95,
            r.all_p50,
            r.all_p95,
            r.burst_delivered,
            r.burst_expected,
            r.burst_per_second,
            r.app_busy
        );
    }
}
