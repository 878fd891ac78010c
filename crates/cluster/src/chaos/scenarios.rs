//! Every chaos scenario, one file each behind [`Scenario`]: how its network differs from
//! the plain one, its load, the fault it injects under that load, and what it checks
//! afterwards. A new scenario is a new file here and a line in [`ALL`].

mod cheaters;
mod collector_killed;
mod coordinator_back;
mod coordinator_lost;
mod coordinator_partitioned;
mod coordinator_restarted;
mod executors_killed;
mod ledger_restarted;
mod load_10;
mod load_100;
mod partition;
mod slow_collector;
mod successors_at_once;

use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser};

/// What the scenario files share.
mod prelude {
    pub(super) use std::time::{Duration, Instant};

    pub(super) use super::super::checks::*;
    pub(super) use super::super::load::{self, Book, Load, Pace};
    pub(super) use super::super::net::{self, HEARTBEAT_MS, MISSED_HEARTBEATS, Net, Plan};
    pub(super) use super::super::{Row, proxy, reason_key, short};
    pub(super) use super::{Scenario, Setting};
    pub(super) use crate::bench::quantile;
}

pub(super) use cheaters::{CHEATS, NON_PAYER};

use super::Row;
use super::load::{self, Book, Load};
use super::net::{Net, Plan};
use super::proxy;

/// What every scenario is given besides its network and load: the options of the run.
pub(super) struct Setting {
    /// A third of the run: the fault comes after one and is healed after two.
    pub(super) third: Duration,
    /// Executors killed in `executors-killed`.
    pub(super) kills: u32,
    /// How long the slow collector holds each answer, milliseconds.
    pub(super) slow_ms: u64,
    /// The switch of the proxy in front of the collector, when the plan puts one there.
    pub(super) slow: proxy::Delay,
}

/// A chaos scenario.
pub(super) trait Scenario: Sync {
    /// Its name on the command line and in the report.
    fn name(&self) -> &'static str;

    /// What it does, for `--help`.
    fn about(&self) -> &'static str;

    /// How its network differs from the plain one (three executors, every trace sampled,
    /// spans straight to the collector).
    fn plan(&self, _plan: &mut Plan<'_>, _setting: &Setting) {}

    /// Whether its load keeps `--in-flight` tasks under way (otherwise `--rate` a second).
    fn in_flight(&self) -> bool {
        false
    }

    /// The task of its load: how far the built-in `primes` counts.
    fn task(&self) -> u64 {
        load::LIGHT
    }

    /// Injects the fault under `load`, heals it, and finishes the load; what it measured
    /// and checked goes on `row`.
    fn run(
        &self,
        net: &mut Net,
        load: Load,
        setting: &Setting,
        row: &mut Row,
    ) -> anyhow::Result<Book>;

    /// Checks once the network has stopped and the stores were read into `row`.
    fn after(&self, _row: &mut Row, _book: &Book) {}
}

/// Every scenario, in the order a run without `--scenario` takes them.
pub(super) const ALL: &[&dyn Scenario] = &[
    &load_100::Load100,
    &load_10::Load10,
    &collector_killed::CollectorKilled,
    &partition::Partition,
    &executors_killed::ExecutorsKilled,
    &ledger_restarted::LedgerRestarted,
    &coordinator_lost::CoordinatorLost,
    &coordinator_restarted::CoordinatorRestarted,
    &coordinator_back::CoordinatorBack,
    &successors_at_once::SuccessorsAtOnce,
    &coordinator_partitioned::CoordinatorPartitioned,
    &slow_collector::SlowCollector,
    &cheaters::Cheaters,
];

/// The scenario called `name`.
pub(super) fn by_name(name: &str) -> Option<&'static dyn Scenario> {
    ALL.iter().copied().find(|s| s.name() == name)
}

/// `--scenario`: one of [`ALL`]'s names, each with its help.
pub(super) fn parser() -> PossibleValuesParser {
    PossibleValuesParser::new(
        ALL.iter()
            .map(|s| PossibleValue::new(s.name()).help(s.about())),
    )
}
