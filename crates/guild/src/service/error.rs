//! Why a guild operation failed.

use zerostate_p2p::NetworkError;

/// Why a guild operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuildError {
    /// No guild with that id here.
    #[error("this node is not in guild {0}")]
    Unknown(String),
    /// Only the coordinator may do this.
    #[error("only the coordinator of guild {0} may do this")]
    NotCoordinator(String),
    /// The coordinator cannot leave its own guild.
    #[error("the coordinator cannot leave guild {0}; dissolve it instead")]
    CoordinatorLeaving(String),
    /// This node is no longer a member.
    #[error("this node is no longer a member of guild {0} ({1})")]
    NotMember(String, String),
    /// The peer to remove is not a member.
    #[error("{1} is not a member of guild {0}")]
    NoSuchMember(String, String),
    /// The coordinator refused the join.
    #[error("joining guild {guild}: refused: {reason}")]
    Refused {
        /// The guild.
        guild: String,
        /// The coordinator's reason.
        reason: String,
    },
    /// The coordinator's answer did not check out.
    #[error("joining guild {guild}: {reason}")]
    BadReply {
        /// The guild.
        guild: String,
        /// What was wrong.
        reason: String,
    },
    /// A new connection to a peer of a guild (the coordinator of a node getting back in,
    /// a member a coordinator looks for) could not be opened in time.
    #[error("guild {guild}: no new connection to {peer} within {} ms", .within.as_millis())]
    Unreachable {
        /// The guild.
        guild: String,
        /// The peer dialled.
        peer: String,
        /// How long the dial was given.
        within: std::time::Duration,
    },
    /// The coordinator did not take a member's heartbeat.
    #[error("guild {guild}: the coordinator did not take this member's heartbeat: {reason}")]
    BeatRefused {
        /// The guild.
        guild: String,
        /// The coordinator's reason.
        reason: String,
    },
    /// An invitation cannot be made as asked.
    #[error("invitation: {0}")]
    InvalidInvitation(String),
    /// The network failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// A setting is out of range; the service did not start.
    #[error("invalid guild settings: {0}")]
    InvalidConfig(String),
    /// The guilds kept on disk could not be read or written.
    #[error("keeping guilds on disk: {0}")]
    Store(String),
    /// The service has stopped.
    #[error("the guild service has stopped")]
    Closed,
}
