//! `zerostate receipt ...`: check receipts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use zerostate_execution::Receipt;

/// Receipts.
#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// Check a receipt's signature, and the hashes of whatever files are given.
    Verify(VerifyArgs),
}

/// `zerostate receipt verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The receipt (JSON).
    file: PathBuf,
    /// The module, to check its hash.
    #[arg(long)]
    module: Option<PathBuf>,
    /// The input, to check its hash.
    #[arg(long)]
    input: Option<PathBuf>,
    /// The output, to check its hash.
    #[arg(long)]
    output: Option<PathBuf>,
}

impl ReceiptCommand {
    /// Runs the command: exit 0 only for an intact receipt.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let Self::Verify(args) = self;
        let read = |p: &Option<PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
            p.as_ref()
                .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
                .transpose()
        };
        let bytes = std::fs::read(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?;
        let (module, input, output) =
            (read(&args.module)?, read(&args.input)?, read(&args.output)?);
        let checked = Receipt::from_json(&bytes).and_then(|r| {
            r.verify_with(module.as_deref(), input.as_deref(), output.as_deref())
                .map(|()| r)
        });
        match checked {
            Ok(r) => {
                println!(
                    "receipt intact: task {} ran by {} ({}), fuel {}, trace {}",
                    r.task_id,
                    r.executor,
                    r.error.as_deref().unwrap_or(&r.status),
                    r.fuel_consumed,
                    if r.trace_id.is_empty() {
                        "-"
                    } else {
                        &r.trace_id
                    }
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("receipt invalid: {e}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
