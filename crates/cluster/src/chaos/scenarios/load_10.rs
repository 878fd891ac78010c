//! `load-10`: the load of `load-100` with 10 % of traces sampled.

use super::load_100::{bounded_and_paid, steady};
use super::prelude::*;

/// The same with 10 % of traces sampled.
pub(crate) struct Load10;

impl Scenario for Load10 {
    fn name(&self) -> &'static str {
        "load-10"
    }

    fn about(&self) -> &'static str {
        "The same with 10 % of traces sampled."
    }

    fn plan(&self, plan: &mut Plan<'_>, _: &Setting) {
        plan.sampling = 0.1;
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
