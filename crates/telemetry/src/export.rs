//! The export thread: drains the span queue in batches and hands them to an exporter.
//!
//! The queue is bounded ([`crate::BatchConfig::max_queue_size`]); when it is full a closing
//! span is dropped and counted, never waited for, so a slow or dead collector cannot stall
//! the application. The first drop and the first failed export are logged once; the totals
//! are in [`TelemetryStats`] and are logged again at shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use opentelemetry::trace::{SpanContext, TraceFlags};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};

use crate::clock::WallAnchor;
use crate::config::BatchConfig;
use crate::layer::{RecordPool, SpanRecord};

/// Counters of the export pipeline, readable at any time.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    failed_requests: AtomicU64,
    /// Whether the latest export request failed.
    failing: AtomicBool,
    spooled: AtomicU64,
    resent: AtomicU64,
    spool_lost: AtomicU64,
    spool_spans: AtomicU64,
    spool_bytes: AtomicU64,
    spool_found: AtomicU64,
    sampled_out: AtomicU64,
}

/// What the export pipeline has done so far.
///
/// Every span this process made is in exactly one of: `spans_exported` (less the
/// `spool_found` at start, which an earlier run made), `spans_dropped`, `spans_failed`,
/// `spans_spool_lost`, `spool_spans`, or still in the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TelemetryStats {
    /// Spans the backend accepted, sent at once or from the spool.
    pub spans_exported: u64,
    /// Spans dropped because the queue was full (or telemetry had shut down).
    pub spans_dropped: u64,
    /// Spans lost in exports that failed and were not spooled: no spool, or the backend
    /// refused them with an answer that would not change (400, 413, ...).
    pub spans_failed: u64,
    /// Export requests that failed.
    pub failed_exports: u64,
    /// Whether the latest export request failed (the backend is down or refusing).
    pub failing: bool,
    /// Spans written to the spool because the backend did not take them.
    pub spans_spooled: u64,
    /// Spans sent from the spool and accepted (also in `spans_exported`).
    pub spans_resent: u64,
    /// Spans deleted from a full spool, oldest first, or unreadable in it: lost.
    pub spans_spool_lost: u64,
    /// Spans in the spool now.
    pub spool_spans: u64,
    /// Bytes in the spool now.
    pub spool_bytes: u64,
    /// Spans found in the spool when this process started (an earlier run's).
    pub spool_found: u64,
    /// Spans the sampler left out: never recorded, so in none of the counts above.
    pub spans_sampled_out: u64,
}

impl TelemetryStats {
    /// Spans lost for good: dropped from a full queue, in failed exports that were not
    /// spooled, or deleted from a full spool.
    pub fn spans_lost(&self) -> u64 {
        self.spans_dropped + self.spans_failed + self.spans_spool_lost
    }

    /// Spans this process made that have left its queue: exported, lost, or spooled now.
    pub fn spans_made(&self) -> u64 {
        (self.spans_exported + self.spans_lost() + self.spool_spans)
            .saturating_sub(self.spool_found)
    }
}

impl Counters {
    pub(crate) fn add_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_sampled_out(&self) {
        self.sampled_out.fetch_add(1, Ordering::Relaxed);
    }

    /// Records what `spool` holds now.
    fn spool_now(&self, spool: &crate::spool::Spool) {
        self.spool_spans.store(spool.spans(), Ordering::Relaxed);
        self.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> TelemetryStats {
        TelemetryStats {
            spans_exported: self.exported.load(Ordering::Relaxed),
            spans_dropped: self.dropped.load(Ordering::Relaxed),
            spans_failed: self.failed.load(Ordering::Relaxed),
            failed_exports: self.failed_requests.load(Ordering::Relaxed),
            failing: self.failing.load(Ordering::Relaxed),
            spans_spooled: self.spooled.load(Ordering::Relaxed),
            spans_resent: self.resent.load(Ordering::Relaxed),
            spans_spool_lost: self.spool_lost.load(Ordering::Relaxed),
            spool_spans: self.spool_spans.load(Ordering::Relaxed),
            spool_bytes: self.spool_bytes.load(Ordering::Relaxed),
            spool_found: self.spool_found.load(Ordering::Relaxed),
            spans_sampled_out: self.sampled_out.load(Ordering::Relaxed),
        }
    }
}

/// Messages to the export thread. The channel carrying them holds a few at most.
pub(crate) enum Control {
    /// The queue holds a full batch.
    BatchReady,
    /// Export everything queued, then answer.
    Flush(SyncSender<Result<(), String>>),
    /// Export everything queued, shut the exporter down, answer and stop.
    Shutdown(SyncSender<Result<(), String>>),
}

/// The producer side, shared by the layer.
#[derive(Debug)]
pub(crate) struct ExportQueue {
    spans: ArrayQueue<Box<SpanRecord>>,
    batch_size: usize,
    notified: AtomicBool,
    closed: AtomicBool,
    control: SyncSender<Control>,
    pub(crate) counters: Arc<Counters>,
    /// The subscriber the export thread's own warnings go to: the one this queue feeds,
    /// held weakly so the thread does not keep it alive.
    pub(crate) log_to: std::sync::OnceLock<tracing::dispatcher::WeakDispatch>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Control::BatchReady => "BatchReady",
            Control::Flush(_) => "Flush",
            Control::Shutdown(_) => "Shutdown",
        })
    }
}

impl ExportQueue {
    /// Queues a span without blocking. A full (or closed) queue counts the drop and hands
    /// the record back for reuse.
    pub(crate) fn push(&self, span: Box<SpanRecord>) -> Result<(), Box<SpanRecord>> {
        // A span carries its local spans: they are dropped with it.
        let spans = 1 + span.children.len() as u64 + span.children.dropped;
        if self.closed.load(Ordering::Relaxed) {
            self.counters.dropped.fetch_add(spans, Ordering::Relaxed);
            return Err(span);
        }
        if let Err(span) = self.spans.push(span) {
            self.counters.dropped.fetch_add(spans, Ordering::Relaxed);
            return Err(span);
        }
        if self.spans.len() >= self.batch_size && !self.notified.swap(true, Ordering::AcqRel) {
            // A full control channel already holds a wake-up; nothing is lost.
            let _ = self.control.try_send(Control::BatchReady);
        }
        Ok(())
    }

    /// Takes one queued span out and discards it; false when the queue is empty.
    pub(crate) fn pop_for_discard(&self) -> bool {
        self.spans.pop().is_some()
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    pub(crate) fn control(&self) -> &SyncSender<Control> {
        &self.control
    }
}

/// What every export pipeline is given, whatever its exporter.
pub(crate) struct Pipeline {
    pub(crate) resource: Resource,
    pub(crate) batch: BatchConfig,
    pub(crate) pool: Arc<RecordPool>,
    /// How often the export account is sent, if at all.
    pub(crate) account: Option<Duration>,
}

/// Creates the queue and starts the export thread, which builds its exporter with `make`
/// (so an exporter that needs its own runtime, such as the blocking HTTP client, is built
/// away from the caller's). Returns once the exporter is built, or with its build error.
pub(crate) fn start<E, F>(
    make: F,
    pipeline: Pipeline,
    destination: String,
    cause: crate::client::LastError,
    spooling: Option<Spooling>,
) -> Result<(Arc<ExportQueue>, JoinHandle<()>), String>
where
    E: SpanExporter + 'static,
    F: FnOnce() -> Result<E, String> + Send + 'static,
{
    let Pipeline {
        resource,
        batch,
        pool,
        account,
    } = pipeline;
    let (control_tx, control_rx) = mpsc::sync_channel(4);
    let queue = Arc::new(ExportQueue {
        spans: ArrayQueue::new(batch.max_queue_size),
        batch_size: batch.max_export_batch_size,
        notified: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        control: control_tx,
        counters: Arc::new(Counters::default()),
        log_to: std::sync::OnceLock::new(),
    });
    if let Some(s) = &spooling {
        // What an earlier run left goes first.
        s.outbox.hold(!s.spool.is_empty());
        queue
            .counters
            .spool_found
            .store(s.spool.spans(), Ordering::Relaxed);
        queue.counters.spool_now(&s.spool);
    }
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let worker_queue = queue.clone();
    let handle = std::thread::Builder::new()
        .name("zerostate-otlp-export".into())
        .spawn(move || {
            let mut exporter = match make() {
                Ok(e) => e,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            exporter.set_resource(&resource);
            let _ = ready_tx.send(Ok(()));
            let mut worker = Worker::new(exporter, worker_queue, batch, pool, destination, cause);
            worker.spooling = spooling;
            worker.accounting = account.map(Accounting::new);
            worker.run(control_rx);
        })
        .map_err(|e| format!("could not start the export thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok((queue, handle)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the export thread stopped while building the exporter".into()),
    }
}

/// The spool and how to send from it.
pub(crate) struct Spooling {
    pub(crate) spool: crate::spool::Spool,
    /// The exporter's requests, kept for the spool; held while the spool is not empty.
    pub(crate) outbox: Arc<crate::client::Outbox>,
    /// Sends one spooled body (gzipped or not) to the backend.
    pub(crate) resend: Resend,
    /// When a resend may next be tried.
    next_try: Instant,
    /// How long to wait after the next failed resend.
    backoff: Duration,
    overflow_reported: bool,
    /// Whether the backend took the latest spooled request sent to it: it answers, and
    /// what waits is the backlog.
    answering: bool,
}

/// Sends one spooled body, gzipped or not.
pub(crate) type Resend = Box<dyn FnMut(Vec<u8>, bool) -> Result<(), crate::client::Resent> + Send>;

/// The first pause before a failed resend is tried again; it doubles up to
/// [`LONGEST_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const LONGEST_BACKOFF: Duration = Duration::from_secs(30);
/// The longest one round of resending goes on before new spans are seen to.
const RESEND_ROUND: Duration = Duration::from_secs(2);

impl Spooling {
    pub(crate) fn new(
        spool: crate::spool::Spool,
        outbox: Arc<crate::client::Outbox>,
        resend: Resend,
    ) -> Self {
        Self {
            spool,
            outbox,
            resend,
            next_try: Instant::now(),
            backoff: FIRST_BACKOFF,
            overflow_reported: false,
            answering: false,
        }
    }
}

/// The export account: every interval, a span saying what became of the spans made in it.
struct Accounting {
    every: Duration,
    next: Instant,
    /// Where the current interval began.
    from: std::time::SystemTime,
    /// The counts at that moment.
    last: TelemetryStats,
    scope: InstrumentationScope,
}

impl Accounting {
    fn new(every: Duration) -> Self {
        Self {
            every,
            next: Instant::now() + every,
            from: std::time::SystemTime::now(),
            last: TelemetryStats::default(),
            scope: InstrumentationScope::builder("zerostate_telemetry").build(),
        }
    }
}

struct Worker<E> {
    exporter: E,
    spooling: Option<Spooling>,
    accounting: Option<Accounting>,
    queue: Arc<ExportQueue>,
    batch: BatchConfig,
    pool: Arc<RecordPool>,
    destination: String,
    anchor: WallAnchor,
    scopes: HashMap<&'static str, InstrumentationScope>,
    drop_reported: bool,
    failing_since: Option<(Instant, u64)>,
    /// Why the latest request to the backend failed, for the export account.
    last_failure: Option<String>,
    /// Why the HTTP client's latest request failed, in full (the exporter keeps only
    /// "network error").
    cause: crate::client::LastError,
}

impl<E: SpanExporter> Worker<E> {
    fn new(
        exporter: E,
        queue: Arc<ExportQueue>,
        batch: BatchConfig,
        pool: Arc<RecordPool>,
        destination: String,
        cause: crate::client::LastError,
    ) -> Self {
        Self {
            cause,
            exporter,
            spooling: None,
            accounting: None,
            queue,
            batch,
            pool,
            destination,
            anchor: WallAnchor::new(),
            scopes: HashMap::new(),
            drop_reported: false,
            failing_since: None,
            last_failure: None,
        }
    }

    /// Logs through the subscriber this pipeline belongs to (scoped or global), or the
    /// thread's default when it is gone.
    fn log(&self, event: impl FnOnce()) {
        match self.queue.log_to.get().and_then(|d| d.upgrade()) {
            Some(dispatch) => tracing::dispatcher::with_default(&dispatch, event),
            None => event(),
        }
    }

    /// Until the next scheduled export, or the next resend from the spool when sooner.
    fn next_wake(&self) -> Duration {
        let mut wake = self.batch.scheduled_delay();
        if let Some(s) = self.spooling.as_ref().filter(|s| !s.spool.is_empty()) {
            wake = wake.min(s.next_try.saturating_duration_since(Instant::now()));
        }
        if let Some(a) = &self.accounting {
            wake = wake.min(a.next.saturating_duration_since(Instant::now()));
        }
        wake.max(Duration::from_millis(10))
    }

    fn spool_is_empty(&self) -> bool {
        self.spooling.as_ref().is_none_or(|s| s.spool.is_empty())
    }

    fn run(mut self, control: Receiver<Control>) {
        loop {
            match control.recv_timeout(self.next_wake()) {
                // Failures are counted and logged by `export`; nobody waits for these.
                Ok(Control::BatchReady) => {
                    let _ = self.drain(true);
                    self.account_if_due();
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.drain(false);
                    self.account_if_due();
                }
                Ok(Control::Flush(ack)) => {
                    let result = self.drain(false);
                    let _ = ack.send(result);
                }
                Ok(Control::Shutdown(ack)) => {
                    self.queue.close();
                    let mut result = self.drain(false);
                    self.send_account(true);
                    if let Err(e) = self
                        .exporter
                        .shutdown_with_timeout(self.batch.export_timeout())
                    {
                        result = result.and(Err(format!("exporter shutdown failed: {e}")));
                    }
                    self.report_totals();
                    let _ = ack.send(result);
                    return;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.drain(false);
                    return;
                }
            }
        }
    }

    /// Exports what is queued: only full batches when `full_only`, else everything.
    fn drain(&mut self, full_only: bool) -> Result<(), String> {
        self.queue.notified.store(false, Ordering::Release);
        self.resend_spooled();
        if self.anchor.is_stale() {
            self.anchor = WallAnchor::new();
        }
        let mut result = Ok(());
        loop {
            let len = self.queue.spans.len();
            if len == 0 || (full_only && len < self.batch.max_export_batch_size) {
                break;
            }
            // A batch holds about the batch size in spans, local spans included.
            let mut batch: Vec<SpanData> = Vec::with_capacity(self.batch.max_export_batch_size);
            while batch.len() < self.batch.max_export_batch_size {
                let Some(s) = self.queue.spans.pop() else {
                    break;
                };
                self.convert(s, &mut batch);
            }
            if let Err(e) = self.export(batch) {
                result = Err(e);
            }
        }
        self.report_drops();
        result
    }

    fn export(&mut self, batch: Vec<SpanData>) -> Result<(), String> {
        let n = batch.len() as u64;
        crate::client::take(&self.cause);
        let held = self.spooling.as_ref().is_some_and(|s| s.outbox.is_held());
        let result = futures_executor::block_on(self.exporter.export(batch));
        let sent = self.spooling.as_ref().and_then(|s| s.outbox.take());
        let counters = &self.queue.counters;
        match result {
            Ok(()) => {
                counters.exported.fetch_add(n, Ordering::Relaxed);
                if !self.spool_is_empty() {
                    // An account sent past the spooled spans: export recovers once they
                    // are sent.
                    return Ok(());
                }
                counters.failing.store(false, Ordering::Relaxed);
                if let Some((since, failures)) = self.failing_since.take() {
                    self.log(|| {
                        tracing::info!(
                            target: "zerostate_telemetry",
                            failures,
                            "span export recovered after {:.1}s of failures",
                            since.elapsed().as_secs_f64()
                        )
                    });
                }
                Ok(())
            }
            Err(e) => {
                counters.failed_requests.fetch_add(1, Ordering::Relaxed);
                counters.failing.store(true, Ordering::Relaxed);
                let cause = crate::client::take(&self.cause)
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default();
                if !held {
                    self.last_failure = Some(format!("{e}{cause}"));
                }
                let message = match self.spool(n, sent) {
                    Ok(dir) => format!(
                        "span export to {} failed: {e}{cause}; its spans are spooled in {dir} \
                         and sent again, oldest first, once it answers",
                        self.destination
                    ),
                    Err(why) => {
                        self.queue.counters.failed.fetch_add(n, Ordering::Relaxed);
                        format!(
                            "span export to {} failed, {n} spans lost: {e}{cause}{why}",
                            self.destination
                        )
                    }
                };
                match &mut self.failing_since {
                    Some((_, failures)) => *failures += 1,
                    None => {
                        self.log(|| tracing::warn!(
                            target: "zerostate_telemetry",
                            "{message} (further failures are counted, not logged, until export recovers)"
                        ));
                        self.failing_since = Some((Instant::now(), 1));
                    }
                }
                Err(message)
            }
        }
    }

    /// Keeps the `n` spans of the failed request `sent` in the spool, when there is one and
    /// the request may succeed later, and holds new requests back behind them. The spool's
    /// directory, or why they are lost (empty when there is no spool).
    fn spool(&mut self, n: u64, sent: Option<crate::client::Sent>) -> Result<String, String> {
        let Some(s) = &mut self.spooling else {
            return Err(String::new());
        };
        let Some(sent) = sent.filter(crate::client::Sent::may_succeed_later) else {
            return Err("; the backend refused them, so they are not kept".into());
        };
        let evicted = s
            .spool
            .push(&sent.body, n, sent.gzip)
            .map_err(|why| format!("; {why}"))?;
        s.answering = false;
        let counters = &self.queue.counters;
        counters.spooled.fetch_add(n, Ordering::Relaxed);
        if evicted.spans > 0 {
            counters
                .spool_lost
                .fetch_add(evicted.spans, Ordering::Relaxed);
            if !s.overflow_reported {
                s.overflow_reported = true;
                let (bytes, spans) = (s.spool.bytes(), evicted.spans);
                self.log(|| {
                    tracing::warn!(
                        target: "zerostate_telemetry",
                        spool_bytes = bytes,
                        "the span spool is full: its oldest {spans} spans are deleted (further \
                         deletions are counted, not logged; [telemetry] spool_bytes sets its size)"
                    )
                });
            }
        }
        let s = self.spooling.as_mut().expect("checked above");
        if !s.spool.is_empty() {
            s.outbox.hold(true);
        }
        let dir = s.spool.dir().display().to_string();
        self.spool_gauges();
        Ok(dir)
    }

    /// Sends what the spool holds, oldest first, when a resend is due: until it is empty,
    /// the backend does not take one (tried again after a pause that doubles), or a round
    /// has taken [`RESEND_ROUND`].
    fn resend_spooled(&mut self) {
        let Some(s) = &mut self.spooling else {
            return;
        };
        if s.spool.is_empty() || Instant::now() < s.next_try {
            return;
        }
        let counters = self.queue.counters.clone();
        let started = Instant::now();
        let mut failed = None;
        let mut warnings = Vec::new();
        while started.elapsed() < RESEND_ROUND {
            let Some(oldest) = s.spool.oldest() else {
                break;
            };
            let (entry, body) = oldest;
            let outcome = match body {
                Ok(body) => (s.resend)(body, entry.gzip),
                Err(why) => Err(crate::client::Resent::Refused(why)),
            };
            s.answering = !matches!(outcome, Err(crate::client::Resent::Later(_)));
            match outcome {
                Ok(()) => {
                    counters.exported.fetch_add(entry.spans, Ordering::Relaxed);
                    counters.resent.fetch_add(entry.spans, Ordering::Relaxed);
                }
                Err(crate::client::Resent::Refused(why)) => {
                    counters
                        .spool_lost
                        .fetch_add(entry.spans, Ordering::Relaxed);
                    warnings.push(format!("{} spooled spans are lost: {why}", entry.spans));
                }
                Err(crate::client::Resent::Later(why)) => {
                    failed = Some(why);
                    break;
                }
            }
            if let Err(why) = s.spool.remove_oldest() {
                warnings.push(why);
                break;
            }
        }
        for warning in warnings {
            self.log(|| tracing::warn!(target: "zerostate_telemetry", "{warning}"));
        }
        if let Some(why) = &failed {
            self.last_failure = Some(why.clone());
        }
        let s = self.spooling.as_mut().expect("checked above");
        match failed {
            Some(_) => {
                s.next_try = Instant::now() + s.backoff;
                s.backoff = (s.backoff * 2).min(LONGEST_BACKOFF);
            }
            None if s.spool.is_empty() => {
                s.outbox.hold(false);
                s.backoff = FIRST_BACKOFF;
                counters.failing.store(false, Ordering::Relaxed);
                if let Some((since, failures)) = self.failing_since.take() {
                    let resent = counters.resent.load(Ordering::Relaxed);
                    self.log(|| {
                        tracing::info!(
                            target: "zerostate_telemetry",
                            failures,
                            resent,
                            "span export recovered after {:.1}s; the spool is sent and empty",
                            since.elapsed().as_secs_f64()
                        )
                    });
                }
            }
            None => {}
        }
        self.spool_gauges();
    }

    /// Sends the export account when its interval is over.
    fn account_if_due(&mut self) {
        if self
            .accounting
            .as_ref()
            .is_some_and(|a| Instant::now() >= a.next)
        {
            self.send_account(false);
        }
    }

    /// Sends the account of the interval ending now (`last`: the final one, as telemetry
    /// shuts down) as a span in a trace of its own. While older spans wait in the spool it
    /// goes past them when the backend answers, so that it says they wait; when the
    /// backend does not answer it is spooled with them.
    fn send_account(&mut self, last: bool) {
        let now = self.queue.counters.snapshot();
        let failing_since = self.failing_since.map(|(since, _)| {
            std::time::SystemTime::now()
                .checked_sub(since.elapsed())
                .unwrap_or(std::time::UNIX_EPOCH)
        });
        let error = self.last_failure.clone();
        let Some(a) = &mut self.accounting else {
            return;
        };
        let end = std::time::SystemTime::now();
        let was = a.last;
        let delta = |f: fn(&TelemetryStats) -> u64| f(&now).saturating_sub(f(&was)) as i64;
        use crate::names::account as key;
        let mut attributes = vec![
            KeyValue::new(key::INTERVAL_MS, a.every.as_millis() as i64),
            KeyValue::new(key::SPANS_MADE, delta(TelemetryStats::spans_made)),
            KeyValue::new(key::SPANS_EXPORTED, delta(|s| s.spans_exported)),
            KeyValue::new(key::SPANS_SPOOLED, delta(|s| s.spans_spooled)),
            KeyValue::new(key::SPANS_RESENT, delta(|s| s.spans_resent)),
            KeyValue::new(key::DROPPED_QUEUE_FULL, delta(|s| s.spans_dropped)),
            KeyValue::new(key::DROPPED_SAMPLED_OUT, delta(|s| s.spans_sampled_out)),
            KeyValue::new(key::DROPPED_SPOOL_OVERFLOW, delta(|s| s.spans_spool_lost)),
            KeyValue::new(key::DROPPED_FAILED, delta(|s| s.spans_failed)),
            KeyValue::new(key::SPOOL_SPANS, now.spool_spans as i64),
        ];
        if let Some(since) = failing_since {
            let ms = since
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as i64;
            attributes.push(KeyValue::new(key::FAILING_SINCE_MS, ms));
            if let Some(error) = error {
                attributes.push(KeyValue::new(key::ERROR, error));
            }
        }
        if last {
            attributes.push(KeyValue::new(key::FINAL, true));
        }
        let span = SpanData {
            span_context: SpanContext::new(
                crate::context::ids::trace_id(),
                crate::context::ids::span_id(),
                TraceFlags::SAMPLED,
                false,
                Default::default(),
            ),
            parent_span_id: opentelemetry::trace::SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: opentelemetry::trace::SpanKind::Internal,
            name: std::borrow::Cow::Borrowed(crate::names::span::TELEMETRY_EXPORT_ACCOUNT),
            start_time: a.from,
            end_time: end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: opentelemetry::trace::Status::Unset,
            instrumentation_scope: a.scope.clone(),
        };
        a.last = now;
        a.from = end;
        a.next = Instant::now() + a.every;
        let past_spool = self
            .spooling
            .as_ref()
            .is_some_and(|s| s.answering && !s.spool.is_empty());
        if past_spool && let Some(s) = &self.spooling {
            s.outbox.hold(false);
        }
        // A failure is counted and logged by `export`, and the account spooled with the rest.
        let _ = self.export(vec![span]);
        if let Some(s) = &self.spooling {
            s.outbox.hold(!s.spool.is_empty());
        }
    }

    fn spool_gauges(&self) {
        if let Some(s) = &self.spooling {
            self.queue.counters.spool_now(&s.spool);
        }
    }

    fn report_drops(&mut self) {
        if !self.drop_reported && self.queue.counters.dropped.load(Ordering::Relaxed) > 0 {
            self.drop_reported = true;
            self.log(|| tracing::warn!(
                target: "zerostate_telemetry",
                queue = self.batch.max_queue_size,
                "span export queue is full; spans are being dropped (further drops are counted, not logged)"
            ));
        }
    }

    fn report_totals(&self) {
        let s = self.queue.counters.snapshot();
        if s.spans_lost() > 0 {
            self.log(|| {
                tracing::warn!(
                    target: "zerostate_telemetry",
                    exported = s.spans_exported,
                    dropped = s.spans_dropped,
                    failed = s.spans_failed,
                    spool_lost = s.spans_spool_lost,
                    "telemetry shut down with spans lost"
                )
            });
        }
        if let Some(spooling) = self.spooling.as_ref().filter(|sp| !sp.spool.is_empty()) {
            let dir = spooling.spool.dir().display().to_string();
            self.log(|| {
                tracing::info!(
                    target: "zerostate_telemetry",
                    spooled = s.spool_spans,
                    "telemetry shut down with spans spooled in {dir}: the next start sends them"
                )
            });
        }
    }

    /// Builds the exported form of `r` and of its local spans on this thread (new
    /// allocations here, so memory the calling thread allocated is not freed here), and
    /// returns the record to the pool.
    fn convert(&mut self, mut r: Box<SpanRecord>, out: &mut Vec<SpanData>) {
        // Spans of one target arrive in runs; the map is only consulted when it changes.
        let scope = self
            .scopes
            .entry(r.target)
            .or_insert_with(|| {
                let name = r.target.split("::").next().unwrap_or(r.target);
                InstrumentationScope::builder(name).build()
            })
            .clone();
        let trace_state = if r.trace_state.is_empty() {
            opentelemetry::trace::TraceState::default()
        } else {
            opentelemetry::trace::TraceState::from_key_value(r.trace_state.iter())
                .unwrap_or_default()
        };
        let mut events = SpanEvents::default();
        events.events = r.events.drain(..).collect();
        events.dropped_count = r.dropped_events;
        let data = SpanData {
            span_context: SpanContext::new(
                r.trace_id,
                r.span_id,
                TraceFlags::new(r.flags),
                false,
                trace_state,
            ),
            parent_span_id: r.parent_span_id,
            parent_span_is_remote: r.parent_is_remote,
            span_kind: r.kind.clone(),
            name: std::mem::replace(&mut r.name, std::borrow::Cow::Borrowed("")),
            start_time: self.anchor.wall(r.start),
            end_time: self.anchor.wall(r.end),
            attributes: r.attributes.drain(..).collect(),
            dropped_attributes_count: r.dropped_attributes,
            events,
            links: SpanLinks::default(),
            status: std::mem::replace(&mut r.status, opentelemetry::trace::Status::Unset),
            instrumentation_scope: scope.clone(),
        };
        out.push(data);
        let children = &mut r.children;
        if children.dropped > 0 {
            self.queue
                .counters
                .dropped
                .fetch_add(children.dropped, Ordering::Relaxed);
        }
        if !children.spans.is_empty() {
            // Attributes were pushed in the order they were set: group them by span.
            let mut attributes: Vec<Vec<KeyValue>> = Vec::new();
            if !children.attributes.is_empty() {
                attributes.resize_with(children.spans.len(), Vec::new);
                for (i, kv) in children.attributes.drain(..) {
                    if let Some(a) = attributes.get_mut(i as usize) {
                        a.push(kv);
                    }
                }
            }
            let context = out.last().map(|d| d.span_context.clone());
            for (i, c) in children.spans.iter().enumerate() {
                let span_context = match &context {
                    Some(cx) => SpanContext::new(
                        cx.trace_id(),
                        c.span_id,
                        cx.trace_flags(),
                        false,
                        cx.trace_state().clone(),
                    ),
                    None => continue,
                };
                out.push(SpanData {
                    span_context,
                    parent_span_id: c.parent_span_id,
                    parent_span_is_remote: false,
                    span_kind: opentelemetry::trace::SpanKind::Internal,
                    name: std::borrow::Cow::Borrowed(c.name),
                    start_time: self.anchor.wall(c.start),
                    end_time: self.anchor.wall(c.end),
                    attributes: attributes
                        .get_mut(i)
                        .map(std::mem::take)
                        .unwrap_or_default(),
                    dropped_attributes_count: 0,
                    events: SpanEvents::default(),
                    links: SpanLinks::default(),
                    status: opentelemetry::trace::Status::Unset,
                    instrumentation_scope: scope.clone(),
                });
            }
        }
        self.pool.give(r);
    }
}

/// Sends `make(ack)` to the export thread and waits at most `timeout` for the answer.
pub(crate) fn request(
    queue: &ExportQueue,
    make: impl FnOnce(SyncSender<Result<(), String>>) -> Control,
    timeout: Duration,
) -> Result<(), crate::FlushError> {
    let (tx, rx) = mpsc::sync_channel(1);
    let deadline = Instant::now() + timeout;
    let mut msg = make(tx);
    // The control channel is tiny; wait for room until the deadline rather than block.
    loop {
        match queue.control().try_send(msg) {
            Ok(()) => break,
            Err(mpsc::TrySendError::Full(m)) => {
                if Instant::now() >= deadline {
                    return Err(crate::FlushError::TimedOut(timeout));
                }
                msg = m;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(crate::FlushError::ShutDown),
        }
    }
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(crate::FlushError::Export(e)),
        Err(RecvTimeoutError::Timeout) => Err(crate::FlushError::TimedOut(timeout)),
        Err(RecvTimeoutError::Disconnected) => Err(crate::FlushError::ShutDown),
    }
}
