//! The requester's side: announcing a task to a guild, collecting offers, handing it to the
//! best one, and checking the receipt before accepting the output.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::sync::mpsc;
use tracing::{Instrument, Span};
use zerostate_execution::{
    Limits, Manifest, Receipt, builtin, files_problem, sha256, strings_problem,
};
use zerostate_p2p::PeerId;
use zerostate_telemetry::SpanExt;
use zerostate_telemetry::names::span as names;

use super::transport::{Incoming, Response};
use super::wire::{self, ModuleSource, TaskOffer, TaskRequest, TaskResult, TaskRun};
use super::{Attempt, TaskRecord, TaskState, Tasks, unix_ms};

/// A task to submit.
#[derive(Clone, Debug)]
pub struct Submission {
    /// The guild to announce it to.
    pub guild: String,
    /// Its module.
    pub module: ModuleSource,
    /// Its input.
    pub input: Vec<u8>,
    /// Its limits (the wall time is capped so that the network request outlives it).
    pub limits: Limits,
    /// The program's arguments (after its name).
    pub args: Vec<String>,
    /// The function to call, for a module that is not a built-in; default `_start`.
    pub entry: Option<String>,
    /// The program's environment, each `KEY=VALUE`.
    pub env: Vec<String>,
    /// Input files by name, readable under `/input`.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Whether the task has a writable `/output` whose files come back in the record.
    pub output_files: bool,
    /// The most this node pays per million fuel units.
    pub max_price: u64,
}

mod bills;

use bills::{LIE, check_bill, spot_check};
pub(crate) use bills::{bill, differences};

/// How long a task waits before it is announced again after a hand-over was declined,
/// times the declines so far (at most a second): the executor is busy for a while.
const DECLINE_PAUSE: Duration = Duration::from_millis(100);

/// Offers a task may collect, at most.
const MAX_OFFERS: usize = 64;

impl Tasks {
    /// Accepts a task: records it, and announces and drives it in the background, in the
    /// trace of the current span. Returns its record as it is now (queued), or why the
    /// submission is refused.
    pub fn submit(&self, s: Submission) -> Result<TaskRecord, String> {
        if self.stopping() {
            return Err("this node is stopping: it takes no new tasks".into());
        }
        if let Some(why) = strings_problem("arguments", &s.args)
            .or_else(|| strings_problem("environment entries", &s.env))
            .or_else(|| files_problem(&s.files))
        {
            return Err(why);
        }
        if s.entry.is_some() && matches!(s.module, ModuleSource::Builtin(_)) {
            return Err("a built-in task has its own entry point: give no entry".into());
        }
        let mut entry = s.entry.clone().unwrap_or_else(|| "_start".to_owned());
        if entry.is_empty() {
            return Err("the entry point is empty".into());
        }
        let module_bytes = match &s.module {
            ModuleSource::Builtin(name) => {
                let m = builtin::manifest(name, "", Vec::new()).ok_or_else(|| {
                    format!("no built-in task {name:?} (see `zerostate task builtins`)")
                })?;
                if let Some(why) = builtin::input_problem(name, &s.input) {
                    return Err(why);
                }
                entry = m.entry;
                m.module
            }
            ModuleSource::Base64(b) => {
                let module = B64
                    .decode(b)
                    .map_err(|e| format!("the module is not base64: {e}"))?;
                self.check_module(&module)?;
                module
            }
            ModuleSource::Sha256(hash) => {
                self.modules()
                    .get(hash)
                    .map(|m| m.to_vec())
                    .ok_or_else(|| {
                        format!("no module {hash} was uploaded to this node (POST /v1/modules)")
                    })?
            }
            ModuleSource::Chunked(_) => {
                return Err("a module is submitted by its bytes or its hash, not by chunks".into());
            }
        };
        let cap = self.wall_time_cap();
        let mut limits = s.limits;
        let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        if limits.wall_time_ms > cap_ms {
            limits.wall_time_ms = cap_ms;
        }
        let id = new_task_id()?;
        let span = tracing::info_span!(
            names::TASK_SUBMIT,
            task.id = id.as_str(),
            guild.id = s.guild.as_str(),
        );
        let trace_id = span
            .context()
            .map(|c| c.trace_id.to_string())
            .unwrap_or_default();
        let record = TaskRecord {
            id: id.clone(),
            guild: s.guild.clone(),
            state: TaskState::Queued,
            trace_id,
            executor: None,
            executor_name: None,
            attempts: Vec::new(),
            receipt: None,
            output: None,
            output_files: BTreeMap::new(),
            exit_code: None,
            stderr: None,
            error: None,
            payment: None,
            submitted_at: unix_ms(),
            duration_ms: None,
        };
        self.insert(record.clone());
        let (tx, rx) = mpsc::channel(MAX_OFFERS);
        self.offers().insert(
            id.clone(),
            OfferSink {
                guild: s.guild.clone(),
                max_price: s.max_price,
                tx,
            },
        );
        let tasks = self.clone();
        // A module named by its hash travels as bytes to an executor that lacks it; one
        // too large for the task's message travels by chunks, served from this node's
        // store.
        let chunked = (!matches!(s.module, ModuleSource::Builtin(_))
            && module_bytes.len() > wire::INLINE_MODULE_BYTES)
            .then(|| {
                self.keep(module_bytes.clone());
                wire::Chunked::of(&module_bytes)
            });
        let module = match s.module {
            ModuleSource::Sha256(_) => ModuleSource::Base64(B64.encode(&module_bytes)),
            other => other,
        };
        // Likewise a large input or input file; what stays inline must fit the message.
        let by_chunks = |bytes: &[u8]| {
            (bytes.len() > wire::INLINE_BLOB_BYTES).then(|| {
                self.keep(bytes.to_vec());
                wire::Chunked::of(bytes)
            })
        };
        let input_chunked = by_chunks(&s.input);
        let file_chunks: BTreeMap<String, wire::Chunked> = s
            .files
            .iter()
            .filter_map(|(name, bytes)| by_chunks(bytes).map(|list| (name.clone(), list)))
            .collect();
        let inline_input = if input_chunked.is_none() {
            s.input.len()
        } else {
            0
        };
        let inline = inline_input
            + s.files
                .iter()
                .filter(|(name, _)| !file_chunks.contains_key(*name))
                .map(|(_, bytes)| bytes.len())
                .sum::<usize>();
        if inline > wire::INLINE_INPUT_BYTES {
            return Err(format!(
                "{inline} bytes of small input files ({} KiB or less each) together; a task \
                 carries at most {} KiB of them",
                wire::INLINE_BLOB_BYTES >> 10,
                wire::INLINE_INPUT_BYTES >> 10
            ));
        }
        let job = Job {
            id,
            guild: s.guild,
            module,
            module_sha256: hex::encode(sha256(&module_bytes)),
            module_bytes,
            chunked,
            input_chunked,
            file_chunks,
            entry,
            input: s.input,
            limits,
            args: s.args,
            env: s.env,
            files: s.files,
            output_files: s.output_files,
            max_price: s.max_price,
        };
        let drive_span = span.clone();
        tasks.inner.metrics.task_submitted();
        span.in_scope(|| tracing::info!(task.id = job.id.as_str(), "task submitted"));
        self.spawn(
            async move {
                let started = Instant::now();
                let end = drive(&tasks, &job, rx).await;
                tasks.offers().remove(&job.id);
                if let Err(why) = &end {
                    Span::current().record_error(&zerostate_p2p::Reason(why.clone()));
                }
                // The final state and the duration change together, so that a reader who
                // sees the one sees the other.
                let state = match &end {
                    Ok(TaskState::Succeeded) => "succeeded",
                    _ => "failed",
                };
                tasks.inner.metrics.task_ended(state);
                tracing::info!(task.id = job.id.as_str(), state, "task ended");
                tasks.update(&job.id, |r| {
                    r.duration_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                    match end {
                        Ok(state) => r.state = state,
                        Err(why) => {
                            r.state = TaskState::Failed;
                            r.error = Some(why);
                        }
                    }
                });
                tasks.inner.ended.notify_waiters();
                tasks.inner.freed.wake_one();
            }
            .instrument(drive_span),
        );
        Ok(record)
    }
}

/// Where an executor's offer for a task goes, and what it must meet to be taken.
pub(super) struct OfferSink {
    /// The guild the task was announced to: only its members may offer.
    guild: String,
    /// The most the requester pays per million fuel units.
    max_price: u64,
    tx: mpsc::Sender<(PeerId, TaskOffer)>,
}

struct Job {
    id: String,
    guild: String,
    module: ModuleSource,
    module_sha256: String,
    module_bytes: Vec<u8>,
    /// The module's chunk list, when it travels by chunks.
    chunked: Option<wire::Chunked>,
    /// The input's chunk list, when it travels by chunks.
    input_chunked: Option<wire::Chunked>,
    /// The input files that travel by chunks.
    file_chunks: BTreeMap<String, wire::Chunked>,
    /// The function the executor must call (a built-in's name, else `_start`).
    entry: String,
    input: Vec<u8>,
    limits: Limits,
    args: Vec<String>,
    env: Vec<String>,
    files: BTreeMap<String, Vec<u8>>,
    output_files: bool,
    max_price: u64,
}

impl Job {
    /// The job as this node's own engine would run it: what a spot check reruns.
    fn manifest(&self) -> Manifest {
        let mut m = Manifest::new(self.id.clone(), self.module_bytes.clone());
        m.entry = self.entry.clone();
        m.input = self.input.clone();
        m.limits = self.limits;
        m.args = self.args.clone();
        m.env = self.env.clone();
        m.files = self.files.clone();
        m.output_files = self.output_files;
        m
    }
}

fn new_task_id() -> Result<String, String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| format!("the system's random source: {e}"))?;
    Ok(hex::encode(bytes))
}

/// Announces, collects offers, and tries them in order; the final state, or why no
/// executor delivered.
async fn drive(
    tasks: &Tasks,
    job: &Job,
    mut offers: mpsc::Receiver<(PeerId, TaskOffer)>,
) -> Result<TaskState, String> {
    let request = TaskRequest {
        task_id: job.id.clone(),
        requester: tasks.inner.transport.local_peer().to_string(),
        module_sha256: job.module_sha256.clone(),
        fuel: job.limits.fuel,
        max_price: job.max_price,
        addresses: tasks.inner.transport.addresses().await,
    };
    let mut reasons: Vec<String> = Vec::new();
    let mut tried: std::collections::HashSet<PeerId> = std::collections::HashSet::new();
    let mut attempts_left = tasks.inner.settings.max_attempts as usize;
    // Each round announces the task and tries the offers it gets; a round whose offers all
    // failed announces again (those executors excluded) while attempts are left.
    let mut busy = Busy::new(tasks.inner.settings.busy_wait_ms);
    let mut declines = 0;
    // The first try goes to a standing offer, when this node holds one (see `standing`).
    let mut standing = standing_offer(tasks, job, &tried).await;
    loop {
        let on_standing = standing.is_some();
        let collected = if let Some(offer) = standing.take() {
            vec![offer]
        } else {
            // Other tasks of this node running or being paid: executors may be busy with
            // them, or waiting for their payment before they offer again.
            let others_under_way = tasks.own_work() > 0;
            let mut round = announce_and_collect(tasks, job, &request, &mut offers, &tried).await?;
            let collected = std::mem::take(&mut round.offers);
            if collected.is_empty()
                && round.others > 0
                && (others_under_way || tasks.own_work() > 0)
                && busy.still_waiting()
            {
                // Nobody free this round: a passing state, asked again; first on a standing
                // offer one of this node's tasks may have brought meanwhile.
                standing = standing_offer(tasks, job, &tried).await;
                continue;
            }
            if collected.is_empty() {
                return Err(if reasons.is_empty() {
                    let why = round.why_nobody(job.max_price);
                    format!(
                        "no member of guild {} offered to run it within {} ms{}{}{why}",
                        job.guild,
                        tasks.inner.settings.offer_window_ms,
                        busy.waited(),
                        if why.is_empty() { "" } else { ": " },
                    )
                } else {
                    format!("no executor delivered: {}", reasons.join("; "))
                });
            }
            collected
        };
        let mut declined_now = false;
        for (executor, offer) in collected.into_iter().take(attempts_left) {
            attempts_left -= 1;
            tried.insert(executor);
            let span = tracing::info_span!(
                names::TASK_ATTEMPT,
                task.id = job.id.as_str(),
                peer.id = %executor,
                price = offer.price,
                offer.standing = on_standing,
            );
            tasks.update(&job.id, |r| {
                r.state = TaskState::Running;
                r.executor = Some(executor.to_string());
                r.executor_name = wire::display_name(offer.name.as_deref());
            });
            // Only the hash, when the executor said it holds the module.
            let send_module = !offer.has_module || matches!(job.module, ModuleSource::Builtin(_));
            let _working = tasks.working();
            let outcome = async {
                let channel = lock_money(tasks, job, executor, &offer).await?;
                attempt(tasks, job, executor, send_module, channel).await
            }
            .instrument(span.clone())
            .await;
            match outcome {
                Ok(delivered) => {
                    let receipt = &delivered.receipt;
                    let failed = receipt.status != "ok";
                    let checked = async {
                        let amount = check_bill(tasks, job, executor, &offer, &delivered)
                            .await
                            .map_err(|(why, lie)| {
                                (format!("the bill does not hold: {why}"), lie)
                            })?;
                        spot_check(tasks, job, receipt)
                            .await
                            .map_err(|why| (why, true))?;
                        Ok::<_, (String, bool)>(amount)
                    }
                    .instrument(span.clone())
                    .await;
                    let amount = match checked {
                        Ok(amount) => amount,
                        Err((why, lie)) => {
                            if lie {
                                // What the executor signed is false: the guild should know.
                                let module = match &job.module {
                                    ModuleSource::Builtin(name) => {
                                        ModuleSource::Builtin(name.clone())
                                    }
                                    _ => ModuleSource::Base64(B64.encode(&job.module_bytes)),
                                };
                                span.in_scope(|| {
                                    tasks.report(
                                        &job.guild,
                                        receipt,
                                        module,
                                        (&job.input, &job.files),
                                    );
                                });
                            }
                            // Not paid, and not asked again while this node runs.
                            tasks.refuse(executor, &why);
                            let attempt = (executor, offer.price, send_module, on_standing);
                            reasons.push(attempt_failed(tasks, job, attempt, &span, why));
                            continue;
                        }
                    };
                    if let Some(next) = delivered.standing {
                        // Held: the module of the task it just ran (a built-in's is no
                        // module it needs sent).
                        let module = (!matches!(job.module, ModuleSource::Builtin(_)))
                            .then(|| job.module_sha256.clone());
                        let name = wire::display_name(offer.name.as_deref());
                        tasks.held().keep(&job.guild, executor, next, name, module);
                    }
                    let receipt_hash = sha256(&receipt.signing_bytes());
                    let paid = tasks
                        .inner
                        .payments
                        .pay(executor, amount, receipt_hash)
                        .await;
                    let paid = tasks.payment_outcome(paid, receipt_hash);
                    tasks.update(&job.id, |r| {
                        r.attempts.push(Attempt {
                            executor: executor.to_string(),
                            executor_name: r.executor_name.clone(),
                            price: offer.price,
                            outcome: "delivered".into(),
                            module_sent: send_module,
                            standing_offer: on_standing,
                        });
                        r.error = delivered.receipt.error.clone();
                        r.output = Some(B64.encode(&delivered.output));
                        r.output_files = wire::encode_files(&delivered.files);
                        r.exit_code = Some(delivered.exit_code);
                        r.stderr =
                            (!delivered.stderr.is_empty()).then(|| B64.encode(&delivered.stderr));
                        r.receipt = Some(delivered.receipt);
                        r.payment = Some(paid);
                    });
                    return Ok(if failed {
                        TaskState::Failed
                    } else {
                        TaskState::Succeeded
                    });
                }
                Err(why) => {
                    if why.starts_with(LIE) {
                        tasks.refuse(executor, &why);
                    }
                    if on_standing && why.contains(wire::DECLINED) {
                        // Nothing ran and no round was made: no attempt, no pause; the
                        // task is announced now.
                        span.record_error(&zerostate_p2p::Reason(why));
                        attempts_left += 1;
                        tried.remove(&executor);
                        tasks.update(&job.id, |r| {
                            r.executor = None;
                            r.executor_name = None;
                        });
                        continue;
                    }
                    if why.contains(wire::DECLINED) && busy.still_waiting() {
                        // Nothing ran: the attempt is given back, and the executor may
                        // offer again in the next round.
                        declines += 1;
                        declined_now = true;
                        attempts_left += 1;
                        tried.remove(&executor);
                    }
                    let attempt = (executor, offer.price, send_module, on_standing);
                    reasons.push(attempt_failed(tasks, job, attempt, &span, why));
                }
            }
        }
        if attempts_left == 0 {
            return Err(format!("no executor delivered: {}", reasons.join("; ")));
        }
        if declined_now {
            tokio::time::sleep((DECLINE_PAUSE * declines).min(Duration::from_secs(1))).await;
        }
    }
}

/// How long a task has waited for its guild's busy executors, against how long it may.
struct Busy {
    since: Option<tokio::time::Instant>,
    patience: Duration,
}

impl Busy {
    fn new(patience_ms: u64) -> Self {
        Self {
            since: None,
            patience: Duration::from_millis(patience_ms),
        }
    }

    /// Whether the task may wait longer; the first call starts the clock.
    fn still_waiting(&mut self) -> bool {
        let since = *self.since.get_or_insert_with(tokio::time::Instant::now);
        since.elapsed() < self.patience
    }

    /// How long the task waited, for its error (empty when it did not).
    fn waited(&self) -> String {
        self.since.map_or_else(String::new, |since| {
            format!(
                " (asked again for {:.1} s while its executors were busy)",
                since.elapsed().as_secs_f64()
            )
        })
    }
}

/// The standing offer this node holds for `job`, if any: from an executor that is a
/// member of the task's guild and not refused, at most the task's price (see `standing`).
async fn standing_offer(
    tasks: &Tasks,
    job: &Job,
    tried: &std::collections::HashSet<PeerId>,
) -> Option<(PeerId, TaskOffer)> {
    let taken = tasks.held().take(
        &job.guild,
        &job.id,
        job.max_price,
        &job.module_sha256,
        |executor| tasks.refused(executor).is_none() && !tried.contains(&executor),
    )?;
    tasks.is_member(&job.guild, taken.0).await.then_some(taken)
}

/// Ends an attempt (its executor, price, whether the module was sent and whether on a
/// standing offer) that delivered nothing to pay for: its span an error with `why`, the
/// reason in the task's record; the reason for the task's error.
fn attempt_failed(
    tasks: &Tasks,
    job: &Job,
    (executor, price, module_sent, standing_offer): (PeerId, u64, bool, bool),
    span: &Span,
    why: String,
) -> String {
    span.record_error(&zerostate_p2p::Reason(why.clone()));
    let reason = format!("{executor}: {why}");
    tasks.update(&job.id, |r| {
        r.attempts.push(Attempt {
            executor: executor.to_string(),
            executor_name: r.executor_name.take(),
            price,
            outcome: why,
            module_sent,
            standing_offer,
        });
        r.executor = None;
    });
    reason
}

/// What one announcement of a task brought.
struct Round {
    /// The offers, cheapest first.
    offers: Vec<(PeerId, TaskOffer)>,
    /// The members that said why they make none.
    declined: Vec<TaskOffer>,
    /// The members that could answer (`usize::MAX` when the guild is not known here).
    others: usize,
}

impl Round {
    /// Why nobody offered, as far as the members said.
    fn why_nobody(&self, max_price: u64) -> String {
        if self.others == 0 {
            return "the guild has no other member up to run it".to_owned();
        }
        let of = |d: wire::Decline| self.declined.iter().filter(move |o| o.declined == Some(d));
        let mut why = Vec::new();
        if let Some(lowest) = of(wire::Decline::Price).map(|o| o.price).min() {
            why.push(format!(
                "{} asked more than the task's max_price {max_price} (the lowest {lowest} \
                 per million fuel units)",
                members(of(wire::Decline::Price).count())
            ));
        }
        let busy = of(wire::Decline::Busy).count();
        if busy > 0 {
            why.push(format!("{} busy", members(busy)));
        }
        let unpaid = of(wire::Decline::Unpaid).count();
        if unpaid > 0 {
            why.push(format!(
                "{} waiting to be paid for tasks they delivered",
                members(unpaid)
            ));
        }
        let silent = self.others.saturating_sub(self.declined.len());
        if silent > 0 && self.others != usize::MAX {
            why.push(format!("{} did not answer", members(silent)));
        }
        why.join("; ")
    }
}

fn members(n: usize) -> String {
    match n {
        1 => "1 member".to_owned(),
        n => format!("{n} members"),
    }
}

/// Announces the task to the guild and collects offers (from executors not yet tried) and
/// declines: until every other member answered, `offer_grace_ms` after the first offer, or
/// the window ends. Offers ordered cheapest first, then least loaded.
async fn announce_and_collect(
    tasks: &Tasks,
    job: &Job,
    request: &TaskRequest,
    offers: &mut mpsc::Receiver<(PeerId, TaskOffer)>,
    tried: &std::collections::HashSet<PeerId>,
) -> Result<Round, String> {
    tasks.update(&job.id, |r| r.state = TaskState::Offered);
    tasks.held().round_made(&job.guild);
    tasks
        .inner
        .transport
        .announce(
            &job.guild,
            wire::TASK_REQUEST,
            serde_json::to_vec(request).unwrap_or_default(),
        )
        .await
        .map_err(|e| format!("announcing the task to guild {}: {e}", job.guild))?;
    let window = Duration::from_millis(tasks.inner.settings.offer_window_ms);
    let deadline = tokio::time::Instant::now() + window;
    // Every other member can offer at most once; when all have, there is nothing to wait for.
    let others = tasks
        .inner
        .transport
        .guild(&job.guild)
        .await
        .map_or(usize::MAX, |g| {
            g.members
                .len()
                .saturating_sub(1)
                .saturating_sub(tried.len())
        });
    let grace = Duration::from_millis(tasks.inner.settings.offer_grace_ms);
    let mut until = deadline;
    let mut collected: Vec<(PeerId, TaskOffer)> = Vec::new();
    let mut declined: Vec<TaskOffer> = Vec::new();
    let mut answered: std::collections::HashSet<PeerId> = std::collections::HashSet::new();
    // Busy members, and those this node owes, stay silent. Once a round has gone without
    // an answer for twice as long as answers lately took, the end of one of this node's own
    // tasks may end it (see `Freed`): that end freed the slot the task held on an executor
    // and paid what this node owed it, so the next round may find an offer, or the task a
    // standing offer, at once rather than when this round's window closes.
    let started = tokio::time::Instant::now();
    let silent_at = (tasks.own_work() > 0)
        .then(|| tasks.held().silent_after(&job.guild))
        .flatten()
        .map(|after| started + after);
    let mut freed: Option<tokio::sync::oneshot::Receiver<()>> = None;
    while answered.len() < others {
        let next = tokio::select! {
            next = tokio::time::timeout_at(until, offers.recv()) => Some(next),
            woken = async {
                let Some(at) = silent_at.filter(|_| answered.is_empty()) else {
                    return std::future::pending().await;
                };
                tokio::time::sleep_until(at).await;
                freed.get_or_insert_with(|| tasks.inner.freed.wait()).await.is_ok()
            } => {
                if woken {
                    break;
                }
                None
            }
        };
        let Some(next) = next else {
            // The queue went away without waking it: a place is taken again.
            freed = None;
            continue;
        };
        let Ok(Some(offer)) = next else {
            break;
        };
        if answered.is_empty() {
            tasks.held().first_answer(&job.guild, started.elapsed());
            // An answer came: the round is not silent, and another round may have the
            // next freed slot.
            freed = None;
        }
        // Each executor once: not one already tried, not twice in a round.
        if tried.contains(&offer.0) || !answered.insert(offer.0) {
            continue;
        }
        if offer.1.declined.is_some() {
            declined.push(offer.1);
            continue;
        }
        if collected.is_empty() {
            // A cheaper offer may still come, but not for long.
            until = until.min(tokio::time::Instant::now() + grace);
        }
        collected.push(offer);
    }
    // Members busy now may be free soon: when nobody offered, the next round is announced no
    // sooner than a silent round would end. (A price above the task's maximum does not pass.)
    if collected.is_empty()
        && declined.iter().any(|o| {
            matches!(
                o.declined,
                Some(wire::Decline::Busy | wire::Decline::Unpaid)
            )
        })
    {
        tokio::time::sleep_until(deadline).await;
    }
    // Cheapest first, then the least loaded.
    collected.sort_by_key(|(_, o)| (o.price, o.running));
    Ok(Round {
        offers: collected,
        declined,
        others,
    })
}

/// Locks money for `executor` before it is handed the task: a channel to it holding the
/// task's most expensive bill (the fuel limit at the offered price), which must fit in one
/// channel's deposit. The channel's id, or `None` when nothing is paid (no ledger).
async fn lock_money(
    tasks: &Tasks,
    job: &Job,
    executor: PeerId,
    offer: &TaskOffer,
) -> Result<Option<String>, String> {
    let most = bill(job.limits.fuel, offer.price);
    let deposit = tasks.inner.payments.deposit();
    if most > deposit {
        return Err(format!(
            "the task's most expensive bill at this price ({most}: the fuel limit times {}) \
             is more than a channel holds ({deposit})",
            offer.price
        ));
    }
    tasks
        .inner
        .payments
        .lock_for(executor, most)
        .await
        .map_err(|why| format!("locking money for the executor: {why}"))
}

/// What an executor delivered: its receipt (its signature and hashes checked), the output,
/// the output files and the program's exit code.
struct Delivered {
    receipt: Receipt,
    /// The executor's standing offer for the next task, if it made one.
    standing: Option<wire::StandingOffer>,
    output: Vec<u8>,
    files: BTreeMap<String, Vec<u8>>,
    exit_code: i32,
    /// What the program wrote to stderr, as the executor says (not signed).
    stderr: Vec<u8>,
}

/// Hands the task to `executor` (with the module's bytes, or only its hash when
/// `send_module` is false; the channel that holds its bill) and checks what comes back.
async fn attempt(
    tasks: &Tasks,
    job: &Job,
    executor: PeerId,
    send_module: bool,
    channel: Option<String>,
) -> Result<Delivered, String> {
    let run = TaskRun {
        task_id: job.id.clone(),
        module: if let (true, Some(list)) = (send_module, &job.chunked) {
            ModuleSource::Chunked(list.clone())
        } else if send_module {
            job.module.clone()
        } else {
            ModuleSource::Sha256(job.module_sha256.clone())
        },
        input: if job.input_chunked.is_some() {
            String::new()
        } else {
            B64.encode(&job.input)
        },
        input_chunked: job.input_chunked.clone(),
        file_chunks: job.file_chunks.clone(),
        limits: job.limits,
        args: job.args.clone(),
        // A built-in's executor knows its entry; a module's is sent unless it is `_start`.
        entry: (job.entry != "_start" && !matches!(job.module, ModuleSource::Builtin(_)))
            .then(|| job.entry.clone()),
        env: job.env.clone(),
        files: job
            .files
            .iter()
            .filter(|(name, _)| !job.file_chunks.contains_key(*name))
            .map(|(name, bytes)| (name.clone(), B64.encode(bytes)))
            .collect(),
        output_files: job.output_files,
        channel,
    };
    let payload = serde_json::to_vec(&run).map_err(|e| e.to_string())?;
    // The executor has the task's wall time to run it, plus a margin to compile it and to
    // carry the module and the answer; the network's request timeout bounds it too.
    let margin = Duration::from_millis(tasks.inner.settings.timeout_margin_ms);
    let deadline = Duration::from_millis(job.limits.wall_time_ms).saturating_add(margin);
    // A hand-over whose connection dropped is made once more: the executor answers it
    // with the first one's outcome (the task runs once), its module transfer resumed.
    let request = async {
        let transport = &tasks.inner.transport;
        match transport
            .ask(executor, vec![], wire::TASK_RUN, payload.clone())
            .await
        {
            Err(e) if e.contains("onnection was closed") => {
                tracing::info!(peer.id = %executor, "the task's hand-over lost its connection: handing it over again");
                tokio::time::sleep(Duration::from_millis(200)).await;
                transport
                    .ask(executor, vec![], wire::TASK_RUN, payload)
                    .await
            }
            other => other,
        }
    };
    let answer = tokio::time::timeout(deadline, request)
        .await
        .map_err(|_| {
            format!(
                "the executor did not answer within the task's wall-time limit ({} ms) and \
                 the margin ({} ms): timed out",
                job.limits.wall_time_ms,
                margin.as_millis()
            )
        })??;
    if answer.kind != wire::TASK_RESULT {
        return Err(format!(
            "the executor answered {}: {}",
            answer.kind,
            String::from_utf8_lossy(&answer.payload)
        ));
    }
    let result: TaskResult = serde_json::from_slice(&answer.payload)
        .map_err(|e| format!("the executor's answer is not a task result: {e}"))?;
    let output = B64
        .decode(&result.output)
        .map_err(|e| format!("the executor's output is not base64: {e}"))?;
    let files = wire::decode_files(&result.files, "output files")
        .map_err(|e| format!("the executor's answer: {e}"))?;
    let receipt = result.receipt;
    // A failed run's output is empty (the engine keeps none), so it is checked too.
    receipt
        .verify_with(Some(&job.module_bytes), Some(&job.input), Some(&output))
        .map_err(|e| format!("{LIE}: {e}"))?;
    if receipt.executor != executor.to_string() {
        return Err(format!(
            "{LIE}: it is signed by {}, not by the executor the task was sent to",
            receipt.executor
        ));
    }
    if receipt.task_id != job.id {
        return Err(format!("{LIE}: it is for task {}", receipt.task_id));
    }
    let trace = Span::current()
        .context()
        .map(|c| c.trace_id.to_string())
        .unwrap_or_default();
    if !trace.is_empty() && receipt.trace_id != trace {
        return Err(format!(
            "{LIE}: it names trace {}, not this task's",
            receipt.trace_id
        ));
    }
    Ok(Delivered {
        receipt,
        standing: result.standing,
        output,
        files,
        exit_code: result.exit_code,
        // At most what an engine keeps; more is cut, never an error.
        stderr: {
            let mut stderr = B64.decode(&result.stderr).unwrap_or_default();
            stderr.truncate(64 << 10);
            stderr
        },
    })
}

/// An executor's offer for a task this node is collecting offers for: taken only from a
/// current member of the guild the task was announced to, not refused this session, at a
/// price within the task's maximum.
pub(super) async fn offer(tasks: &Tasks, request: Incoming) -> Response {
    Some(match take_offer(tasks, &request).await {
        Ok(()) => (wire::TASK_OFFER_TAKEN, Vec::new()),
        Err(why) => (wire::ERROR, why.into_bytes()),
    })
}

async fn take_offer(tasks: &Tasks, request: &Incoming) -> Result<(), String> {
    let offer: TaskOffer =
        serde_json::from_slice(&request.payload).map_err(|e| format!("not an offer: {e}"))?;
    if let Some(why) = tasks.refused(request.peer) {
        return Err(format!("this node takes no more offers from you: {why}"));
    }
    let (guild, max_price) = tasks
        .offers()
        .get(&offer.task_id)
        .map(|s| (s.guild.clone(), s.max_price))
        .ok_or("no task of this node is collecting offers under that id")?;
    if !tasks.is_member(&guild, request.peer).await {
        return Err(format!(
            "only members of guild {guild} may offer on its tasks"
        ));
    }
    if offer.price > max_price && offer.declined.is_none() {
        let why = format!(
            "offered {} per million fuel units, above the task's maximum of {max_price}",
            offer.price
        );
        tasks.refuse(request.peer, &why);
        return Err(why);
    }
    let sender = tasks
        .offers()
        .get(&offer.task_id)
        .map(|s| s.tx.clone())
        .ok_or("the task stopped collecting offers")?;
    sender
        .try_send((request.peer, offer))
        .map_err(|_| "enough offers already".to_owned())
}
