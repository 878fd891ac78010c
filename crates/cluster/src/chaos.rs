//! `zerostate chaos`: a real network of processes under a steady task load, with faults
//! injected, measured from the outside — tasks submitted, succeeded, failed (and why) and
//! lost; payments the requester was told of against those on both parties' disks; spans
//! the collector acknowledged against those in its store; each node's peak resident
//! memory; the time to recover. Prints a table; exits 1 when a check fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

mod checks;
mod island;
mod load;
mod net;
mod proxy;
mod scenarios;

use crate::bench::quantile;
use load::{Book, Load, Pace};
use net::{Net, Plan};
use scenarios::{Scenario, Setting};

/// Run the chaos scenarios against a network of real processes.
#[derive(Debug, Args)]
pub struct ChaosCommand {
    /// Scenarios to run, in order; repeatable [default: all].
    #[arg(long = "scenario", value_name = "SCENARIO", value_parser = scenarios::parser())]
    scenarios: Vec<String>,
    /// Seconds of load per scenario: the fault comes after a third of it and is healed
    /// after two thirds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(6..=3600))]
    seconds: u64,
    /// Tasks submitted per second in the fault scenarios; more than 0, at most 1000.
    ///
    /// The load scenarios keep `--in-flight` tasks under way instead.
    #[arg(long, default_value_t = 4.0, value_parser = rate)]
    rate: f64,
    /// Tasks kept under way in the load scenarios (three executors run two each at once).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..=256))]
    in_flight: u64,
    /// Executors killed (SIGKILL) and started again in `executors-killed`.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    kills: u32,
    /// How long the slow collector holds each answer, milliseconds.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    slow_ms: u64,
    /// Where the processes keep their data and logs [default: a temporary directory,
    /// removed afterwards].
    #[arg(long = "data-dir", visible_alias = "data", value_name = "DIR")]
    data: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Settle payments on a chain instead of the ledger node: `anvil`.
    ///
    /// `anvil` starts Foundry's anvil from PATH with its state in a file; `ledger-restarted`
    /// then kills anvil and starts it again on that state.
    #[arg(long, value_name = "CHAIN", value_parser = ["anvil"])]
    chain: Option<String>,
}

/// `--rate`: a number of tasks per second, more than 0 and at most 1000.
fn rate(text: &str) -> Result<f64, String> {
    let r: f64 = text
        .parse()
        .map_err(|e| format!("{text:?} is not a number: {e}"))?;
    if r > 0.0 && r <= 1000.0 {
        Ok(r)
    } else {
        Err(format!(
            "{r} tasks a second: it must be more than 0 and at most 1000"
        ))
    }
}

/// A check a scenario makes, and how it came out.
#[derive(Debug, serde::Serialize)]
struct Check {
    name: String,
    ok: bool,
    detail: String,
}

/// What one scenario measured.
#[derive(Debug, Default, serde::Serialize)]
struct Row {
    scenario: String,
    load: String,
    fault: String,
    seconds: f64,
    submitted: usize,
    succeeded: usize,
    failed: usize,
    lost: usize,
    /// Why tasks failed, with counts.
    reasons: BTreeMap<String, usize>,
    /// Succeeded tasks' time from submission to paid, as the requester measured it.
    p50_ms: f64,
    p95_ms: f64,
    /// Payments the requester reported as paid.
    payments_acknowledged: usize,
    /// Of those, found exactly once in the payer's store and in a payee's store.
    payments_found_payer: usize,
    payments_found_payee: usize,
    /// Receipts paid more than once on either side.
    payments_duplicated: usize,
    /// Payments on a payee's disk the requester never reported as paid (an answer lost).
    payments_unreported: usize,
    /// Tasks whose payment did not go through, with why.
    payments_not_made: usize,
    spans_acknowledged: u64,
    spans_stored: u64,
    spans_dropped: u64,
    spans_export_failed: u64,
    /// Spans the nodes made, and of them those lost for good (dropped, failed without a
    /// spool, deleted from a full spool).
    spans_made: u64,
    spans_lost: u64,
    /// Spans still in a node's spool when it stopped (sent at its next start), less those a
    /// node started again found in its spool.
    spans_spooled: u64,
    /// Spans a node started again found in its spool, left by the run before.
    spans_spool_found: u64,
    peak_rss_mib: BTreeMap<String, f64>,
    /// Seconds from the fault's end (or the fault) to recovery, and what that means.
    recovery_s: Option<f64>,
    recovery: String,
    notes: Vec<String>,
    checks: Vec<Check>,
    ok: bool,
}

impl Row {
    /// Checks that every task of `book` succeeded.
    fn all_succeeded(&mut self, book: &Book, name: &str) {
        let mut why: BTreeMap<String, usize> = BTreeMap::new();
        for outcome in book.outcomes.iter().filter(|o| o.state != "succeeded") {
            let reason = outcome.reason.as_deref().unwrap_or("no reason given");
            *why.entry(format!("{}: {}", outcome.state, reason_key(reason)))
                .or_default() += 1;
        }
        let failed: usize = why.values().sum();
        let mut detail = format!("{failed} tasks did not succeed");
        if !why.is_empty() {
            let each: Vec<String> = why.iter().map(|(r, n)| format!("{n} × {r}")).collect();
            detail = format!("{detail} ({})", each.join("; "));
        }
        self.check(name, failed == 0, detail);
    }

    /// Records how long recovery took (`None`: it did not happen in time), and what it
    /// measures.
    fn recovered(&mut self, took: Option<Duration>, what: &str) {
        self.recovery_s = took.map(|d| d.as_secs_f64());
        self.recovery = what.to_owned();
    }

    fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.to_owned(),
            ok,
            detail: detail.into(),
        });
    }
}

/// The first line of an error chain, short enough for a table.
pub(crate) fn short(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    text.chars().take(160).collect()
}

/// Failure reasons grouped: ids and numbers vary, the wording does not.
fn reason_key(reason: &str) -> String {
    let words: Vec<String> = reason
        .split_whitespace()
        .map(|w| {
            if w.chars().filter(char::is_ascii_hexdigit).count() >= 8
                || w.chars().any(|c| c.is_ascii_digit())
            {
                "…".to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect();
    words.join(" ").chars().take(140).collect()
}

impl ChaosCommand {
    /// Runs the scenarios and prints the table.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let scenarios: Vec<&dyn Scenario> = if self.scenarios.is_empty() {
            scenarios::ALL.to_vec()
        } else {
            self.scenarios
                .iter()
                .map(|name| scenarios::by_name(name).context("no such scenario"))
                .collect::<anyhow::Result<_>>()?
        };
        let base = match &self.data {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("zerostate-chaos-{}", std::process::id())),
        };
        let mut rows = Vec::new();
        for scenario in scenarios {
            eprintln!("chaos: {} ({} s of load)", scenario.name(), self.seconds);
            let started = Instant::now();
            let mut row = match self.scenario(scenario, &base.join(scenario.name())) {
                Ok(row) => row,
                Err(e) => {
                    let mut row = Row {
                        scenario: scenario.name().to_owned(),
                        ..Row::default()
                    };
                    row.check("the scenario ran", false, short(&e));
                    row
                }
            };
            row.ok = row.checks.iter().all(|c| c.ok);
            eprintln!(
                "chaos: {} {} in {:.0} s",
                scenario.name(),
                if row.ok { "passed" } else { "FAILED" },
                started.elapsed().as_secs_f64()
            );
            for c in row.checks.iter().filter(|c| !c.ok) {
                eprintln!("  failed: {}: {}", c.name, c.detail);
            }
            rows.push(row);
        }
        println!("{}", markdown(&rows));
        if let Some(path) = &self.report {
            std::fs::write(path, serde_json::to_vec_pretty(&rows)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if self.data.is_none() {
            let _ = std::fs::remove_dir_all(&base);
        }
        Ok(if rows.iter().all(|r| r.ok) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    /// Runs one scenario on a fresh network.
    fn scenario(&self, scenario: &dyn Scenario, dir: &std::path::Path) -> anyhow::Result<Row> {
        let setting = Setting {
            third: Duration::from_secs(self.seconds) / 3,
            kills: self.kills,
            slow_ms: self.slow_ms,
            slow: proxy::Delay::default(),
        };
        let mut plan = Plan {
            dir,
            executors: 3,
            sampling: 1.0,
            otlp_via: None,
            island: None,
            coordinator_executes: false,
            members_misbehave: &[],
            cheaters: false,
            chain: self.chain.is_some(),
        };
        scenario.plan(&mut plan, &setting);
        let sampling = plan.sampling;
        let mut net = Net::start(plan)?;
        let mut row = Row {
            scenario: scenario.name().to_owned(),
            ..Row::default()
        };
        let pace = if scenario.in_flight() {
            Pace::InFlight(usize::try_from(self.in_flight).unwrap_or(6))
        } else {
            Pace::Rate(self.rate)
        };
        row.load = match pace {
            Pace::InFlight(k) => format!("{k} in flight, {:.0} % sampled", sampling * 100.0),
            Pace::Rate(r) => format!("{r}/s"),
        };
        // The gossip mesh forms within a heartbeat or two.
        std::thread::sleep(Duration::from_secs(2));
        let began = Instant::now();
        let load = Load::start(
            &net.runtime,
            net.client("requester")?,
            pace,
            scenario.task(),
        );
        let mut book = scenario.run(&mut net, load, &setting, &mut row)?;
        // From the first task to the last one's end.
        row.seconds = began.elapsed().as_secs_f64();
        refresh_unpaid(&net, &mut book);
        let stored = net.stop()?;
        tally(&mut row, &book);
        payments(&net, &mut row, &book)?;
        row.spans_acknowledged = net.spans.exported;
        row.spans_dropped = net.spans.dropped;
        row.spans_export_failed = net.spans.export_failed;
        row.spans_made = net.spans.made;
        row.spans_lost = net.spans.lost;
        // What a killed node had spooled, the same node started again found and sent.
        row.spans_spooled = net.spans.spooled.saturating_sub(net.spans.found);
        row.spans_spool_found = net.spans.found;
        row.spans_stored = stored;
        row.peak_rss_mib = net.peaks_mib();
        common_checks(&mut row, net.spans_scraped);
        scenario.after(&mut row, &book);
        Ok(row)
    }
}

/// Reads again the records of tasks whose payment was not reported `paid`: a payment
/// whose delivery failed is carried by the next one on its channel, and its record then
/// says so.
fn refresh_unpaid(net: &Net, book: &mut Book) {
    let Ok(requester) = net.client("requester") else {
        return;
    };
    for o in &mut book.outcomes {
        let Some(id) = o.record.as_ref().map(|r| r.id.clone()) else {
            continue;
        };
        if o.payment() == Some("paid") {
            continue;
        }
        if let Ok(Some(record)) = net.runtime.block_on(requester.task(&id)) {
            o.record = Some(record);
        }
    }
}

/// Counts outcomes, reasons and latencies.
fn tally(row: &mut Row, book: &Book) {
    row.submitted = book.submitted;
    let mut latencies = Vec::new();
    for o in &book.outcomes {
        match o.state.as_str() {
            "succeeded" => {
                row.succeeded += 1;
                if let Some(ms) = o.record.as_ref().and_then(|r| r.duration_ms) {
                    latencies.push(ms);
                }
            }
            "lost" => row.lost += 1,
            _ => row.failed += 1,
        }
        if o.state != "succeeded" {
            let reason = o.reason.as_deref().unwrap_or("no reason given");
            *row.reasons.entry(reason_key(reason)).or_default() += 1;
        }
    }
    row.p50_ms = quantile(&mut latencies, 0.5);
    row.p95_ms = quantile(&mut latencies, 0.95);
}

/// Reads every payment from the requester's (payer's) and the executors' (payees') stores
/// on disk, after the processes stopped, and compares them with what the requester said.
fn payments(net: &Net, row: &mut Row, book: &Book) -> anyhow::Result<()> {
    use zerostate_payment::{
        ChannelId, Keypair, LocalChannel, PayeeStore, PayerStore, Payment, PaymentError,
    };
    /// Counts, by receipt, every payment of every channel a store holds.
    fn count(
        into: &mut BTreeMap<String, usize>,
        channels: Vec<LocalChannel>,
        history: impl Fn(&ChannelId, usize) -> Result<Vec<Payment>, PaymentError>,
    ) -> anyhow::Result<()> {
        for c in channels {
            for p in history(&c.params.id(), 10_000_000)? {
                *into.entry(hex::encode(p.receipt)).or_default() += 1;
            }
        }
        Ok(())
    }
    let mut payer: BTreeMap<String, usize> = BTreeMap::new();
    let mut payee: BTreeMap<String, usize> = BTreeMap::new();
    // The key only signs; reading needs none of the node's.
    let store = PayerStore::open(
        &net.data_dir("requester").join("payer.db"),
        Keypair::from_seed([0; 32]),
    )
    .context("opening the requester's payer store")?;
    count(&mut payer, store.channels()?, |c, n| store.history(c, n))?;
    // Every node that may run tasks (the coordinator does in `coordinator-back`).
    for name in net
        .executors()
        .into_iter()
        .chain([String::from("coordinator")])
    {
        let store = PayeeStore::open(&net.data_dir(&name).join("payee.db"))
            .with_context(|| format!("opening {name}'s payee store"))?;
        count(&mut payee, store.channels()?, |c, n| store.history(c, n))?;
    }
    let acked: Vec<String> = book
        .outcomes
        .iter()
        .filter_map(|o| o.paid_receipt())
        .collect();
    row.payments_acknowledged = acked.len();
    row.payments_found_payer = acked.iter().filter(|r| payer.get(*r) == Some(&1)).count();
    row.payments_found_payee = acked.iter().filter(|r| payee.get(*r) == Some(&1)).count();
    row.payments_duplicated = payer
        .values()
        .chain(payee.values())
        .filter(|n| **n > 1)
        .count();
    let acked: std::collections::HashSet<&String> = acked.iter().collect();
    row.payments_unreported = payee.keys().filter(|r| !acked.contains(r)).count();
    row.payments_not_made = book
        .outcomes
        .iter()
        .filter(|o| o.record.is_some() && o.payment() != Some("paid"))
        .count();
    for o in &book.outcomes {
        if let Some(r) = &o.record
            && o.payment().is_some_and(|p| p != "paid")
        {
            let why = r
                .payment
                .as_ref()
                .and_then(|p| p.reason.as_deref())
                .unwrap_or("no reason given");
            *row.reasons
                .entry(format!("payment: {}", reason_key(why)))
                .or_default() += 1;
        }
    }
    Ok(())
}

/// What every scenario must show.
fn common_checks(row: &mut Row, scraped: bool) {
    row.check(
        "no task lost",
        row.lost == 0,
        format!("{} of {} without a final state", row.lost, row.submitted),
    );
    row.check(
        "every failure has a reason",
        !row.reasons.contains_key("no reason given"),
        format!("{:?}", row.reasons.keys().collect::<Vec<_>>()),
    );
    row.check(
        "every acknowledged payment is on both parties' disks once",
        row.payments_found_payer == row.payments_acknowledged
            && row.payments_found_payee == row.payments_acknowledged,
        format!(
            "{} acknowledged, {} found at the payer, {} at a payee",
            row.payments_acknowledged, row.payments_found_payer, row.payments_found_payee
        ),
    );
    row.check(
        "no receipt paid twice",
        row.payments_duplicated == 0,
        format!("{} receipts paid more than once", row.payments_duplicated),
    );
    row.check(
        "every acknowledged span is stored",
        row.spans_stored >= row.spans_acknowledged,
        format!(
            "{} acknowledged{}, {} stored",
            row.spans_acknowledged,
            if scraped {
                " (killed processes as last scraped)"
            } else {
                ""
            },
            row.spans_stored
        ),
    );
}

/// The results as a Markdown table, then each scenario's details.
fn markdown(rows: &[Row]) -> String {
    use std::fmt::Write as _;
    const COLUMNS: [&str; 11] = [
        "scenario",
        "load",
        "fault",
        "submitted",
        "succeeded",
        "failed",
        "lost",
        "payments acked / on payer's disk / on payee's disk",
        "spans made / acked / stored (lost)",
        "peak RSS per node, MiB",
        "recovery",
    ];
    let mut out = format!(
        "| {} |\n|---|---|---|---:|---:|---:|---:|---|---|---|---|\n",
        COLUMNS.join(" | ")
    );
    for r in rows {
        let peaks: Vec<String> = r
            .peak_rss_mib
            .iter()
            .map(|(n, m)| format!("{n} {m:.0}"))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} / {} / {} ({}) | {} | {} |",
            r.scenario,
            r.load,
            r.fault,
            r.submitted,
            r.succeeded,
            r.failed,
            r.lost,
            r.payments_acknowledged,
            r.payments_found_payer,
            r.payments_found_payee,
            r.spans_made,
            r.spans_acknowledged,
            r.spans_stored,
            r.spans_lost,
            peaks.join(", "),
            match r.recovery_s {
                Some(s) => format!("{s:.1} s ({})", r.recovery),
                None => r.recovery.clone(),
            }
        );
    }
    for r in rows {
        let _ = writeln!(
            out,
            "\n**{}** ({}; {:.0} s of load): task p50 {:.1} ms, p95 {:.1} ms.",
            r.scenario,
            if r.ok { "passed" } else { "FAILED" },
            r.seconds,
            r.p50_ms,
            r.p95_ms
        );
        for (reason, n) in &r.reasons {
            let _ = writeln!(out, "- {n} × {reason}");
        }
        if r.payments_unreported > 0 {
            let _ = writeln!(
                out,
                "- {} payments on a payee's disk whose acknowledgement the requester never \
                 reported (the answer was lost to a fault)",
                r.payments_unreported
            );
        }
        for n in &r.notes {
            let _ = writeln!(out, "- {n}");
        }
        for c in &r.checks {
            let _ = writeln!(
                out,
                "- {} {}: {}",
                if c.ok { "✓" } else { "✗" },
                c.name,
                c.detail
            );
        }
    }
    out
}
