//! What the payment protocol counts: payments made and accepted, their amounts, and the
//! settlement steps asked of the ledger.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

/// The payment metrics of a node: cheap to clone, shared by everything that records.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    payments: Family<DirectionLabel, Counter>,
    amount: Family<DirectionLabel, Counter>,
    settlements: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Metrics at zero, every series of a fixed label set present from the start (a
    /// rate over a series that appears only at its first event misses that event).
    pub fn new() -> Self {
        let metrics = Self {
            inner: Arc::new(Inner::default()),
        };
        let i = &metrics.inner;
        // Each call creates the series; the guard it returns is not needed.
        for direction in ["in", "out"] {
            drop(i.payments.get_or_create(&DirectionLabel { direction }));
            drop(i.amount.get_or_create(&DirectionLabel { direction }));
        }
        for result in ["cooperative", "unilateral", "dispute", "finalize", "refund"] {
            drop(i.settlements.get_or_create(&ResultLabel { result }));
        }
        metrics
    }

    /// A payment this node made (`out`) or accepted (`in`), in base units.
    pub fn payment(&self, direction: &'static str, amount: u64) {
        let i = &self.inner;
        i.payments
            .get_or_create(&DirectionLabel { direction })
            .inc();
        i.amount
            .get_or_create(&DirectionLabel { direction })
            .inc_by(amount);
    }

    /// A settlement step this node asked the ledger for: `cooperative`, `unilateral`,
    /// `dispute`, `finalize` or `refund`.
    pub fn settlement(&self, kind: &'static str) {
        self.inner
            .settlements
            .get_or_create(&ResultLabel { result: kind })
            .inc();
    }

    /// Adds these metrics to `r`.
    pub fn register(&self, r: &mut Registry) {
        let i = &self.inner;
        r.register(
            "payment_payments",
            "Payments made (out) and accepted (in).",
            i.payments.clone(),
        );
        r.register(
            "payment_amount",
            "Base units paid (out) and received (in).",
            i.amount.clone(),
        );
        r.register(
            "payment_settlements",
            "Settlement steps asked of the ledger, by kind (cooperative, unilateral, \
             dispute, finalize, refund).",
            i.settlements.clone(),
        );
    }
}
