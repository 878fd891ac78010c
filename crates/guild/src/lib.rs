//! ZeroState guilds: groups of nodes that take on work together, on top of the p2p layer.
//!
//! A guild has an id, a coordinator (its creator), members, a membership version signed by
//! the coordinator, a symmetric key and a gossip topic (`zerostate/guild/<id>`). Joining is
//! a request to the coordinator, which admits the node, wraps the guild key for it with
//! X25519, and announces the new signed membership. Members send heartbeats; one that
//! misses [`GuildConfig::missed_heartbeats`] is marked down and removed. The key rotates
//! whenever a member leaves or is removed. Messages are sealed with XChaCha20-Poly1305 and
//! carry their trace context inside the ciphertext.
//!
//! When the coordinator disappears (misses its heartbeats), the first of the successors its
//! signed membership names takes over in the next term, with that membership as proof; of
//! two claims every node keeps the same one, so a guild converges on one coordinator. With
//! a data directory ([`Guilds::start_kept`]) guilds are kept on disk and resumed at restart.
//! See `docs/guilds.md`.
//!
//! ```no_run
//! # async fn example(network: zerostate_p2p::Network, key: libp2p::identity::Keypair)
//! # -> Result<(), zerostate_guild::GuildError> {
//! use zerostate_guild::{GuildConfig, Guilds};
//!
//! let guilds = Guilds::start(network, key, GuildConfig::default())?;
//! let guild = guilds.create("render farm").await?;
//! guilds.send(&guild.id, "task_request", b"frame 1".to_vec()).await?;
//! # Ok(())
//! # }
//! ```

mod crypto;
mod service;
pub mod wire;

pub use crypto::{ExchangeKey, GuildKey, OpenError};
pub use service::{
    Admission, GuildConfig, GuildError, GuildInfo, GuildMessage, GuildStats, GuildStatus, Guilds,
    MAX_INVITATION_TTL, MemberInfo, ReceivedMessage, SILENT_COORDINATOR, TOPIC_PREFIX,
};
pub use wire::Invitation;
