//! What the market counts: tasks run for others (their durations with the trace that took
//! them as an exemplar, fuel, module cache), tasks submitted and ended, evictions from its
//! bounded stores.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};
use zerostate_telemetry::metrics::TraceExemplar;

/// Buckets of a task's run time, seconds: 1 ms to about 33 s.
fn duration_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 16)
}

/// What became of a chunk of a module asked for: `fetched` (it matched its hash),
/// `refused` (it did not), `resumed` (its request failed and it was asked again),
/// `elsewhere` (the requester did not give it, another member did).
pub(crate) const CHUNK_OUTCOMES: [&str; 4] = ["fetched", "refused", "resumed", "elsewhere"];

/// The bounded stores whose evictions are counted.
pub(crate) const EVICTED: [&str; 3] = ["modules", "task_records", "compiled_modules"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhatLabel {
    what: &'static str,
}

/// The market metrics of a node: cheap to clone, shared by everything that records.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tasks: Family<ResultLabel, Counter>,
    duration: HistogramWithExemplars<TraceExemplar>,
    fuel: Counter,
    cache: Family<ResultLabel, Counter>,
    submitted: Counter,
    ended: Family<ResultLabel, Counter>,
    evicted: Family<WhatLabel, Counter>,
    chunks: Family<ResultLabel, Counter>,
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
            inner: Arc::new(Inner {
                tasks: Family::default(),
                duration: HistogramWithExemplars::new(duration_buckets()),
                fuel: Counter::default(),
                cache: Family::default(),
                submitted: Counter::default(),
                ended: Family::default(),
                evicted: Family::default(),
                chunks: Family::default(),
            }),
        };
        let i = &metrics.inner;
        // Each call creates the series; the guard it returns is not needed.
        drop(i.tasks.get_or_create(&ResultLabel { result: "ok" }));
        for result in ["hit", "miss"] {
            drop(i.cache.get_or_create(&ResultLabel { result }));
        }
        for result in ["succeeded", "failed"] {
            drop(i.ended.get_or_create(&ResultLabel { result }));
        }
        for result in CHUNK_OUTCOMES {
            drop(i.chunks.get_or_create(&ResultLabel { result }));
        }
        for what in EVICTED {
            drop(i.evicted.get_or_create(&WhatLabel { what }));
        }
        metrics
    }

    /// A task this node ran for another: its result (`ok` or the error's kind), its run
    /// time with the current span's trace as the exemplar, its fuel, and whether the
    /// module came from a cache.
    pub fn task_ran(&self, result: &'static str, seconds: f64, fuel: u64, cache_hit: bool) {
        let i = &self.inner;
        i.tasks.get_or_create(&ResultLabel { result }).inc();
        i.duration.observe(
            seconds,
            TraceExemplar::current(),
            Some(std::time::SystemTime::now()),
        );
        i.fuel.inc_by(fuel);
        let cache = if cache_hit { "hit" } else { "miss" };
        i.cache.get_or_create(&ResultLabel { result: cache }).inc();
    }

    /// `n` entries of a bounded store evicted to make room: `what` is one of [`EVICTED`].
    pub fn evicted(&self, what: &'static str, n: u64) {
        if n > 0 {
            self.inner
                .evicted
                .get_or_create(&WhatLabel { what })
                .inc_by(n);
        }
    }

    /// A chunk of a module fetched by this node: one of [`CHUNK_OUTCOMES`].
    pub fn chunk(&self, outcome: &'static str) {
        self.inner
            .chunks
            .get_or_create(&ResultLabel { result: outcome })
            .inc();
    }

    /// A task submitted on this node.
    pub fn task_submitted(&self) {
        self.inner.submitted.inc();
    }

    /// A task of this node ended: `succeeded` or `failed`.
    pub fn task_ended(&self, state: &'static str) {
        self.inner
            .ended
            .get_or_create(&ResultLabel { result: state })
            .inc();
    }

    /// Adds these metrics to `r`.
    pub fn register(&self, r: &mut Registry) {
        let i = &self.inner;
        r.register(
            "execution_tasks",
            "Tasks this node ran for others, by result (ok or the error's kind).",
            i.tasks.clone(),
        );
        r.register_with_unit(
            "execution_task_duration",
            "Run time of tasks this node ran; exemplars name a task's trace.",
            Unit::Seconds,
            i.duration.clone(),
        );
        r.register(
            "execution_fuel_consumed",
            "Fuel the tasks this node ran used (the billing unit).",
            i.fuel.clone(),
        );
        r.register(
            "execution_module_cache",
            "Modules a task needed, by whether a cache had them (hit, miss).",
            i.cache.clone(),
        );
        r.register(
            "tasks_submitted",
            "Tasks submitted on this node.",
            i.submitted.clone(),
        );
        r.register(
            "tasks_ended",
            "Tasks submitted on this node that ended, by state (succeeded, failed).",
            i.ended.clone(),
        );
        r.register(
            "task_module_chunks",
            "Chunks of modules too large for one message that this node fetched, by result \
             (fetched, refused: it did not match its hash, resumed: asked again after a \
             failed request, elsewhere: from another member than the requester).",
            i.chunks.clone(),
        );
        r.register(
            "node_evictions",
            "Entries evicted from a bounded store to make room, by store (modules: held by \
             hash; task_records: kept for the API; compiled_modules: the disk cache).",
            i.evicted.clone(),
        );
    }
}
