//! `zerostate receipt ...`: check receipts, and the work they claim.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use zerostate_execution::{Engine, EngineOptions, ExecutorKey, Manifest, Receipt, builtin};

/// Receipts.
#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// Check a receipt's signature and the hashes of the files given; rerun it with --rerun.
    ///
    /// With `--rerun`, the task runs again and its output and fuel are compared with the
    /// receipt's.
    #[command(
        after_long_help = "Exit codes: 0 the receipt holds (and, with --rerun, the \
                                 rerun matches it); 1 it does not (what differs is printed); \
                                 2 the rerun is not comparable (the receipt names another \
                                 engine, or none) or the command was used wrongly."
    )]
    Verify(VerifyArgs),
}

/// `zerostate receipt verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The receipt (JSON).
    file: PathBuf,
    /// The module, to check its hash: a `.wasm` or `.wat` file, or `builtin:NAME`.
    #[arg(long, value_name = "MODULE")]
    module: Option<String>,
    /// The input, to check its hash.
    #[arg(long)]
    input: Option<PathBuf>,
    /// The output, to check its hash.
    #[arg(long)]
    output: Option<PathBuf>,
    /// An input file the task was given, as `task run` takes it; repeatable.
    ///
    /// Together their hash is checked against the receipt's.
    #[arg(long = "file", value_name = "NAME=PATH")]
    files: Vec<String>,
    /// The directory of the task's output files, to check their hash.
    ///
    /// As `--output` of `task run` or `task submit` wrote them.
    #[arg(long, value_name = "DIR")]
    output_files: Option<PathBuf>,
    /// Run the task again and compare output, output files and fuel with the receipt's.
    ///
    /// Needs `--module`, `--input` unless the input was empty, and the `--file`s it was given; it
    /// runs under the receipt's entry, arguments, environment and limits.
    #[arg(long, requires = "module")]
    rerun: bool,
}

impl ReceiptCommand {
    /// Runs the command: exit 0 only for an intact receipt (and a matching rerun).
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let Self::Verify(args) = self;
        let read = |p: &Option<PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
            p.as_ref()
                .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
                .transpose()
        };
        let bytes = std::fs::read(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?;
        let module = args.module.as_deref().map(read_module).transpose()?;
        let (input, output) = (read(&args.input)?, read(&args.output)?);
        let checked = Receipt::from_json(&bytes).and_then(|r| {
            r.verify_with(
                module.as_ref().map(|(bytes, _)| &bytes[..]),
                input.as_deref(),
                output.as_deref(),
            )
            .map(|()| r)
        });
        let receipt = match checked {
            Ok(r) => r,
            Err(e) => {
                eprintln!("receipt invalid: {e}");
                return Ok(ExitCode::FAILURE);
            }
        };
        let files = crate::commands::task_files::read_files(&args.files)?;
        let mut trees = vec![("input files", &receipt.files_sha256, files.clone())];
        if let Some(dir) = &args.output_files {
            let tree = crate::commands::task_files::read_tree(dir)?;
            trees.push(("output files", &receipt.output_files_sha256, tree));
        }
        for (what, stated, tree) in trees {
            let given = !tree.is_empty() || what == "output files";
            let hash = if tree.is_empty() && what == "input files" {
                String::new()
            } else {
                zerostate_execution::tree_sha256(&tree)
            };
            if given && hash != *stated {
                eprintln!(
                    "receipt invalid: the {what} given hash to {hash}, the receipt states {stated:?}"
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        println!(
            "receipt intact: task {} ran by {} ({}), fuel {}, trace {}",
            receipt.task_id,
            receipt.executor,
            receipt.error.as_deref().unwrap_or(&receipt.status),
            receipt.fuel_consumed,
            if receipt.trace_id.is_empty() {
                "-"
            } else {
                &receipt.trace_id
            }
        );
        if !args.rerun {
            return Ok(ExitCode::SUCCESS);
        }
        let Some((module, _)) = module else {
            anyhow::bail!("--rerun needs --module");
        };
        rerun(&receipt, module, input, files)
    }
}

/// A module from a file, or a built-in by name; with the built-in's entry, if it is one.
fn read_module(arg: &str) -> anyhow::Result<(Vec<u8>, Option<String>)> {
    match arg.strip_prefix("builtin:") {
        Some(name) => {
            let m = builtin::manifest(name, "", Vec::new()).with_context(|| {
                format!("no built-in task {name:?} (see `zerostate task builtins`)")
            })?;
            Ok((m.module, Some(m.entry)))
        }
        None => Ok((
            std::fs::read(arg).with_context(|| format!("reading the module {arg}"))?,
            None,
        )),
    }
}

/// Runs the receipt's task again in an engine of this build and compares.
fn rerun(
    receipt: &Receipt,
    module: Vec<u8>,
    input: Option<Vec<u8>>,
    files: std::collections::BTreeMap<String, Vec<u8>>,
) -> anyhow::Result<ExitCode> {
    if files.is_empty() && !receipt.files_sha256.is_empty() {
        anyhow::bail!("--rerun needs the task's input files (--file NAME=PATH)");
    }
    let input = match input {
        Some(input) => input,
        None if receipt.input_sha256 == hex::encode(zerostate_execution::sha256(b"")) => Vec::new(),
        None => anyhow::bail!("--rerun needs --input: the task's input was not empty"),
    };
    // The rerun signs nothing anyone keeps: a key of its own.
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("the system's random source: {e}"))?;
    let engine = Engine::new(EngineOptions::default(), ExecutorKey::from_seed(seed))
        .context("starting the execution engine")?;
    if receipt.engine != engine.id() {
        let named = if receipt.engine.is_empty() {
            "no engine (a receipt from before engines were named)".to_owned()
        } else {
            format!("engine {}", receipt.engine)
        };
        eprintln!(
            "rerun not comparable: the receipt names {named}, this build runs {}",
            engine.id()
        );
        return Ok(ExitCode::from(2));
    }
    let mut manifest = Manifest::new(receipt.task_id.clone(), module);
    manifest.entry = receipt.entry.clone();
    manifest.args = receipt.args.clone();
    manifest.env = receipt.env.clone();
    manifest.files = files;
    manifest.output_files = !receipt.output_files_sha256.is_empty();
    manifest.limits = receipt.limits;
    manifest.input = input;
    let mine = engine.run(&manifest).receipt;
    let mut differs = Vec::new();
    for (what, claimed, got) in [
        ("status", receipt.status.clone(), mine.status.clone()),
        (
            "output SHA-256",
            receipt.output_sha256.clone(),
            mine.output_sha256.clone(),
        ),
        (
            "output files SHA-256",
            receipt.output_files_sha256.clone(),
            mine.output_files_sha256.clone(),
        ),
        (
            "fuel",
            receipt.fuel_consumed.to_string(),
            mine.fuel_consumed.to_string(),
        ),
    ] {
        if claimed != got {
            differs.push(format!(
                "{what}: the receipt says {claimed}, the rerun {got}"
            ));
        }
    }
    let cut_off = mine
        .error
        .as_deref()
        .is_some_and(|e| e.starts_with("wall_time_exceeded"));
    if differs.is_empty() {
        println!(
            "rerun matches: output {}, fuel {}",
            mine.output_sha256, mine.fuel_consumed
        );
        Ok(ExitCode::SUCCESS)
    } else if cut_off {
        eprintln!(
            "rerun not comparable: it was cut off by the wall-time limit ({} ms), so how far \
             it got depends on the machine",
            receipt.limits.wall_time_ms
        );
        Ok(ExitCode::from(2))
    } else {
        for d in &differs {
            eprintln!("rerun differs: {d}");
        }
        Ok(ExitCode::FAILURE)
    }
}
