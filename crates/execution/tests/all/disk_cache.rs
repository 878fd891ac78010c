//! Compiled modules on disk: reused by a new engine; a corrupt or foreign file is compiled
//! again, never trusted and never fatal.

use std::path::Path;

use zerostate_execution::{Engine, EngineOptions, ExecutorKey};

use crate::harness::{ECHO, manifest};

fn engine_with_cache(dir: &Path) -> Engine {
    engine_of_node(dir, 7)
}

/// An engine with its cache in `dir`, signing with the key of seed `[seed; 32]`.
fn engine_of_node(dir: &Path, seed: u8) -> Engine {
    let options = EngineOptions {
        disk_cache: Some(dir.to_owned()),
        ..EngineOptions::default()
    };
    Engine::new(options, ExecutorKey::from_seed([seed; 32])).expect("engine")
}

fn cache_file(dir: &Path) -> std::path::PathBuf {
    let files: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

fn echo_runs(engine: &Engine) -> zerostate_execution::Measurement {
    let mut m = manifest(ECHO);
    m.input = b"cached".to_vec();
    let run = engine.run(&m);
    assert_eq!(run.result, Ok(()));
    assert_eq!(run.output, b"cached");
    run.measurement
}

#[test]
fn a_new_engine_loads_the_compiled_module_from_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = echo_runs(&engine_with_cache(dir.path()));
    assert!(!first.cache_hit && !first.from_disk);
    let second = echo_runs(&engine_with_cache(dir.path()));
    assert!(second.cache_hit && second.from_disk);
}

#[test]
fn a_corrupt_truncated_or_foreign_file_is_compiled_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    echo_runs(&engine_with_cache(dir.path()));
    let file = cache_file(dir.path());
    let good = std::fs::read(&file).expect("read");

    let mut corrupt = good.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let mut foreign = good.clone();
    foreign[8] ^= 0xff; // another engine's fingerprint
    for (what, bytes) in [
        ("corrupt", corrupt),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("foreign", foreign),
        ("garbage", b"not a compiled module at all".to_vec()),
        ("empty", Vec::new()),
    ] {
        std::fs::write(&file, &bytes).expect("write");
        let m = echo_runs(&engine_with_cache(dir.path()));
        assert!(!m.from_disk, "{what} file was trusted");
        assert_eq!(
            std::fs::read(&file).expect("read"),
            good,
            "{what} file was not replaced"
        );
    }
}

#[test]
fn an_entry_with_a_recomputed_checksum_or_from_another_node_is_refused() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().expect("tempdir");
    echo_runs(&engine_with_cache(dir.path()));
    let file = cache_file(dir.path());
    let good = std::fs::read(&file).expect("read");

    // Altered code whose plain checksum is recomputed, as anyone who can write the
    // directory could do.
    let mut planted = good.clone();
    let last = planted.len() - 1;
    planted[last] ^= 0x01;
    let digest: [u8; 32] = Sha256::digest(&planted[48..]).into();
    planted[16..48].copy_from_slice(&digest);
    std::fs::write(&file, &planted).expect("write");
    let m = echo_runs(&engine_with_cache(dir.path()));
    assert!(!m.from_disk, "a planted entry was trusted");

    // A valid entry of another node.
    let other = tempfile::tempdir().expect("tempdir");
    echo_runs(&engine_of_node(other.path(), 8));
    std::fs::copy(cache_file(other.path()), &file).expect("copy");
    let m = echo_runs(&engine_with_cache(dir.path()));
    assert!(!m.from_disk, "another node's entry was trusted");
}

#[test]
fn an_entry_renamed_to_stand_for_another_module_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    echo_runs(&engine_with_cache(dir.path()));
    let file = cache_file(dir.path());
    // The same module under another name: the cache key is the module's hash.
    let other = manifest(r#"(module (func (export "_start")))"#);
    let other_hash = hex::encode(zerostate_execution::sha256(&other.module));
    let renamed = dir.path().join(format!("{other_hash}.cwasm"));
    std::fs::rename(&file, &renamed).expect("rename");
    let run = engine_with_cache(dir.path()).run(&other);
    assert_eq!(run.result, Ok(()));
    assert!(!run.measurement.from_disk, "a renamed entry was trusted");
}

#[cfg(unix)]
#[test]
fn a_cache_others_can_write_to_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    echo_runs(&engine_with_cache(dir.path()));
    let file = cache_file(dir.path());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let m = echo_runs(&engine_with_cache(dir.path()));
    assert!(!m.from_disk, "a world-writable entry was trusted");

    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let options = EngineOptions {
        disk_cache: Some(dir.path().to_owned()),
        ..EngineOptions::default()
    };
    let err = Engine::new(options, ExecutorKey::from_seed([7; 32])).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("chmod go-w"), "{text}");
}

#[test]
fn the_disk_cache_keeps_to_its_bytes_and_counts_what_goes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EngineOptions {
        disk_cache: Some(dir.path().to_owned()),
        // Room for one compiled module only.
        disk_cache_bytes: 1,
        ..EngineOptions::default()
    };
    let engine = Engine::new(options, ExecutorKey::from_seed([7; 32])).expect("engine");
    let first = engine.run(&manifest(ECHO));
    assert_eq!(first.result, Ok(()));
    assert_eq!(first.measurement.disk_evicted, 0);
    let second = engine.run(&manifest(crate::harness::NOTHING));
    assert_eq!(second.result, Ok(()));
    assert_eq!(
        second.measurement.disk_evicted, 1,
        "the older entry made room"
    );
    // The newest stays.
    cache_file(dir.path());
}
