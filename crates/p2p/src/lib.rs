//! ZeroState's network: a libp2p swarm (TCP with noise and yamux, QUIC, identify, ping,
//! Kademlia, gossipsub, relay v2 and request-response) behind a handle that makes trace
//! propagation automatic.
//!
//! Every message travels in an [`Envelope`] that carries the sending span's W3C context.
//! [`Network::publish`] and [`Network::request`] inject it; each message that arrives
//! comes as an [`Event`] holding a span already parented to the sender's, so a gossip
//! publish fans out into one child span per receiving node and a request and its response
//! share one trace. Code above this crate never injects or extracts context itself.
//!
//! Bad input is dropped, counted ([`NetworkStats`]) and lowers the sending peer's gossip
//! score: oversized or malformed envelopes, unknown versions, invalid message types, and
//! messages above a peer's rate limit.
//!
//! ```no_run
//! use zerostate_p2p::{Event, Network, NetworkConfig, Role};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = NetworkConfig::default();
//! config.role = Role::Edge;
//! config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
//! let key = libp2p::identity::Keypair::generate_ed25519();
//! let (network, mut events) = Network::start(config, key).await?;
//! network.subscribe("tasks").await?;
//! while let Some(event) = events.recv().await {
//!     if let Event::Gossip(message) = event {
//!         let _in_trace = message.span.enter();
//!         println!("{} from {:?}", message.envelope.message_type, message.source);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod behaviour;
pub mod config;
mod driver;
pub mod envelope;
mod network;
mod record;
mod router;
mod stats;
#[cfg(feature = "testing")]
pub mod testing;

pub use behaviour::{IDENTIFY_PROTOCOL, KAD_PROTOCOL, REQUEST_PROTOCOL};
pub use config::{NetworkConfig, Role};
pub use envelope::{Envelope, EnvelopeError};
pub use libp2p::{Multiaddr, PeerId, identity};
pub use network::{
    Cause, Event, GossipMessage, IncomingRequest, Network, NetworkError, PeerInfo, Reason,
};
pub use record::{DhtRecord, RecordError};
pub use router::{ProtocolHandler, REFUSAL, Router, RouterStats};
pub use stats::{DeliveryLatency, MAX_COUNTED_TYPES, NetworkStats};

/// The peer id an address ends in (`.../p2p/<peer id>`), if any.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().last().and_then(|p| match p {
        libp2p::multiaddr::Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// A libp2p ed25519 identity from the 32-byte secret seed stored in a node's key file, so
/// that the node's peer id is the executor id in its receipts.
pub fn keypair_from_seed(seed: [u8; 32]) -> identity::Keypair {
    let mut seed = seed;
    identity::Keypair::ed25519_from_bytes(&mut seed)
        .expect("any 32 bytes are a valid ed25519 secret key")
}
