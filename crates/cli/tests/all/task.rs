//! `zerostate task run` and `zerostate task builtins`.

use crate::{text, zerostate};

#[test]
fn a_builtin_runs_and_prints_its_result() {
    let data = tempfile::tempdir().expect("tempdir");
    let out = zerostate(
        data.path(),
        &["task", "run", "builtin:primes", "--input", "-"],
        b"100",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "25\n");
    // On stderr, the trace id alone: no collector is known to link it to.
    let stderr = text(&out.stderr);
    let id = stderr
        .strip_prefix("trace ")
        .expect("the trace id")
        .trim_end();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{stderr}"
    );
}

#[test]
fn a_builtin_says_when_its_input_is_not_what_it_takes() {
    let data = tempfile::tempdir().expect("tempdir");
    for (builtin, input, says) in [
        ("builtin:primes", &b"abc"[..], "not \"abc\""),
        ("builtin:primes", b"", "the input is empty"),
        ("builtin:primes", b"-3\n", "not \"-3\\n\""),
        ("builtin:matmul", b"20000", "20000 is larger"),
    ] {
        let out = zerostate(
            data.path(),
            &["task", "run", builtin, "--input", "-"],
            input,
        );
        assert_eq!(out.status.code(), Some(2), "{builtin} {input:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("takes one whole number N"), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(out.stdout.is_empty());
    }
    // crc32 takes any bytes.
    let out = zerostate(
        data.path(),
        &["task", "run", "builtin:crc32", "--input", "-"],
        b"abc",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_module_file_runs_with_input_file_and_arguments() {
    let data = tempfile::tempdir().expect("tempdir");
    let wat = data.path().join("argc.wat");
    std::fs::write(
        &wat,
        r#"(module
          (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            (drop (call $sizes (i32.const 0) (i32.const 4)))
            (i32.store8 (i32.const 100) (i32.add (i32.const 48) (i32.load (i32.const 0))))
            (i32.store (i32.const 8) (i32.const 100))
            (i32.store (i32.const 12) (i32.const 1))
            (drop (call $write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))))"#,
    )
    .expect("write module");
    let path = wat.to_str().expect("utf-8 path");
    let out = zerostate(
        data.path(),
        &["task", "run", path, "--arg", "x", "--arg", "y"],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "3");

    let input = data.path().join("input.txt");
    std::fs::write(&input, "The quick brown fox jumps over the lazy dog").expect("write input");
    let out = zerostate(
        data.path(),
        &[
            "task",
            "run",
            "builtin:crc32",
            "--input",
            input.to_str().expect("utf-8"),
        ],
        b"",
    );
    assert_eq!(text(&out.stdout), "414fa339\n");
}

#[test]
fn a_failed_task_exits_non_zero_with_one_line_naming_the_limit() {
    // After the trace id's line, one line of why.
    let why = |stderr: &[u8]| {
        let stderr = text(stderr);
        let (trace, why) = stderr.split_once('\n').expect("two lines");
        assert!(trace.starts_with("trace ") && trace.len() == 38, "{stderr}");
        why.to_owned()
    };
    let data = tempfile::tempdir().expect("tempdir");
    let out = zerostate(
        data.path(),
        &[
            "task",
            "run",
            "builtin:primes",
            "--input",
            "-",
            "--fuel",
            "1000000",
        ],
        b"10000000",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        why(&out.stderr),
        "task failed: out of fuel after 1000000 units\n"
    );
    assert!(out.stdout.is_empty());

    let out = zerostate(
        data.path(),
        &[
            "task",
            "run",
            "builtin:primes",
            "--input",
            "-",
            "--memory",
            "1MiB",
        ],
        b"10000000",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        why(&out.stderr),
        "task failed: memory limit of 1048576 bytes exceeded\n"
    );
}

#[test]
fn bad_flags_and_missing_files_are_explained() {
    let data = tempfile::tempdir().expect("tempdir");
    let out = zerostate(
        data.path(),
        &["task", "run", "builtin:primes", "--memory", "12 parsecs"],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown size unit"),
        "{}",
        text(&out.stderr)
    );

    let out = zerostate(data.path(), &["task", "run", "/no/such/module.wasm"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("reading the module /no/such/module.wasm"),
        "{}",
        text(&out.stderr)
    );

    let out = zerostate(data.path(), &["task", "run", "builtin:bitcoin"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no built-in task \"bitcoin\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn builtins_are_listed() {
    let data = tempfile::tempdir().expect("tempdir");
    let out = zerostate(data.path(), &["task", "builtins"], b"");
    let listing = text(&out.stdout);
    for name in ["builtin:primes", "builtin:matmul", "builtin:crc32"] {
        assert!(listing.contains(name), "{listing}");
    }
}

#[test]
fn a_program_exiting_with_its_own_code_keeps_its_output_and_shows_its_stderr() {
    let data = tempfile::tempdir().expect("tempdir");
    let wat = data.path().join("grep.wat");
    // Writes "out" to stdout and "err" to stderr, then exits with 1 as `grep` does when
    // nothing matches; its arguments may look like flags.
    std::fs::write(
        &wat,
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (data (i32.const 100) "outerr")
          (func (export "_start")
            (i32.store (i32.const 8) (i32.const 100))
            (i32.store (i32.const 12) (i32.const 3))
            (drop (call $write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))
            (i32.store (i32.const 8) (i32.const 103))
            (drop (call $write (i32.const 2) (i32.const 8) (i32.const 1) (i32.const 16)))
            (call $exit (i32.const 1))))"#,
    )
    .expect("write module");
    let path = wat.to_str().expect("utf-8 path");
    let out = zerostate(
        data.path(),
        &["task", "run", path, "--arg", "-v", "--arg", "--count"],
        b"",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("err") && stderr.contains("task exited with code 1"),
        "{stderr}"
    );
}

#[test]
fn a_new_task_project_builds_runs_with_files_and_its_receipt_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let project = dir.path().join("hello");
    let project_arg = project.to_str().expect("utf-8");
    let out = zerostate(
        dir.path(),
        &["task", "new", "hello", "--dir", project_arg],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("cargo build --release"));
    // Built as its author builds it (the target comes from scripts/test-deps.sh).
    let built = std::process::Command::new("cargo")
        .args(["build", "--release", "--offline"])
        .current_dir(&project)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    if !built.status.success() {
        let why = text(&built.stderr);
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "the new task did not build (scripts/test-deps.sh adds the wasm32-wasip1 target): {why}"
        );
        eprintln!("skipped: the new task did not build: {why}");
        return;
    }
    let wasm = project.join("target/wasm32-wasip1/release/hello.wasm");
    let p = |rel: &str| project.join(rel).to_str().expect("utf-8").to_owned();
    let file = format!("words.txt={}", p("sample/words.txt"));
    let run = zerostate(
        dir.path(),
        &[
            "task",
            "run",
            wasm.to_str().expect("utf-8"),
            "--input",
            &p("sample/stdin.txt"),
            "--file",
            &file,
            "--output",
            &p("out"),
            "--receipt",
            &p("receipt.json"),
        ],
        b"",
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let expected = "stdin: 2 lines, 9 words\n/input/words.txt: 3 lines, 6 words\n";
    assert_eq!(text(&run.stdout), expected);
    assert_eq!(
        std::fs::read_to_string(project.join("out/report.txt")).expect("the report"),
        expected
    );
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "receipt",
            "verify",
            "--module",
            wasm.to_str().expect("utf-8"),
            "--input",
        ];
        let (input, receipt, out) = (p("sample/stdin.txt"), p("receipt.json"), p("out"));
        args.extend([input.as_str(), "--file", &file, "--output-files", &out]);
        args.extend(extra);
        args.push(receipt.as_str());
        zerostate(dir.path(), &args, b"")
    };
    let checked = verify(&["--rerun"]);
    assert!(checked.status.success(), "{}", text(&checked.stderr));
    assert!(text(&checked.stdout).contains("rerun matches"));
    // An output file changed after the fact no longer matches the receipt.
    std::fs::write(project.join("out/report.txt"), "made up\n").expect("tamper");
    let checked = verify(&[]);
    assert_eq!(checked.status.code(), Some(1), "{}", text(&checked.stdout));
    assert!(text(&checked.stderr).contains("output files"));
}

/// Prints the file `/input/pack/inner/b.txt` (descriptor 3 is `/input`).
const PRINT_PACKED_FILE: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "pack/inner/b.txt")
  (func (export "_start")
    (drop (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 16)
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 200)))
    (i32.store (i32.const 8) (i32.const 1000))
    (i32.store (i32.const 12) (i32.const 1000))
    (drop (call $read (i32.load (i32.const 200)) (i32.const 8) (i32.const 1) (i32.const 16)))
    (i32.store (i32.const 12) (i32.load (i32.const 16)))
    (drop (call $write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))))"#;

#[test]
fn input_files_come_from_a_tar_made_with_tar_and_from_a_directory() {
    let data = tempfile::tempdir().expect("tempdir");
    let dir = data.path();
    std::fs::create_dir_all(dir.join("tree/inner")).expect("dirs");
    std::fs::write(dir.join("tree/inner/b.txt"), "packed bee\n").expect("file");
    let module = dir.join("print.wat");
    std::fs::write(&module, PRINT_PACKED_FILE).expect("module");
    // As a user packs it: GNU tar, members named ./inner/b.txt.
    let tar = dir.join("pack.tar");
    let packed = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(dir.join("tree"))
        .arg(".")
        .status()
        .expect("tar runs");
    assert!(packed.success());
    // A symbolic link that loops, as user trees have, is left out of a directory's files.
    std::os::unix::fs::symlink("..", dir.join("tree/inner/up")).expect("a link");
    let s = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
    for source in [s(&tar), s(&dir.join("tree"))] {
        let file = format!("pack={source}");
        let out = zerostate(dir, &["task", "run", &s(&module), "--file", &file], b"");
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "packed bee\n", "from {source}");
    }
    // A name that is not there is said, not run.
    let out = zerostate(
        dir,
        &[
            "task",
            "run",
            &s(&module),
            "--file",
            "pack=/nonexistent.tar",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("/nonexistent.tar"),
        "{}",
        text(&out.stderr)
    );
}
