//! The `zerostate` command.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = zerostate::Cli::parse();
    match cli.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
