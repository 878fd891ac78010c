//! Programs built by a C toolchain as a task author builds them (Debian's `clang`, `lld`,
//! `wasi-libc` and compiler-rt for wasm32), run by the engine and by the official wasmtime
//! runtime (its Python package, `wasmtime` on PyPI): stdout, stderr, exit code and output
//! files alike.
//! `scripts/test-deps.sh` installs the tools; without them the test says so and passes,
//! except under `CI=true`, where it fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use zerostate_execution::{Manifest, TaskError, tree_sha256};

use crate::harness::engine;

/// Whether a missing tool fails the test.
fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn programs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs")
}

/// Builds `source` (in tests/programs) for WASI preview 1 into `dir`; `None` when the
/// toolchain is missing and not required.
fn build_c(source: &str, dir: &Path) -> Option<Vec<u8>> {
    let wasm = dir.join(source.replace(".c", ".wasm"));
    let built = Command::new("clang")
        // Debian's wasi-libc sits where its clang looks for the target's headers and
        // libraries (/usr/include/wasm32-wasi, /usr/lib/wasm32-wasi): no --sysroot.
        .args(["--target=wasm32-wasi", "-O2", "-o"])
        .arg(&wasm)
        .arg(programs().join(source))
        .output();
    match built {
        Ok(out) if out.status.success() => {
            Some(std::fs::read(&wasm).expect("the module clang wrote"))
        }
        Ok(out) if required() => panic!(
            "clang could not build {source} (scripts/test-deps.sh installs clang, lld, \
             wasi-libc and libclang-rt-dev-wasm32): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if required() => panic!("no clang ({e}); scripts/test-deps.sh installs it"),
        Ok(out) => {
            eprintln!(
                "skipped: clang could not build {source}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("skipped: no clang ({e})");
            None
        }
    }
}

/// What a program is given.
#[derive(Default)]
struct Given<'a> {
    stdin: &'a [u8],
    args: &'a [&'a str],
    env: &'a [&'a str],
    /// Input files, under `/input`.
    files: BTreeMap<String, Vec<u8>>,
    /// Whether it has a writable `/output`.
    output: bool,
}

/// What a program did: stdout, stderr, exit code and the files it left in `/output`.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    stdout: String,
    stderr: String,
    code: i32,
    files: BTreeMap<String, Vec<u8>>,
}

/// Every file under `dir`, by its path relative to `dir`.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("a directory the test made") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let name = path.strip_prefix(dir).expect("under dir");
                out.insert(
                    name.to_string_lossy().into_owned(),
                    std::fs::read(&path).expect("a file the program wrote"),
                );
            }
        }
    }
    out
}

/// Runs `module` under the reference runtime, given `given`.
fn reference(module: &[u8], given: &Given<'_>, dir: &Path) -> Option<Outcome> {
    let (wasm, stdin) = (dir.join("reference.wasm"), dir.join("stdin"));
    let (stdout, stderr) = (dir.join("stdout"), dir.join("stderr"));
    std::fs::write(&wasm, module).expect("module");
    std::fs::write(&stdin, given.stdin).expect("stdin");
    let mut command = Command::new("python3");
    command
        .arg(programs().join("reference.py"))
        .args([&wasm, &stdin, &stdout, &stderr]);
    if !given.files.is_empty() {
        let input = dir.join("input");
        for (name, bytes) in &given.files {
            let path = input.join(name);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("input dir");
            std::fs::write(path, bytes).expect("input file");
        }
        command.arg("--input").arg(&input);
    }
    let output = dir.join("output");
    if given.output {
        std::fs::create_dir_all(&output).expect("output dir");
        command.arg("--output").arg(&output);
    }
    for e in given.env {
        command.arg(format!("--env={e}"));
    }
    let ran = command.arg("--").args(given.args).output();
    let out = match ran {
        Ok(out) if out.status.success() => out,
        Ok(out) if !required() => {
            eprintln!(
                "skipped: the reference runtime did not run (pip install wasmtime): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Ok(out) => panic!(
            "the reference runtime did not run (scripts/test-deps.sh installs the wasmtime \
             Python package): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if !required() => {
            eprintln!("skipped: no python3 ({e})");
            return None;
        }
        Err(e) => panic!("no python3: {e}"),
    };
    let text =
        |p: PathBuf| String::from_utf8_lossy(&std::fs::read(p).expect("written")).into_owned();
    Some(Outcome {
        stdout: text(stdout),
        stderr: text(stderr),
        code: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("an exit code"),
        files: if given.output {
            tree(&output)
        } else {
            BTreeMap::new()
        },
    })
}

/// Runs `module` under the engine, given `given`; the receipt must verify and state the
/// hashes of the input and output files.
fn engine_run(module: Vec<u8>, given: &Given<'_>) -> Outcome {
    let mut m = Manifest::new("task", module);
    m.input = given.stdin.to_vec();
    m.args = given.args.iter().map(|a| (*a).to_owned()).collect();
    m.env = given.env.iter().map(|a| (*a).to_owned()).collect();
    m.files = given.files.clone();
    m.output_files = given.output;
    let run = engine().run(&m);
    let code = match run.result {
        Ok(()) => 0,
        Err(TaskError::Exited(code)) => code,
        Err(e) => panic!("the engine's run: {e}"),
    };
    run.receipt
        .verify_with(None, Some(given.stdin), Some(&run.output))
        .expect("the receipt verifies");
    if given.output {
        assert_eq!(run.receipt.output_files_sha256, tree_sha256(&run.files));
    }
    if !given.files.is_empty() {
        assert_eq!(run.receipt.files_sha256, tree_sha256(&given.files));
    }
    Outcome {
        stdout: String::from_utf8_lossy(&run.output).into_owned(),
        stderr: String::from_utf8_lossy(&run.stderr).into_owned(),
        code,
        files: run.files,
    }
}

#[test]
fn a_c_program_built_with_wasi_libc_runs_as_under_the_reference_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(module) = build_c("wc.c", dir.path()) else {
        return;
    };
    let given = Given {
        stdin: b"one two three\nfour five\n",
        args: &["--lines", "a value with spaces"],
        ..Given::default()
    };
    let Some(expected) = reference(&module, &given, dir.path()) else {
        return;
    };
    let got = engine_run(module, &given);
    assert_eq!(got, expected);
    // Not vacuous: it read its input and arguments, met no file, and said so.
    assert!(
        got.stdout.starts_with("2 5 24\nargument 1: --lines\n"),
        "{}",
        got.stdout
    );
    assert!(
        got.stderr.contains("stat /input/data.txt:"),
        "{}",
        got.stderr
    );
    assert_eq!(got.code, 3);
}

#[test]
fn a_c_program_reads_input_files_and_writes_output_files_as_under_the_reference_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(module) = build_c("files.c", dir.path()) else {
        return;
    };
    let files: BTreeMap<String, Vec<u8>> = [
        ("a.txt", b"alpha\n".to_vec()),
        ("data/numbers.csv", b"1,2,3\n4,5,6\n".to_vec()),
        (
            "data/deeper/big.bin",
            (0..20_000u32).map(|i| (i * 7) as u8).collect(),
        ),
        ("z", Vec::new()),
    ]
    .into_iter()
    .map(|(n, b)| (n.to_owned(), b))
    .collect();
    let given = Given {
        args: &["-v"],
        env: &["GREETING=hello there"],
        files,
        output: true,
        ..Given::default()
    };
    let Some(expected) = reference(&module, &given, dir.path()) else {
        return;
    };
    let got = engine_run(module, &given);
    assert_eq!(got, expected);
    // Not vacuous: every file was read whole, the copy and the summary came back, and the
    // sandbox refused what it should.
    assert!(
        got.stdout.contains("GREETING hello there\n"),
        "{}",
        got.stdout
    );
    assert!(
        got.stdout
            .contains("file /input/data/deeper/big.bin 20000 bytes, read 20000"),
        "{}",
        got.stdout
    );
    assert_eq!(got.files["copies/first"], b"alpha\n");
    assert_eq!(
        got.files["summary.txt"]
            .iter()
            .filter(|b| **b == b'\n')
            .count(),
        4
    );
    assert!(
        got.stderr.contains("create under /input: refused"),
        "{}",
        got.stderr
    );
    assert!(
        got.stderr.contains("open above /input: refused"),
        "{}",
        got.stderr
    );
    assert_eq!(got.code, 0);
}

/// A program from crates.io built for WASI preview 1 by `scripts/build-programs.sh`;
/// `None` when it was not built and is not required (under `CI=true` it is).
fn crates_io_program(name: &str) -> Option<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/programs/bin")
        .join(format!("{name}.wasm"));
    match std::fs::read(&path) {
        Ok(module) => Some(module),
        Err(e) if required() => panic!(
            "{} ({e}): scripts/build-programs.sh builds it (scripts/test-deps.sh runs it)",
            path.display()
        ),
        Err(e) => {
            eprintln!(
                "skipped: {} ({e}); run scripts/build-programs.sh",
                path.display()
            );
            None
        }
    }
}

/// Input files of text a user might search, render or edit.
fn documents() -> BTreeMap<String, Vec<u8>> {
    [
        (
            "README.md",
            "# Foxes\n\nThe quick brown fox jumps over the lazy dog.\n\n\
             * one\n* two with `code`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
        ),
        ("notes/today.txt", "no animals here\nbut a dog barked\n"),
        ("notes/old/fox.txt", "a fox, again\nFOX in capitals\n"),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_owned(), t.as_bytes().to_vec()))
    .collect()
}

#[test]
fn programs_from_crates_io_run_as_under_the_reference_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    // (program, what it is given, what its output must hold so the comparison means
    // something)
    let cases: Vec<(&str, Given<'_>, &str)> = vec![
        (
            "rg",
            Given {
                args: &[
                    "--sort",
                    "path",
                    "-n",
                    "-i",
                    "--no-heading",
                    "fox|dog",
                    "/input",
                ],
                files: documents(),
                ..Given::default()
            },
            "/input/notes/old/fox.txt:2:FOX in capitals",
        ),
        (
            // Nothing found is exit code 1, as under any runtime.
            "rg",
            Given {
                args: &["-c", "unicorn", "/input/README.md"],
                files: documents(),
                ..Given::default()
            },
            "",
        ),
        (
            "comrak",
            Given {
                args: &[
                    "--extension",
                    "table",
                    "--output",
                    "/output/README.html",
                    "/input/README.md",
                ],
                files: documents(),
                output: true,
                ..Given::default()
            },
            "",
        ),
        (
            "comrak",
            Given {
                stdin: b"*emphasis* and **strong**\n",
                ..Given::default()
            },
            "<p><em>emphasis</em> and <strong>strong</strong></p>",
        ),
        (
            "sd",
            Given {
                stdin: b"The quick brown fox\nfox and fox\n",
                args: &["fox", "cat"],
                ..Given::default()
            },
            "The quick brown cat\ncat and cat\n",
        ),
    ];
    for (name, given, holds) in &cases {
        let Some(module) = crates_io_program(name) else {
            return;
        };
        let case = dir.path().join(format!("{name}-{}", given.args.len()));
        std::fs::create_dir_all(&case).expect("a directory");
        let Some(expected) = reference(&module, given, &case) else {
            return;
        };
        let got = engine_run(module, given);
        assert_eq!(got, expected, "{name} {:?}", given.args);
        assert!(got.stdout.contains(holds), "{name}: {}", got.stdout);
    }
    // Not vacuous: ripgrep found nothing in the second case and said so with its code,
    // and comrak's page came back as an output file.
    let Some(rg) = crates_io_program("rg") else {
        return;
    };
    assert_eq!(engine_run(rg, &cases[1].1).code, 1);
    let Some(comrak) = crates_io_program("comrak") else {
        return;
    };
    let page = engine_run(comrak, &cases[2].1).files;
    let html = String::from_utf8_lossy(&page["README.html"]).into_owned();
    assert!(
        html.contains("<h1>Foxes</h1>") && html.contains("<table>"),
        "{html}"
    );
}
