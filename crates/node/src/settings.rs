//! Where every setting of a node comes from, decided in one place.
//!
//! **Precedence**: a command-line flag, else the environment (`ZEROSTATE_*`), else the
//! configuration file, else the default. A setting that is a list (listen addresses,
//! bootstrap nodes, relays, external addresses, topics, API host names) follows the same
//! rule as a whole: a repeatable flag given at least once **replaces** the list of the
//! environment or the file, it never adds to it. In the environment a list is
//! comma-separated.
//!
//! | setting | flag | environment | file | default |
//! |---|---|---|---|---|
//! | data directory | `--data-dir` | `ZEROSTATE_DATA_DIR` | `data_dir` | `$XDG_DATA_HOME/zerostate`, else `~/.local/share/zerostate` |
//! | name | `--name` | `ZEROSTATE_NAME`, else `OTEL_SERVICE_NAME` | `name` | by role: `bootnode`, `relay-node`, `edge-node` |
//! | role | `--role` | `ZEROSTATE_ROLE` | `[network] role` | `edge` |
//! | API address | `--api` | `ZEROSTATE_API` | `api` | `127.0.0.1:8700` |
//! | API host names | `--api-host` | `ZEROSTATE_API_HOSTS` | `api_hosts` | none |
//! | operations listener | `--admin` | `ZEROSTATE_ADMIN` | `[admin] listen` | `127.0.0.1:8701` |
//! | listen | `--listen` | `ZEROSTATE_LISTEN` | `[network] listen` | TCP and QUIC on 127.0.0.1:4001 |
//! | bootstrap | `--bootstrap` | `ZEROSTATE_BOOTSTRAP` | `[network] bootstrap` | none |
//! | relays | `--relay` | `ZEROSTATE_RELAYS` | `[network] relays` | none |
//! | external | `--external` | `ZEROSTATE_EXTERNAL` | `[network] external` | none |
//! | topics | | `ZEROSTATE_TOPICS` | `topics` | `["zerostate"]` |
//!
//! The `[telemetry]` section is overridden by the standard `OTEL_*` variables (see the
//! tracing guide); the other `[network]` and `[guild]` fields come from the file or their
//! defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::Context;
use zerostate_p2p::{Multiaddr, NetworkConfig, Role};

use crate::node_file::{DEFAULT_TOPIC, NodeFile};

/// The default address of a node's HTTP API.
pub const DEFAULT_API: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8700);

/// The default address of a node's operations listener (`/metrics`, `/healthz`, `/readyz`).
pub const DEFAULT_ADMIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8701);

/// The default address of a collector's viewer and query API.
pub const DEFAULT_COLLECTOR: &str = "http://127.0.0.1:16686";

/// The node API named by `ZEROSTATE_API` (see [`crate::address`]), as a base URL.
pub fn env_api(env: &(impl Env + ?Sized)) -> anyhow::Result<Option<String>> {
    env_url(env, "ZEROSTATE_API")
}

/// The collector named by `ZEROSTATE_COLLECTOR` (its viewer and query API), as a base URL.
pub fn env_collector(env: &(impl Env + ?Sized)) -> anyhow::Result<Option<String>> {
    env_url(env, "ZEROSTATE_COLLECTOR")
}

fn env_url(env: &(impl Env + ?Sized), name: &str) -> anyhow::Result<Option<String>> {
    env.var(name)
        .map(|v| crate::address::base_url(&v).map_err(|e| anyhow::anyhow!("{name}: {e}")))
        .transpose()
}

fn env_listen(env: &(impl Env + ?Sized), name: &str) -> anyhow::Result<Option<SocketAddr>> {
    env.var(name)
        .map(|v| crate::address::listen_addr(&v).map_err(|e| anyhow::anyhow!("{name}: {e}")))
        .transpose()
}

/// The value of the highest source that has one: flag, environment, file, default.
pub fn pick<T>(flag: Option<T>, env: Option<T>, file: Option<T>, default: impl FnOnce() -> T) -> T {
    flag.or(env).or(file).unwrap_or_else(default)
}

/// [`pick`] for a list: an empty flag list means the flag was not given.
pub fn pick_list<T>(
    flag: Vec<T>,
    env: Option<Vec<T>>,
    file: Option<Vec<T>>,
    default: impl FnOnce() -> Vec<T>,
) -> Vec<T> {
    pick((!flag.is_empty()).then_some(flag), env, file, default)
}

/// Reads the environment; tests pass a table instead of the process's environment.
pub trait Env {
    /// The variable's value, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;

    /// The names of every variable set.
    fn names(&self) -> Vec<String>;
}

/// The process's environment.
#[derive(Debug, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    fn names(&self) -> Vec<String> {
        std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .collect()
    }
}

impl Env for [(&str, &str)] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }

    fn names(&self) -> Vec<String> {
        self.iter().map(|(k, _)| (*k).to_owned()).collect()
    }
}

fn parsed<T: FromStr>(env: &(impl Env + ?Sized), name: &str) -> anyhow::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    env.var(name)
        .map(|v| {
            v.parse::<T>()
                .map_err(|e| anyhow::anyhow!("{name}={v:?} is not valid: {e}"))
        })
        .transpose()
}

fn parsed_list<T: FromStr>(env: &(impl Env + ?Sized), name: &str) -> anyhow::Result<Option<Vec<T>>>
where
    T::Err: std::fmt::Display,
{
    env.var(name)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| {
                    item.parse::<T>()
                        .map_err(|e| anyhow::anyhow!("{name}: {item:?} is not valid: {e}"))
                })
                .collect()
        })
        .transpose()
}

/// The flags of `zerostate node` that set a setting of this table, each `None` or empty
/// when not given: declared here once, with their help.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NodeFlags {
    /// Data directory [default: $ZEROSTATE_DATA_DIR, else ~/.local/share/zerostate].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The node's name in traces and logs [default: by role].
    #[arg(long)]
    pub name: Option<String>,
    /// bootnode, relay or edge [default: edge].
    #[arg(long)]
    pub role: Option<Role>,
    /// HTTP API address [default: 127.0.0.1:8700].
    #[arg(long, value_name = "ADDR", value_parser = crate::address::listen_addr)]
    pub api: Option<SocketAddr>,
    /// A name the API accepts in `Host` and `Origin`; repeatable.
    ///
    /// Besides loopback and its address: a reverse proxy's or a DNS name. Adds to the file's
    /// `api_hosts`.
    #[arg(long = "api-host", value_name = "NAME")]
    pub api_hosts: Vec<String>,
    /// Operations listener address: `/metrics`, `/healthz`, `/readyz`, no token
    /// [default: 127.0.0.1:8701].
    #[arg(long, value_name = "ADDR", value_parser = crate::address::listen_addr)]
    pub admin: Option<SocketAddr>,
    /// Listen address, repeatable [default: /ip4/127.0.0.1/tcp/4001 and
    /// /ip4/127.0.0.1/udp/4001/quic-v1].
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,
    /// Node to connect to on start, ending in /p2p/<peer id>; repeatable.
    #[arg(long, value_name = "MULTIADDR")]
    pub bootstrap: Vec<Multiaddr>,
    /// Relay to listen through, ending in /p2p/<peer id>; repeatable.
    #[arg(long = "relay", value_name = "MULTIADDR")]
    pub relays: Vec<Multiaddr>,
    /// Address other nodes reach this one at; repeatable.
    #[arg(long, value_name = "MULTIADDR")]
    pub external: Vec<Multiaddr>,
}

/// Every setting of a node, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSettings {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The node's name, its `service.name`.
    pub name: String,
    /// The HTTP API's address.
    pub api: SocketAddr,
    /// Host names the API answers to besides loopback and its address.
    pub api_hosts: Vec<String>,
    /// The operations listener's address.
    pub admin: SocketAddr,
    /// Gossip topics joined.
    pub topics: Vec<String>,
    /// The network, role and address lists included.
    pub network: NetworkConfig,
}

impl NodeSettings {
    /// Resolves every setting from `flags`, `env` and `file` (see the module's table).
    pub fn resolve(
        flags: NodeFlags,
        env: &(impl Env + ?Sized),
        file: &NodeFile,
    ) -> anyhow::Result<Self> {
        let defaults = NetworkConfig::default();
        // The file's [network] section is parsed with its defaults filled in, so an absent
        // field and the default are the same layer here.
        let net = &file.network;
        let mut network = net.clone();
        network.role = pick(
            flags.role,
            parsed(env, "ZEROSTATE_ROLE")?,
            Some(net.role),
            || defaults.role,
        );
        network.listen = pick_list(
            flags.listen,
            parsed_list(env, "ZEROSTATE_LISTEN")?,
            Some(net.listen.clone()),
            || defaults.listen.clone(),
        );
        network.bootstrap = pick_list(
            flags.bootstrap,
            parsed_list(env, "ZEROSTATE_BOOTSTRAP")?,
            Some(net.bootstrap.clone()),
            Vec::new,
        );
        network.relays = pick_list(
            flags.relays,
            parsed_list(env, "ZEROSTATE_RELAYS")?,
            Some(net.relays.clone()),
            Vec::new,
        );
        network.external = pick_list(
            flags.external,
            parsed_list(env, "ZEROSTATE_EXTERNAL")?,
            Some(net.external.clone()),
            Vec::new,
        );
        let role = network.role;
        let name = pick(
            flags.name,
            env.var("ZEROSTATE_NAME")
                .or_else(|| env.var("OTEL_SERVICE_NAME")),
            file.name.clone(),
            || {
                match role {
                    Role::Bootnode => "bootnode",
                    Role::Relay => "relay-node",
                    Role::Edge => "edge-node",
                }
                .to_owned()
            },
        );
        let data_dir = resolve_data_dir(flags.data_dir, env, file.data_dir.clone())?;
        Ok(Self {
            data_dir,
            name,
            api: pick(
                flags.api,
                env_listen(env, "ZEROSTATE_API")?,
                file.api,
                || DEFAULT_API,
            ),
            api_hosts: pick_list(
                flags.api_hosts,
                parsed_list(env, "ZEROSTATE_API_HOSTS")?,
                file.api_hosts.clone(),
                Vec::new,
            ),
            admin: pick(
                flags.admin,
                env_listen(env, "ZEROSTATE_ADMIN")?,
                file.admin.listen,
                || DEFAULT_ADMIN,
            ),
            topics: pick_list(
                Vec::new(),
                parsed_list(env, "ZEROSTATE_TOPICS")?,
                file.topics.clone(),
                || vec![DEFAULT_TOPIC.to_owned()],
            ),
            network,
        })
    }
}

/// The data directory: the flag, else `ZEROSTATE_DATA_DIR`, else the file's `data_dir`,
/// else [`default_data_dir`].
pub fn resolve_data_dir(
    flag: Option<PathBuf>,
    env: &(impl Env + ?Sized),
    file: Option<PathBuf>,
) -> anyhow::Result<PathBuf> {
    match flag
        .or_else(|| env.var("ZEROSTATE_DATA_DIR").map(PathBuf::from))
        .or(file)
    {
        Some(dir) => Ok(dir),
        None => default_data_dir(env),
    }
}

/// `$XDG_DATA_HOME/zerostate`, else `$HOME/.local/share/zerostate`.
pub fn default_data_dir(env: &(impl Env + ?Sized)) -> anyhow::Result<PathBuf> {
    if let Some(dir) = env.var("XDG_DATA_HOME") {
        return Ok(PathBuf::from(dir).join("zerostate"));
    }
    let home = env
        .var("HOME")
        .context("no data directory: set --data-dir, ZEROSTATE_DATA_DIR or data_dir in the file")?;
    Ok(PathBuf::from(home).join(".local/share/zerostate"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(toml_text: &str) -> NodeFile {
        toml::from_str(toml_text).expect("valid file")
    }

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("multiaddr")
    }

    #[test]
    fn every_setting_follows_flag_then_environment_then_file_then_default() {
        let home: &[(&str, &str)] = &[("HOME", "/home/u")];
        let full = file(
            r#"
            data_dir = "/from/file"
            name = "file-name"
            api = "127.0.0.1:9001"
            api_hosts = ["file.example"]
            topics = ["file-topic"]
            [network]
            role = "relay"
            listen = ["/ip4/127.0.0.1/tcp/7001"]
            bootstrap = ["/ip4/127.0.0.1/tcp/7002"]
            relays = ["/ip4/127.0.0.1/tcp/7003"]
            external = ["/ip4/127.0.0.1/tcp/7004"]
            [admin]
            listen = "127.0.0.1:9101"
            "#,
        );
        let env: &[(&str, &str)] = &[
            ("HOME", "/home/u"),
            ("ZEROSTATE_DATA_DIR", "/from/env"),
            ("ZEROSTATE_NAME", "env-name"),
            ("ZEROSTATE_ROLE", "bootnode"),
            ("ZEROSTATE_API", "127.0.0.1:9002"),
            ("ZEROSTATE_API_HOSTS", "env.example,other.example"),
            ("ZEROSTATE_ADMIN", "127.0.0.1:9102"),
            ("ZEROSTATE_LISTEN", "/ip4/127.0.0.1/tcp/8001"),
            ("ZEROSTATE_BOOTSTRAP", "/ip4/127.0.0.1/tcp/8002"),
            ("ZEROSTATE_RELAYS", "/ip4/127.0.0.1/tcp/8003"),
            ("ZEROSTATE_EXTERNAL", "/ip4/127.0.0.1/tcp/8004"),
            ("ZEROSTATE_TOPICS", "env-topic"),
        ];
        let flags = NodeFlags {
            data_dir: Some("/from/flag".into()),
            name: Some("flag-name".into()),
            role: Some(Role::Edge),
            api: Some("127.0.0.1:9003".parse().expect("addr")),
            api_hosts: vec!["flag.example".into()],
            admin: Some("127.0.0.1:9103".parse().expect("addr")),
            listen: vec![addr("/ip4/127.0.0.1/tcp/9001")],
            bootstrap: vec![addr("/ip4/127.0.0.1/tcp/9002")],
            relays: vec![addr("/ip4/127.0.0.1/tcp/9003")],
            external: vec![addr("/ip4/127.0.0.1/tcp/9004")],
        };

        // The layers given, named by the one every setting must come from.
        type Row<'a> = (&'a str, NodeFlags, &'a [(&'a str, &'a str)], &'a NodeFile);
        let rows: [Row<'_>; 4] = [
            ("flag", flags.clone(), env, &full),
            ("environment", NodeFlags::default(), env, &full),
            ("file", NodeFlags::default(), home, &full),
            ("default", NodeFlags::default(), home, &NodeFile::default()),
        ];
        for (layer, flags, env, file) in rows {
            let s = NodeSettings::resolve(flags, env, file).expect("resolves");
            let (dir, name, role, api, host, port, topic) = match layer {
                "flag" => (
                    "/from/flag",
                    "flag-name",
                    Role::Edge,
                    9003,
                    "flag.example",
                    9001,
                    "env-topic",
                ),
                "environment" => (
                    "/from/env",
                    "env-name",
                    Role::Bootnode,
                    9002,
                    "env.example",
                    8001,
                    "env-topic",
                ),
                "file" => (
                    "/from/file",
                    "file-name",
                    Role::Relay,
                    9001,
                    "file.example",
                    7001,
                    "file-topic",
                ),
                _ => (
                    "/home/u/.local/share/zerostate",
                    "edge-node",
                    Role::Edge,
                    8700,
                    "",
                    4001,
                    "zerostate",
                ),
            };
            assert_eq!(s.data_dir, PathBuf::from(dir), "{layer}");
            assert_eq!(s.name, name, "{layer}");
            assert_eq!(s.network.role, role, "{layer}");
            assert_eq!(s.api.port(), api, "{layer}");
            let admin = if layer == "default" { 8701 } else { api + 100 };
            assert_eq!(s.admin.port(), admin, "{layer}");
            assert_eq!(
                s.api_hosts.first().map_or("", String::as_str),
                host,
                "{layer}"
            );
            assert_eq!(s.topics, [topic], "{layer}");
            // Lists are replaced whole by the higher layer, never merged.
            let first = s.network.listen[0].to_string();
            assert!(first.contains(&port.to_string()), "{layer}: {first}");
            if layer != "default" {
                assert_eq!(s.network.listen.len(), 1, "{layer}");
                for (list, offset) in [
                    (&s.network.bootstrap, 1),
                    (&s.network.relays, 2),
                    (&s.network.external, 3),
                ] {
                    assert_eq!(list.len(), 1, "{layer}");
                    assert!(
                        list[0].to_string().contains(&(port + offset).to_string()),
                        "{layer}"
                    );
                }
            } else {
                assert!(s.network.bootstrap.is_empty() && s.network.relays.is_empty());
            }
        }
    }

    #[test]
    fn otel_service_name_beats_the_default_name_but_not_a_given_one() {
        let env: &[(&str, &str)] = &[("HOME", "/h"), ("OTEL_SERVICE_NAME", "from-otel")];
        let s = NodeSettings::resolve(NodeFlags::default(), env, &NodeFile::default())
            .expect("resolves");
        assert_eq!(s.name, "from-otel");
        let both: &[(&str, &str)] = &[
            ("HOME", "/h"),
            ("OTEL_SERVICE_NAME", "from-otel"),
            ("ZEROSTATE_NAME", "from-zerostate"),
        ];
        let s = NodeSettings::resolve(NodeFlags::default(), both, &NodeFile::default())
            .expect("resolves");
        assert_eq!(s.name, "from-zerostate");
    }

    #[test]
    fn a_bad_environment_value_is_an_error_naming_the_variable() {
        let env: &[(&str, &str)] = &[("HOME", "/h"), ("ZEROSTATE_ROLE", "captain")];
        let err = NodeSettings::resolve(NodeFlags::default(), env, &NodeFile::default())
            .expect_err("refused");
        assert!(err.to_string().contains("ZEROSTATE_ROLE"), "{err}");
    }
}
