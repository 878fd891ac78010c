//! The `cheaters` scenario: among the executors, one inflates its fuel a hundredfold, one
//! returns made-up output with consistent hashes, one offers above the requester's maximum
//! price; a second requester never pays. The honest requester's load runs throughout; the
//! row reports what each cheater was paid and after how many tasks it was put out, what
//! the non-payer got served, and the honest throughput.

use super::prelude::*;

/// Each cheating executor: what the row calls it, and its `--misbehave`.
pub(in crate::chaos) const CHEATS: [(&str, &str); 3] = [
    ("inflates fuel ×100", "inflate-fuel"),
    ("makes up output", "fake-output"),
    ("offers above max_price", "overprice"),
];

/// The requester that never pays.
pub(in crate::chaos) const NON_PAYER: &str = "non-payer";

/// How soon after the task of its first failed bill ended a cheat must be handed no more
/// tasks.
const PUT_OUT_WITHIN: Duration = Duration::from_secs(2);

/// How many delivered tasks a requester may owe an executor for (the default `[tasks]
/// credit`).
const CREDIT: usize = 1;

/// Three lying executors (fuel inflated a hundredfold, made-up output, offers above the
/// maximum price) and a requester that never pays, beside the honest load.
pub(crate) struct Cheaters;

/// The honest executors beside the cheats.
const HONEST: usize = 3;

impl Scenario for Cheaters {
    fn name(&self) -> &'static str {
        "cheaters"
    }

    fn about(&self) -> &'static str {
        "Three lying executors (fuel inflated a hundredfold, made-up output, offers above \
         the maximum price) and a requester that never pays, beside the honest load."
    }

    fn plan(&self, plan: &mut Plan<'_>, _: &Setting) {
        plan.executors = HONEST;
        plan.cheaters = true;
    }

    fn in_flight(&self) -> bool {
        true
    }

    fn run(
        &self,
        net: &mut Net,
        load: Load,
        setting: &Setting,
        row: &mut Row,
    ) -> anyhow::Result<Book> {
        run(net, HONEST, load, setting.third, row)
    }
}

/// Runs the load beside the non-payer's for the whole time, then judges.
fn run(
    net: &mut Net,
    honest: usize,
    load: Load,
    third: Duration,
    row: &mut Row,
) -> anyhow::Result<Book> {
    row.fault = "3 lying executors (fuel ×100, made-up output, offers above max_price) and a \
                 requester that never pays"
        .to_owned();
    let non_payer = Load::start(
        &net.runtime,
        net.client(NON_PAYER)?,
        Pace::InFlight(1),
        load::LIGHT,
    );
    std::thread::sleep(third * 3);
    let book = load.finish(&net.runtime);
    let unpaid = non_payer.finish(&net.runtime);
    row.recovery = "—".to_owned();

    let mut put_out = Vec::new();
    let mut paid_for_failed_bills = 0u64;
    for (i, (what, _)) in CHEATS.iter().enumerate() {
        let name = format!("executor-{}", honest + 1 + i);
        let peer = net.peer(&name)?;
        // Every attempt handed to it, in the order the tasks were submitted, with when its
        // task ended (by then the requester had checked the attempt's bill).
        let mut outcomes: Vec<(Duration, String, Duration)> = book
            .outcomes
            .iter()
            .filter_map(|o| Some((o.at, o.at + o.took, o.record.as_ref()?)))
            .flat_map(|(at, ended, r)| {
                r.attempts
                    .iter()
                    .filter(|a| a.executor == peer)
                    .map(move |a| (at, a.outcome.clone(), ended))
                    .collect::<Vec<_>>()
            })
            .collect();
        outcomes.sort_by_key(|(at, _, _)| *at);
        // What it holds as payee, against what the requester paid it for bills that held.
        let paid = paid_to(net, &name);
        let recorded: u64 = book
            .outcomes
            .iter()
            .filter_map(|o| o.record.as_ref())
            .filter(|r| r.executor.as_deref() == Some(peer.as_str()))
            .filter_map(|r| r.payment.as_ref().filter(|p| p.status == "paid"))
            .map(|p| p.amount)
            .sum();
        // The attempt whose bill or receipt failed the requester's checks.
        let refused = outcomes.iter().position(|(_, outcome, _)| {
            ["the bill does not hold", "spot check", "does not verify"]
                .iter()
                .any(|why| outcome.contains(why))
        });
        let out = match (what, refused) {
            // Its offers are never taken: it is never handed a task.
            (w, _) if w.contains("max_price") => outcomes.is_empty(),
            // Refused at its first failed bill: handed no task submitted well after the task
            // of that bill ended (tasks under way meanwhile may still have gone to it; the
            // bill's check, a rerun, takes longer on a loaded machine).
            (_, Some(at)) => outcomes[at + 1..]
                .iter()
                .all(|(when, _, _)| *when <= outcomes[at].2 + PUT_OUT_WITHIN),
            // Never delivered this requester a task (removed on the non-payer's evidence
            // while its attempts here failed otherwise): nothing of it was taken.
            (_, None) => outcomes
                .iter()
                .all(|(_, outcome, _)| outcome != "delivered"),
        };
        paid_for_failed_bills += paid.saturating_sub(recorded);
        put_out.push(out);
        row.notes.push(format!(
            "{name} ({what}): handed {} task(s), put out {}, paid {paid} (for bills that held: \
             {recorded})",
            outcomes.len(),
            match refused {
                Some(at) => format!("at its task {} ({})", at + 1, outcomes[at].1),
                None if outcomes.is_empty() => "before any task (its offers refused)".to_owned(),
                None if out => format!(
                    "before delivering any task (its attempts: {:?})",
                    outcomes
                        .iter()
                        .map(|(_, o, _)| o.as_str())
                        .collect::<Vec<_>>()
                ),
                None => "never".to_owned(),
            }
        ));
    }
    row.check(
        "every cheater put out",
        put_out.iter().all(|o| *o),
        format!("{put_out:?}"),
    );
    // The liars (not the one that only asked too much) are out of the signed membership,
    // removed by the coordinator on the requester's evidence.
    let members: Vec<String> = net
        .guild_view("coordinator")?
        .members
        .into_iter()
        .map(|m| m.peer_id)
        .collect();
    let mut removed = Vec::new();
    for (i, (what, _)) in CHEATS.iter().enumerate() {
        let name = format!("executor-{}", honest + 1 + i);
        if !members.contains(&net.peer(&name)?) {
            removed.push(format!("{name} ({what})"));
        }
    }
    row.check(
        "the liars removed from the guild as cheats",
        removed.len() == 2 && !removed.iter().any(|r| r.contains("max_price")),
        format!("removed by the coordinator: {removed:?}"),
    );
    row.check(
        "nothing paid for a bill that fails the requester's checks",
        paid_for_failed_bills == 0,
        format!("{paid_for_failed_bills} paid to cheaters beyond the bills the requester accepted"),
    );

    // What the non-payer got: per executor, the tasks it ran for it.
    let mut served: std::collections::BTreeMap<String, usize> = Default::default();
    for o in unpaid.outcomes.iter().filter(|o| o.state == "succeeded") {
        let executor = o.record.as_ref().and_then(|r| r.executor.as_deref());
        let name = executor
            .and_then(|p| net.name_of(p))
            .unwrap_or("unknown")
            .to_owned();
        *served.entry(name).or_default() += 1;
    }
    let most = served.values().copied().max().unwrap_or(0);
    row.notes.push(format!(
        "{NON_PAYER}: submitted {}, served {} ({served:?}), the rest refused: {:?}",
        unpaid.submitted,
        served.values().sum::<usize>(),
        unpaid
            .outcomes
            .iter()
            .filter_map(|o| o.reason.as_deref())
            .map(reason_key)
            .collect::<std::collections::BTreeSet<_>>()
    ));
    row.check(
        "the non-payer served no more than its credit",
        most <= CREDIT,
        format!("at most {most} unpaid task(s) from one executor (credit {CREDIT})"),
    );
    row.all_succeeded(&book, "every honest task succeeded");
    let unpaid_honest = book
        .outcomes
        .iter()
        .filter(|o| o.record.is_some() && o.payment() != Some("paid"))
        .count();
    row.check(
        "every honest task paid",
        unpaid_honest == 0,
        format!("{unpaid_honest} not paid"),
    );
    Ok(book)
}

/// What `name`'s channels say it was paid, as payee.
fn paid_to(net: &Net, name: &str) -> u64 {
    let channels = net
        .client(name)
        .and_then(|c| net.runtime.block_on(c.channels()));
    match channels {
        Ok(channels) => channels
            .iter()
            .filter(|c| c.side == "payee")
            .map(|c| c.cumulative)
            .sum(),
        Err(e) => {
            tracing::warn!("reading {name}'s channels: {}", short(&e));
            0
        }
    }
}
