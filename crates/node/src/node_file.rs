//! A node's configuration file (TOML), and the topic every node joins.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use zerostate_guild::GuildConfig;
use zerostate_p2p::NetworkConfig;
use zerostate_telemetry::TelemetryConfig;

use crate::settings::Env;

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
    #[serde(deserialize_with = "crate::address::deserialize_listen")]
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
    #[serde(deserialize_with = "crate::address::deserialize_listen")]
    pub listen: Option<SocketAddr>,
}

/// The sections whose fields the environment sets, as `ZEROSTATE_<SECTION>_<FIELD>`
/// (`ZEROSTATE_TASKS_MAX_ATTEMPTS=5`). `[test]` is not among them: what makes a node
/// misbehave is never read from the environment.
pub const ENV_SECTIONS: [&str; 7] = [
    "network",
    "telemetry",
    "guild",
    "collector",
    "tasks",
    "payments",
    "admin",
];

impl NodeFile {
    /// Reads the file at `path`, or the defaults when there is none.
    pub fn read(path: Option<&Path>) -> anyhow::Result<Self> {
        Self::load(path, &[] as &[(&str, &str)], &[])
    }

    /// Reads the settings in layers, each over the one before: the file at `path` (none:
    /// every default), then every `ZEROSTATE_<SECTION>_<FIELD>` of `env`, then every
    /// `--set SECTION.FIELD=VALUE` in `sets`. A value is read as TOML (`5`, `true`,
    /// `["a", "b"]`), else as a string. A field no section has, or a value of the wrong
    /// kind, is an error that names the variable or the flag it came from.
    pub fn load(
        path: Option<&Path>,
        env: &(impl Env + ?Sized),
        sets: &[String],
    ) -> anyhow::Result<Self> {
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("{} is not a valid configuration", path.display()))?
            }
            None => toml::Table::new(),
        };
        let mut file = decode(&table).with_context(|| match path {
            Some(path) => format!("{} is not a valid configuration", path.display()),
            None => "the defaults are not a valid configuration".to_owned(),
        })?;
        let mut names = env.names();
        names.sort();
        for name in names {
            let Some((section, field)) = env_setting(&name) else {
                continue;
            };
            let Some(value) = env.var(&name) else {
                continue;
            };
            file = apply(&mut table, section, &field, &value)
                .with_context(|| format!("{name}={value:?} is not valid"))?;
        }
        for item in sets {
            let (key, value) = item
                .split_once('=')
                .with_context(|| format!("--set {item:?}: expected SECTION.FIELD=VALUE"))?;
            let (section, field) = key.trim().split_once('.').with_context(|| {
                format!(
                    "--set {item:?}: expected SECTION.FIELD=VALUE (the settings outside a \
                     section have flags of their own)"
                )
            })?;
            file = apply(&mut table, section, field, value.trim())
                .with_context(|| format!("--set {item:?} is not valid"))?;
        }
        Ok(file)
    }
}

/// The section and field `ZEROSTATE_<SECTION>_<FIELD>` sets, if `name` is one.
fn env_setting(name: &str) -> Option<(&'static str, String)> {
    let rest = name.strip_prefix("ZEROSTATE_")?;
    ENV_SECTIONS.iter().find_map(|&section| {
        let field = rest
            .strip_prefix(section.to_ascii_uppercase().as_str())?
            .strip_prefix('_')?;
        (!field.is_empty()).then(|| (section, field.to_ascii_lowercase()))
    })
}

/// Sets `[section] field` in `table` to `value` read as TOML (`5`, `true`, `["a"]`), or
/// as a string when the field takes no such value (`1.0` as a version); the settings then.
fn apply(
    table: &mut toml::Table,
    section: &str,
    field: &str,
    value: &str,
) -> anyhow::Result<NodeFile> {
    let typed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    let text = toml::Value::String(value.to_owned());
    let Some(typed) = typed.filter(|v| !v.is_str()) else {
        set(table, section, field, text);
        return decode(table);
    };
    set(table, section, field, typed);
    decode(table).or_else(|e| {
        set(table, section, field, text);
        decode(table).map_err(|_| e)
    })
}

/// Sets `[section] field` in `table` to `value`.
fn set(table: &mut toml::Table, section: &str, field: &str, value: toml::Value) {
    let entry = table
        .entry(section.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        *entry = toml::Value::Table(toml::Table::new());
    }
    if let toml::Value::Table(section) = entry {
        section.insert(field.to_owned(), value);
    }
}

/// The settings `table` holds.
fn decode(table: &toml::Table) -> anyhow::Result<NodeFile> {
    NodeFile::deserialize(table.clone()).map_err(|e| anyhow::anyhow!("{}", e.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(items: &[&str]) -> Vec<String> {
        items.iter().map(|&i| i.to_owned()).collect()
    }

    #[test]
    fn every_section_is_set_by_file_then_environment_then_flag() {
        let dir = tempfile_dir();
        let path = dir.join("node.toml");
        std::fs::write(
            &path,
            "[tasks]\nmax_attempts = 4\nprice = 3\n[guild]\nmissed_heartbeats = 5\n",
        )
        .expect("write");
        let env: &[(&str, &str)] = &[
            ("ZEROSTATE_TASKS_MAX_ATTEMPTS", "6"),
            ("ZEROSTATE_PAYMENTS_LEDGER", "12D3KooWLedger"),
            ("ZEROSTATE_GUILD_HEARTBEAT_INTERVAL_MS", "250"),
            ("ZEROSTATE_TELEMETRY_SERVICE_VERSION", "9.9"),
            ("ZEROSTATE_ADMIN_LISTEN", "127.0.0.1:9901"),
            ("ZEROSTATE_NAME", "not a section"),
        ];
        let flags = sets(&["tasks.max_attempts=8", "payments.deposit=777"]);
        let file = NodeFile::load(Some(&path), env, &flags).expect("valid");
        // A flag wins over the environment, which wins over the file.
        assert_eq!(file.tasks.max_attempts, 8);
        assert_eq!(file.tasks.price, 3);
        assert_eq!(file.guild.missed_heartbeats, 5);
        assert_eq!(file.guild.heartbeat_interval_ms, 250);
        assert_eq!(file.payments.ledger.as_deref(), Some("12D3KooWLedger"));
        assert_eq!(file.payments.deposit, Some(777));
        let telemetry = file.telemetry.as_ref().expect("the section was set");
        assert_eq!(telemetry.service_version, "9.9");
        assert_eq!(
            file.admin.listen,
            Some("127.0.0.1:9901".parse().expect("addr"))
        );
        // What a field does not set keeps its default.
        assert_eq!(file.tasks.offer_window_ms, 1000);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_environment_never_makes_a_node_misbehave() {
        let env: &[(&str, &str)] = &[("ZEROSTATE_TEST_MISBEHAVE", "[\"never-pay\"]")];
        let file = NodeFile::load(None, env, &[]).expect("valid");
        assert!(file.test.misbehave.is_empty());
        // The command line may (it is what the harness writes).
        let file =
            NodeFile::load(None, env, &sets(&["test.misbehave=[\"never-pay\"]"])).expect("valid");
        assert_eq!(file.test.misbehave, ["never-pay"]);
    }

    #[test]
    fn a_wrong_setting_names_where_it_came_from() {
        let env: &[(&str, &str)] = &[("ZEROSTATE_TASKS_MAX_ATEMPTS", "6")];
        let err = NodeFile::load(None, env, &[]).expect_err("no such field");
        let text = format!("{err:#}");
        assert!(text.contains("ZEROSTATE_TASKS_MAX_ATEMPTS"), "{text}");
        assert!(text.contains("max_atempts"), "{text}");
        let err = NodeFile::load(None, &[] as &[(&str, &str)], &sets(&["tasks.price=cheap"]))
            .expect_err("not a number");
        assert!(
            format!("{err:#}").contains("--set \"tasks.price=cheap\""),
            "{err:#}"
        );
        for bad in ["price=3", "tasks.price"] {
            let err =
                NodeFile::load(None, &[] as &[(&str, &str)], &sets(&[bad])).expect_err("malformed");
            assert!(
                format!("{err:#}").contains("SECTION.FIELD=VALUE"),
                "{err:#}"
            );
        }
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "zerostate-node-file-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }
}
