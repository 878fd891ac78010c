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
