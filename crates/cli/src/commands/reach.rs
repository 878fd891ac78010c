//! Which node and which collector a command on this machine talks to, decided one way for
//! every command: a flag, else the environment (`ZEROSTATE_API`, `ZEROSTATE_COLLECTOR`,
//! `ZEROSTATE_DATA_DIR`), else a running devnet's `devnet.json`, else the defaults. An
//! address is `host:port` or `http(s)://host:port` (see `zerostate_node::address`).
//!
//! The devnet is the one `--devnet DIR` names (a flag, so it comes before the environment),
//! else `./devnet.json`, else `<data dir>/devnet/devnet.json`, whichever is running.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use zerostate_cluster::devnet::DevnetFile;
use zerostate_node::client::NodeClient;
use zerostate_node::data;
use zerostate_node::settings::{DEFAULT_API, DEFAULT_COLLECTOR, Env, ProcessEnv};

/// Which node: its address or, in a devnet, its name; its data directory; the devnet.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node: an address or a devnet node's name [default: $ZEROSTATE_API, else see --help].
    ///
    /// Without the flag or the variable: a running devnet's last edge, else 127.0.0.1:8700.
    #[arg(long, visible_alias = "api", value_name = "ADDR|NAME")]
    node: Option<String>,
    /// The node's data directory, where its API token is [default: see --help].
    ///
    /// The devnet node's, else $ZEROSTATE_DATA_DIR, else ~/.local/share/zerostate.
    #[arg(long, visible_alias = "data", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The devnet whose nodes to use: a directory holding devnet.json [default: see --help].
    ///
    /// Without it, `./devnet.json`, else <data dir>/devnet, if a devnet runs there.
    #[arg(long, value_name = "DIR")]
    devnet: Option<PathBuf>,
}

/// A node to talk to and where its traces can be seen.
#[derive(Debug)]
pub struct Reached {
    /// A client of its API.
    pub client: NodeClient,
    /// The collector's viewer, when one is known (never guessed: a link is printed only to
    /// a collector that was named or that the devnet runs).
    pub collector: Option<String>,
    /// The devnet it is in, when it was found through one.
    pub devnet: Option<DevnetFile>,
}

impl Reached {
    /// How to show the node whose peer id is `peer`: its name where the devnet knows it;
    /// else the name it `claimed` with the start of its peer id beside it (a claim anyone
    /// can make); else the peer id.
    pub fn name_of(&self, peer: &str, claimed: Option<&str>) -> String {
        let known = self
            .devnet
            .as_ref()
            .and_then(|d| d.nodes.iter().find(|n| n.peer_id == peer));
        match (known, claimed) {
            (Some(n), _) => n.name.clone(),
            (None, Some(name)) => {
                let short: String = peer.chars().take(16).collect();
                format!("{name} ({short}...)")
            }
            (None, None) => peer.to_owned(),
        }
    }
}

impl NodeArgs {
    /// A client of the node.
    pub fn client(&self) -> anyhow::Result<NodeClient> {
        Ok(self.reach()?.client)
    }

    /// The node, its client and the collector its traces go to.
    pub fn reach(&self) -> anyhow::Result<Reached> {
        let explicit = DevnetFile::find_explicit(self.devnet.as_deref())?;
        let named = explicit.is_some();
        let devnet = explicit.or_else(DevnetFile::find_running);
        let env_api = zerostate_node::settings::env_api(&ProcessEnv)?;
        let base = match (&self.node, &devnet) {
            (Some(given), _) => match zerostate_node::address::base_url(given) {
                Ok(base) => base,
                Err(not_address) => match &devnet {
                    Some(d) => d.node(given).map(devnet_api).with_context(|| {
                        format!(
                            "{not_address}; nor is it a node of the devnet (its nodes: {})",
                            d.nodes
                                .iter()
                                .map(|n| n.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })?,
                    None => anyhow::bail!("{not_address}; and no devnet runs to name it in"),
                },
            },
            (None, Some(d)) if named || env_api.is_none() => d
                .default_node()
                .map(devnet_api)
                .context("the devnet has no edge node")?,
            (None, _) => env_api.unwrap_or_else(|| format!("http://{DEFAULT_API}")),
        };
        // The token is in the data directory of the node reached, when the devnet knows it.
        let in_devnet = devnet.as_ref().and_then(|d| d.node_at(&base));
        let dir = match (&self.data_dir, in_devnet) {
            (Some(flag), _) => flag.clone(),
            (None, Some(node)) => node.data_dir.clone(),
            (None, None) => data::data_dir(None)?,
        };
        let client = NodeClient::new(&base, &dir.join(data::API_TOKEN_FILE))?;
        // The devnet's collector has the node's traces only if the node is the devnet's.
        let devnet_collector = devnet
            .as_ref()
            .filter(|_| in_devnet.is_some())
            .map(devnet_ui);
        let collector = match zerostate_node::settings::env_collector(&ProcessEnv)? {
            Some(c) if !named => Some(c),
            env => devnet_collector.or(env),
        };
        Ok(Reached {
            client,
            collector,
            devnet,
        })
    }
}

fn devnet_api(node: &zerostate_cluster::devnet::DevnetNode) -> String {
    node.api.trim_end_matches('/').to_owned()
}

fn devnet_ui(devnet: &DevnetFile) -> String {
    devnet.collector.ui.trim_end_matches('/').to_owned()
}

/// Which collector: its address, or a devnet's.
#[derive(Debug, Args)]
pub struct CollectorArgs {
    /// The collector's viewer and query API [default: $ZEROSTATE_COLLECTOR, else see --help].
    ///
    /// Without the flag or the variable: a running devnet's collector, else 127.0.0.1:16686.
    #[arg(long, value_name = "ADDR")]
    collector: Option<String>,
    /// The devnet whose collector to use: a directory holding devnet.json [default: see --help].
    ///
    /// Without it, `./devnet.json`, else <data dir>/devnet, if a devnet runs there.
    #[arg(long, value_name = "DIR")]
    devnet: Option<PathBuf>,
}

impl CollectorArgs {
    /// The collector's base URL.
    pub fn url(&self) -> anyhow::Result<String> {
        if let Some(given) = &self.collector {
            return zerostate_node::address::base_url(given)
                .map_err(|e| anyhow::anyhow!("--collector: {e}"));
        }
        Ok(
            known_collector(self.devnet.as_deref())?
                .unwrap_or_else(|| DEFAULT_COLLECTOR.to_owned()),
        )
    }
}

/// The viewer of the collector this process's spans are exported to, when it is known:
/// `ZEROSTATE_COLLECTOR`, else the running devnet whose collector's OTLP address is
/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub fn collector_of_export() -> anyhow::Result<Option<String>> {
    if let Some(c) = zerostate_node::settings::env_collector(&ProcessEnv)? {
        return Ok(Some(c));
    }
    let endpoint = ProcessEnv.var("OTEL_EXPORTER_OTLP_ENDPOINT");
    Ok(DevnetFile::find_running()
        .filter(|d| {
            endpoint.as_deref().map(|e| e.trim_end_matches('/'))
                == Some(d.collector.otlp.trim_end_matches('/'))
        })
        .as_ref()
        .map(devnet_ui))
}

/// The collector a command reads traces from when none is named: `ZEROSTATE_COLLECTOR`,
/// else a running devnet's (`devnet`, else one found); `None` when neither is known.
fn known_collector(devnet: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Some(d) = DevnetFile::find_explicit(devnet)? {
        return Ok(Some(devnet_ui(&d)));
    }
    if let Some(c) = zerostate_node::settings::env_collector(&ProcessEnv)? {
        return Ok(Some(c));
    }
    Ok(DevnetFile::find_running().as_ref().map(devnet_ui))
}
