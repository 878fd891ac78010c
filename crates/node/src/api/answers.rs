//! What the API answers, as the handlers build it and as [`crate::client::NodeClient`]
//! reads it: one type on both sides, so that the server and its clients cannot drift.

use serde::{Deserialize, Serialize};

/// `POST /v1/guilds/{id}/invitations`: a single-use invitation signed by the coordinator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Invitation {
    /// The token the invitee passes to `--invitation`.
    pub invitation: String,
    /// The guild it admits to.
    pub guild_id: String,
    /// The only peer it admits, when it names one.
    #[serde(rename = "for")]
    pub invitee: Option<String>,
    /// When it stops admitting, unix milliseconds.
    pub expires_unix_ms: u64,
}

/// `POST /v1/ledger/faucet`: an account credited on this node's ledger.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Funded {
    /// The account's peer id.
    pub peer_id: String,
    /// What it was credited, in base units.
    pub funded: u64,
}

/// `POST /v1/tasks`: a task accepted; its record is at `/v1/tasks/{task_id}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Accepted {
    /// The task's id.
    pub task_id: String,
    /// The trace it runs in.
    pub trace_id: String,
    /// Where it is.
    pub state: zerostate_market::TaskState,
}

/// `POST /v1/guilds/{id}/messages`, `POST /v1/guilds/{id}/announce`, `POST
/// /v1/p2p/publish`: a message sent, and the trace it was sent in.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Published {
    /// The gossip message id, where the message went out on a topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The trace it was sent in (none when the node does not trace).
    pub trace_id: Option<String>,
}
