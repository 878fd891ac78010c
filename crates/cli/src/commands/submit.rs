//! `zerostate task submit`: a task handed to a node on this machine, which runs it in its
//! guild; waits for it, writes its output to stdout and a summary to stderr.
//!
//! Exit codes: 0 the task succeeded, 1 it failed inside its sandbox (a trap, a limit),
//! 2 usage or bad input (the node refused the submission), 3 no executor delivered.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Args;
use zerostate_market::{TaskRecord, TaskState};

use crate::commands::reach::Reached;

/// How long `task submit` waits for a task to end.
const WAIT: Duration = Duration::from_secs(300);

/// `zerostate task submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The module: a `.wasm` or `.wat` file, or `builtin:NAME` (see `zerostate task builtins`).
    module: String,
    /// The task's input: a file, or `-` for this command's stdin [default: empty].
    #[arg(long)]
    input: Option<String>,
    /// An argument for the program (repeat for more; may start with `-`).
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    args: Vec<String>,
    /// Fuel the task may use [default: 10000000000].
    #[arg(long)]
    fuel: Option<u64>,
    /// Memory limit, for example 64MiB [default: 64MiB].
    #[arg(long, value_parser = zerostate_node::units::parse_size)]
    memory: Option<u64>,
    /// Wall-time limit, for example 10s [default: 10s].
    #[arg(long, value_parser = zerostate_node::units::parse_duration)]
    timeout: Option<Duration>,
    /// Output limit (stdout and output files together), for example 1MiB [default: 1MiB].
    #[arg(long, value_parser = zerostate_node::units::parse_size)]
    max_output: Option<u64>,
    /// The function to call, for a module that is not a built-in [default: _start].
    #[arg(long)]
    entry: Option<String>,
    /// The environment and files.
    #[command(flatten)]
    files: crate::commands::task_files::FileArgs,
    /// The most to pay per million fuel units [default: 1000].
    #[arg(long)]
    max_price: Option<u64>,
    /// The guild to run it in [default: the one guild the node is in].
    #[arg(long)]
    guild: Option<String>,
    /// Which node.
    #[command(flatten)]
    node: crate::commands::channel::NodeArgs,
    /// Print the whole task record as JSON instead of the output.
    #[arg(long)]
    json: bool,
}

impl SubmitArgs {
    /// Submits, waits, reports.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let reached = self.node.reach()?;
        let client = &reached.client;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let mut body = serde_json::json!({});
        body["module"] = match self.module.strip_prefix("builtin:") {
            Some(_) => serde_json::Value::from(self.module.as_str()),
            None => {
                let bytes = std::fs::read(&self.module)
                    .with_context(|| format!("reading the module {}", self.module))?;
                // Uploaded first, and named by its hash: a module of up to 16 MiB.
                let uploaded = runtime.block_on(client.post_bytes("/v1/modules", bytes))?;
                let sha256 = uploaded["sha256"]
                    .as_str()
                    .context("the node's answer to the upload has no sha256")?;
                serde_json::json!({ "sha256": sha256 })
            }
        };
        if let Some(input) = self.input.as_deref() {
            let bytes = if input == "-" {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .context("reading the input from stdin")?;
                buf
            } else {
                std::fs::read(input).with_context(|| format!("reading the input {input}"))?
            };
            body["input_base64"] = serde_json::Value::from(B64.encode(bytes));
        }
        if let Some(fuel) = self.fuel {
            body["fuel"] = fuel.into();
        }
        if !self.args.is_empty() {
            body["args"] = serde_json::json!(self.args);
        }
        if let Some(entry) = &self.entry {
            body["entry"] = entry.as_str().into();
        }
        let env = self.files.env()?;
        if !env.is_empty() {
            body["env"] = serde_json::json!(env);
        }
        let files = self.files.files()?;
        if !files.is_empty() {
            body["files"] = serde_json::json!(zerostate_market::wire::encode_files(&files));
        }
        if self.files.output.is_some() {
            body["output_files"] = true.into();
        }
        let mut limits = serde_json::Map::new();
        if let Some(memory) = self.memory {
            limits.insert("memory_bytes".into(), memory.into());
        }
        if let Some(timeout) = self.timeout {
            let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            limits.insert("wall_time_ms".into(), ms.into());
        }
        if let Some(max) = self.max_output {
            limits.insert("output_bytes".into(), max.into());
        }
        if !limits.is_empty() {
            body["limits"] = limits.into();
        }
        if let Some(price) = self.max_price {
            body["max_price"] = price.into();
        }
        if let Some(guild) = &self.guild {
            body["guild"] = serde_json::Value::from(guild.as_str());
        }
        let record = runtime.block_on(client.run_task(&body, WAIT))?;
        let returned = zerostate_market::wire::decode_files(&record.output_files, "output files")
            .map_err(|e| anyhow::anyhow!("the task's record: {e}"))?;
        self.files.write_output(&returned)?;
        report(&record, self.json, &reached)
    }
}

/// Writes the output (or the record) and the summary, with a link to the trace when a
/// collector is known and executors by name when the devnet knows them; the exit code says
/// how it ended.
pub fn report(record: &TaskRecord, json: bool, reached: &Reached) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    if json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(record)?)?;
    } else if let Some(output) = &record.output {
        stdout.write_all(
            &B64.decode(output)
                .context("the task's output is not base64")?,
        )?;
    }
    stdout.flush()?;
    if !json && let Some(stderr) = &record.stderr {
        // What the program wrote to its stderr, on this command's, before the summary.
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&B64.decode(stderr).unwrap_or_default());
        let _ = err.flush();
    }
    let trace =
        crate::commands::task::trace_and_link(&record.trace_id, reached.collector.as_deref());
    let paid = match &record.payment {
        Some(p) if p.status == "paid" => format!("{} units", p.amount),
        Some(p) => format!(
            "{} ({})",
            p.status,
            p.reason.as_deref().unwrap_or("no reason given")
        ),
        None => "nothing".to_owned(),
    };
    eprintln!(
        "task {}: {} on {}, fuel {}, paid {paid}, {trace}",
        record.id,
        record.state.as_str(),
        record
            .executor
            .as_deref()
            .map_or("no executor".to_owned(), |e| {
                reached.name_of(e, record.executor_name.as_deref())
            }),
        record.receipt.as_ref().map_or(0, |r| r.fuel_consumed),
    );
    if let Some(error) = &record.error {
        eprintln!("  {error}");
    }
    for a in &record.attempts {
        if a.outcome != "delivered" {
            let on = reached.name_of(&a.executor, a.executor_name.as_deref());
            eprintln!("  attempt on {on}: {}", a.outcome);
        }
    }
    // A failure with a receipt happened inside the sandbox; without one, nobody delivered.
    Ok(match record.state {
        TaskState::Succeeded => ExitCode::SUCCESS,
        TaskState::Failed if record.receipt.is_some() => ExitCode::from(1),
        _ => ExitCode::from(3),
    })
}
