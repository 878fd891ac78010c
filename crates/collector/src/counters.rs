//! What the collector counted.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// One counter.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: Counter,
    pub(crate) spans_received: Counter,
    pub(crate) spans_rejected: Counter,
    pub(crate) spans_stored: Counter,
    pub(crate) spans_duplicate: Counter,
    pub(crate) bad_requests: Counter,
    pub(crate) too_large: Counter,
    pub(crate) overloaded: Counter,
    pub(crate) store_errors: Counter,
    pub(crate) spans_expired: Counter,
    pub(crate) forward_sent: Counter,
    pub(crate) forward_failed: Counter,
    pub(crate) forward_dropped: Counter,
    pub(crate) unauthorized: Counter,
}

/// A snapshot of the collector's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CollectorStats {
    /// Export requests received.
    pub requests: u64,
    /// Spans in those requests.
    pub spans_received: u64,
    /// Spans refused for unusable ids (answered as partial success).
    pub spans_rejected: u64,
    /// Spans written to the store.
    pub spans_stored: u64,
    /// Spans already stored (same trace and span id).
    pub spans_duplicate: u64,
    /// Requests that did not decode (400) or had an unsupported content type (415).
    pub bad_requests: u64,
    /// Requests over the size bound, compressed or not (413).
    pub too_large: u64,
    /// Requests turned away because the store was behind (503).
    pub overloaded: u64,
    /// Batches the store failed to write.
    pub store_errors: u64,
    /// Spans removed by retention (age or size).
    pub spans_expired: u64,
    /// Batches forwarded to the `forward` backend.
    pub forward_sent: u64,
    /// Batches the `forward` backend did not take after every try.
    pub forward_failed: u64,
    /// Batches not forwarded because the forwarding queue was full.
    pub forward_dropped: u64,
    /// Requests refused for a missing or wrong token (401), on either listener.
    pub unauthorized: u64,
}

impl CollectorStats {
    /// The counters as metric families (`collector_*`).
    pub fn families(&self, f: &mut zerostate_telemetry::metrics::Families) {
        const REJECTED: &str = "collector_requests_rejected";
        const REJECTED_HELP: &str = "Export requests turned away, by reason.";
        const FORWARD: &str = "collector_forward_batches";
        const FORWARD_HELP: &str = "Batches for the forward backend, by result.";
        f.counter(
            "collector_requests",
            "Export requests received.",
            self.requests,
        )
        .counter(
            "collector_spans_received",
            "Spans in export requests.",
            self.spans_received,
        )
        .counter(
            "collector_spans_rejected",
            "Spans refused for unusable ids.",
            self.spans_rejected,
        )
        .counter(
            "collector_spans_stored",
            "Spans written to the store.",
            self.spans_stored,
        )
        .counter(
            "collector_spans_duplicate",
            "Spans already stored (same trace and span id).",
            self.spans_duplicate,
        )
        .counter(
            "collector_spans_expired",
            "Spans removed by retention.",
            self.spans_expired,
        )
        .counter(
            "collector_store_errors",
            "Batches the store failed to write.",
            self.store_errors,
        );
        for (reason, n) in [
            ("bad_request", self.bad_requests),
            ("too_large", self.too_large),
            ("overloaded", self.overloaded),
            ("unauthorized", self.unauthorized),
        ] {
            f.counter_with(REJECTED, REJECTED_HELP, &[("reason", reason)], n);
        }
        for (result, n) in [
            ("sent", self.forward_sent),
            ("failed", self.forward_failed),
            ("dropped", self.forward_dropped),
        ] {
            f.counter_with(FORWARD, FORWARD_HELP, &[("result", result)], n);
        }
    }
}

impl Counters {
    pub(crate) fn snapshot(&self) -> CollectorStats {
        CollectorStats {
            requests: self.requests.get(),
            spans_received: self.spans_received.get(),
            spans_rejected: self.spans_rejected.get(),
            spans_stored: self.spans_stored.get(),
            spans_duplicate: self.spans_duplicate.get(),
            bad_requests: self.bad_requests.get(),
            too_large: self.too_large.get(),
            overloaded: self.overloaded.get(),
            store_errors: self.store_errors.get(),
            spans_expired: self.spans_expired.get(),
            forward_sent: self.forward_sent.get(),
            forward_failed: self.forward_failed.get(),
            forward_dropped: self.forward_dropped.get(),
            unauthorized: self.unauthorized.get(),
        }
    }
}
