//! The chaos suite's short form: every scenario, seconds of load each, on real processes.
//! The long form (`zerostate chaos`, a minute a scenario and 20 kills) writes the table in
//! docs/reliability.md.

use std::process::Command;

#[test]
fn every_chaos_scenario_keeps_tasks_payments_and_spans() {
    let _alone = crate::alone();
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_zerostate"))
        .args(["chaos", "--seconds", "12", "--kills", "3", "--data"])
        .arg(dir.path().join("runs"))
        .arg("--report")
        .arg(&report)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("RUST_LOG")
        .output()
        .expect("zerostate chaos runs");
    let stdout = crate::text(&output.stdout);
    let stderr = crate::text(&output.stderr);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(&report).unwrap_or_else(|e| panic!("no report ({e}): {stderr}")),
    )
    .expect("the report is JSON");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["scenario"].as_str()).collect();
    assert_eq!(
        names,
        [
            "load-100",
            "load-10",
            "collector-killed",
            "partition",
            "executors-killed",
            "ledger-restarted",
            "coordinator-lost",
            "coordinator-restarted",
            "coordinator-back",
            "successors-at-once",
            "coordinator-partitioned",
            "slow-collector",
            "cheaters"
        ],
        "{stdout}"
    );
    for row in &rows {
        let failed: Vec<&serde_json::Value> = row["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .filter(|c| c["ok"] != true)
            .collect();
        assert!(
            failed.is_empty(),
            "{}: {failed:?}\n{stdout}\n{stderr}",
            row["scenario"]
        );
        assert!(row["submitted"].as_u64() > Some(0), "{row}");
        assert_eq!(row["lost"], 0, "{row}");
    }
    // Where the machine allows it the partitions are real ones; under CI they must be.
    for name in ["partition", "coordinator-partitioned"] {
        let partition = rows
            .iter()
            .find(|r| r["scenario"] == name)
            .expect("the partition ran");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            assert!(
                partition["fault"]
                    .as_str()
                    .is_some_and(|f| f.contains("network namespace")),
                "under CI=true {name} must cut a network namespace's link (root and \
                 iproute2's `ip`, installed by scripts/test-deps.sh): {partition}"
            );
        }
    }
    assert!(output.status.success(), "{stdout}\n{stderr}");
}

#[test]
fn ledger_restarted_on_a_chain_keeps_every_payment_when_anvil_is_killed_and_started_again() {
    if !zerostate_chain::anvil_for_tests() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_zerostate"))
        .args([
            "chaos",
            "--scenario",
            "ledger-restarted",
            "--chain",
            "anvil",
        ])
        .args(["--seconds", "12", "--data"])
        .arg(dir.path().join("runs"))
        .arg("--report")
        .arg(&report)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("RUST_LOG")
        .output()
        .expect("zerostate chaos runs");
    let stdout = crate::text(&output.stdout);
    let stderr = crate::text(&output.stderr);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(&report).unwrap_or_else(|e| panic!("no report ({e}): {stderr}")),
    )
    .expect("the report is JSON");
    assert_eq!(rows.len(), 1, "{stdout}");
    let row = &rows[0];
    assert!(
        row["fault"]
            .as_str()
            .is_some_and(|f| f.starts_with("anvil")),
        "{row}"
    );
    let failed: Vec<&serde_json::Value> = row["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["ok"] != true)
        .collect();
    assert!(failed.is_empty(), "{failed:?}\n{stdout}\n{stderr}");
    assert_eq!(row["lost"], 0, "{row}");
    assert!(output.status.success(), "{stdout}\n{stderr}");
}
