//! Programs built by a C toolchain as a task author builds them (Debian's `clang`, `lld`,
//! `wasi-libc` and compiler-rt for wasm32), run by the engine and by the official wasmtime
//! runtime (its Python package, `wasmtime` on PyPI): stdout, stderr and exit code alike.
//! `scripts/test-deps.sh` installs the tools; without them the test says so and passes,
//! except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use zerostate_execution::{Manifest, TaskError};

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

/// What a program did: stdout, stderr, exit code.
type Outcome = (Vec<u8>, Vec<u8>, i32);

/// Runs `module` under the reference runtime with `input` on stdin and `args`.
fn reference(module: &[u8], input: &[u8], args: &[&str], dir: &Path) -> Option<Outcome> {
    let (wasm, stdin) = (dir.join("reference.wasm"), dir.join("stdin"));
    let (stdout, stderr) = (dir.join("stdout"), dir.join("stderr"));
    std::fs::write(&wasm, module).expect("module");
    std::fs::write(&stdin, input).expect("stdin");
    let ran = Command::new("python3")
        .arg(programs().join("reference.py"))
        .args([&wasm, &stdin, &stdout, &stderr])
        .args(args)
        .output();
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
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("an exit code");
    Some((
        std::fs::read(&stdout).expect("stdout"),
        std::fs::read(&stderr).expect("stderr"),
        code,
    ))
}

/// Runs `module` under the engine.
fn engine_run(module: Vec<u8>, input: &[u8], args: &[&str]) -> Outcome {
    let mut m = Manifest::new("task", module);
    m.input = input.to_vec();
    m.args = args.iter().map(|a| (*a).to_owned()).collect();
    let run = engine().run(&m);
    let code = match run.result {
        Ok(()) => 0,
        Err(TaskError::Exited(code)) => code,
        Err(e) => panic!("the engine's run: {e}"),
    };
    (run.output, run.stderr, code)
}

fn text(o: &Outcome) -> (String, String, i32) {
    (
        String::from_utf8_lossy(&o.0).into_owned(),
        String::from_utf8_lossy(&o.1).into_owned(),
        o.2,
    )
}

#[test]
fn a_c_program_built_with_wasi_libc_runs_as_under_the_reference_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(module) = build_c("wc.c", dir.path()) else {
        return;
    };
    let input = b"one two three\nfour five\n";
    let args = ["--lines", "a value with spaces"];
    let Some(expected) = reference(&module, input, &args, dir.path()) else {
        return;
    };
    let got = engine_run(module, input, &args);
    assert_eq!(text(&got), text(&expected));
    // Not vacuous: it read its input and arguments, met no file, and said so.
    let (stdout, stderr, code) = text(&got);
    assert!(
        stdout.starts_with("2 5 24\nargument 1: --lines\n"),
        "{stdout}"
    );
    assert!(stderr.contains("stat /input/data.txt:"), "{stderr}");
    assert_eq!(code, 3);
}
