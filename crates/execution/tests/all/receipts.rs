//! Receipts: signed, round-trip through JSON, and every single-field change is caught.

use zerostate_execution::{ExecutorKey, Receipt, ReceiptError};

use crate::harness::{ECHO, engine, manifest};

fn receipt() -> (Receipt, Vec<u8>, Vec<u8>) {
    let mut m = manifest(ECHO);
    m.input = b"pay me".to_vec();
    let run = engine().run(&m);
    assert_eq!(run.result, Ok(()));
    (run.receipt, m.input, run.output)
}

#[test]
fn a_receipt_round_trips_through_json_and_verifies_with_its_hashes() {
    let (r, input, output) = receipt();
    let back = Receipt::from_json(r.to_json().as_bytes()).expect("parses");
    assert_eq!(back, r);
    back.verify_with(Some(ECHO.as_bytes()), Some(&input), Some(&output))
        .expect("intact");
    assert_eq!(back.status, "ok");
    assert!(back.executor.starts_with("12D3KooW"));
    assert_eq!(
        back.verify_with(None, None, Some(b"other output")),
        Err(ReceiptError::HashMismatch { what: "output" })
    );
}

#[test]
fn every_single_field_tampering_is_detected() {
    let (r, _, _) = receipt();
    let other_executor = ExecutorKey::from_seed([9; 32]).peer_id();
    type Tamper = Box<dyn Fn(&mut Receipt)>;
    let tamperings: Vec<(&str, Tamper)> = vec![
        ("task_id", Box::new(|r| r.task_id.push('x'))),
        (
            "module_sha256",
            Box::new(|r| r.module_sha256.replace_range(0..1, "f")),
        ),
        (
            "input_sha256",
            Box::new(|r| r.input_sha256.replace_range(0..1, "f")),
        ),
        (
            "output_sha256",
            Box::new(|r| r.output_sha256.replace_range(0..1, "f")),
        ),
        ("entry", Box::new(|r| r.entry = "matmul".into())),
        ("args", Box::new(|r| r.args.push("--other".into()))),
        ("limits.fuel", Box::new(|r| r.limits.fuel += 1)),
        (
            "limits.memory_bytes",
            Box::new(|r| r.limits.memory_bytes += 1),
        ),
        (
            "limits.wall_time_ms",
            Box::new(|r| r.limits.wall_time_ms += 1),
        ),
        (
            "limits.output_bytes",
            Box::new(|r| r.limits.output_bytes += 1),
        ),
        ("status", Box::new(|r| r.status = "failed".into())),
        ("error", Box::new(|r| r.error = Some("trap: forged".into()))),
        ("fuel_consumed", Box::new(|r| r.fuel_consumed += 1)),
        ("peak_memory_bytes", Box::new(|r| r.peak_memory_bytes += 1)),
        ("wall_time_us", Box::new(|r| r.wall_time_us += 1)),
        (
            "executor",
            Box::new(move |r| r.executor = other_executor.clone()),
        ),
        (
            "trace_id",
            Box::new(|r| r.trace_id = "0af7651916cd43dd8448eb211c80319c".into()),
        ),
        ("issued_at", Box::new(|r| r.issued_at += 1)),
        (
            "signature",
            Box::new(|r| {
                r.signature.replace_range(
                    0..2,
                    if r.signature.starts_with("00") {
                        "01"
                    } else {
                        "00"
                    },
                )
            }),
        ),
    ];
    for (field, tamper) in tamperings {
        let mut t = r.clone();
        tamper(&mut t);
        assert_ne!(t, r, "{field} did not change");
        assert!(t.verify().is_err(), "changing {field} went unnoticed");
    }
}

#[test]
fn malformed_receipts_are_refused_with_a_reason() {
    assert!(matches!(
        Receipt::from_json(b"{not json"),
        Err(ReceiptError::Malformed(_))
    ));
    let (mut r, _, _) = receipt();
    r.executor = "not-a-peer-id".into();
    assert!(matches!(r.verify(), Err(ReceiptError::BadExecutor(_))));
    let (mut r, _, _) = receipt();
    r.signature = "abcd".into();
    assert_eq!(r.verify(), Err(ReceiptError::MalformedSignature));
}
