//! Metrics in the OpenMetrics text format, from one `prometheus-client` registry.
//!
//! The counters each crate keeps (network, guild, collector, span export) are read as a
//! snapshot when Prometheus scrapes and written as metric families by a [`Families`]
//! collector; what only exists as it happens (a task's duration, with the trace that took
//! it as an exemplar) is a live metric that the owner registers next to it. Names follow
//! Prometheus conventions: the unit in the name, `_total` on counters (added by the
//! encoder), and label values from a small fixed set, never a peer id or a task id.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

pub use prometheus_client;

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Writes `registry` in the OpenMetrics text format (ending in `# EOF`).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// The labels of an exemplar: the trace and span a measurement came from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    /// W3C trace id, 32 hex digits.
    pub trace_id: String,
    /// W3C span id, 16 hex digits.
    pub span_id: String,
}

impl TraceExemplar {
    /// The exemplar of the current span, when it is recorded.
    pub fn current() -> Option<Self> {
        use crate::SpanExt as _;
        tracing::Span::current().context().map(|c| Self {
            trace_id: c.trace_id.to_string(),
            span_id: c.span_id.to_string(),
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    /// Each sample's labels and value.
    samples: Vec<(Vec<(String, String)>, u64)>,
}

/// Counters and gauges read from a snapshot, written as metric families when scraped.
/// Families of the same name are merged, so that several snapshots can add to one.
#[derive(Debug, Default)]
pub struct Families {
    families: Vec<Family>,
}

impl Families {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&str, &str)],
        value: u64,
    ) -> &mut Self {
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        match self.families.iter_mut().find(|f| f.name == name) {
            Some(f) => f.samples.push((labels, value)),
            None => self.families.push(Family {
                name,
                help,
                kind,
                samples: vec![(labels, value)],
            }),
        }
        self
    }

    /// A counter without labels; `name` without `_total`.
    pub fn counter(&mut self, name: &'static str, help: &'static str, value: u64) -> &mut Self {
        self.add(name, help, Kind::Counter, &[], value)
    }

    /// One sample of a counter with `labels` (`[("reason", "flood")]`); `name` without
    /// `_total`. Label values must come from a bounded set.
    pub fn counter_with(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: u64,
    ) -> &mut Self {
        self.add(name, help, Kind::Counter, labels, value)
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, value: u64) -> &mut Self {
        self.add(name, help, Kind::Gauge, &[], value)
    }

    /// One sample of a gauge with `labels`.
    pub fn gauge_with(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: u64,
    ) -> &mut Self {
        self.add(name, help, Kind::Gauge, labels, value)
    }

    /// Adds these families to `registry`.
    pub fn register(self, registry: &mut Registry) {
        registry.register_collector(Box::new(self));
    }
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.families {
            let metric = match f.kind {
                Kind::Counter => encoder.encode_descriptor(
                    f.name,
                    f.help,
                    None,
                    ConstCounter::new(0u64).metric_type(),
                )?,
                Kind::Gauge => encoder.encode_descriptor(
                    f.name,
                    f.help,
                    None,
                    ConstGauge::new(0i64).metric_type(),
                )?,
            };
            // One sample without labels is written bare (`p2p_peers 2`, not `p2p_peers{} 2`).
            if let [(labels, value)] = f.samples.as_slice()
                && labels.is_empty()
            {
                write_value(f.kind, *value, metric)?;
                continue;
            }
            let mut metric = metric;
            for (labels, value) in &f.samples {
                write_value(f.kind, *value, metric.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

fn write_value(
    kind: Kind,
    value: u64,
    sample: prometheus_client::encoding::MetricEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    match kind {
        Kind::Counter => ConstCounter::new(value).encode(sample),
        Kind::Gauge => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(sample),
    }
}

impl crate::TelemetryStats {
    /// The span export's counters as metric families (`telemetry_*`).
    pub fn families(&self, f: &mut Families) {
        f.counter(
            "telemetry_spans_exported",
            "Spans the exporter accepted.",
            self.spans_exported,
        )
        .counter(
            "telemetry_spans_dropped",
            "Spans dropped because the export queue was full.",
            self.spans_dropped,
        )
        .counter(
            "telemetry_spans_export_failed",
            "Spans lost in exports that failed and were not spooled.",
            self.spans_failed,
        )
        .counter(
            "telemetry_exports_failed",
            "Export requests that failed.",
            self.failed_exports,
        )
        .counter(
            "telemetry_spans_spooled",
            "Spans written to the spool because the backend did not take them.",
            self.spans_spooled,
        )
        .counter(
            "telemetry_spans_resent",
            "Spans sent from the spool and accepted.",
            self.spans_resent,
        )
        .counter(
            "telemetry_spans_spool_lost",
            "Spans deleted from a full spool (oldest first) or unreadable in it.",
            self.spans_spool_lost,
        )
        .counter(
            "telemetry_spans_sampled_out",
            "Spans the sampler left out (never recorded).",
            self.spans_sampled_out,
        )
        .gauge(
            "telemetry_spool_spans",
            "Spans in the spool now.",
            self.spool_spans,
        )
        .gauge(
            "telemetry_spool_bytes",
            "Bytes in the spool now.",
            self.spool_bytes,
        )
        .gauge(
            "telemetry_spool_found_spans",
            "Spans found in the spool at start (an earlier run's).",
            self.spool_found,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_families_are_written_as_openmetrics() {
        let mut f = Families::new();
        f.counter_with(
            "p2p_messages_dropped",
            "Dropped.",
            &[("reason", "flood")],
            3,
        )
        .counter_with(
            "p2p_messages_dropped",
            "Dropped.",
            &[("reason", "oversized")],
            1,
        )
        .gauge("p2p_peers", "Peers.", 2);
        let mut registry = Registry::default();
        f.register(&mut registry);
        let text = encode(&registry);
        assert!(
            text.contains("# TYPE p2p_messages_dropped counter"),
            "{text}"
        );
        assert!(
            text.contains("p2p_messages_dropped_total{reason=\"flood\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("p2p_messages_dropped_total{reason=\"oversized\"} 1"),
            "{text}"
        );
        assert!(text.lines().any(|l| l == "p2p_peers 2"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
