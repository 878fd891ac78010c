//! What several scenarios wait for and check: recovery within a limit, one coordinator
//! and one membership at every node, a successor's takeover, the old coordinator's step
//! back, and the tasks around a handover.

use std::time::{Duration, Instant};

use zerostate_guild::GuildInfo;

use super::Row;
use super::load::{self, Book};
use super::net::{Net, metric};

/// Polls `done` every 100 ms for at most `within`; how long it took.
pub(super) fn until(within: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// How long recovery may take before it counts as not recovered.
pub(super) const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

/// Polls, every 50 ms for at most `within`, until every node in `names` holds the same
/// coordinator, term and membership version of the guild, and that coordinator is not
/// `not` and says it coordinates; how long it took, and that coordinator's peer id.
pub(super) fn one_coordinator(
    net: &Net,
    names: &[String],
    not: Option<&str>,
    within: Duration,
) -> Option<(Duration, String)> {
    let start = Instant::now();
    while start.elapsed() < within {
        let views: Vec<GuildInfo> = names
            .iter()
            .filter_map(|n| net.guild_view(n).ok())
            .collect();
        let first = views.first();
        let same = views.len() == names.len()
            && views.iter().all(|v| {
                matches!(v.status.as_str(), "coordinator" | "member")
                    && first.is_some_and(|f| {
                        (&v.coordinator, v.term, v.version, v.key_epoch)
                            == (&f.coordinator, f.term, f.version, f.key_epoch)
                    })
            });
        let coordinator = first.map_or("", |f| f.coordinator.as_str());
        // (Not asking the node ruled out: it may be cut off, and its API with it.)
        let coordinating = Some(coordinator) != not
            && net
                .name_of(coordinator)
                .is_some_and(|n| net.guild_view(n).is_ok_and(|v| v.status == "coordinator"));
        if same && coordinating {
            return Some((start.elapsed(), coordinator.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The handover checks shared by `coordinator-lost` and `coordinator-restarted`: tasks
/// submitted once the guild had one coordinator again all succeeded; those in flight
/// during the handover are reported. (That every task was paid is checked once the stores
/// are read, after the run.)
pub(super) fn after_handover(
    row: &mut Row,
    book: &Book,
    lost_at: Duration,
    settled_at: Option<Duration>,
) {
    let settled_at = settled_at.unwrap_or(Duration::MAX);
    let overlapping = |o: &&load::Outcome| o.at <= settled_at && o.at + o.took >= lost_at;
    let during: Vec<&load::Outcome> = book.outcomes.iter().filter(overlapping).collect();
    let after: Vec<&load::Outcome> = book.outcomes.iter().filter(|o| o.at > settled_at).collect();
    let failed_after = after.iter().filter(|o| o.state != "succeeded").count();
    row.notes.push(format!(
        "in flight during the handover: {} tasks, {} succeeded, {} failed; submitted after it: {}, {} succeeded",
        during.len(),
        during.iter().filter(|o| o.state == "succeeded").count(),
        during.iter().filter(|o| o.state != "succeeded").count(),
        after.len(),
        after.len() - failed_after,
    ));
    row.check(
        "every task submitted after the handover succeeds",
        failed_after == 0 && !after.is_empty(),
        format!("{failed_after} of {} did not", after.len()),
    );
    let slowest = book
        .outcomes
        .iter()
        .map(|o| o.took)
        .max()
        .unwrap_or_default();
    row.check(
        "no task hangs",
        slowest < load::TASK_DEADLINE,
        format!("slowest answer {:.1} s", slowest.as_secs_f64()),
    );
}

/// The members that stay: everyone in the guild but the coordinator.
pub(super) fn staying(net: &Net) -> Vec<String> {
    std::iter::once("requester".to_owned())
        .chain(net.executors())
        .collect()
}

/// How many times node `name` stepped back from coordinator to member.
pub(super) fn deferrals(net: &Net, name: &str) -> u64 {
    net.metrics(name)
        .ok()
        .and_then(|text| metric(&text, "guild_deferrals_total"))
        .unwrap_or(0)
}

/// The name of `peer`, or the peer id when it is no node of the network.
pub(super) fn called(net: &Net, peer: &str) -> String {
    net.name_of(peer).unwrap_or(peer).to_owned()
}

/// Waits for a successor's membership at every member but the coordinator, and checks it.
pub(super) fn successor_takes_over(
    net: &Net,
    old: &str,
    row: &mut Row,
) -> Option<(Duration, String)> {
    let handover = one_coordinator(net, &staying(net), Some(old), RECOVERY_LIMIT);
    row.check(
        "a successor takes the guild over",
        handover.is_some(),
        match &handover {
            Some((took, by)) => format!(
                "{} coordinates {:.1} s after the fault",
                called(net, by),
                took.as_secs_f64()
            ),
            None => net.guild_text("requester"),
        },
    );
    handover
}

/// Waits for one coordinator and one membership at every node, the old coordinator
/// included, and checks that the old one is a member under the successor and stepped back
/// on its own.
pub(super) fn old_coordinator_defers(
    net: &Net,
    old: &str,
    successor: Option<&str>,
    row: &mut Row,
    what: &str,
) -> Option<Duration> {
    let mut everyone = staying(net);
    everyone.push("coordinator".to_owned());
    let settled = one_coordinator(net, &everyone, Some(old), RECOVERY_LIMIT);
    row.recovered(settled.as_ref().map(|(took, _)| *took), what);
    let view = net.guild_view("coordinator");
    row.check(
        "the old coordinator steps back to member under the successor",
        settled.is_some()
            && view
                .as_ref()
                .is_ok_and(|v| v.status == "member" && Some(v.coordinator.as_str()) == successor)
            && deferrals(net, "coordinator") >= 1,
        match &view {
            Ok(v) => format!(
                "the old coordinator: {} under {} at term {}, version {}; it stepped back {} \
                 time(s)",
                v.status,
                called(net, &v.coordinator),
                v.term,
                v.version,
                deferrals(net, "coordinator")
            ),
            Err(e) => format!("the old coordinator cannot say: {e:#}"),
        },
    );
    settled.map(|(took, _)| took)
}

/// Every task that succeeded was paid (read once the stores are, after the run).
pub(super) fn every_succeeded_task_paid(row: &mut Row, book: &Book) {
    let unpaid = book
        .outcomes
        .iter()
        .filter(|o| o.state == "succeeded" && o.payment() != Some("paid"))
        .count();
    row.check(
        "every succeeded task paid",
        unpaid == 0,
        format!("{unpaid} succeeded tasks not paid"),
    );
}
