//! `successors-at-once`: the guild's coordinator killed (SIGKILL) with every successor free to take over as soon as it falls silent, deaf to membership gossip: several act at once, the guild settles on the first named.

use super::prelude::*;

/// The misbehaviour of every member in `successors-at-once`: a named successor takes over
/// as soon as the coordinator falls silent, not in its slot, and one that meets another's
/// takeover first takes over before judging it, so that successors act before they know of
/// each other.
const AT_ONCE: &[&str] = &["take-over-at-once"];

/// The guild's coordinator killed (SIGKILL) with every successor free to take over as soon as it falls silent, deaf to membership gossip: several act at once, the guild settles on the first named.
pub(crate) struct SuccessorsAtOnce;

impl Scenario for SuccessorsAtOnce {
    fn name(&self) -> &'static str {
        "successors-at-once"
    }

    fn about(&self) -> &'static str {
        "The guild's coordinator killed (SIGKILL) with every successor free to take over as soon as it falls silent, deaf to membership gossip: several act at once, the guild settles on the first named."
    }

    fn plan(&self, plan: &mut Plan<'_>, _: &Setting) {
        plan.members_misbehave = AT_ONCE;
    }

    fn run(
        &self,
        net: &mut Net,
        load: Load,
        setting: &Setting,
        row: &mut Row,
    ) -> anyhow::Result<Book> {
        successors_at_once(net, load, setting.third, row)
    }
}

fn successors_at_once(
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
