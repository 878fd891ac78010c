//! Integration tests of the `zerostate` binary, run as a real process.

mod api;
mod chaos;
mod cluster;
mod collector;
mod convergence;
mod devnet;
mod guild;
mod journey;
mod market;
mod network;
mod operations;
mod receipt;
mod task;
mod tls;

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `zerostate` with `args` and `stdin`, its data under `data`.
pub(crate) fn zerostate(data: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zerostate"))
        .args(args)
        .env("ZEROSTATE_DATA_DIR", data)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("zerostate starts");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("zerostate finishes")
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
