//! A node's configuration file (TOML), and the topic every node joins.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use zerostate_guild::GuildConfig;
use zerostate_p2p::NetworkConfig;
use zerostate_telemetry::TelemetryConfig;

/// Topic every node subscribes to.
pub const DEFAULT_TOPIC: &str = "zerostate";

/// A node's configuration file (TOML). Every field says its default; flags override the
/// file, and the `OTEL_*` environment overrides `[telemetry]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeFile {
    /// The data directory. Default `$XDG_DATA_HOME/zerostate`, else
    /// `~/.local/share/zerostate`.
    pub data_dir: Option<PathBuf>,
    /// The node's name, its `service.name` in traces. Default: by role, `bootnode`,
    /// `relay-node` or `edge-node`.
    pub name: Option<String>,
    /// Address of the node's HTTP API. Default `127.0.0.1:8700`.
    pub api: Option<SocketAddr>,
    /// Names besides loopback and the bound address that the API accepts in `Host` and
    /// `Origin` (for a reverse proxy or a DNS name). Default none.
    pub api_hosts: Option<Vec<String>>,
    /// Gossip topics to join. Default `["zerostate"]`.
    pub topics: Option<Vec<String>>,
    /// The network (`[network]`): role, listen, bootstrap, relays and limits.
    pub network: NetworkConfig,
    /// Telemetry (`[telemetry]`); see the tracing guide.
    pub telemetry: Option<TelemetryConfig>,
    /// Guilds (`[guild]`): heartbeats, admission limits.
    pub guild: GuildConfig,
    /// The collector (`[collector]`), read by `zerostate collector`; its `data_dir` field is
    /// ignored there: the collector keeps traces in `<data dir>/traces`.
    pub collector: Option<zerostate_collector::CollectorConfig>,
    /// Tasks (`[tasks]`): offers, attempts, what this node runs for others.
    pub tasks: zerostate_market::TaskSettings,
    /// Payments (`[payments]`): which node runs the ledger, the channel deposit.
    pub payments: zerostate_payment_protocol::PaymentSettings,
    /// The operations listener (`[admin]`).
    pub admin: AdminSettings,
    /// What tests make this node do wrong (`[test]`); default nothing.
    pub test: crate::misbehave::TestSettings,
}

/// The operations listener (`[admin]`): `/metrics`, `/healthz`, `/readyz`, no token.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Its address. Default `127.0.0.1:8701`.
    pub listen: Option<SocketAddr>,
}

impl NodeFile {
    /// Reads the file at `path`, or the defaults when there is none.
    pub fn read(path: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("{} is not a valid configuration", path.display()))
    }
}
