//! `coordinator-back`: the guild's coordinator, which runs tasks here (each answer held back 1.5 s), killed (SIGKILL) while it holds one and, once a successor has taken over, started again on its data directory: the task is retried within the guild, the old coordinator steps back to member.

use super::prelude::*;

/// The guild's coordinator, which runs tasks here (each answer held back 1.5 s), killed (SIGKILL) while it holds one and, once a successor has taken over, started again on its data directory: the task is retried within the guild, the old coordinator steps back to member.
pub(crate) struct CoordinatorBack;

impl Scenario for CoordinatorBack {
    fn name(&self) -> &'static str {
        "coordinator-back"
    }

    fn about(&self) -> &'static str {
        "The guild's coordinator, which runs tasks here (each answer held back 1.5 s), killed (SIGKILL) while it holds one and, once a successor has taken over, started again on its data directory: the task is retried within the guild, the old coordinator steps back to member."
    }

    fn plan(&self, plan: &mut Plan<'_>, _: &Setting) {
        plan.coordinator_executes = true;
    }

    fn run(
        &self,
        net: &mut Net,
        load: Load,
        setting: &Setting,
        row: &mut Row,
    ) -> anyhow::Result<Book> {
        coordinator_back(net, load, setting.third, row)
    }
}

fn coordinator_back(
    net: &mut Net,
    load: Load,
    third: Duration,
    row: &mut Row,
) -> anyhow::Result<Book> {
    row.fault = format!(
        "coordinator (running tasks too, each answer held {} ms) SIGKILL mid-task; restarted \
         on its data directory after a successor took over",
        net::COORDINATOR_STALL_MS
    );
    std::thread::sleep(third);
    let old = net.peer("coordinator")?;
    // Killed while it runs a task (waited for, up to 5 s): one it began at most 400 ms
    // ago, so the kill lands well inside the 1.5 s it holds the answer, not as the answer
    // leaves.
    let fresh = Duration::from_millis(400);
    let mid_task = until(Duration::from_secs(5), || {
        load.running_since(fresh).contains(&old)
    })
    .is_some();
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
                r.attempts
                    .iter()
                    .any(|a| a.executor == old && a.outcome != "delivered")
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
