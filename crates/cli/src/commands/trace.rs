//! `zerostate trace list` and `zerostate trace show`: traces from a collector's query API,
//! drawn in the terminal.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use zerostate_collector::text::{duration, fetch, render};

/// Read traces from a collector.
#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// List recent traces.
    List(ListArgs),
    /// Draw one trace as a tree: each span, its duration, and the node it ran on.
    #[command(
        after_long_help = "Exit codes: 0 drawn; 1 the collector has no such trace; 2 \
                                 usage, or the collector could not be reached."
    )]
    Show(ShowArgs),
}

/// `trace list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    collector: crate::commands::reach::CollectorArgs,
    /// Only traces with spans of this service.
    #[arg(long)]
    service: Option<String>,
    /// Only traces with spans of this name.
    #[arg(long)]
    operation: Option<String>,
    /// Most traces listed.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

/// `trace show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    collector: crate::commands::reach::CollectorArgs,
    /// The trace id (32 hex digits).
    trace_id: String,
    /// Print the trace as OTLP JSON instead of a tree.
    #[arg(long)]
    json: bool,
}

impl TraceCommand {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        runtime.block_on(async move {
            match self {
                TraceCommand::List(a) => list(a).await,
                TraceCommand::Show(a) => show(a).await,
            }
        })
    }
}

async fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let mut url = format!(
        "{}/api/zerostate/traces?query.searchDepth={}",
        a.collector.url()?,
        a.limit
    );
    if let Some(s) = &a.service {
        url.push_str(&format!("&query.serviceName={}", encode(s)));
    }
    if let Some(o) = &a.operation {
        url.push_str(&format!("&query.operationName={}", encode(o)));
    }
    let body = fetch(&url).await?.unwrap_or_default();
    let traces = body["traces"].as_array().cloned().unwrap_or_default();
    if traces.is_empty() {
        println!("no traces");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<32}  {:>6}  {:>10}  {:>6}  root",
        "trace id", "spans", "duration", "errors"
    );
    for t in traces {
        println!(
            "{:<32}  {:>6}  {:>10}  {:>6}  {} @ {}",
            t["traceId"].as_str().unwrap_or(""),
            t["spans"].as_u64().unwrap_or(0),
            duration(t["durationNs"].as_u64().unwrap_or(0)),
            t["errors"].as_u64().unwrap_or(0),
            t["root"].as_str().unwrap_or(""),
            t["service"].as_str().unwrap_or(""),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn show(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let url = format!("{}/api/v3/traces/{}", a.collector.url()?, a.trace_id);
    let Some(body) = fetch(&url).await? else {
        eprintln!("trace {} not found", a.trace_id);
        return Ok(ExitCode::from(1));
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&body["result"])?);
    } else {
        print!("{}", render(&body["result"]));
    }
    Ok(ExitCode::SUCCESS)
}
