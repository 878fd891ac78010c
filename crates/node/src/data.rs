//! The node's data directory and the files in it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use zerostate_execution::ExecutorKey;

/// The data directory: `--data-dir`, else `ZEROSTATE_DATA_DIR`, else
/// `$XDG_DATA_HOME/zerostate`, else `$HOME/.local/share/zerostate`.
pub fn data_dir(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.to_owned());
    }
    if let Some(dir) = std::env::var_os("ZEROSTATE_DATA_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(dir).join("zerostate"));
    }
    let home = std::env::var_os("HOME")
        .context("no data directory: set --data-dir or ZEROSTATE_DATA_DIR")?;
    Ok(PathBuf::from(home).join(".local/share/zerostate"))
}

/// Loads the node key from `path` (64 hex digits: the ed25519 secret seed), creating it
/// with a fresh random key (readable only by its owner) if it does not exist.
pub fn load_or_create_key(path: &Path) -> anyhow::Result<ExecutorKey> {
    load_or_create_seed(path).map(ExecutorKey::from_seed)
}

/// The secret seed of the node key at `path`, created if missing (see
/// [`load_or_create_key`]). The node's libp2p identity and its receipt key are both made
/// from it, so its peer id is the executor id in its receipts.
pub fn load_or_create_seed(path: &Path) -> anyhow::Result<[u8; 32]> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let seed: [u8; 32] = hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .with_context(|| format!("{} is not a node key (64 hex digits)", path.display()))?;
            Ok(seed)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed)
                .map_err(|e| anyhow::anyhow!("no randomness for a new key: {e}"))?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(path)
                .with_context(|| format!("creating the node key {}", path.display()))?;
            writeln!(file, "{}", hex::encode(seed))
                .with_context(|| format!("writing {}", path.display()))?;
            file.sync_all()
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(seed)
        }
        Err(e) => Err(e).with_context(|| format!("reading the node key {}", path.display())),
    }
}
