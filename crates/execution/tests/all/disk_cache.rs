//! Compiled modules on disk: reused by a new engine; a corrupt or foreign file is compiled
//! again, never trusted and never fatal.

use std::path::Path;

use zerostate_execution::{Engine, EngineOptions, ExecutorKey};

use crate::harness::{ECHO, manifest};

fn engine_with_cache(dir: &Path) -> Engine {
    let options = EngineOptions {
        disk_cache: Some(dir.to_owned()),
        ..EngineOptions::default()
    };
    Engine::new(options, ExecutorKey::from_seed([7; 32])).expect("engine")
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
