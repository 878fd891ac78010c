//! What a node measures as it happens — the market's figures (tasks run, their durations
//! with the trace that took them as an exemplar) and the payment protocol's — next to the
//! counters its parts keep, exposed together on the operations listener's `/metrics`.

use prometheus_client::registry::Registry;
use zerostate_telemetry::metrics::Families;

/// A node's live metrics: cheap to clone, shared by everything that records.
#[derive(Clone, Debug, Default)]
pub struct NodeMetrics {
    /// The market's.
    pub market: zerostate_market::Metrics,
    /// The payment protocol's.
    pub payments: zerostate_payment_protocol::Metrics,
}

impl NodeMetrics {
    /// Metrics at zero, every series of a fixed label set present from the start.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with these metrics and `snapshot`'s families.
    pub fn registry(&self, snapshot: Families) -> Registry {
        let mut r = Registry::default();
        self.market.register(&mut r);
        self.payments.register(&mut r);
        snapshot.register(&mut r);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_is_counted_and_its_duration_bucketed() {
        let m = NodeMetrics::new();
        m.market.task_ran("ok", 0.003, 1_500, false);
        m.market.task_ran("out_of_fuel", 0.5, 10, true);
        m.payments.payment("in", 7);
        let text = zerostate_telemetry::metrics::encode(&m.registry(Families::new()));
        for line in [
            "execution_tasks_total{result=\"ok\"} 1",
            "execution_tasks_total{result=\"out_of_fuel\"} 1",
            "execution_task_duration_seconds_count 2",
            "execution_fuel_consumed_total 1510",
            "execution_module_cache_total{result=\"hit\"} 1",
            "payment_amount_total{direction=\"in\"} 7",
            "node_evictions_total{what=\"compiled_modules\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
    }
}
