//! Compiled modules on disk, so a restarted node does not compile again.
//!
//! A compiled module is native code: loading a file written by someone else would run their
//! code. So a file is authenticated, not only checksummed: it is `MAGIC`, the engine's
//! compatibility fingerprint (8 bytes), an HMAC-SHA256 (32 bytes) under a key derived from
//! the node's secret key over the fingerprint, the module's SHA-256 and the payload, then
//! the payload from `Module::serialize`. Only this node can make a tag that verifies, and a
//! tag binds the file to one module, so a valid entry cannot be renamed to stand for
//! another. A file that is truncated, altered, planted, written by another node or by an
//! engine with other settings is not loaded: the module is compiled again and the file
//! replaced. The directory is created readable by its owner only and refused when others
//! may write to it; a file others may write to is refused too. A cache that cannot be
//! written only costs the next start a compilation.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

const MAGIC: &[u8; 8] = b"ZSCWASM2";
const HEADER: usize = 8 + 8 + 32;

/// A directory of compiled modules for one engine configuration.
#[derive(Debug)]
pub(crate) struct DiskCache {
    dir: PathBuf,
    fingerprint: [u8; 8],
    mac_key: [u8; 32],
    /// The most the files may hold together; the least recently written go first.
    max_bytes: u64,
}

/// What a lookup found.
pub(crate) enum Lookup {
    /// A valid compiled module.
    Hit(Module),
    /// No file.
    Miss,
    /// A file that could not be used (the reason), to be replaced.
    Rejected(String),
}

/// HMAC-SHA256 (RFC 2104) of the concatenated `parts` under `key`.
fn hmac_sha256(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let mut inner = Sha256::new();
    inner.update(pad(0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Compares two tags in time independent of where they differ.
fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses a path that users other than its owner may write to.
#[cfg(unix)]
fn check_not_shared(path: &Path, what: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{what} {} can be written by other users (mode {:o}); run `chmod go-w {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_not_shared(_: &Path, _: &str) -> std::io::Result<()> {
    Ok(())
}

impl DiskCache {
    /// A cache in `dir` whose entries are authenticated with `mac_key` (derived from the
    /// node's secret key).
    pub(crate) fn new(
        dir: &Path,
        engine: &Engine,
        mac_key: [u8; 32],
        max_bytes: u64,
    ) -> std::io::Result<Self> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
        check_not_shared(dir, "the module cache directory")?;
        // Hashes of this process's hasher are only compared with files written by the
        // same build, which is the only case the cache serves.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(Self {
            dir: dir.to_owned(),
            fingerprint: h.finish().to_le_bytes(),
            mac_key,
            max_bytes,
        })
    }

    fn path(&self, module_sha256: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}.cwasm", hex::encode(module_sha256)))
    }

    fn tag(&self, module_sha256: &[u8; 32], payload: &[u8]) -> [u8; 32] {
        hmac_sha256(
            &self.mac_key,
            &[MAGIC, &self.fingerprint, module_sha256, payload],
        )
    }

    pub(crate) fn load(&self, engine: &Engine, module_sha256: &[u8; 32]) -> Lookup {
        let path = self.path(module_sha256);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return Lookup::Rejected(format!("unreadable: {e}")),
        };
        if let Err(e) = check_not_shared(&path, "the cached module") {
            return Lookup::Rejected(e.to_string());
        }
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Lookup::Rejected("not a ZeroState compiled-module file".into());
        }
        if bytes[8..16] != self.fingerprint {
            return Lookup::Rejected("written by an engine with other settings".into());
        }
        let payload = &bytes[HEADER..];
        if !tags_equal(&bytes[16..48], &self.tag(module_sha256, payload)) {
            return Lookup::Rejected(
                "authentication failed (altered, corrupt, or not written by this node)".into(),
            );
        }
        match deserialize(engine, payload) {
            Ok(m) => Lookup::Hit(m),
            Err(e) => Lookup::Rejected(format!("wasmtime refused it: {e}")),
        }
    }

    /// Removes the least recently written compiled modules until the rest fit in the
    /// cache's bytes, never `keep`; how many went.
    fn trim(&self, keep: &Path) -> u64 {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = dir
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        files.sort();
        let mut evicted = 0;
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if path != keep && std::fs::remove_file(&path).is_ok() {
                total -= len;
                evicted += 1;
            }
        }
        evicted
    }

    /// Writes `module` atomically (a temporary file, readable by its owner only, renamed
    /// into place), then trims the cache to its bytes; how many older entries went.
    pub(crate) fn store(&self, module: &Module, module_sha256: &[u8; 32]) -> Result<u64, String> {
        let payload = module
            .serialize()
            .map_err(|e| format!("cannot serialize: {e}"))?;
        let mut bytes = Vec::with_capacity(HEADER + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&self.fingerprint);
        bytes.extend_from_slice(&self.tag(module_sha256, &payload));
        bytes.extend_from_slice(&payload);
        let path = self.path(module_sha256);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            std::io::Write::write_all(&mut options.open(&tmp)?, &bytes)?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(self.trim(&path))
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, payload: &[u8]) -> wasmtime::Result<Module> {
    // SAFETY: `Module::deserialize` requires bytes produced by `Module::serialize` and not
    // altered since. The payload's HMAC under a key only this node holds matched (so
    // `store` above wrote it, for this module), and the fingerprint matched this engine's
    // compatibility hash; wasmtime additionally checks its own header and version.
    unsafe { Module::deserialize(engine, payload) }
}
