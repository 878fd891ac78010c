//! The trees and the descriptor table, without a module.

use super::*;

fn input() -> BTreeMap<String, Vec<u8>> {
    [
        ("a.txt".to_owned(), b"hello".to_vec()),
        ("dir/b.txt".to_owned(), b"bee".to_vec()),
        ("dir/sub/c".to_owned(), Vec::new()),
    ]
    .into_iter()
    .collect()
}

#[test]
fn input_files_are_read_and_never_written() {
    let mut f = Files::new(&input(), false);
    assert_eq!(f.prestat(3), Ok("/input"));
    assert_eq!(f.prestat(4), Err(EBADF));
    let fd = f.open(3, "dir/../a.txt", 0, READ_RIGHTS, 0).expect("open");
    let mut buf = [0u8; 3];
    assert_eq!(f.read(fd, None, &mut buf), Ok(3));
    assert_eq!(&buf, b"hel");
    assert_eq!(f.read(fd, None, &mut buf), Ok(2));
    assert_eq!(f.read(fd, Some(1), &mut buf), Ok(3));
    assert_eq!(f.open(3, "a.txt", 0, ALL_RIGHTS, 0), Err(EROFS));
    assert_eq!(f.open(3, "new", O_CREAT, ALL_RIGHTS, 0), Err(EROFS));
    assert_eq!(f.mkdir(3, "d"), Err(EROFS));
    assert_eq!(f.unlink(3, "a.txt"), Err(EROFS));
    assert_eq!(f.open(3, "../x", 0, READ_RIGHTS, 0), Err(ENOTCAPABLE));
    assert_eq!(
        f.open(3, "/etc/passwd", 0, READ_RIGHTS, 0),
        Err(ENOTCAPABLE)
    );
    assert_eq!(f.open(3, "a.txt/x", 0, READ_RIGHTS, 0), Err(ENOTDIR));
    assert_eq!(f.open(3, "missing", 0, READ_RIGHTS, 0), Err(ENOENT));
    assert_eq!(f.path_stat(3, "dir/b.txt").map(|s| s.size), Ok(3));
}

#[test]
fn a_directory_lists_dots_then_names_in_order() {
    let f = Files::new(&input(), false);
    let names: Vec<String> = f
        .list(3, 0, 100)
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, [".", "..", "a.txt", "dir"]);
    let mut f = f;
    let dir = f.open(3, "dir", O_DIRECTORY, READ_RIGHTS, 0).expect("dir");
    let names: Vec<String> = f
        .list(dir, 2, 100)
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["b.txt", "sub"]);
    assert_eq!(f.open(dir, "..", 0, READ_RIGHTS, 0), Err(ENOTCAPABLE));
}

#[test]
fn output_files_are_written_within_the_budget() {
    let mut f = Files::new(&BTreeMap::new(), true);
    assert_eq!(f.prestat(3), Ok("/output"));
    assert_eq!(f.mkdir(3, "d"), Ok(()));
    let fd = f
        .open(3, "d/out.txt", O_CREAT | O_TRUNC, ALL_RIGHTS, 0)
        .expect("create");
    assert_eq!(f.write(fd, None, b"abc", 10), Ok(3));
    assert_eq!(f.write(fd, Some(5), b"z", 10), Ok(1));
    assert_eq!(f.output_bytes, 6);
    assert_eq!(f.seek(fd, i64::MAX, 0), Ok(i64::MAX as u64));
    assert_eq!(f.write(fd, None, b"x", 10), Err(Refusal::OutputLimit));
    assert_eq!(f.rename(3, "d", 3, "e"), Ok(()));
    assert_eq!(f.write(fd, Some(0), b"A", 10), Ok(1));
    assert_eq!(f.rmdir(3, "e"), Err(ENOTEMPTY));
    let out = f.into_output().expect("output tree");
    assert_eq!(
        out.get("e/out.txt").map(Vec::as_slice),
        Some(&b"Abc\0\0z"[..])
    );
}

#[test]
fn descriptors_are_bounded_and_reused() {
    let mut f = Files::new(&input(), false);
    let mut fds = Vec::new();
    loop {
        match f.open(3, "a.txt", 0, READ_RIGHTS, 0) {
            Ok(fd) => fds.push(fd),
            Err(e) => {
                assert_eq!(e, EMFILE);
                break;
            }
        }
    }
    assert_eq!(fds.len(), MAX_OPEN_FILES - 4);
    f.close(fds[0]).expect("close");
    assert_eq!(f.open(3, "a.txt", 0, READ_RIGHTS, 0), Ok(fds[0]));
}

#[test]
fn names_and_trees_are_checked() {
    assert!(name_problem("a/b").is_none());
    for bad in ["", "/a", "a//b", "a/../b", "./a", "a\0"] {
        assert!(name_problem(bad).is_some(), "{bad:?}");
    }
    let mut files = input();
    files.insert("dir".into(), Vec::new());
    assert!(tree_problem(&files).is_some());
    assert!(tree_problem(&input()).is_none());
}

#[test]
fn the_tree_hash_is_that_of_the_sha256sum_listing() {
    let files: BTreeMap<String, Vec<u8>> =
        [("x".to_owned(), b"hi\n".to_vec())].into_iter().collect();
    let listing = "98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4  x\n";
    assert_eq!(
        tree_sha256(&files),
        hex::encode(crate::sha256(listing.as_bytes()))
    );
}
