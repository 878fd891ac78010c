//! `zerostate channel list|close`: the payment channels of a node on this machine.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::client::NodeClient;

/// Work with a node's payment channels.
#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// List the channels the node pays or is paid through.
    List(NodeArgs),
    /// Close a channel the node pays through, cooperatively: the payee signs the latest
    /// state and the ledger settles on it.
    Close {
        /// The channel's id (hex, as `list` shows it).
        id: String,
        /// Which node.
        #[command(flatten)]
        node: NodeArgs,
    },
}

/// Which node.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's API [default: http:// and $ZEROSTATE_API, else http://127.0.0.1:8700].
    #[arg(long, value_name = "URL")]
    node: Option<String>,
    /// The node's data directory, where its API token is [default: $ZEROSTATE_DATA_DIR,
    /// else ~/.local/share/zerostate].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl NodeArgs {
    /// A client of the node.
    pub fn client(&self) -> anyhow::Result<NodeClient> {
        let node = match &self.node {
            Some(url) => url.clone(),
            None => format!(
                "http://{}",
                std::env::var("ZEROSTATE_API")
                    .unwrap_or_else(|_| crate::settings::DEFAULT_API.to_string())
            ),
        };
        let dir = crate::data::data_dir(self.data_dir.as_deref())?;
        NodeClient::new(&node, &dir.join(crate::data::API_TOKEN_FILE))
    }
}

impl ChannelCommand {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        match self {
            Self::List(node) => {
                let channels = runtime
                    .block_on(node.client()?.get("/v1/channels"))?
                    .unwrap_or_default();
                println!(
                    "{:<66} {:<6} {:>10} {:>10} {:>6}",
                    "channel", "side", "deposit", "paid", "nonce"
                );
                for c in channels.as_array().into_iter().flatten() {
                    println!(
                        "{:<66} {:<6} {:>10} {:>10} {:>6}",
                        c["id"].as_str().unwrap_or_default(),
                        c["side"].as_str().unwrap_or_default(),
                        c["deposit"].as_u64().unwrap_or(0),
                        c["cumulative"].as_u64().unwrap_or(0),
                        c["nonce"].as_u64().unwrap_or(0),
                    );
                }
            }
            Self::Close { id, node } => {
                let settled = runtime.block_on(
                    node.client()?
                        .post(&format!("/v1/channels/{id}/close"), &serde_json::json!({})),
                )?;
                println!(
                    "settled: {} to the payee, {} back to the payer",
                    settled["to_payee"].as_u64().unwrap_or(0),
                    settled["to_payer"].as_u64().unwrap_or(0)
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
