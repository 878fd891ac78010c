//! `zerostate task ...`: run a task on this machine, under the same engine a node uses.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Subcommand};
use zerostate_execution::{Engine, EngineOptions, Manifest, builtin};
use zerostate_telemetry::names::span;
use zerostate_telemetry::{LogFormat, SpanExt, TelemetryConfig};

use zerostate_node::data;
use zerostate_node::units::{parse_duration, parse_size};

/// Tasks.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Run a WebAssembly task here and print its output; its trace id on stderr.
    #[command(
        after_long_help = "Exit codes: 0 succeeded; 1 failed inside its sandbox (a \
                                 trap, a limit, the program's own non-zero exit); 2 usage or \
                                 bad input (a module that is not WebAssembly, an input a \
                                 built-in does not take)."
    )]
    Run(Box<RunArgs>),
    /// Submit a task to a node, which runs it on a member of its guild; print its output.
    #[command(
        after_long_help = "Exit codes: 0 succeeded; 1 failed inside its sandbox (a \
                                 trap, a limit, the program's own non-zero exit); 2 usage or \
                                 bad input (the node refused the submission, or could not be \
                                 reached); 3 no executor delivered (each reason printed)."
    )]
    Submit(Box<crate::commands::submit::SubmitArgs>),
    /// Show a task the node submitted: its output and summary, or its whole record.
    #[command(
        after_long_help = "Exit codes: 0 succeeded; 1 failed inside its sandbox; 2 \
                                 usage, or the node has no such task; 3 no executor \
                                 delivered; 4 it has not ended yet."
    )]
    Show(ShowArgs),
    /// List the tasks this node submitted, newest first (with --json, their records).
    List(ListArgs),
    /// List the built-in tasks.
    Builtins,
    /// Write a new task project: a Rust program for WASI preview 1 that reads stdin and
    /// its input files and writes stdout and an output file, with the commands to build,
    /// run, verify and submit it.
    New(crate::commands::task_new::NewArgs),
}

/// `zerostate task show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The task's id, as `task submit` and `task list` print it.
    id: String,
    /// Print the whole record as JSON (as `GET /v1/tasks/{id}` gives it).
    #[arg(long)]
    json: bool,
    /// Which node.
    #[command(flatten)]
    node: crate::commands::reach::NodeArgs,
}

/// `zerostate task list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// How many tasks, newest first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: u16,
    /// Print the records as a JSON array (as `GET /v1/tasks` gives them).
    #[arg(long)]
    json: bool,
    /// Which node.
    #[command(flatten)]
    node: crate::commands::reach::NodeArgs,
}

/// `zerostate task run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The module: a `.wasm` or `.wat` file, or `builtin:NAME` (see `zerostate task builtins`).
    module: String,
    /// The task's stdin: a file, or `-` for this command's stdin [default: empty].
    #[arg(long)]
    input: Option<String>,
    /// An argument for the task (repeat for more; may start with `-`).
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    args: Vec<String>,
    /// The function to call [default: _start; a built-in's own].
    #[arg(long)]
    entry: Option<String>,
    /// Fuel limit [default: 10000000000].
    #[arg(long)]
    fuel: Option<u64>,
    /// Memory limit, for example 64MiB [default: 64MiB].
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Wall-time limit, for example 10s [default: 10s].
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Output limit (stdout and output files together), for example 1MiB [default: 1MiB].
    #[arg(long, value_parser = parse_size)]
    max_output: Option<u64>,
    /// The environment and files.
    #[command(flatten)]
    files: crate::commands::task_files::FileArgs,
    /// Print a JSON summary instead of the output.
    ///
    /// Output, stderr and output files base64, exit code, receipt.
    #[arg(long)]
    json: bool,
    /// Write the signed receipt (JSON) here.
    #[arg(long)]
    receipt: Option<PathBuf>,
    /// The node key to sign with, created on first use [default: <data dir>/node.key].
    #[arg(long)]
    key: Option<PathBuf>,
    /// The data directory [default: $ZEROSTATE_DATA_DIR, else ~/.local/share/zerostate].
    #[arg(long, visible_alias = "data", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl TaskCommand {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Self::Run(args) => args.run(),
            Self::Submit(args) => args.run(),
            Self::Show(args) => args.run(),
            Self::List(args) => args.run(),
            Self::New(args) => args.run(),
            Self::Builtins => {
                for b in builtin::BUILTINS {
                    println!("builtin:{:<8} {}", b.name, b.description);
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

/// `trace ID`, and where to see it when a collector is known.
pub fn trace_and_link(trace_id: &str, collector: Option<&str>) -> String {
    match collector {
        Some(c) => format!("trace {trace_id} ({c}/trace/{trace_id})"),
        None => format!("trace {trace_id}"),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

impl ShowArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        if self.id.is_empty()
            || self.id.len() > 64
            || !self.id.bytes().all(|b| b.is_ascii_hexdigit())
        {
            anyhow::bail!(
                "{:?} is not a task id (hex digits, as `task list` shows)",
                self.id
            );
        }
        let reached = self.node.reach()?;
        let Some(record) = runtime()?.block_on(reached.client.task(&self.id))? else {
            eprintln!("error: the node has no task {}", self.id);
            return Ok(ExitCode::from(2));
        };
        if !record.state.is_final() {
            if self.json {
                println!("{}", serde_json::to_string_pretty(&record)?);
            } else {
                eprintln!(
                    "task {}: {}, {}",
                    record.id,
                    record.state.as_str(),
                    trace_and_link(&record.trace_id, reached.collector.as_deref())
                );
            }
            return Ok(ExitCode::from(4));
        }
        crate::commands::submit::report(&record, self.json, &reached)
    }
}

impl ListArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        let reached = self.node.reach()?;
        let records: Vec<zerostate_market::TaskRecord> = runtime()?
            .block_on(
                reached
                    .client
                    .get_as(&format!("/v1/tasks?limit={}", self.limit)),
            )?
            .unwrap_or_default();
        let mut stdout = std::io::stdout().lock();
        if self.json {
            writeln!(stdout, "{}", serde_json::to_string_pretty(&records)?)?;
            return Ok(ExitCode::SUCCESS);
        }
        writeln!(
            stdout,
            "{:<16}  {:<9}  {:>9}  {:>12}  {:<32}  executor",
            "task", "state", "ms", "fuel", "trace"
        )?;
        for r in &records {
            writeln!(
                stdout,
                "{:<16}  {:<9}  {:>9}  {:>12}  {:<32}  {}",
                r.id,
                r.state.as_str(),
                r.duration_ms
                    .map_or("-".to_owned(), |ms| format!("{ms:.1}")),
                r.receipt.as_ref().map_or(0, |x| x.fuel_consumed),
                r.trace_id,
                r.executor.as_deref().map_or("-".to_owned(), |e| {
                    reached.name_of(e, r.executor_name.as_deref())
                }),
            )?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl RunArgs {
    fn manifest(&self) -> anyhow::Result<Manifest> {
        let task_id = format!(
            "cli-{}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        );
        let input = match self.input.as_deref() {
            None => Vec::new(),
            Some("-") => {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .context("reading the input from stdin")?;
                buf
            }
            Some(path) => {
                std::fs::read(path).with_context(|| format!("reading the input {path}"))?
            }
        };
        let mut m = match self.module.strip_prefix("builtin:") {
            Some(name) => {
                if let Some(why) = builtin::input_problem(name, &input) {
                    anyhow::bail!("{why}");
                }
                builtin::manifest(name, task_id, input).with_context(|| {
                    format!("no built-in task {name:?} (see `zerostate task builtins`)")
                })?
            }
            None => {
                let module = std::fs::read(&self.module)
                    .with_context(|| format!("reading the module {}", self.module))?;
                let mut m = Manifest::new(task_id, module);
                m.input = input;
                m
            }
        };
        m.args = self.args.clone();
        m.env = self.files.env()?;
        m.files = self.files.files()?;
        m.output_files = self.files.output.is_some();
        if let Some(entry) = &self.entry {
            m.entry = entry.clone();
        }
        if let Some(fuel) = self.fuel {
            m.limits.fuel = fuel;
        }
        if let Some(memory) = self.memory {
            m.limits.memory_bytes = memory;
        }
        if let Some(timeout) = self.timeout {
            m.limits.wall_time_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        }
        if let Some(max) = self.max_output {
            m.limits.output_bytes = max;
        }
        Ok(m)
    }

    fn run(self) -> anyhow::Result<ExitCode> {
        let mut config = TelemetryConfig::from_env().context("reading the OTEL_* settings")?;
        config.service_name = "zerostate-cli".into();
        config.node_role = Some("cli".into());
        // A one-off command exports its trace only when told where to; otherwise a missing
        // collector would be reported on every run.
        let exporting = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
        config.enabled &= exporting;
        if std::env::var_os("RUST_LOG").is_none() {
            config.log_filter = "warn".into();
        }
        if std::env::var_os("ZEROSTATE_LOG_FORMAT").is_none() {
            config.log_format = LogFormat::Pretty;
        }
        let mut telemetry = zerostate_telemetry::init(config).context("starting telemetry")?;

        let dir = data::data_dir(self.data_dir.as_deref())?;
        data::prepare_dir(&dir)?;
        let key_path = self.key.clone().unwrap_or_else(|| dir.join("node.key"));
        let key = data::load_or_create_key(&key_path)?;
        let options = EngineOptions {
            disk_cache: Some(dir.join("modules")),
            ..EngineOptions::default()
        };
        let engine = Engine::new(options, key).context("starting the execution engine")?;
        let manifest = self.manifest()?;

        let submit = tracing::info_span!(span::TASK_SUBMIT, task.id = %manifest.task_id);
        let trace_id = submit.context().map(|c| c.trace_id.to_string());
        let execution = submit.in_scope(|| engine.run(&manifest));
        if let Err(e) = &execution.result {
            submit.record_error(e);
        }
        drop(submit);

        if let Some(path) = &self.receipt {
            std::fs::write(path, execution.receipt.to_json() + "\n")
                .with_context(|| format!("writing the receipt {}", path.display()))?;
        }
        self.files.write_output(&execution.files)?;
        let mut stdout = std::io::stdout().lock();
        if self.json {
            let summary = serde_json::json!({
                "task_id": manifest.task_id,
                "status": execution.receipt.status,
                "error": execution.receipt.error,
                "exit_code": execution.exit_code,
                "output": B64.encode(&execution.output),
                "stderr": B64.encode(&execution.stderr),
                "output_files": zerostate_market::wire::encode_files(&execution.files),
                "receipt": execution.receipt,
            });
            writeln!(stdout, "{}", serde_json::to_string_pretty(&summary)?)
                .context("writing the summary")?;
        } else {
            stdout
                .write_all(&execution.output)
                .context("writing the task's output")?;
        }
        stdout.flush().context("writing the task's output")?;
        // What the program wrote to its stderr (the first 64 KiB), on this command's.
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(&execution.stderr);
        let _ = stderr.flush();
        drop(stderr);
        let _ = telemetry.shutdown();
        // The trace: exported (and so linked) only when an OTLP endpoint is set, to
        // `ZEROSTATE_COLLECTOR` or to the running devnet whose collector it was sent to.
        if let Some(trace_id) = &trace_id {
            let collector = match exporting {
                true => crate::commands::reach::collector_of_export()?,
                false => None,
            };
            eprintln!("{}", trace_and_link(trace_id, collector.as_deref()));
        }
        match execution.result {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("task failed: {e}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
