//! `load-100`: as many tasks as the network takes, every trace sampled.

use super::prelude::*;

/// As many tasks as the network takes, every trace sampled.
pub(crate) struct Load100;

impl Scenario for Load100 {
    fn name(&self) -> &'static str {
        "load-100"
    }

    fn about(&self) -> &'static str {
        "As many tasks as the network takes, every trace sampled."
    }

    fn in_flight(&self) -> bool {
        true
    }

    fn run(
        &self,
        net: &mut Net,
        load: Load,
        setting: &Setting,
        row: &mut Row,
    ) -> anyhow::Result<Book> {
        steady(net, load, setting.third, row)
    }

    fn after(&self, row: &mut Row, book: &Book) {
        bounded_and_paid(row, book);
    }
}

/// No fault: the load for the whole run.
pub(super) fn steady(
    net: &mut Net,
    load: Load,
    third: Duration,
    row: &mut Row,
) -> anyhow::Result<Book> {
    row.fault = "none".to_owned();
    std::thread::sleep(third * 3);
    row.recovery = "—".to_owned();
    Ok(load.finish(&net.runtime))
}

/// The most resident memory a node may reach under load.
const MEMORY_BOUND_MIB: f64 = 512.0;

/// With no fault, memory stays bounded and every task succeeds and is paid.
pub(super) fn bounded_and_paid(row: &mut Row, book: &Book) {
    let peak = row.peak_rss_mib.values().copied().fold(0.0, f64::max);
    row.check(
        "memory bounded",
        peak < MEMORY_BOUND_MIB,
        format!("largest node peak {peak:.0} MiB (bound {MEMORY_BOUND_MIB} MiB)"),
    );
    row.all_succeeded(book, "every task succeeded");
    row.check(
        "every task paid",
        row.payments_not_made == 0,
        format!("{} tasks not paid", row.payments_not_made),
    );
}
