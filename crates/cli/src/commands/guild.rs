//! `zerostate guild invite`: an invitation to a guild a running node coordinates, signed by
//! that node and printed for the user to pass on; `zerostate guild remove`: a member taken
//! out of it by hand.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::commands::reach::NodeArgs;

/// Work with the guilds of a node on this machine.
#[derive(Debug, Subcommand)]
pub enum GuildCommand {
    /// Print a single-use invitation to a guild the node coordinates (the default admission
    /// policy admits only holders of one). The joiner passes it as `--invitation` with
    /// `--join-guild`, or as `invitation` to `POST /v1/guilds/{id}/join`.
    Invite(InviteArgs),
    /// Remove a member from a guild the node coordinates: a new membership stating the
    /// reason, a new key; the peer is not admitted again. Prints the guild as it is now.
    Remove(RemoveArgs),
}

/// `guild remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The guild's id.
    guild: String,
    /// The member's peer id.
    peer: String,
    /// Why (stated in the signed membership; the member sees it).
    #[arg(long, default_value = "removed by the coordinator's operator")]
    reason: String,
    #[command(flatten)]
    node: NodeArgs,
}

impl RemoveArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        let client = self.node.client()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let answer = runtime.block_on(client.delete(
            &format!("/v1/guilds/{}/members/{}", self.guild, self.peer),
            &[("reason", self.reason.as_str())],
        ))?;
        println!("{}", serde_json::to_string_pretty(&answer)?);
        Ok(ExitCode::SUCCESS)
    }
}

/// `guild invite`.
#[derive(Debug, Args)]
pub struct InviteArgs {
    /// The guild's id.
    guild: String,
    /// Only this peer may use it [default: whoever presents it first].
    #[arg(long = "for", value_name = "PEER_ID")]
    invitee: Option<String>,
    /// How long it is valid (`90s`, `10m`, `24h`; at most 30 days).
    #[arg(long, default_value = "24h", value_parser = zerostate_node::units::parse_duration)]
    ttl: Duration,
    #[command(flatten)]
    node: NodeArgs,
}

impl GuildCommand {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Self::Invite(args) => args.run(),
            Self::Remove(args) => args.run(),
        }
    }
}

impl InviteArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        let client = self.node.client()?;
        let mut body = serde_json::json!({ "ttl_s": self.ttl.as_secs().max(1) });
        if let Some(peer) = &self.invitee {
            body["for"] = serde_json::Value::from(peer.as_str());
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let answer = runtime
            .block_on(client.post(&format!("/v1/guilds/{}/invitations", self.guild), &body))?;
        let token = answer["invitation"]
            .as_str()
            .context("the node's answer has no invitation")?;
        println!("{token}");
        Ok(ExitCode::SUCCESS)
    }
}
