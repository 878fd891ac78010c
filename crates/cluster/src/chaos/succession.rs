//! The succession scenarios beyond a plain loss or restart of the coordinator: the old
//! coordinator back after a successor took over, successors acting at once, and a
//! partition with a coordinator on each side. Each checks the guild ends with one
//! coordinator and one membership at every node, and who it is.

use super::faults::{RECOVERY_LIMIT, after_handover, one_coordinator, staying, until};
use super::net::metric;
use super::*;

/// The misbehaviour of every member in `successors-at-once`: a named successor takes over
/// as soon as the coordinator falls silent, not in its slot, and one that meets another's
/// takeover first takes over before judging it, so that successors act before they know of
/// each other.
pub(super) const AT_ONCE: &[&str] = &["take-over-at-once"];

/// How many times node `name` stepped back from coordinator to member.
fn deferrals(net: &Net, name: &str) -> u64 {
    net.metrics(name)
        .ok()
        .and_then(|text| metric(&text, "guild_deferrals_total"))
        .unwrap_or(0)
}

/// The name of `peer`, or the peer id when it is no node of the network.
fn called(net: &Net, peer: &str) -> String {
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
fn old_coordinator_defers(
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

pub(super) fn coordinator_back(
    net: &mut Net,
    load: Load,
    third: Duration,
    row: &mut Row,
) -> anyhow::Result<Book> {
    row.fault = format!(
        "coordinator (running tasks too, each answer held {} ms) SIGKILL mid-task; restarted \
         on its data directory after a successor took over",
        super::net::COORDINATOR_STALL_MS
    );
    std::thread::sleep(third);
    let old = net.peer("coordinator")?;
    // Killed while it runs a task (waited for, up to 3 s).
    let mid_task = until(Duration::from_secs(3), || load.running_on().contains(&old)).is_some();
    let lost_at = load.started.elapsed();
    net.kill("coordinator")?;
    let handover = successor_takes_over(net, &old, row);
    let settled_at = handover.as_ref().map(|(took, _)| lost_at + *took);
    let successor = handover.as_ref().map(|(_, by)| by.clone());
    // Restarted on its data, it resumes its guild at the old term and announces it; the
    // members hold a later term, and it learns of it from their heartbeats.
    net.restart("coordinator")?;
    let back = old_coordinator_defers(
        net,
        &old,
        successor.as_deref(),
        row,
        "restart → the old coordinator a member under its successor",
    );
    let spent = handover.map(|(t, _)| t).unwrap_or_default() + back.unwrap_or_default();
    std::thread::sleep((third * 2).saturating_sub(spent));
    let book = load.finish(&net.runtime);
    after_handover(row, &book, lost_at, settled_at);
    // The tasks the kill cut short: an attempt on the old coordinator that delivered
    // nothing, made before it came back.
    let cut_short: Vec<&load::Outcome> = book
        .outcomes
        .iter()
        .filter(|o| o.at <= lost_at && o.at + o.took >= lost_at)
        .filter(|o| {
            o.record.as_ref().is_some_and(|r| {
                r["attempts"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|a| a["executor"] == old.as_str() && a["outcome"] != "delivered")
                })
            })
        })
        .collect();
    let retried = cut_short.iter().filter(|o| o.state == "succeeded").count();
    row.check(
        "a task the killed coordinator was running is retried within the guild",
        mid_task && !cut_short.is_empty() && retried == cut_short.len(),
        format!(
            "killed {} a task; {} task(s) cut short by the kill, {retried} retried to success",
            if mid_task { "while running" } else { "without" },
            cut_short.len()
        ),
    );
    Ok(book)
}

pub(super) fn successors_at_once(
    net: &mut Net,
    load: Load,
    third: Duration,
    row: &mut Row,
) -> anyhow::Result<Book> {
    row.fault = format!(
        "coordinator SIGKILL; every member runs with {}",
        AT_ONCE.join(", ")
    );
    std::thread::sleep(third);
    let named: Vec<String> = net.guild_view("coordinator")?.successors;
    let old = net.peer("coordinator")?;
    let lost_at = load.started.elapsed();
    net.kill("coordinator")?;
    let members = staying(net);
    let settled = successor_takes_over(net, &old, row);
    row.recovered(
        settled.as_ref().map(|(took, _)| *took),
        "kill → one successor's membership at every member",
    );
    let settled_at = settled.as_ref().map(|(took, _)| lost_at + *took);
    let names: Vec<String> = named.iter().map(|p| called(net, p)).collect();
    row.check(
        "the guild settles on the first successor named",
        settled
            .as_ref()
            .is_some_and(|(_, by)| Some(by) == named.first()),
        format!(
            "successors named before the kill: {names:?}; coordinator after it: {}",
            settled
                .as_ref()
                .map_or("none".to_owned(), |(_, by)| called(net, by))
        ),
    );
    // A successor that took over and then met the first one's claim stepped back.
    let stepped_back: Vec<&String> = members.iter().filter(|n| deferrals(net, n) >= 1).collect();
    row.check(
        "two or more successors acted at once",
        !stepped_back.is_empty(),
        format!(
            "took over, then stepped back to the first successor: {stepped_back:?} \
             (besides the first, which kept the guild)"
        ),
    );
    std::thread::sleep((third * 2).saturating_sub(settled.map(|(t, _)| t).unwrap_or_default()));
    let book = load.finish(&net.runtime);
    after_handover(row, &book, lost_at, settled_at);
    Ok(book)
}

pub(super) fn coordinator_partitioned(
    net: &mut Net,
    load: Load,
    third: Duration,
    row: &mut Row,
) -> anyhow::Result<Book> {
    const CUT: &str = "coordinator";
    if let Some(why) = &net.island_refused {
        row.notes.push(format!(
            "no network namespace could be made ({why}): the cut is a SIGSTOP of the \
             coordinator's process instead, so its side does nothing while cut off"
        ));
    }
    // Cut off for the down window, every slot and some more, however short the run.
    let cut_for = third.max(Duration::from_secs(6));
    std::thread::sleep(third);
    let old = net.peer(CUT)?;
    let cut_at = load.started.elapsed();
    let how = net.partition(CUT, true)?;
    row.fault = format!(
        "coordinator cut off for {:.0} s ({how}), then healed",
        cut_for.as_secs_f64()
    );
    // The larger side: a successor takes over. The old coordinator, alone, cannot know
    // and goes on coordinating no one.
    let handover = successor_takes_over(net, &old, row);
    let settled_at = handover.as_ref().map(|(took, _)| cut_at + *took);
    let successor = handover.as_ref().map(|(_, by)| by.clone());
    std::thread::sleep(cut_for.saturating_sub(load.started.elapsed().saturating_sub(cut_at)));
    net.partition(CUT, false)?;
    let healed = old_coordinator_defers(
        net,
        &old,
        successor.as_deref(),
        row,
        "heal → one coordinator and one membership at every node",
    );
    std::thread::sleep(third.saturating_sub(healed.unwrap_or_default()));
    let book = load.finish(&net.runtime);
    after_handover(row, &book, cut_at, settled_at);
    Ok(book)
}
