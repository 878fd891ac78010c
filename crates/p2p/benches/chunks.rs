//! Moving a large module across the network on loopback, as an executor fetches one from a
//! requester: 16 MiB asked for one chunk at a time over direct requests (TCP, noise,
//! yamux, the node's request-response protocol), at three chunk sizes, beside what one
//! message of the old inline limit (768 KiB) takes.
//!
//! ```text
//! cargo bench -p zerostate-p2p --bench chunks
//! ```
//!
//! Two real nodes in one process on one tokio runtime with two worker threads; the server
//! answers each request with the chunk's bytes from memory. Each size runs five rounds in
//! turn, so no size always runs first; the table gives the median round and the spread
//! (slowest over fastest). The figures go to `docs/benchmarks.md`.

use std::time::{Duration, Instant};

use zerostate_p2p::{Event, Network, Role, identity::Keypair, testing};

/// Bytes moved per round.
const TOTAL: usize = 16 << 20;
/// Rounds per chunk size.
const ROUNDS: usize = 5;

async fn serve(net: Network, mut events: tokio::sync::mpsc::Receiver<Event>, data: Vec<u8>) {
    while let Some(event) = events.recv().await {
        if let Event::Request(request) = event {
            // The range asked for: two little-endian u64, start and length.
            let ask = &request.envelope.payload;
            let word = |i: usize| {
                u64::from_le_bytes(ask[i * 8..i * 8 + 8].try_into().expect("8 bytes")) as usize
            };
            let (start, len) = (word(0), word(1));
            let chunk = data[start..(start + len).min(data.len())].to_vec();
            net.respond(request, "chunk_data", chunk)
                .await
                .expect("answered");
        }
    }
}

/// Seconds to fetch `total` bytes from `server` in `chunk`-byte requests, one at a time.
async fn fetch(client: &Network, server: zerostate_p2p::PeerId, chunk: usize, total: usize) -> f64 {
    let started = Instant::now();
    let mut got = 0;
    while got < total {
        let len = chunk.min(total - got);
        let ask = [(got as u64).to_le_bytes(), (len as u64).to_le_bytes()].concat();
        let answer = client
            .request(server, vec![], "chunk", ask)
            .await
            .expect("a chunk");
        assert_eq!(answer.payload.len(), len);
        got += len;
    }
    started.elapsed().as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut config = testing::loopback_config(Role::Bootnode, &[]);
        config.max_message_bytes = 1 << 20;
        let (server, events, addr) = testing::start(config, Keypair::generate_ed25519()).await;
        let data: Vec<u8> = (0..TOTAL).map(|i| (i * 31 % 251) as u8).collect();
        tokio::spawn(serve(server.clone(), events, data));
        let mut config = testing::loopback_config(Role::Edge, &[addr]);
        config.max_message_bytes = 1 << 20;
        let (client, _events, _) = testing::start(config, Keypair::generate_ed25519()).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let peer = server.peer_id();
        // Warm the connection.
        fetch(&client, peer, 256 << 10, 1 << 20).await;
        let cases: [(&str, usize, usize); 4] = [
            ("64 KiB chunks", 64 << 10, TOTAL),
            ("256 KiB chunks (the market's)", 256 << 10, TOTAL),
            ("768 KiB chunks", 768 << 10, TOTAL),
            ("one 768 KiB message", 768 << 10, 768 << 10),
        ];
        let mut seconds = vec![Vec::new(); cases.len()];
        for _ in 0..ROUNDS {
            for (i, (_, chunk, total)) in cases.iter().enumerate() {
                seconds[i].push(fetch(&client, peer, *chunk, *total).await);
            }
        }
        println!(
            "{:<32} {:>9} {:>10} {:>10} {:>8}",
            "case", "bytes", "median ms", "MiB/s", "spread"
        );
        for ((label, _, total), s) in cases.iter().zip(&mut seconds) {
            s.sort_by(f64::total_cmp);
            let median = s[s.len() / 2];
            println!(
                "{label:<32} {total:>9} {:>10.1} {:>10.1} {:>7.2}x",
                median * 1e3,
                *total as f64 / (1 << 20) as f64 / median,
                s[s.len() - 1] / s[0]
            );
        }
    });
}
