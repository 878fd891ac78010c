//! Integration tests of the `zerostate` binary, run as a real process.

mod api;
mod chaos;
mod cluster;
mod collector;
mod convergence;
mod devnet;
mod docs;
mod guild;
mod journey;
mod market;
mod network;
mod operations;
mod receipt;
mod settlement;
mod skew;
mod task;
mod tls;
mod transfer;

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Held by the chaos suite for its whole run and by each docs session: the suite measures
/// what survives faults under a set load, and a devnet or a few nodes started beside it by
/// another test would add load the scenario did not set (a CI run failed `executors-killed`
/// with tasks out of wall time while the docs' sessions ran). Other tests still run beside it.
pub(crate) fn alone() -> std::sync::MutexGuard<'static, ()> {
    static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ALONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

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

/// The C program `source` of the execution crate's test programs, built for WASI preview 1
/// with Debian's clang and wasi-libc as a task author builds it; `None` when the toolchain
/// is missing, except under `CI=true`, where that fails (`scripts/test-deps.sh` installs it).
pub(crate) fn c_program(source: &str, dir: &Path) -> Option<Vec<u8>> {
    let programs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../execution/tests/programs");
    let wasm = dir.join(source.replace(".c", ".wasm"));
    let built = Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2", "-o"])
        .arg(&wasm)
        .arg(programs.join(source))
        .output();
    match built {
        Ok(out) if out.status.success() => Some(std::fs::read(&wasm).expect("clang's module")),
        other if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("clang could not build {source} (scripts/test-deps.sh installs it): {other:?}")
        }
        other => {
            eprintln!("skipped: clang could not build {source}: {other:?}");
            None
        }
    }
}
