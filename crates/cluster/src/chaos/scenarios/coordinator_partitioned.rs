//! `coordinator-partitioned`: the guild's coordinator cut off (its network namespace's link down): a successor takes over the larger side while the old coordinator goes on alone; after the heal, one coordinator and one membership.

use super::prelude::*;

/// The guild's coordinator cut off (its network namespace's link down): a successor takes over the larger side while the old coordinator goes on alone; after the heal, one coordinator and one membership.
pub(crate) struct CoordinatorPartitioned;

impl Scenario for CoordinatorPartitioned {
    fn name(&self) -> &'static str {
        "coordinator-partitioned"
    }

    fn about(&self) -> &'static str {
        "The guild's coordinator cut off (its network namespace's link down): a successor takes over the larger side while the old coordinator goes on alone; after the heal, one coordinator and one membership."
    }

    fn plan(&self, plan: &mut Plan<'_>, _: &Setting) {
        plan.island = Some("coordinator");
    }

    fn run(
        &self,
        net: &mut Net,
        load: Load,
        setting: &Setting,
        row: &mut Row,
    ) -> anyhow::Result<Book> {
        coordinator_partitioned(net, load, setting.third, row)
    }
}

fn coordinator_partitioned(
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
