//! Helpers for tests and benchmarks that run nodes on loopback (feature `testing`). They
//! panic on failure: they are for code whose failure is a failed test.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::{Event, Multiaddr, Network, NetworkConfig, Role, identity::Keypair};

/// A node's configuration listening on an ephemeral loopback TCP port, joining through
/// `bootstrap`; everything else is the default.
pub fn loopback_config(role: Role, bootstrap: &[Multiaddr]) -> NetworkConfig {
    let mut config = NetworkConfig::default();
    config.role = role;
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a valid literal")];
    config.bootstrap = bootstrap.to_vec();
    config
}

/// Starts a node and returns it with its events and its first dialable address.
///
/// # Panics
///
/// When the node does not start.
pub async fn start(
    config: NetworkConfig,
    key: Keypair,
) -> (Network, mpsc::Receiver<Event>, Multiaddr) {
    let (network, events) = Network::start(config, key).await.expect("the node starts");
    let addr = network
        .dialable_addresses()
        .await
        .expect("its addresses")
        .into_iter()
        .next()
        .expect("a listen address");
    (network, events, addr)
}

/// Polls `check` every 50 ms until it returns `Some`.
///
/// # Panics
///
/// With `what` in the message, when `deadline` passes first.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
