//! `collector-killed`: the collector killed (SIGKILL) and started again mid-load.

use super::prelude::*;

/// The collector killed (SIGKILL) and started again mid-load.
pub(crate) struct CollectorKilled;

impl Scenario for CollectorKilled {
    fn name(&self) -> &'static str {
        "collector-killed"
    }

    fn about(&self) -> &'static str {
        "The collector killed (SIGKILL) and started again mid-load."
    }

    fn run(
        &self,
        net: &mut Net,
        load: Load,
        setting: &Setting,
        row: &mut Row,
    ) -> anyhow::Result<Book> {
        collector_killed(net, load, setting.third, row)
    }
}

fn collector_killed(
    net: &mut Net,
    load: Load,
    third: Duration,
    row: &mut Row,
) -> anyhow::Result<Book> {
    row.fault = format!("collector SIGKILL for {:.0} s", third.as_secs_f64());
    std::thread::sleep(third);
    net.kill_collector();
    std::thread::sleep(third);
    net.restart_collector()?;
    // Export resumed when the new collector stores its first span.
    let resumed = until(RECOVERY_LIMIT, || {
        net.collector_stored().is_ok_and(|n| n > 0)
    });
    row.recovered(resumed, "restart → first span stored");
    row.check(
        "export resumed after the restart",
        resumed.is_some(),
        "the restarted collector stored a span",
    );
    std::thread::sleep(third.saturating_sub(resumed.unwrap_or_default()));
    let book = load.finish(&net.runtime);
    row.all_succeeded(&book, "tasks unaffected");
    Ok(book)
}
