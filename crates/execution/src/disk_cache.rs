//! Compiled modules on disk, so a restarted node does not compile again.
//!
//! A file is `MAGIC`, the engine's compatibility fingerprint (8 bytes), the SHA-256 of the
//! payload (32 bytes), then the payload from `Module::serialize`. A file that is truncated,
//! altered, or written by an engine with other settings or another wasmtime is not loaded:
//! the module is compiled again and the file replaced. A cache that cannot be written only
//! costs the next start a compilation.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::{Engine, Module};

use crate::manifest::sha256;

const MAGIC: &[u8; 8] = b"ZSCWASM1";
const HEADER: usize = 8 + 8 + 32;

/// A directory of compiled modules for one engine configuration.
#[derive(Debug)]
pub(crate) struct DiskCache {
    dir: PathBuf,
    fingerprint: [u8; 8],
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

impl DiskCache {
    pub(crate) fn new(dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // Hashes of this process's hasher are only compared with files written by the
        // same build, which is the only case the cache serves.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(Self {
            dir: dir.to_owned(),
            fingerprint: h.finish().to_le_bytes(),
        })
    }

    fn path(&self, module_sha256: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}.cwasm", hex::encode(module_sha256)))
    }

    pub(crate) fn load(&self, engine: &Engine, module_sha256: &[u8; 32]) -> Lookup {
        let bytes = match std::fs::read(self.path(module_sha256)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return Lookup::Rejected(format!("unreadable: {e}")),
        };
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Lookup::Rejected("not a ZeroState compiled-module file".into());
        }
        if bytes[8..16] != self.fingerprint {
            return Lookup::Rejected("written by an engine with other settings".into());
        }
        let payload = &bytes[HEADER..];
        if bytes[16..48] != sha256(payload) {
            return Lookup::Rejected("checksum mismatch (corrupt file)".into());
        }
        match deserialize(engine, payload) {
            Ok(m) => Lookup::Hit(m),
            Err(e) => Lookup::Rejected(format!("wasmtime refused it: {e}")),
        }
    }

    /// Writes `module` atomically (a temporary file renamed into place).
    pub(crate) fn store(&self, module: &Module, module_sha256: &[u8; 32]) -> Result<(), String> {
        let payload = module
            .serialize()
            .map_err(|e| format!("cannot serialize: {e}"))?;
        let mut bytes = Vec::with_capacity(HEADER + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&self.fingerprint);
        bytes.extend_from_slice(&sha256(&payload));
        bytes.extend_from_slice(&payload);
        let path = self.path(module_sha256);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, payload: &[u8]) -> wasmtime::Result<Module> {
    // SAFETY: `Module::deserialize` requires bytes produced by `Module::serialize` and not
    // altered since. The payload's SHA-256 matched the one written with it, the
    // fingerprint matched this engine's compatibility hash, and the file sits in the
    // node's own data directory, written only by `store` above; wasmtime additionally
    // checks its own header and version before using the code.
    unsafe { Module::deserialize(engine, payload) }
}
