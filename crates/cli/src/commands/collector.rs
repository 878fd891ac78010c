//! `zerostate collector`: the embedded trace collector, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use zerostate_collector::Collector;

use zerostate_node::units::{parse_duration, parse_size};

/// Run the trace collector: OTLP/HTTP in, traces kept on disk, a Jaeger api_v3 query API.
#[derive(Debug, Args)]
pub struct CollectorCommand {
    /// OTLP/HTTP listen address [default: 127.0.0.1:4318].
    #[arg(long, value_name = "ADDR", value_parser = zerostate_node::address::listen_addr)]
    otlp_http: Option<SocketAddr>,
    /// Query API listen address [default: 127.0.0.1:16686].
    #[arg(long, value_name = "ADDR", value_parser = zerostate_node::address::listen_addr)]
    ui: Option<SocketAddr>,
    /// How long traces are kept, for example 7d or 12h [default: 7d].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    retention: Option<std::time::Duration>,
    /// Most disk the traces may use, for example 1GiB [default: 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_bytes: Option<u64>,
    /// Data directory; traces are kept in its `traces` folder [default: $ZEROSTATE_DATA_DIR].
    ///
    /// Without the flag or the variable, the file's `data_dir`, else ~/.local/share/zerostate.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Also send every stored batch to this OTLP/HTTP endpoint.
    ///
    /// Jaeger, Tempo, an OpenTelemetry Collector; a base URL gets `/v1/traces`.
    #[arg(long, value_name = "URL")]
    forward: Option<String>,
    /// Configuration file (TOML), the node's format; flags win over it.
    ///
    /// Its `data_dir` and its `[collector]` section are read.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A header sent with every forwarded batch, KEY=VALUE (a backend's token);
    /// repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_header)]
    forward_header: Vec<(String, String)>,
    /// Trust the authorities in this PEM file for the --forward backend, instead of the
    /// system's.
    #[arg(long, value_name = "FILE")]
    forward_ca: Option<PathBuf>,
    /// Serve both listeners over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this authority (PEM), with TLS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Require this bearer token (the file's first line) for OTLP intake.
    #[arg(long, value_name = "FILE")]
    otlp_token_file: Option<PathBuf>,
    /// Require this token (the file's first line) for the query API and the viewer.
    #[arg(long, value_name = "FILE")]
    read_token_file: Option<PathBuf>,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{text:?}: expected KEY=VALUE"))
}

impl CollectorCommand {
    /// Runs the collector until a signal.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let file = zerostate_node::node_file::NodeFile::load(
            self.config.as_deref(),
            &zerostate_node::settings::ProcessEnv,
            &[],
        )?;
        let mut config = file.collector.clone().unwrap_or_default();
        if let Some(a) = self.otlp_http {
            config.otlp_http = a;
        }
        if let Some(a) = self.ui {
            config.ui = a;
        }
        let dir = zerostate_node::settings::resolve_data_dir(
            self.data_dir,
            &zerostate_node::settings::ProcessEnv,
            file.data_dir.clone(),
        )?;
        config.data_dir = dir.join("traces");
        if let Some(r) = self.retention {
            config.retention_secs = r.as_secs().max(1);
        }
        if let Some(m) = self.max_bytes {
            config.max_bytes = m;
        }
        if let Some(url) = self.forward {
            config.forward = Some(url);
        }
        config.forward_headers.extend(self.forward_header);
        if self.forward_ca.is_some() {
            config.forward_certificate = self.forward_ca;
        }
        for (flag, field) in [
            (self.tls_cert, &mut config.tls_cert),
            (self.tls_key, &mut config.tls_key),
            (self.tls_client_ca, &mut config.tls_client_ca),
            (self.otlp_token_file, &mut config.otlp_token_file),
            (self.read_token_file, &mut config.read_token_file),
        ] {
            if flag.is_some() {
                *field = flag;
            }
        }
        let scheme = if config.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        if let Some(url) = &config.forward {
            reqwest::Url::parse(url).with_context(|| format!("--forward {url}"))?;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("zerostate-collector")
            .build()
            .context("starting the async runtime")?;
        let forward = config.forward.clone();
        runtime.block_on(async move {
            let dir = config.data_dir.clone();
            let collector = Collector::start(config)
                .await
                .with_context(|| format!("starting the collector (traces in {})", dir.display()))?;
            zerostate_node::console::say(&zerostate_node::console::Ready {
                collector: Some(zerostate_node::console::CollectorReady {
                    otlp: format!("{scheme}://{}", collector.otlp_addr),
                    ui: format!("{scheme}://{}", collector.ui_addr),
                    data: dir.clone(),
                }),
                ..Default::default()
            });
            eprintln!(
                "collector: OTLP/HTTP on {scheme}://{}, queries on {scheme}://{}/api/v3, traces in {}{}",
                collector.otlp_addr,
                collector.ui_addr,
                dir.display(),
                forward
                    .map(|f| format!(", forwarded to {f}"))
                    .unwrap_or_default()
            );
            zerostate_node::console::shutdown_signal().await?;
            eprintln!("collector: shutting down");
            collector.shutdown().await;
            anyhow::Ok(())
        })?;
        Ok(ExitCode::SUCCESS)
    }
}
