//! `partition`: an executor cut off (its network namespace's link down, or SIGSTOP where no namespace can be made) and healed.

use super::prelude::*;

/// An executor cut off (its network namespace's link down, or SIGSTOP where no namespace can be made) and healed.
pub(crate) struct Partition;

impl Scenario for Partition {
    fn name(&self) -> &'static str {
        "partition"
    }

    fn about(&self) -> &'static str {
        "An executor cut off (its network namespace's link down, or SIGSTOP where no namespace can be made) and healed."
    }

    fn plan(&self, plan: &mut Plan<'_>, _: &Setting) {
        plan.island = Some(net::ISLANDER);
    }

    fn run(
        &self,
        net: &mut Net,
        load: Load,
        setting: &Setting,
        row: &mut Row,
    ) -> anyhow::Result<Book> {
        partition(net, load, setting.third, row)
    }
}

fn partition(net: &mut Net, load: Load, third: Duration, row: &mut Row) -> anyhow::Result<Book> {
    let cut = net::ISLANDER;
    if let Some(why) = &net.island_refused {
        row.notes.push(format!(
            "no network namespace could be made ({why}): the partition is a SIGSTOP of the \
             node's process instead"
        ));
    }
    let peer = net.peer(cut)?;
    // Cut off for twice the missed-heartbeat window at least, however short the run.
    let cut_for = third.max(Duration::from_secs(6));
    std::thread::sleep(third);
    let cut_at = load.started.elapsed();
    let how = net.partition(cut, true)?;
    row.fault = format!("{cut} cut off for {:.0} s ({how})", cut_for.as_secs_f64());
    std::thread::sleep(cut_for);
    let coordinator = net.guild_view("coordinator")?;
    let marked_down = !coordinator
        .members
        .iter()
        .any(|m| m.peer_id == peer && m.up);
    row.check(
        "heartbeats marked the cut-off node down",
        marked_down,
        format!(
            "the coordinator's view before the heal: {}",
            serde_json::to_string(&coordinator.members).unwrap_or_default()
        ),
    );
    let healed_at = load.started.elapsed();
    net.partition(cut, false)?;
    let rejoined = until(RECOVERY_LIMIT, || net.converged(cut));
    row.recovered(rejoined, "heal → member again, membership converged");
    row.check(
        "it rejoined and its guild state converged",
        rejoined.is_some(),
        format!("{cut}: {}", net.guild_text(cut)),
    );
    row.check(
        "back within two heartbeat intervals of the heal",
        rejoined.is_some_and(|t| t <= Duration::from_millis(2 * HEARTBEAT_MS)),
        format!(
            "{:.2} s with heartbeats every {HEARTBEAT_MS} ms",
            rejoined.map_or(f64::NAN, |t| t.as_secs_f64())
        ),
    );
    std::thread::sleep(third.saturating_sub(rejoined.unwrap_or_default()));
    let book = load.finish(&net.runtime);
    // Tasks submitted a second after the cut (an offer made just before it may still be
    // taken) until the heal: none may be handed to the cut-off node.
    let handed = book
        .outcomes
        .iter()
        .filter(|o| o.at > cut_at + Duration::from_secs(1) && o.at < healed_at)
        .filter_map(|o| o.record.as_ref())
        .flat_map(|r| r.attempts.iter())
        .filter(|a| a.executor == peer)
        .count();
    row.check(
        "tasks avoided the cut-off node",
        handed == 0,
        format!("{handed} attempts handed to it while it was cut off"),
    );
    row.all_succeeded(&book, "every task succeeded");
    Ok(book)
}
