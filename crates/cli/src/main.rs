//! The `zerostate` command.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = zerostate::Cli::from_args();
    match cli.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
