//! What guild secrecy costs and how fast a new member is in.
//!
//! ```text
//! cargo bench -p zerostate-guild --bench guild
//! ```
//!
//! Rows: sealing and opening a 256-byte guild message (XChaCha20-Poly1305 with its
//! associated data, one thread); and the time from calling `join` on a new node to its
//! first decrypted guild message, with real nodes on loopback (the coordinator sends a
//! message every 2 ms until the new member has one). Prints a table.

use std::time::{Duration, Instant};

use zerostate_guild::{GuildConfig, GuildKey, Guilds};
use zerostate_p2p::{Multiaddr, Network, Role, identity::Keypair, testing};

const MESSAGES: usize = 200_000;
const JOINS: usize = 20;

fn seal_open() -> (f64, f64) {
    let key = GuildKey::generate();
    let body = vec![0x5a; 256];
    let aad = b"guild-id\0\0\0\0\x01sender-peer-id-bytes\0\0\0\0\0\0\0\x07";
    let start = Instant::now();
    let mut sealed = Vec::with_capacity(MESSAGES);
    for _ in 0..MESSAGES {
        sealed.push(key.seal(std::hint::black_box(&body), aad));
    }
    let seal_rate = MESSAGES as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for (nonce, ct) in &sealed {
        std::hint::black_box(key.open(nonce, ct, aad).expect("opens"));
    }
    let open_rate = MESSAGES as f64 / start.elapsed().as_secs_f64();
    (seal_rate, open_rate)
}

async fn node(bootstrap: Option<&Multiaddr>) -> (Network, Guilds, Multiaddr) {
    let key = Keypair::generate_ed25519();
    let role = if bootstrap.is_none() {
        Role::Bootnode
    } else {
        Role::Edge
    };
    let bootstrap: Vec<Multiaddr> = bootstrap.into_iter().cloned().collect();
    let config = testing::loopback_config(role, &bootstrap);
    let (network, mut events, addr) = testing::start(config, key.clone()).await;
    let guilds = Guilds::start(network.clone(), key, GuildConfig::default()).expect("guilds");
    let pump = guilds.clone();
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if Guilds::wants(&e) {
                pump.deliver(e).await;
            }
        }
    });
    (network, guilds, addr)
}

async fn join_to_first_message() -> Vec<Duration> {
    let (coordinator, guilds, addr) = node(None).await;
    let guild = guilds.create("bench").await.expect("create");
    let mut times = Vec::new();
    for _ in 0..JOINS {
        let (member_net, member, _) = node(Some(&addr)).await;
        // Connected first, so that the figure is the guild's, not the dial's.
        member_net.dial(addr.clone()).await.expect("dial");
        let invitation = guilds
            .invite(&guild.id, None, Duration::from_secs(60))
            .await
            .expect("invite");
        let start = Instant::now();
        member
            .join(&guild.id, coordinator.peer_id(), vec![], Some(invitation))
            .await
            .expect("join");
        loop {
            guilds
                .send(&guild.id, "ping", b"hello".to_vec())
                .await
                .expect("send");
            if !member
                .messages(&guild.id)
                .await
                .expect("messages")
                .is_empty()
            {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no message");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(start.elapsed());
        member.leave(&guild.id).await.expect("leave");
        member_net.shutdown().await;
    }
    times
}

fn ms(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let (seal, open) = seal_open();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut joins = runtime.block_on(join_to_first_message());
    joins.sort();
    println!("\n| measure | value |");
    println!("|---|---:|");
    println!("| seal 256-byte message, msgs/s (one thread) | {seal:.0} |");
    println!("| open 256-byte message, msgs/s (one thread) | {open:.0} |");
    println!(
        "| join to first decrypted message, p50 ms ({JOINS} joins) | {:.2} |",
        ms(&joins, 0.5)
    );
    println!(
        "| join to first decrypted message, p95 ms | {:.2} |",
        ms(&joins, 0.95)
    );
}
