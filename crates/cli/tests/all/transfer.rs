//! Modules too large for one network message travel by chunks, on real `zerostate node`
//! processes: a 16 MiB module submitted with `task submit` runs on another member, its
//! transfer resumed after the requester drops the connection mid-way; a chunk tampered in
//! flight is refused with the reason, and fetched from another member that holds it; programs nobody here wrote (ripgrep, comrak, a C
//! program) give under `task run` and across a guild what the official wasmtime gives.

use zerostate_telemetry::testing::OtlpReceiver;

use crate::cluster::{GuildCluster, NodeProcess, guild_cluster};
use crate::journey::{CONFIG, fund, member_with};

/// Bytes of the data the module carries: with its code, just under 16 MiB, the engine's
/// bound on a module.
const DATA: usize = (16 << 20) - 4096;

/// A module carrying `data` that writes the sum of its bytes (8 bytes, little-endian).
fn summing_module(data: &[u8]) -> Vec<u8> {
    let wat = format!(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 300)
          (func (export "_start") (local $i i32) (local $sum i64)
            (local.set $i (i32.const 1024))
            (block $done (loop $next
              (br_if $done (i32.ge_u (local.get $i) (i32.const {end})))
              (local.set $sum (i64.add (local.get $sum) (i64.load8_u (local.get $i))))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $next)))
            (i64.store (i32.const 16) (local.get $sum))
            (i32.store (i32.const 0) (i32.const 16))
            (i32.store (i32.const 4) (i32.const 8))
            (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        end = 1024 + data.len()
    );
    let mut module = wat::parse_str(wat).expect("the module's code");
    // The data section, last of a module's sections: one active segment at offset 1024.
    let mut segment = vec![1, 0x00, 0x41, 0x80, 0x08, 0x0b];
    leb128(&mut segment, data.len() as u64);
    segment.extend_from_slice(data);
    module.push(11);
    leb128(&mut module, segment.len() as u64);
    module.extend_from_slice(&segment);
    module
}

fn leb128(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Bytes nobody could compress, the same on every run for the same `seed`.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `zerostate task submit MODULE --json` on `node`: its exit status and record.
fn submit(
    dir: &std::path::Path,
    node: &NodeProcess,
    module: &std::path::Path,
) -> (i32, serde_json::Value) {
    let api = api_of(node);
    let run = crate::zerostate(
        &dir.join(&node.name),
        &[
            "task",
            "submit",
            module.to_str().expect("utf-8"),
            "--node",
            &api,
            "--timeout",
            "30s",
            "--json",
        ],
        b"",
    );
    let stdout = crate::text(&run.stdout);
    let record = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no record ({e}): {stdout}\n{}", crate::text(&run.stderr)));
    (run.status.code().unwrap_or(-1), record)
}

/// The value of counter `series` (name and labels as exposed) on `node`.
fn counter(node: &NodeProcess, series: &str) -> f64 {
    let (_, metrics) = crate::cluster::http(&node.admin, "GET", "/metrics", None, &[]);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_16_mib_module_travels_by_chunks_resumes_after_a_dropped_connection_and_a_tampered_chunk_is_refused()
 {
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let GuildCluster {
        coordinator,
        members,
        id,
    } = guild_cluster(dir.path(), CONFIG, 1, &receiver.endpoint());
    let executor = &members[0];
    // Two requesters that run nothing themselves: one drops the connection when asked for
    // the sixth chunk, one flips a byte of every chunk it serves.
    let requester_config = dir.path().join("requester.toml");
    std::fs::write(
        &requester_config,
        CONFIG.replacen("[tasks]\n", "[tasks]\nexecute = false\n", 1),
    )
    .expect("config");
    let [dropper, tamperer] = [
        ("dropper", "drop-chunk-connection=5"),
        ("tamperer", "tamper-chunks"),
    ]
    .map(|(name, misbehave)| {
        member_with(
            dir.path(),
            (&coordinator, &id),
            name,
            &requester_config,
            &receiver.endpoint(),
            &[misbehave],
        )
    });
    fund(&coordinator, &dropper);
    fund(&coordinator, &tamperer);

    let data = noise(DATA, 1);
    let expected: u64 = data.iter().map(|b| u64::from(*b)).sum();
    let module = summing_module(&data);
    assert!(
        module.len() > (16 << 20) - 4096 && module.len() <= 16 << 20,
        "{}",
        module.len()
    );
    let path = dir.path().join("big.wasm");
    std::fs::write(&path, &module).expect("module");

    // Uploaded, announced, fetched by chunks with one resumed, run on the other member,
    // and its sum is right.
    let started = std::time::Instant::now();
    let (code, record) = submit(dir.path(), &dropper, &path);
    eprintln!(
        "a {} byte module by chunks, one resumed: {:.2} s from submission to record",
        module.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(code, 0, "{record}");
    assert_eq!(record["executor"], executor.peer_id.as_str(), "{record}");
    use base64::Engine as _;
    let output = base64::engine::general_purpose::STANDARD
        .decode(record["output"].as_str().expect("output"))
        .expect("base64");
    assert_eq!(output, expected.to_le_bytes(), "{record}");
    assert_eq!(record["attempts"][0]["module_sent"], true, "{record}");
    assert!(
        counter(executor, "task_module_chunks_total{result=\"resumed\"}") >= 1.0,
        "the transfer was not resumed"
    );
    assert_eq!(
        counter(executor, "task_module_chunks_total{result=\"fetched\"}"),
        64.0
    );

    // Tampered in flight: refused at the first chunk, with the reason, and nothing ran
    // (another module: the executor holds the first one now, and is sent only its hash).
    let other = dir.path().join("other.wasm");
    std::fs::write(&other, summing_module(&noise(2 << 20, 2))).expect("module");
    let (code, record) = submit(dir.path(), &tamperer, &other);
    assert_eq!(code, 3, "{record}");
    let outcome = record["attempts"][0]["outcome"]
        .as_str()
        .unwrap_or_default();
    assert!(
        outcome.contains("chunk 0 of module") && outcome.contains("does not match the hash"),
        "{record}"
    );
    assert!(counter(executor, "task_module_chunks_total{result=\"refused\"}") >= 1.0);

    // Once another member holds the module (the dropper, which had it uploaded), the
    // chunks the tamperer spoils are fetched from that member instead, and the task runs.
    let bytes = std::fs::read(&other).expect("module");
    let client = zerostate_node::client::NodeClient::new(
        &api_of(&dropper),
        &dir.path().join(&dropper.name).join("api.token"),
    )
    .expect("a client of the dropper");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(client.post_bytes("/v1/modules", bytes))
        .expect("uploaded to the dropper");
    let (code, record) = submit(dir.path(), &tamperer, &other);
    assert_eq!(code, 0, "{record}");
    assert!(
        counter(executor, "task_module_chunks_total{result=\"elsewhere\"}") >= 8.0,
        "the chunks did not come from the other member"
    );
}

/// The base URL of `node`'s API.
fn api_of(node: &NodeProcess) -> String {
    if node.api.starts_with("http") {
        node.api.clone()
    } else {
        format!("http://{}", node.api)
    }
}

/// What a program did: stdout, stderr, exit code, and the files it left in `/output`.
type Outcome = (
    String,
    String,
    i32,
    std::collections::BTreeMap<String, Vec<u8>>,
);

/// Every file under `dir`, by its path relative to `dir` (none when there is no `dir`).
fn tree(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    if !dir.exists() {
        return std::collections::BTreeMap::new();
    }
    zerostate::commands::task_files::read_tree(dir).expect("the files under dir")
}

/// `module` under the official wasmtime runtime (the execution tests' `reference.py`),
/// with `input` preopened read-only as `/input` and an empty writable `/output`.
fn reference(
    module: &std::path::Path,
    input: &std::path::Path,
    env: &[&str],
    args: &[&str],
    (stdin_bytes, dir): (&[u8], &std::path::Path),
) -> Outcome {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../execution/tests/programs/reference.py");
    let (stdin, stdout, stderr, output) = (
        dir.join("ref-stdin"),
        dir.join("ref-stdout"),
        dir.join("ref-stderr"),
        dir.join("ref-output"),
    );
    std::fs::write(&stdin, stdin_bytes).expect("stdin");
    std::fs::create_dir_all(&output).expect("output");
    let mut command = std::process::Command::new("python3");
    command
        .arg(script)
        .args([module, &stdin, &stdout, &stderr])
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(&output);
    for e in env {
        command.arg(format!("--env={e}"));
    }
    let ran = command.arg("--").args(args).output().expect("python3 runs");
    assert!(
        ran.status.success(),
        "the reference runtime did not run (scripts/test-deps.sh installs the wasmtime \
         Python package): {}",
        crate::text(&ran.stderr)
    );
    let text = |p: &std::path::Path| crate::text(&std::fs::read(p).expect("written"));
    (
        text(&stdout),
        text(&stderr),
        crate::text(&ran.stdout)
            .trim()
            .parse()
            .expect("an exit code"),
        tree(&output),
    )
}

#[test]
fn real_programs_run_under_task_run_and_on_the_network_as_under_the_reference_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let programs =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/programs/bin");
    let rg = programs.join("rg.wasm");
    let comrak = programs.join("comrak.wasm");
    let sd = programs.join("sd.wasm");
    if !rg.exists() || !comrak.exists() || !sd.exists() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "{} is not built: scripts/build-programs.sh builds it",
            rg.display()
        );
        eprintln!("skipped: run scripts/build-programs.sh");
        return;
    }
    let Some(c) = crate::c_program("files.c", dir.path()) else {
        return;
    };
    let files_c = dir.path().join("files.wasm");
    std::fs::write(&files_c, c).expect("module");
    // The input as a user has it: a file and a directory.
    let input = dir.path().join("input");
    std::fs::create_dir_all(input.join("notes/old")).expect("input");
    std::fs::write(
        input.join("README.md"),
        "# Foxes\n\nThe quick brown fox jumps over the lazy dog.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
    )
    .expect("input");
    std::fs::write(input.join("notes/today.txt"), "but a dog barked\n").expect("input");
    std::fs::write(
        input.join("notes/old/fox.txt"),
        "a fox, again\nFOX in capitals\n",
    )
    .expect("input");
    // Large enough to travel by chunks: 2 MiB of log lines, a fox at the end.
    let mut log: String = (0..60_000)
        .map(|i| format!("{i:08} nothing to see here, move on\n"))
        .collect();
    log.push_str("99999999 the fox was here\n");
    std::fs::write(input.join("notes/big.log"), log).expect("input");

    let receiver = OtlpReceiver::start();
    let GuildCluster {
        coordinator,
        members,
        ..
    } = guild_cluster(dir.path(), CONFIG, 2, &receiver.endpoint());
    let (requester, executor) = (&members[0], &members[1]);
    fund(&coordinator, requester);
    let api = api_of(requester);
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
    let cases: [(&std::path::Path, &[&str], &[&str]); 5] = [
        // ripgrep, 3.2 MB: by chunks.
        (
            &rg,
            &[],
            &[
                "--sort",
                "path",
                "-n",
                "-i",
                "--no-heading",
                "fox|dog",
                "/input",
            ],
        ),
        (&rg, &[], &["-c", "unicorn", "/input/README.md"]),
        (
            &comrak,
            &[],
            &[
                "--extension",
                "table",
                "--output",
                "/output/README.html",
                "/input/README.md",
            ],
        ),
        (&files_c, &["GREETING=hello there"], &["-v"]),
        // sd edits its stdin.
        (&sd, &[], &["fox", "cat"]),
    ];
    let stdin_of = |i: usize| -> &[u8] {
        if i == 4 {
            b"The quick brown fox\nfox and fox\n"
        } else {
            b""
        }
    };
    for (i, (module, env, args)) in cases.iter().enumerate() {
        let case = dir.path().join(format!("case-{i}"));
        std::fs::create_dir_all(&case).expect("case");
        let stdin = case.join("stdin.txt");
        std::fs::write(&stdin, stdin_of(i)).expect("stdin");
        let expected = reference(module, &input, env, args, (stdin_of(i), &case));
        let out = case.join("out");
        let mut command = vec![
            "task".to_owned(),
            "submit".to_owned(),
            path(module),
            "--node".to_owned(),
            api.clone(),
            "--file".to_owned(),
            format!("README.md={}", path(&input.join("README.md"))),
            "--file".to_owned(),
            format!("notes={}", path(&input.join("notes"))),
            "--output".to_owned(),
            path(&out),
            "--json".to_owned(),
            "--input".to_owned(),
            path(&stdin),
        ];
        for e in env.iter() {
            command.extend(["--env".to_owned(), (*e).to_owned()]);
        }
        for a in args.iter() {
            command.push(format!("--arg={a}"));
        }
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        // The same under `task run`, on this machine.
        let mut local: Vec<&str> = command.clone();
        local[1] = "run";
        local.drain(3..5);
        let local_out = case.join("local-out");
        let local_out_arg = path(&local_out);
        let at = local
            .iter()
            .position(|a| *a == "--output")
            .expect("--output")
            + 1;
        local[at] = &local_out_arg;
        let ran = crate::zerostate(&case.join("data"), &local, b"");
        let summary: serde_json::Value = serde_json::from_slice(&ran.stdout)
            .unwrap_or_else(|e| panic!("no summary ({e}): {}", crate::text(&ran.stderr)));
        let run = crate::zerostate(&dir.path().join(&requester.name), &command, b"");
        let record: serde_json::Value = serde_json::from_slice(&run.stdout)
            .unwrap_or_else(|e| panic!("no record ({e}): {}", crate::text(&run.stderr)));
        assert_eq!(record["executor"], executor.peer_id.as_str(), "{record}");
        use base64::Engine as _;
        let b64 = |v: &serde_json::Value| {
            crate::text(
                &base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap_or_default())
                    .expect("base64"),
            )
        };
        let got: Outcome = (
            b64(&record["output"]),
            b64(&record["stderr"]),
            record["exit_code"].as_i64().expect("an exit code") as i32,
            tree(&out),
        );
        assert_eq!(got, expected, "case {i}: {record}");
        let local_got: Outcome = (
            b64(&summary["output"]),
            b64(&summary["stderr"]),
            summary["exit_code"].as_i64().expect("an exit code") as i32,
            tree(&local_out),
        );
        assert_eq!(local_got, expected, "case {i} under task run: {summary}");
        assert_eq!(record["payment"]["status"], "paid", "{record}");
        // Not vacuous: what each case is for is there.
        match i {
            0 => assert!(
                got.0.contains("/input/notes/old/fox.txt:2:FOX")
                    && got
                        .0
                        .contains("/input/notes/big.log:60001:99999999 the fox"),
                "{}",
                got.0
            ),
            1 => assert_eq!(got.2, 1),
            2 => assert!(crate::text(&got.3["README.html"]).contains("<table>")),
            3 => {
                assert!(got.0.contains("GREETING hello there") && got.3.contains_key("summary.txt"))
            }
            _ => assert_eq!(got.0, "The quick brown cat\ncat and cat\n"),
        }
    }
}
