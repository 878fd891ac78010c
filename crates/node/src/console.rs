//! What several subcommands share with the terminal: event lines on stdout and the signals
//! that stop them.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::runtime::NodeInfo;

/// Writes one JSON event line on stdout (`{"event": "ready", ...}`). A closed stdout (the
/// reader went away) is not a reason to stop, so errors are ignored.
pub fn say(event: &impl Serialize) {
    use std::io::Write;
    let Ok(line) = serde_json::to_string(event) else {
        return;
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The first line a `zerostate node`, `collector` or `devnet` writes on stdout once it
/// serves: `{"event": "ready", "node" | "collector" | "devnet": {...}}`. Scripts, the devnet
/// and the tests read it to learn where things listen.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(tag = "event", rename = "ready")]
pub struct Ready {
    /// What a node is and where it listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeInfo>,
    /// Where a collector listens and keeps traces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<CollectorReady>,
    /// What a devnet started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devnet: Option<DevnetReady>,
}

/// A collector's addresses.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CollectorReady {
    /// Its OTLP/HTTP endpoint.
    pub otlp: String,
    /// Its viewer and query API.
    pub ui: String,
    /// Where it keeps traces.
    pub data: PathBuf,
}

/// What a devnet started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevnetReady {
    /// The viewer's URL.
    pub viewer: String,
    /// The collector's OTLP/HTTP endpoint.
    pub otlp: String,
    /// The guild every node is in.
    pub guild: String,
    /// The nodes' names.
    pub nodes: Vec<String>,
    /// The trace of the first guild message.
    pub trace: String,
    /// The trace of the guild's announcement to the network (`guild_invitation` gossip).
    pub announcement: String,
    /// The ids of the tasks it ran (their records: `GET /v1/tasks/{id}` on the last edge).
    pub tasks: Vec<String>,
    /// The process ids of the nodes and the collector.
    pub pids: Vec<u32>,
}

impl Ready {
    /// Reads a ready line.
    pub fn parse(value: &serde_json::Value) -> anyhow::Result<Self> {
        serde_json::from_value(value.clone())
            .with_context(|| format!("{value} is not a ready line"))
    }
}

/// Completes on SIGINT or SIGTERM, or when the parent that started this process as a
/// child (see [`crate::process`]) is gone.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        () = crate::process::parent_gone() => {
            tracing::warn!("the process that started this one is gone; stopping");
        }
    }
    Ok(())
}
