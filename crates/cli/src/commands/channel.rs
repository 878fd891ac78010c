//! `zerostate channel list|show|close|dispute|finalize`: the payment channels of a node on this machine.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

/// Work with a node's payment channels.
#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// List the channels the node pays or is paid through.
    List(NodeArgs),
    /// Show a channel and its newest payments, each with the receipt it paid for.
    Show {
        /// The channel's id (hex, as `list` shows it).
        id: String,
        /// How many payments, newest first (1 to 1000).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Which node.
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Close a channel the node pays through, cooperatively: the payee signs the latest
    /// state and the ledger settles on it. With --unilateral, on either side: the ledger
    /// opens a challenge window on this node's best state (then `finalize`).
    Close {
        /// The channel's id (hex, as `list` shows it).
        id: String,
        /// Start a unilateral close instead of asking the payee.
        #[arg(long)]
        unilateral: bool,
        /// Which node.
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Dispute a unilateral close with this node's best state (a higher amount wins).
    Dispute {
        /// The channel's id.
        id: String,
        /// Which node.
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Pay out a unilaterally closed channel once its challenge window has ended.
    Finalize {
        /// The channel's id.
        id: String,
        /// Which node.
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Take back the whole deposit of a channel nobody closed by its expiry plus its
    /// challenge period.
    Refund {
        /// The channel's id.
        id: String,
        /// Which node.
        #[command(flatten)]
        node: NodeArgs,
    },
}

pub use crate::commands::reach::NodeArgs;

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
            Self::Show { id, limit, node } => {
                let channel = runtime
                    .block_on(
                        node.client()?
                            .get(&format!("/v1/channels/{id}?limit={limit}")),
                    )?
                    .with_context(|| format!("the node knows no channel {id}"))?;
                let n = |k: &str| channel[k].as_u64().unwrap_or(0);
                println!(
                    "channel {id}\nside {}, counterparty {}\ndeposit {}, paid {}, {} payments",
                    channel["side"].as_str().unwrap_or_default(),
                    channel["counterparty"].as_str().unwrap_or_default(),
                    n("deposit"),
                    n("cumulative"),
                    n("nonce"),
                );
                println!(
                    "{:>6} {:>10} {:>10}  receipt",
                    "nonce", "amount", "cumulative"
                );
                for p in channel["payments"].as_array().into_iter().flatten() {
                    println!(
                        "{:>6} {:>10} {:>10}  {}",
                        p["nonce"].as_u64().unwrap_or(0),
                        p["amount"].as_u64().unwrap_or(0),
                        p["cumulative"].as_u64().unwrap_or(0),
                        p["receipt"].as_str().unwrap_or_default(),
                    );
                }
            }
            Self::Close {
                id,
                unilateral,
                node,
            } => {
                let answer = runtime.block_on(node.client()?.post(
                    &format!("/v1/channels/{id}/close"),
                    &serde_json::json!({ "unilateral": unilateral }),
                ))?;
                match answer["challenge_ends"].as_u64() {
                    Some(ends) => println!(
                        "closing: the other party may dispute until {ends} (unix seconds); \
                         then `zerostate channel finalize {id}`"
                    ),
                    None => print_settled(&answer),
                }
            }
            Self::Dispute { id, node } => {
                runtime.block_on(node.client()?.post(
                    &format!("/v1/channels/{id}/dispute"),
                    &serde_json::json!({}),
                ))?;
                println!("disputed: the ledger now holds this node's state for {id}");
            }
            Self::Finalize { id, node } => {
                let settled = runtime.block_on(node.client()?.post(
                    &format!("/v1/channels/{id}/finalize"),
                    &serde_json::json!({}),
                ))?;
                print_settled(&settled);
            }
            Self::Refund { id, node } => {
                let settled = runtime.block_on(
                    node.client()?
                        .post(&format!("/v1/channels/{id}/refund"), &serde_json::json!({})),
                )?;
                print_settled(&settled);
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn print_settled(settled: &serde_json::Value) {
    println!(
        "settled: {} to the payee, {} back to the payer",
        settled["to_payee"].as_u64().unwrap_or(0),
        settled["to_payer"].as_u64().unwrap_or(0)
    );
}
