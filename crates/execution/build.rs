//! Names the wasmtime version the engine is built with (`ZEROSTATE_WASMTIME_VERSION`), read
//! from the lock file of the workspace that builds it, for the engine id receipts carry.

use std::path::PathBuf;

fn main() {
    let mut dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let mut version = None;
    loop {
        let lock = dir.join("Cargo.lock");
        if let Ok(text) = std::fs::read_to_string(&lock) {
            println!("cargo:rerun-if-changed={}", lock.display());
            version = wasmtime_version(&text);
            break;
        }
        if !dir.pop() {
            break;
        }
    }
    // Without a lock file the version is not known exactly; such engines say so.
    let version = version.unwrap_or_else(|| "unlocked".to_owned());
    println!("cargo:rustc-env=ZEROSTATE_WASMTIME_VERSION={version}");
}

fn wasmtime_version(lock: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasmtime\"" {
            let next = lines.next()?;
            return next
                .trim()
                .strip_prefix("version = \"")
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_owned);
        }
    }
    None
}
