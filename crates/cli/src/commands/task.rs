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
    /// Run a WebAssembly task here and print its output.
    Run(Box<RunArgs>),
    /// Submit a task to a node, which runs it on a member of its guild; print its output.
    /// Exit 0 succeeded, 1 failed inside its sandbox, 2 usage or bad input, 3 no executor
    /// delivered.
    Submit(Box<crate::commands::submit::SubmitArgs>),
    /// List the built-in tasks.
    Builtins,
    /// Write a new task project: a Rust program for WASI preview 1 that reads stdin and
    /// its input files and writes stdout and an output file, with the commands to build,
    /// run, verify and submit it.
    New(crate::commands::task_new::NewArgs),
}

/// `zerostate task run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The module: a `.wasm` or `.wat` file, or `builtin:NAME` (see `zerostate task builtins`).
    module: String,
    /// The task's stdin: a file, or `-` for this command's stdin. Default: empty.
    #[arg(long)]
    input: Option<String>,
    /// An argument for the task (repeat for more; may start with `-`).
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    args: Vec<String>,
    /// The function to call. Default `_start` (a built-in's own name for built-ins).
    #[arg(long)]
    entry: Option<String>,
    /// Fuel limit. Default 10,000,000,000.
    #[arg(long)]
    fuel: Option<u64>,
    /// Memory limit, for example 64MiB. Default 64MiB.
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Wall-time limit, for example 10s. Default 10s.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Output limit (stdout and output files together), for example 1MiB. Default 1MiB.
    #[arg(long, value_parser = parse_size)]
    max_output: Option<u64>,
    /// The environment and files.
    #[command(flatten)]
    files: crate::commands::task_files::FileArgs,
    /// Print a JSON summary (output, stderr and output files base64, exit code, receipt)
    /// instead of the output.
    #[arg(long)]
    json: bool,
    /// Write the signed receipt (JSON) here.
    #[arg(long)]
    receipt: Option<PathBuf>,
    /// The node key to sign with. Default `<data dir>/node.key`, created on first use.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The data directory. Default `$ZEROSTATE_DATA_DIR`, else `~/.local/share/zerostate`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl TaskCommand {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Self::Run(args) => args.run(),
            Self::Submit(args) => args.run(),
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
            Some(name) => builtin::manifest(name, task_id, input).with_context(|| {
                format!("no built-in task {name:?} (see `zerostate task builtins`)")
            })?,
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
        config.enabled &= [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
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
        match execution.result {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("task failed: {e}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
