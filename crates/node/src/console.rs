//! What several subcommands share with the terminal: event lines on stdout and the signals
//! that stop them.

use anyhow::Context;

/// Writes one JSON event line on stdout (`{"event": "ready", ...}`). A closed stdout (the
/// reader went away) is not a reason to stop, so errors are ignored.
pub fn say(event: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{event}");
    let _ = out.flush();
}

/// Completes on SIGINT or SIGTERM, or when the parent that started this process as a
/// child (see [`crate::process`]) is gone.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        () = crate::process::parent_gone() => {
            tracing::warn!("the process that started this one is gone; stopping");
        }
    }
    Ok(())
}
