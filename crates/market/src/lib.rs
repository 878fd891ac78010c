//! Tasks across the network. A node is both sides:
//!
//! - **requester** ([`requester`]): a task submitted to its API is announced to a guild as a
//!   sealed `task_request` (what it needs, never its input); members answer with offers over
//!   direct requests; within the offer window the requester picks the cheapest (then the
//!   least loaded), hands it the module and input (`task_run`), and checks the signed receipt
//!   that comes back before it accepts the output. A failed attempt (refused, timed out, a
//!   receipt that does not verify) goes to the next offer, a bounded number of times.
//! - **executor** ([`executor`]): a member that hears a `task_request` it can take offers to
//!   run it; a task it is handed runs in its engine under the same limits as `task run`, at
//!   most `max_running` at once.
//!
//! It does no network I/O of its own: it asks through a [`Transport`] and answers what
//! [`Tasks::handle`] is given ([`Served`] wires both to a node's network).
//!
//! After a verified receipt the requester pays the executor for the fuel it states
//! ([`zerostate_payment_protocol`]), failed runs included (like gas).

mod evidence;
pub mod executor;
mod metrics;
mod misbehave;
mod record;
pub mod requester;
mod settings;
mod standing;
mod transfer;
mod transport;
pub mod wire;

pub use metrics::Metrics;
pub use misbehave::Misbehaviour;
pub use record::{Attempt, Modules, TaskRecord, TaskState};
use record::{RECORD_BYTES_KEPT, RECORDS_KEPT, weight};
pub use settings::TaskSettings;
pub use transport::{Answer, Incoming, P2p, Reply, Response, Served, Transport};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zerostate_execution::Engine;
use zerostate_p2p::PeerId;

/// Receipts (their hashes) paid late before their records were written, and their order.
type LateReceipts = (std::collections::HashSet<[u8; 32]>, VecDeque<[u8; 32]>);

/// The records by id, their order, and their total [`weight`].
type Records = (BTreeMap<String, TaskRecord>, VecDeque<String>, usize);

/// The tasks of one node: a cheap, cloneable handle.
#[derive(Clone)]
pub struct Tasks {
    inner: Arc<Inner>,
}

struct Inner {
    /// This node's name (its `service.name`), given with its offers.
    name: String,
    transport: Arc<dyn Transport>,
    engine: Arc<Engine>,
    payments: zerostate_payment_protocol::Payments,
    settings: TaskSettings,
    records: Mutex<Records>,
    /// Told whenever one of this node's tasks reaches its final state (what
    /// [`Tasks::wait_final`] waits for).
    ended: tokio::sync::Notify,
    /// Offer rounds of this node's tasks waiting for one of its own tasks to end.
    freed: Freed,
    /// Offers for tasks collecting them, by task id.
    offers: Mutex<HashMap<String, requester::OfferSink>>,
    /// Executors whose bills or receipts did not hold, and why: their offers are refused
    /// while this node runs (at most [`REFUSED_KEPT`]).
    refused: Mutex<HashMap<PeerId, String>>,
    /// Executors one of whose receipts matched a spot check this session: only theirs are
    /// sampled (at most [`REFUSED_KEPT`]; past that, new ones are always checked).
    vouched: Mutex<std::collections::HashSet<PeerId>>,
    /// Offers this node made and had taken, by task id: the requester that took each and
    /// when. Only such a task is run (at most [`OFFERS_KEPT`], each for [`OFFER_LIFETIME`]).
    offered: Mutex<HashMap<String, (PeerId, std::time::Instant)>>,
    /// Standing offers this node gave requesters, as an executor ([`standing`]).
    given: Mutex<standing::Given>,
    /// Standing offers this node holds from executors, as a requester.
    held: Mutex<standing::Held>,
    /// Tasks this node runs for others now.
    running: AtomicU32,
    /// Told when the last of them ends (what a drain waits for).
    idle: tokio::sync::Notify,
    /// Evidence is rerun one piece at a time (a coordinator's guard against members that
    /// would keep it busy rerunning).
    judging: tokio::sync::Semaphore,
    /// Attempts of this node's own tasks under way, from handing one over to its payment.
    own_work: Arc<AtomicU32>,
    /// Modules held by hash.
    modules: Mutex<Modules>,
    /// Receipts whose payment was delivered late before their record said it had failed
    /// (at most [`REFUSED_KEPT`]): read when that record is written.
    paid_late: Mutex<LateReceipts>,
    /// What this node measures.
    metrics: crate::metrics::Metrics,
    /// What this node was told to do wrong (tests only).
    misbehave: crate::misbehave::Misbehaviour,
    /// Tasks handed to this node, by requester and hand-over, and their outcome once there is
    /// one (at most [`HANDOVERS_KEPT`], the oldest forgotten first): a task handed again is
    /// answered from here.
    handovers: Mutex<(HashMap<HandOver, Outcome>, VecDeque<HandOver>)>,
    /// Whether `drop-chunk-connection` dropped its connection already (tests only).
    chunk_dropped: std::sync::atomic::AtomicBool,
    /// Everything the market started on its own (listening for tasks, offering, driving
    /// this node's tasks, sending evidence): [`Tasks::drain`] waits for it.
    work: tokio_util::task::TaskTracker,
    /// Cancelled when the node stops: no new tasks are taken, offered on or listened for.
    stopping: tokio_util::sync::CancellationToken,
}

/// A task handed to this node: its requester and the SHA-256 of the hand-over.
type HandOver = (PeerId, [u8; 32]);
/// What became of a hand-over, once something did.
type Outcome = tokio::sync::watch::Receiver<Option<Result<wire::TaskResult, String>>>;
/// Hand-overs an executor remembers.
const HANDOVERS_KEPT: usize = 1024;

/// Executors refused for cheating that a node remembers; past that, the oldest is
/// forgotten (a cheater has to make a new identity per refusal anyway).
const REFUSED_KEPT: usize = 4096;
/// Taken offers an executor remembers.
const OFFERS_KEPT: usize = 4096;
/// How long a taken offer stays good for the task it was made for.
const OFFER_LIFETIME: Duration = Duration::from_secs(120);

impl Tasks {
    /// Starts listening to the guilds for tasks to offer on (when `settings.execute`);
    /// `name` is the node's name, given with its offers.
    pub fn start(
        name: &str,
        transport: Arc<dyn Transport>,
        engine: Arc<Engine>,
        payments: zerostate_payment_protocol::Payments,
        settings: TaskSettings,
        metrics: crate::metrics::Metrics,
        misbehave: crate::misbehave::Misbehaviour,
    ) -> Tasks {
        let tasks = Tasks {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                transport,
                engine,
                payments,
                settings,
                records: Mutex::default(),
                ended: tokio::sync::Notify::new(),
                freed: Freed::default(),
                offers: Mutex::default(),
                refused: Mutex::default(),
                vouched: Mutex::default(),
                offered: Mutex::default(),
                given: Mutex::default(),
                held: Mutex::default(),
                running: AtomicU32::new(0),
                idle: tokio::sync::Notify::new(),
                judging: tokio::sync::Semaphore::new(1),
                own_work: Arc::default(),
                modules: Mutex::default(),
                paid_late: Mutex::default(),
                metrics,
                misbehave,
                handovers: Mutex::default(),
                chunk_dropped: std::sync::atomic::AtomicBool::new(false),
                work: tokio_util::task::TaskTracker::new(),
                stopping: tokio_util::sync::CancellationToken::new(),
            }),
        };
        let payments = tasks.payment_events();
        let stopping = tasks.inner.stopping.clone();
        tasks.inner.work.spawn(async move {
            tokio::select! {
                () = stopping.cancelled() => {}
                () = payments => {}
            }
        });
        if tasks.inner.settings.execute {
            let listening = executor::listen(tasks.clone());
            let stopping = tasks.inner.stopping.clone();
            tasks.inner.work.spawn(async move {
                tokio::select! {
                    () = stopping.cancelled() => {}
                    () = listening => {}
                }
            });
        }
        tasks
    }

    /// Starts `work` as the market's own: [`Tasks::drain`] waits for it.
    fn spawn<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.work.spawn(work);
    }

    /// Whether the node is stopping (no new work is taken).
    pub fn stopping(&self) -> bool {
        self.inner.stopping.is_cancelled()
    }

    /// Stops taking work — no new submissions, no offers on others' tasks — and waits up
    /// to `deadline` for what is under way to end: this node's tasks (with their
    /// payments), the tasks it runs for others, evidence it sends. What is left at the
    /// deadline is stopped, and each of this node's tasks still going is recorded as
    /// failed with the reason. Returns how many of its tasks were cut off so.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.inner.stopping.cancel();
        self.inner.work.close();
        let until = tokio::time::Instant::now() + deadline;
        let drained = tokio::time::timeout_at(until, async {
            self.inner.work.wait().await;
            // Runs for others are answered by the router's handlers: counted by their slots,
            // the last of which to end says so.
            loop {
                let ended = self.inner.idle.notified();
                tokio::pin!(ended);
                ended.as_mut().enable();
                if self.inner.running.load(Ordering::Acquire) == 0 {
                    break;
                }
                ended.await;
            }
        })
        .await
        .is_ok();
        if drained {
            return 0;
        }
        let why = format!(
            "the node stopped before the task ended (it waited {} ms)",
            deadline.as_millis()
        );
        let mut records = self.records();
        let mut cut = 0;
        for r in records.0.values_mut() {
            if !matches!(r.state, TaskState::Succeeded | TaskState::Failed) {
                r.state = TaskState::Failed;
                r.error = Some(why.clone());
                cut += 1;
            }
        }
        drop(records);
        if cut > 0 {
            self.inner.ended.notify_waiters();
            tracing::warn!(tasks = cut, "{why}");
        }
        cut
    }

    /// Keeps an uploaded module (`POST /v1/modules`); returns its SHA-256 (hex).
    pub fn upload(&self, bytes: Vec<u8>) -> Result<String, String> {
        self.check_module(&bytes)?;
        Ok(self.keep(bytes))
    }

    /// Whether `bytes` is a module this node's engine would compile, or why not.
    pub fn check_module(&self, bytes: &[u8]) -> Result<(), String> {
        self.inner
            .engine
            .check_module(bytes)
            .map_err(|e| format!("the module is not one a node can run: {e}"))
    }

    /// Keeps a module by its hash, counting what it evicts; the hash (hex).
    fn keep(&self, bytes: Vec<u8>) -> String {
        let (hash, evicted) = self.modules().put(bytes);
        self.inner.metrics.evicted("modules", evicted);
        hash
    }

    /// The outcome of the first hand-over of `key`, when it was handed over before;
    /// otherwise where to publish the outcome of this, the first.
    #[allow(clippy::type_complexity)]
    fn handed_over(
        &self,
        key: &HandOver,
    ) -> Result<Outcome, tokio::sync::watch::Sender<Option<Result<wire::TaskResult, String>>>> {
        let mut handovers = self
            .inner
            .handovers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(earlier) = handovers.0.get(key) {
            return Ok(earlier.clone());
        }
        let (tx, rx) = tokio::sync::watch::channel(None);
        handovers.0.insert(*key, rx);
        handovers.1.push_back(*key);
        while handovers.1.len() > HANDOVERS_KEPT {
            if let Some(old) = handovers.1.pop_front() {
                handovers.0.remove(&old);
            }
        }
        Err(tx)
    }

    /// Forgets the hand-over `key`: it was declined before anything ran, and a later one
    /// to the byte is a new try, not the same one again.
    fn forget_hand_over(&self, key: &HandOver) {
        let mut handovers = self
            .inner
            .handovers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        handovers.0.remove(key);
        handovers.1.retain(|k| k != key);
    }

    /// True the first time it is asked (`drop-chunk-connection`, tests only).
    fn drop_once(&self) -> bool {
        !self
            .inner
            .chunk_dropped
            .swap(true, std::sync::atomic::Ordering::SeqCst)
    }

    fn modules(&self) -> std::sync::MutexGuard<'_, Modules> {
        self.inner
            .modules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One task record.
    pub fn get(&self, id: &str) -> Option<TaskRecord> {
        self.records().0.get(id).cloned()
    }

    /// Task `id`'s record once it is final (succeeded or failed, its payment settled), or
    /// as it is when `within` has passed; `None` when this node holds no such record.
    pub async fn wait_final(&self, id: &str, within: Duration) -> Option<TaskRecord> {
        let until = tokio::time::Instant::now() + within;
        loop {
            // Listening before looking, so that an end between the two is not missed.
            let ended = self.inner.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let record = self.get(id)?;
            if record.state.is_final() {
                return Some(record);
            }
            if tokio::time::timeout_at(until, ended).await.is_err() {
                return self.get(id);
            }
        }
    }

    /// The most recent task records, newest first.
    pub fn list(&self, limit: usize) -> Vec<TaskRecord> {
        let records = self.records();
        records
            .1
            .iter()
            .rev()
            .take(limit)
            .filter_map(|id| records.0.get(id).cloned())
            .collect()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        self.inner
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn insert(&self, record: TaskRecord) {
        let mut records = self.records();
        records.1.push_back(record.id.clone());
        records.2 += weight(&record);
        records.0.insert(record.id.clone(), record);
        self.evict(&mut records);
    }

    /// Drops the oldest records while more than [`RECORDS_KEPT`] or [`RECORD_BYTES_KEPT`]
    /// are kept (the newest always stays), counting them.
    fn evict(&self, records: &mut Records) {
        let mut evicted = 0;
        while records.1.len() > RECORDS_KEPT
            || (records.2 > RECORD_BYTES_KEPT && records.1.len() > 1)
        {
            let Some(old) = records.1.pop_front() else {
                break;
            };
            if let Some(gone) = records.0.remove(&old) {
                records.2 = records.2.saturating_sub(weight(&gone));
            }
            evicted += 1;
        }
        self.inner.metrics.evicted("task_records", evicted);
    }

    /// Follows what the payment protocol reports: a payment that failed to be delivered
    /// and that a later delivery carried to its executor makes its record say `paid`.
    fn payment_events(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        use tokio::sync::broadcast::error::RecvError;
        use zerostate_payment_protocol::PaymentEvent;
        let mut events = self.inner.payments.events();
        let tasks = self.clone();
        async move {
            loop {
                match events.recv().await {
                    Ok(PaymentEvent::DeliveredLate { receipt }) => tasks.paid_late(receipt),
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => tracing::warn!(
                        events = n,
                        "payment events lost while the market was busy: those payments' \
                         records keep saying failed"
                    ),
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }

    /// The payment for `receipt`, reported failed, was delivered after all.
    fn paid_late(&self, receipt: [u8; 32]) {
        let hexed = hex::encode(receipt);
        let mut marked = false;
        for record in self.records().0.values_mut() {
            if let Some(p) = &mut record.payment
                && p.status == "failed"
                && p.receipt.as_deref() == Some(hexed.as_str())
            {
                mark_paid_late(p);
                marked = true;
            }
        }
        if !marked {
            // Its record is not written yet: it is read when it is.
            let mut late = self.late_receipts();
            if late.0.insert(receipt) {
                late.1.push_back(receipt);
            }
            while late.1.len() > REFUSED_KEPT {
                if let Some(old) = late.1.pop_front() {
                    late.0.remove(&old);
                }
            }
        }
    }

    /// `paid`, the outcome of paying for `receipt`, as its record should say it: a
    /// failed payment delivered late since is paid.
    fn payment_outcome(
        &self,
        mut paid: zerostate_payment_protocol::PaymentRecord,
        receipt: [u8; 32],
    ) -> zerostate_payment_protocol::PaymentRecord {
        if paid.status == "failed" && self.late_receipts().0.remove(&receipt) {
            mark_paid_late(&mut paid);
        }
        paid
    }

    fn late_receipts(&self) -> std::sync::MutexGuard<'_, LateReceipts> {
        self.inner
            .paid_late
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut TaskRecord)) {
        let mut records = self.records();
        let Some(r) = records.0.get_mut(id) else {
            return;
        };
        let before = weight(r);
        change(r);
        let after = weight(r);
        records.2 = records.2.saturating_sub(before) + after;
        if after > before {
            self.evict(&mut records);
        }
    }

    fn offers(&self) -> std::sync::MutexGuard<'_, HashMap<String, requester::OfferSink>> {
        self.inner
            .offers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses `executor`'s offers from now on, for `why`.
    fn refuse(&self, executor: PeerId, why: &str) {
        let mut refused = self
            .inner
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if refused.len() >= REFUSED_KEPT
            && let Some(any) = refused.keys().next().copied()
        {
            refused.remove(&any);
        }
        tracing::warn!(peer.id = %executor, "refusing this executor from now on: {why}");
        refused.insert(executor, why.to_owned());
    }

    fn vouched_set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<PeerId>> {
        self.inner
            .vouched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a receipt of `executor` matched a spot check this session.
    fn vouched(&self, executor: PeerId) -> bool {
        self.vouched_set().contains(&executor)
    }

    /// Remembers that a receipt of `executor` matched a spot check.
    fn vouch(&self, executor: PeerId) {
        let mut vouched = self.vouched_set();
        if vouched.len() < REFUSED_KEPT {
            vouched.insert(executor);
        }
    }

    /// Why `executor` is refused, if it is.
    fn refused(&self, executor: PeerId) -> Option<String> {
        self.inner
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&executor)
            .cloned()
    }

    /// Whether `peer` is a current member of `guild` as this node knows it (this node in
    /// it as member or coordinator).
    async fn is_member(&self, guild: &str, peer: PeerId) -> bool {
        let peer = peer.to_string();
        self.inner.transport.guild(guild).await.is_ok_and(|g| {
            matches!(g.status.as_str(), "member" | "coordinator")
                && g.members.iter().any(|m| m.peer_id == peer)
        })
    }

    /// Attempts of this node's own tasks under way.
    fn own_work(&self) -> u32 {
        self.inner.own_work.load(Ordering::Acquire)
    }

    /// Counts an attempt of this node's own as under way until the guard is dropped.
    fn working(&self) -> Working {
        self.inner.own_work.fetch_add(1, Ordering::AcqRel);
        Working(self.inner.own_work.clone())
    }

    fn running(&self) -> u32 {
        self.inner.running.load(Ordering::Acquire)
    }

    /// Takes one of the `max_running` slots, or says how many run already: the check and
    /// the increment are one step, so concurrent tasks cannot overshoot.
    fn reserve(&self) -> Result<Slot, u32> {
        let max = self.inner.settings.max_running;
        self.inner
            .running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| Slot(self.clone()))
    }

    /// Remembers that `requester` took this node's offer for `task`.
    fn offer_taken(&self, task: &str, requester: PeerId) {
        let mut offered = self
            .inner
            .offered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        offered.retain(|_, (_, at)| now.duration_since(*at) < OFFER_LIFETIME);
        if offered.len() < OFFERS_KEPT {
            offered.insert(task.to_owned(), (requester, now));
        }
    }

    /// Whether this node made an offer for `task` that `requester` took (used up by it).
    fn take_offered(&self, task: &str, requester: PeerId) -> bool {
        let mut offered = self
            .inner
            .offered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match offered.get(task) {
            Some((who, at)) if *who == requester && at.elapsed() < OFFER_LIFETIME => {
                offered.remove(task);
                true
            }
            _ => false,
        }
    }

    /// A standing offer for `requester`'s next task, when this node gives them (see
    /// [`standing`]).
    fn stand_for(&self, requester: PeerId) -> Option<wire::StandingOffer> {
        let settings = &self.inner.settings;
        if settings.standing_offer_ms == 0 || !settings.execute || self.stopping() {
            return None;
        }
        let valid = Duration::from_millis(settings.standing_offer_ms);
        lock(&self.inner.given).give(requester, settings.price, valid)
    }

    /// Whether `requester` hands this node a task on a standing offer that still stands
    /// (used up by it).
    fn take_standing(&self, requester: PeerId) -> bool {
        lock(&self.inner.given).take(requester)
    }

    /// The standing offers this node holds, as a requester.
    fn held(&self) -> std::sync::MutexGuard<'_, standing::Held> {
        lock(&self.inner.held)
    }

    /// The longest wall time a task of this node may have: the network's request timeout
    /// less a second, so that the answer can arrive.
    fn wall_time_cap(&self) -> Duration {
        self.inner
            .transport
            .request_timeout()
            .saturating_sub(Duration::from_secs(1))
    }
}

/// An attempt of this node's own under way (see [`Tasks::working`]).
struct Working(Arc<AtomicU32>);

impl Drop for Working {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Offer rounds of this node's tasks that nobody offered on yet, oldest first, each waiting
/// for one of this node's own tasks to end: that end freed the slot the task held on an
/// executor (and paid what this node owed it), room for one more task, so it wakes one
/// round, the one that waited longest.
#[derive(Default)]
struct Freed(Mutex<std::collections::VecDeque<tokio::sync::oneshot::Sender<()>>>);

impl Freed {
    /// A place in the queue; dropping the receiver gives it up.
    fn wait(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut queue = lock(&self.0);
        queue.retain(|waiting| !waiting.is_closed());
        queue.push_back(tx);
        rx
    }

    /// Wakes the round that waited longest and still waits, if any.
    fn wake_one(&self) {
        let mut queue = lock(&self.0);
        while let Some(waiting) = queue.pop_front() {
            if waiting.send(()).is_ok() {
                return;
            }
        }
    }
}

/// One of the `max_running` slots, given back when dropped.
struct Slot(Tasks);

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0.inner.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.inner.idle.notify_waiters();
        }
    }
}

/// A payment reported failed that a later delivery carried: paid, and the reason says how.
fn mark_paid_late(p: &mut zerostate_payment_protocol::PaymentRecord) {
    p.status = "paid".into();
    p.reason = Some(format!(
        "delivered with a later payment; the first delivery failed: {}",
        p.reason.as_deref().unwrap_or("no reason given")
    ));
}

/// The value behind `mutex`, even when a thread panicked holding it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Unix milliseconds now.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Tasks {
    /// Answers a request of the market from another node: its answer, or `None` when the
    /// connection is to be dropped unanswered (under test).
    pub async fn handle(&self, call: wire::Call, request: Incoming) -> Response {
        match call {
            wire::Call::Offer => requester::offer(self, request).await,
            wire::Call::Run => executor::run(self, request).await,
            wire::Call::Evidence => evidence::serve(self, request).await,
            wire::Call::Chunk => transfer::serve(self, request).await,
        }
    }
}
