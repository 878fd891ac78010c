//! `zerostate node`: run a node (bootnode, relay or edge) until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use zerostate_node::data;
use zerostate_node::node_file::NodeFile;
use zerostate_node::runtime::GuildTarget;
use zerostate_node::runtime::Plan;
use zerostate_node::settings::{NodeFlags, NodeSettings, ProcessEnv};

/// Run a node until SIGINT or SIGTERM.
#[derive(Debug, Args)]
pub struct NodeCommand {
    /// Configuration file (TOML); flags win over it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Any setting of the file, as `SECTION.FIELD=VALUE` (`tasks.max_attempts=5`); repeatable.
    ///
    /// The value is TOML, else a string (`payments.ledger=12D3Koo...`); it wins over
    /// `ZEROSTATE_<SECTION>_<FIELD>`, which wins over the file.
    #[arg(long = "set", value_name = "SECTION.FIELD=VALUE")]
    sets: Vec<String>,
    #[command(flatten)]
    flags: NodeFlags,
    /// Log lines: `pretty`, `json` or `off` [default: $ZEROSTATE_LOG_FORMAT, else pretty].
    ///
    /// Without the flag or the variable, the file's `[telemetry] log_format`, else `pretty` text.
    #[arg(long, value_name = "FORMAT", value_parser = parse_log_format)]
    log_format: Option<zerostate_telemetry::LogFormat>,
    /// Create a guild with this name on start, coordinated by this node.
    #[arg(long, value_name = "NAME")]
    create_guild: Option<String>,
    /// Join a guild on start: GUILD_ID@COORDINATOR; retried until the coordinator answers.
    ///
    /// The coordinator is a peer id or an address ending in /p2p/<peer id>.
    #[arg(long, value_name = "ID@COORDINATOR")]
    join_guild: Option<GuildTarget>,
    /// The coordinator's invitation for `--join-guild` (`zsinv1...`).
    ///
    /// From `zerostate guild invite`; needed by a guild that admits by invitation (the default).
    #[arg(long, value_name = "TOKEN", requires = "join_guild", value_parser = parse_invitation)]
    invitation: Option<zerostate_guild::Invitation>,
    /// Run the payment ledger (`<data dir>/ledger.db`) for the other nodes.
    #[arg(long)]
    ledger: bool,
    /// Devnet only: let this node's API credit accounts on its ledger
    /// (`POST /v1/ledger/faucet`).
    #[arg(long, requires = "ledger")]
    ledger_faucet: bool,
    /// The peer id of the node that runs the ledger (sets `[payments] ledger`).
    #[arg(long, value_name = "PEER_ID")]
    ledger_peer: Option<String>,
    /// Tests only: make this node misbehave; repeatable, replaces `[test] misbehave`.
    ///
    /// One of: forge-receipts, stall-answers=MS, inflate-fuel, fake-output, overprice,
    /// tamper-chunks, drop-chunk-connection=N, withhold-payment-acks=N, never-pay,
    /// skip-ledger-open, close-on-nothing, withhold-membership, take-over-at-once.
    #[arg(long, value_name = "ITEM")]
    misbehave: Vec<String>,
}

fn parse_log_format(text: &str) -> Result<zerostate_telemetry::LogFormat, String> {
    match text {
        "pretty" => Ok(zerostate_telemetry::LogFormat::Pretty),
        "json" => Ok(zerostate_telemetry::LogFormat::Json),
        "off" => Ok(zerostate_telemetry::LogFormat::Off),
        other => Err(format!("{other:?}: expected pretty, json or off")),
    }
}

fn parse_invitation(token: &str) -> Result<zerostate_guild::Invitation, String> {
    zerostate_guild::Invitation::from_token(token)
}

impl NodeCommand {
    /// Runs the node.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let file = NodeFile::load(self.config.as_deref(), &ProcessEnv, &self.sets)?;
        let settings = NodeSettings::resolve(self.flags.clone(), &ProcessEnv, &file)?;
        let NodeSettings {
            data_dir: dir,
            name,
            api: api_addr,
            api_hosts,
            admin: admin_addr,
            topics,
            network,
        } = settings;
        network
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid network configuration: {e}"))?;
        data::prepare_dir(&dir)?;
        let misbehave =
            zerostate_node::misbehave::Misbehaviour::parse(if self.misbehave.is_empty() {
                &file.test.misbehave
            } else {
                &self.misbehave
            })
            .map_err(anyhow::Error::msg)?;
        let seed = data::load_or_create_seed(&dir.join("node.key"))?;
        let token_file = dir.join(data::API_TOKEN_FILE);
        let token = data::load_or_create_api_token(&token_file)?;
        let key = zerostate_p2p::keypair_from_seed(seed);
        let peer_id = key.public().to_peer_id();
        file.tasks
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid [tasks] settings: {e}"))?;
        let engine = zerostate_execution::Engine::new(
            zerostate_execution::EngineOptions {
                disk_cache: Some(dir.join("modules")),
                ..zerostate_execution::EngineOptions::default()
            },
            zerostate_execution::ExecutorKey::from_seed(seed),
        )
        .context("starting the execution engine")?;

        let mut telemetry = file.telemetry.clone().unwrap_or_default();
        telemetry
            .apply_env()
            .context("reading the OTEL_* settings")?;
        // A node exports only when told where to, until the embedded collector exists.
        telemetry.enabled &= [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
            || file.telemetry.is_some();
        if std::env::var_os("RUST_LOG").is_none() && telemetry.log_filter == "info" {
            // libp2p reports routine events (a bootnode with no peers yet) at info and warn.
            telemetry.log_filter = "info,libp2p=warn,libp2p_kad=error".into();
        }
        if let Some(format) = self.log_format {
            telemetry.log_format = format;
        }
        telemetry.service_name = name.clone();
        // Spans the collector did not take wait in the data directory (see the tracing
        // guide), unless the file names another place.
        telemetry.spool_dir.get_or_insert_with(|| dir.join("spool"));
        telemetry.instance_id = Some(peer_id.to_string());
        telemetry.node_role = Some(network.role.to_string());
        telemetry
            .resource_attributes
            .entry("service.namespace".into())
            .or_insert_with(|| "zerostate".into());
        let mut guard = zerostate_telemetry::init(telemetry).context("starting telemetry")?;
        let telemetry = guard.stats_reader();

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("zerostate-node")
            .build()
            .context("starting the async runtime")?;
        let plan = Plan {
            network,
            key,
            name,
            api: api_addr,
            admin: admin_addr,
            telemetry,
            access: (token, api_hosts, token_file),
            topics,
            guild: zerostate_guild::GuildConfig {
                withhold_membership_updates: misbehave.withhold_membership,
                take_over_without_waiting: misbehave.take_over_at_once,
                ..file.guild.clone()
            },
            tasks: file.tasks.clone(),
            payments: zerostate_payment_protocol::PaymentSettings {
                ledger: self
                    .ledger_peer
                    .clone()
                    .or_else(|| file.payments.ledger.clone())
                    .or_else(|| self.ledger.then(|| peer_id.to_string())),
                ..file.payments.clone()
            },
            ledger: (self.ledger, self.ledger_faucet, dir.clone(), seed),
            engine: std::sync::Arc::new(engine),
            create_guild: self.create_guild.clone(),
            join_guild: self.join_guild.clone().map(|target| GuildTarget {
                invitation: self.invitation.clone(),
                ..target
            }),
            misbehave,
        };
        let result = runtime.block_on(zerostate_node::runtime::serve(plan));
        drop(runtime);
        if let Err(e) = guard.shutdown() {
            eprintln!("warning: flushing telemetry on shutdown: {e}");
        }
        // The span export's final account, after the last flush: what a harness compares
        // with what its collector stored.
        let spans = guard.stats();
        zerostate_node::console::say(&serde_json::json!({
            "event": "stopped",
            "spans": {
                "made": spans.spans_made(),
                "exported": spans.spans_exported,
                "dropped": spans.spans_dropped,
                "export_failed": spans.spans_failed,
                "spooled": spans.spool_spans,
                "resent": spans.spans_resent,
                "spool_lost": spans.spans_spool_lost,
                "spool_found": spans.spool_found,
                "sampled_out": spans.spans_sampled_out,
            },
        }));
        result.map(|()| ExitCode::SUCCESS)
    }
}
