//! `collector-killed`: the collector killed (SIGKILL) and started again mid-load; the nodes
//! spool what it could not take and send it again, one of them across its own SIGKILL.

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

    fn after(&self, row: &mut Row, _: &Book) {
        row.check(
            "every span the nodes made is stored, none lost",
            row.spans_lost == 0 && row.spans_spooled == 0 && row.spans_stored >= row.spans_made,
            format!(
                "{} made, {} lost, {} still spooled, {} stored",
                row.spans_made, row.spans_lost, row.spans_spooled, row.spans_stored
            ),
        );
        row.check(
            "the node killed during the outage sent its spool after its restart",
            row.spans_spool_found > 0,
            format!(
                "{} spans found in its spool at the restart",
                row.spans_spool_found
            ),
        );
    }
}

fn collector_killed(
    net: &mut Net,
    load: Load,
    third: Duration,
    row: &mut Row,
) -> anyhow::Result<Book> {
    row.fault = format!(
        "collector SIGKILL for {:.0} s; meanwhile an executor SIGKILLed and started again",
        third.as_secs_f64()
    );
    std::thread::sleep(third);
    net.kill_collector();
    // An executor killed while its spans wait in its spool sends them after its restart.
    std::thread::sleep(third * 2 / 3);
    let victim = working_executor(net);
    net.kill(&victim)?;
    net.restart(&victim)?;
    std::thread::sleep(third / 3);
    let (spans, bytes) = net.spooled();
    row.notes.push(format!(
        "spooled when the collector came back: {spans} spans, {:.1} KiB ({:.0} bytes a span)",
        bytes as f64 / 1024.0,
        bytes as f64 / spans.max(1) as f64
    ));
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

/// The executor of the requester's latest task that has one (the first executor when none
/// has yet): tasks go on standing offers to the executor that delivered the last one, so
/// the others may have made no span since the collector went down.
fn working_executor(net: &Net) -> String {
    let latest = net.client("requester").ok().and_then(|client| {
        net.runtime
            .block_on(client.get_as::<Vec<zerostate_market::TaskRecord>>("/v1/tasks?limit=20"))
            .ok()
            .flatten()
    });
    latest
        .into_iter()
        .flatten()
        .find_map(|r| r.executor.and_then(|p| net.name_of(&p).map(str::to_owned)))
        .filter(|name| name.starts_with("executor-"))
        .unwrap_or_else(|| net.executors()[0].clone())
}
