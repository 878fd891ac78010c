//! Every file of `corpus/<target>/` (the seeds, and every input that once failed) through
//! its target: the regression tests of the fuzzing.

use std::path::Path;

#[test]
fn every_corpus_file_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut total = 0;
    for (name, target) in zerostate_fuzz::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{name} has seeds");
        for f in &files {
            let data = std::fs::read(f).expect("readable");
            if let Err(e) = std::panic::catch_unwind(|| target(&data)) {
                panic!("{} fails {name}: {e:?}", f.display());
            }
        }
        total += files.len();
    }
    assert!(total >= zerostate_fuzz::TARGETS.len());
}
