//! Receipts written by `task run` and checked by `receipt verify`.

use crate::{text, zerostate};

#[test]
fn a_receipt_is_signed_by_the_node_key_created_on_first_use() {
    let data = tempfile::tempdir().expect("tempdir");
    let receipt = data.path().join("receipt.json");
    let r = receipt.to_str().expect("utf-8");
    let out = zerostate(
        data.path(),
        &[
            "task",
            "run",
            "builtin:matmul",
            "--input",
            "-",
            "--receipt",
            r,
        ],
        b"8",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let key = data.path().join("node.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key)
            .expect("key file")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "the node key is readable by its owner only");
    }
    let first: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&receipt).expect("receipt")).expect("json");
    assert_eq!(first["status"], "ok");

    let out = zerostate(data.path(), &["receipt", "verify", r], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("receipt intact"),
        "{}",
        text(&out.stdout)
    );

    // The same key signs the next run.
    zerostate(
        data.path(),
        &[
            "task",
            "run",
            "builtin:matmul",
            "--input",
            "-",
            "--receipt",
            r,
        ],
        b"9",
    );
    let second: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&receipt).expect("receipt")).expect("json");
    assert_eq!(first["executor"], second["executor"]);
}

#[test]
fn a_failed_run_gets_a_receipt_too() {
    let data = tempfile::tempdir().expect("tempdir");
    let receipt = data.path().join("failed.json");
    let r = receipt.to_str().expect("utf-8");
    let out = zerostate(
        data.path(),
        &[
            "task",
            "run",
            "builtin:primes",
            "--input",
            "-",
            "--fuel",
            "1000",
            "--receipt",
            r,
        ],
        b"100000",
    );
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&receipt).expect("receipt")).expect("json");
    assert_eq!(json["status"], "failed");
    assert_eq!(json["error"], "out_of_fuel: out of fuel after 1000 units");
    let out = zerostate(data.path(), &["receipt", "verify", r], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn verify_exits_non_zero_and_says_what_is_wrong() {
    let data = tempfile::tempdir().expect("tempdir");
    let receipt = data.path().join("receipt.json");
    let r = receipt.to_str().expect("utf-8");
    zerostate(
        data.path(),
        &[
            "task",
            "run",
            "builtin:crc32",
            "--input",
            "-",
            "--receipt",
            r,
        ],
        b"abc",
    );

    let other = data.path().join("other-output");
    std::fs::write(&other, "not the output").expect("write");
    let out = zerostate(
        data.path(),
        &[
            "receipt",
            "verify",
            r,
            "--output",
            other.to_str().expect("utf-8"),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "receipt invalid: output SHA-256 does not match the receipt\n"
    );

    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&receipt).expect("receipt")).expect("json");
    json["fuel_consumed"] = serde_json::json!(1);
    std::fs::write(&receipt, json.to_string()).expect("write");
    let out = zerostate(data.path(), &["receipt", "verify", r], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("receipt invalid: signature does not match"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(&receipt, "{ not json").expect("write");
    let out = zerostate(data.path(), &["receipt", "verify", r], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("receipt invalid: not a receipt"),
        "{}",
        text(&out.stderr)
    );
}

/// Runs `module` with `input` under `task run` in its own process (data directory `data`),
/// writing the receipt to `data/name.json`; its path.
fn receipt_of(data: &std::path::Path, module: &str, input: &[u8], name: &str) -> String {
    let receipt = data.join(format!("{name}.json"));
    let r = receipt.to_str().expect("utf-8").to_owned();
    let out = zerostate(
        data,
        &["task", "run", module, "--input", "-", "--receipt", &r],
        input,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    r
}

#[test]
fn a_rerun_in_another_process_matches_an_honest_receipt_whatever_the_cache() {
    let floats = concat!(env!("CARGO_MANIFEST_DIR"), "/../execution/tests/floats.wat");
    for (module, input) in [
        ("builtin:primes", &b"100000"[..]),
        ("builtin:matmul", b"12"),
        ("builtin:crc32", b"zerostate"),
        (floats, b""),
    ] {
        // Two processes on one data directory: the second runs from the disk cache.
        let data = tempfile::tempdir().expect("tempdir");
        let cold = receipt_of(data.path(), module, input, "cold");
        let cached = receipt_of(data.path(), module, input, "cached");
        let read = |p: &str| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(p).expect("receipt")).expect("json")
        };
        let (a, b) = (read(&cold), read(&cached));
        assert_eq!(a["output_sha256"], b["output_sha256"], "{module}");
        assert_eq!(a["engine"], b["engine"], "{module}");
        let input_file = data.path().join("input");
        std::fs::write(&input_file, input).expect("input");
        // A third process reruns each (task ids differ, so does the fuel by a little: the
        // id is the program's name).
        for receipt in [&cold, &cached] {
            let out = zerostate(
                data.path(),
                &[
                    "receipt",
                    "verify",
                    receipt,
                    "--rerun",
                    "--module",
                    module,
                    "--input",
                    input_file.to_str().expect("utf-8"),
                ],
                b"",
            );
            assert!(
                out.status.success(),
                "{module}: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
            assert!(
                text(&out.stdout).contains("rerun matches"),
                "{}",
                text(&out.stdout)
            );
        }
    }
}

#[test]
fn a_rerun_names_what_a_lying_receipt_claims_and_refuses_another_engine() {
    let data = tempfile::tempdir().expect("tempdir");
    let honest = receipt_of(data.path(), "builtin:primes", b"1000", "honest");
    let input = data.path().join("input");
    std::fs::write(&input, b"1000").expect("input");
    let verify = |receipt: &str| {
        zerostate(
            data.path(),
            &[
                "receipt",
                "verify",
                receipt,
                "--rerun",
                "--module",
                "builtin:primes",
                "--input",
                input.to_str().expect("utf-8"),
            ],
            b"",
        )
    };
    // A receipt claiming a hundred times the fuel, signed by its executor (a peer that lies
    // signs what it likes).
    let mut claim: zerostate_execution::Receipt =
        serde_json::from_slice(&std::fs::read(&honest).expect("receipt")).expect("receipt");
    let key = zerostate_execution::ExecutorKey::from_seed([5; 32]);
    let resign = |mut r: zerostate_execution::Receipt, name: &str| {
        r.signature.clear();
        let r = r.sign(&key);
        let path = data.path().join(name);
        std::fs::write(&path, r.to_json()).expect("write");
        path.to_str().expect("utf-8").to_owned()
    };
    claim.fuel_consumed *= 100;
    let inflated = resign(claim.clone(), "inflated.json");
    let out = verify(&inflated);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("rerun differs: fuel: the receipt says"),
        "{}",
        text(&out.stderr)
    );
    // Another engine's receipt cannot be judged by a rerun here.
    claim.fuel_consumed /= 100;
    claim.engine = "wasmtime-1.0.0+0000000000000000".into();
    let foreign = resign(claim, "foreign.json");
    let out = verify(&foreign);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not comparable"),
        "{}",
        text(&out.stderr)
    );
}
