//! The node's data directory and the files in it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use zerostate_execution::ExecutorKey;

/// The data directory: `--data-dir`, else `ZEROSTATE_DATA_DIR`, else
/// `$XDG_DATA_HOME/zerostate`, else `$HOME/.local/share/zerostate` (the rule of
/// [`crate::settings`], for commands without a configuration file).
pub fn data_dir(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    crate::settings::resolve_data_dir(flag.map(Path::to_owned), &crate::settings::ProcessEnv, None)
}

/// Creates the data directory (readable by its owner only) if it is missing, and refuses
/// one that other users can write to: they could plant a key, a token or compiled code.
pub fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        let mode = mode_of(dir)?;
        if mode & 0o022 != 0 {
            anyhow::bail!(
                "the data directory {} can be written by other users (mode {:o}); run \
                 `chmod go-w {}`",
                dir.display(),
                mode & 0o7777,
                dir.display()
            );
        }
    }
    Ok(())
}

#[cfg(unix)]
fn mode_of(path: &Path) -> anyhow::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading the permissions of {}", path.display()))?
        .permissions()
        .mode())
}

/// Refuses a secret file that users other than its owner can read or write.
fn check_secret(path: &Path, what: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mode = mode_of(path)?;
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "the {what} {} can be read or written by other users (mode {:o}); run \
                 `chmod 600 {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what);
    Ok(())
}

/// Reads the secret at `path`, or creates it (readable by its owner only) with 32 fresh
/// random bytes; it is stored as 64 hex digits.
fn load_or_create_secret(path: &Path, what: &str) -> anyhow::Result<[u8; 32]> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            check_secret(path, what)?;
            hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .with_context(|| format!("{} is not a {what} (64 hex digits)", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret)
                .map_err(|e| anyhow::anyhow!("no randomness for a new {what}: {e}"))?;
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
                .with_context(|| format!("creating the {what} {}", path.display()))?;
            writeln!(file, "{}", hex::encode(secret))
                .with_context(|| format!("writing {}", path.display()))?;
            file.sync_all()
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(secret)
        }
        Err(e) => Err(e).with_context(|| format!("reading the {what} {}", path.display())),
    }
}

/// The token that opens a node's HTTP API: `<data dir>/api.token`, created on first start
/// (mode 0600) and refused when others can read it. Clients send it as
/// `Authorization: Bearer <token>`.
pub fn load_or_create_api_token(path: &Path) -> anyhow::Result<String> {
    load_or_create_secret(path, "API token").map(hex::encode)
}

/// Reads the API token of the node whose data directory is `dir`, for a client on the same
/// machine (the devnet, the command line).
pub fn read_api_token(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(API_TOKEN_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the node's API token {}", path.display()))?;
    Ok(text.trim().to_owned())
}

/// The API token's file name in a data directory.
pub const API_TOKEN_FILE: &str = "api.token";

/// Loads the node key from `path` (64 hex digits: the ed25519 secret seed), creating it
/// with a fresh random key (readable only by its owner) if it does not exist.
pub fn load_or_create_key(path: &Path) -> anyhow::Result<ExecutorKey> {
    load_or_create_seed(path).map(ExecutorKey::from_seed)
}

/// The secret seed of the node key at `path`, created if missing (see
/// [`load_or_create_key`]). The node's libp2p identity and its receipt key are both made
/// from it, so its peer id is the executor id in its receipts.
pub fn load_or_create_seed(path: &Path) -> anyhow::Result<[u8; 32]> {
    load_or_create_secret(path, "node key")
}
