//! `coordinator-lost`: the guild's coordinator killed (SIGKILL) for good: a successor takes over.

use super::prelude::*;

/// The guild's coordinator killed (SIGKILL) for good: a successor takes over.
pub(crate) struct CoordinatorLost;

impl Scenario for CoordinatorLost {
    fn name(&self) -> &'static str {
        "coordinator-lost"
    }

    fn about(&self) -> &'static str {
        "The guild's coordinator killed (SIGKILL) for good: a successor takes over."
    }

    fn after(&self, row: &mut Row, book: &Book) {
        every_succeeded_task_paid(row, book);
    }

    fn run(
        &self,
        net: &mut Net,
        load: Load,
        setting: &Setting,
        row: &mut Row,
    ) -> anyhow::Result<Book> {
        coordinator_lost(net, load, setting.third, row)
    }
}

fn coordinator_lost(
    net: &mut Net,
    load: Load,
    third: Duration,
    row: &mut Row,
) -> anyhow::Result<Book> {
    row.fault = "coordinator SIGKILL, not restarted".to_owned();
    std::thread::sleep(third);
    let old = net.peer("coordinator")?;
    let lost_at = load.started.elapsed();
    net.kill("coordinator")?;
    // The first successor takes over once the coordinator has been silent past the window;
    // every member follows it.
    let handover = successor_takes_over(net, &old, row);
    row.recovered(
        handover.as_ref().map(|(took, _)| *took),
        "kill → a successor's membership at every member",
    );
    let settled_at = handover.as_ref().map(|(took, _)| lost_at + *took);
    row.check(
        "handover within 3 s",
        handover
            .as_ref()
            .is_some_and(|(took, _)| *took <= Duration::from_secs(3)),
        format!(
            "{:.2} s with heartbeats every {HEARTBEAT_MS} ms, down after {MISSED_HEARTBEATS}",
            handover.as_ref().map_or(f64::NAN, |(t, _)| t.as_secs_f64())
        ),
    );
    std::thread::sleep((third * 2).saturating_sub(handover.map(|(t, _)| t).unwrap_or_default()));
    let book = load.finish(&net.runtime);
    after_handover(row, &book, lost_at, settled_at);
    Ok(book)
}
