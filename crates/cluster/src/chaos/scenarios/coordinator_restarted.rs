//! `coordinator-restarted`: the guild's coordinator killed (SIGKILL) and started again on its data directory.

use super::prelude::*;

/// The guild's coordinator killed (SIGKILL) and started again on its data directory.
pub(crate) struct CoordinatorRestarted;

impl Scenario for CoordinatorRestarted {
    fn name(&self) -> &'static str {
        "coordinator-restarted"
    }

    fn about(&self) -> &'static str {
        "The guild's coordinator killed (SIGKILL) and started again on its data directory."
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
        coordinator_restarted(net, load, setting.third, row)
    }
}

fn coordinator_restarted(
    net: &mut Net,
    load: Load,
    third: Duration,
    row: &mut Row,
) -> anyhow::Result<Book> {
    row.fault = "coordinator SIGKILL, restarted on its data directory".to_owned();
    std::thread::sleep(third);
    let lost_at = load.started.elapsed();
    net.kill("coordinator")?;
    net.restart("coordinator")?;
    // Back within the window it resumes its guild under a new key; later, a successor has
    // taken over and it comes back as a member. Either way: one coordinator, everyone in.
    let mut everyone = staying(net);
    everyone.push("coordinator".to_owned());
    let settled = one_coordinator(net, &everyone, None, RECOVERY_LIMIT);
    row.recovered(
        settled.as_ref().map(|(took, _)| *took),
        "kill → one coordinator and one membership at every node, the restarted one included",
    );
    let settled_at = settled.as_ref().map(|(took, _)| lost_at + *took);
    let view = net.guild_view("coordinator");
    row.check(
        "the restarted coordinator is back in its guild",
        settled.is_some()
            && view
                .as_ref()
                .is_ok_and(|v| matches!(v.status.as_str(), "coordinator" | "member")),
        match &view {
            Ok(v) => format!(
                "{} as {} at term {}, version {}",
                v.id, v.status, v.term, v.version
            ),
            Err(e) => format!("the coordinator cannot say: {e:#}"),
        },
    );
    std::thread::sleep((third * 2).saturating_sub(settled.map(|(t, _)| t).unwrap_or_default()));
    let book = load.finish(&net.runtime);
    after_handover(row, &book, lost_at, settled_at);
    Ok(book)
}
