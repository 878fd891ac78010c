//! `zerostate guild invite`: an invitation to a guild a running node coordinates, signed by
//! that node and printed for the user to pass on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::client::NodeClient;

/// Work with the guilds of a node on this machine.
#[derive(Debug, Subcommand)]
pub enum GuildCommand {
    /// Print a single-use invitation to a guild the node coordinates (the default admission
    /// policy admits only holders of one). The joiner passes it as `--invitation` with
    /// `--join-guild`, or as `invitation` to `POST /v1/guilds/{id}/join`.
    Invite(InviteArgs),
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
    #[arg(long, default_value = "24h", value_parser = crate::units::parse_duration)]
    ttl: Duration,
    /// The node's API address [default: $ZEROSTATE_API, else 127.0.0.1:8700].
    #[arg(long, value_name = "ADDR")]
    api: Option<SocketAddr>,
    /// The node's data directory, where its API token is [default: $ZEROSTATE_DATA_DIR,
    /// else ~/.local/share/zerostate].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl GuildCommand {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Self::Invite(args) => args.run(),
        }
    }
}

impl InviteArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        let api = match self.api {
            Some(a) => a,
            None => match std::env::var("ZEROSTATE_API") {
                Ok(v) => v
                    .parse()
                    .with_context(|| format!("ZEROSTATE_API={v} is not an address"))?,
                Err(_) => crate::settings::DEFAULT_API,
            },
        };
        let dir = crate::data::data_dir(self.data_dir.as_deref())?;
        let client = NodeClient::new(
            &format!("http://{api}"),
            &dir.join(crate::data::API_TOKEN_FILE),
        )?;
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
