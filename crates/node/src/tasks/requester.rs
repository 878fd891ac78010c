//! The requester's side: announcing a task to a guild, collecting offers, handing it to the
//! best one, and checking the receipt before accepting the output.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::sync::mpsc;
use tracing::{Instrument, Span};
use zerostate_execution::{Limits, Receipt, builtin, sha256};
use zerostate_p2p::{IncomingRequest, PeerId};
use zerostate_telemetry::names::span as names;
use zerostate_telemetry::{SpanExt, error_chain};

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
    /// The most this node pays per million fuel units.
    pub max_price: u64,
}

/// Offers a task may collect, at most.
const MAX_OFFERS: usize = 64;

impl Tasks {
    /// Accepts a task: records it, and announces and drives it in the background, in the
    /// trace of the current span. Returns its record as it is now (queued), or why the
    /// submission is refused.
    pub fn submit(&self, s: Submission) -> Result<TaskRecord, String> {
        let module_bytes = match &s.module {
            ModuleSource::Builtin(name) => builtin::manifest(name, "", Vec::new())
                .map(|m| m.module)
                .ok_or_else(|| {
                    format!("no built-in task {name:?} (see `zerostate task builtins`)")
                })?,
            ModuleSource::Base64(b) => B64
                .decode(b)
                .map_err(|e| format!("the module is not base64: {e}"))?,
            ModuleSource::Sha256(hash) => {
                self.modules()
                    .get(hash)
                    .map(|m| m.to_vec())
                    .ok_or_else(|| {
                        format!("no module {hash} was uploaded to this node (POST /v1/modules)")
                    })?
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
            attempts: Vec::new(),
            receipt: None,
            output: None,
            error: None,
            payment: None,
            submitted_at: unix_ms(),
            duration_ms: None,
        };
        self.insert(record.clone());
        let (tx, rx) = mpsc::channel(MAX_OFFERS);
        self.offers().insert(id.clone(), tx);
        let tasks = self.clone();
        // A module named by its hash travels as bytes to an executor that lacks it.
        let module = match s.module {
            ModuleSource::Sha256(_) => ModuleSource::Base64(B64.encode(&module_bytes)),
            other => other,
        };
        let job = Job {
            id,
            guild: s.guild,
            module,
            module_sha256: hex::encode(sha256(&module_bytes)),
            module_bytes,
            input: s.input,
            limits,
            max_price: s.max_price,
        };
        let drive_span = span.clone();
        tasks.inner.metrics.task_submitted();
        span.in_scope(|| tracing::info!(task.id = job.id.as_str(), "task submitted"));
        tokio::spawn(
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
            }
            .instrument(drive_span),
        );
        Ok(record)
    }
}

struct Job {
    id: String,
    guild: String,
    module: ModuleSource,
    module_sha256: String,
    module_bytes: Vec<u8>,
    input: Vec<u8>,
    limits: Limits,
    max_price: u64,
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
        requester: tasks.inner.network.peer_id().to_string(),
        module_sha256: job.module_sha256.clone(),
        fuel: job.limits.fuel,
        max_price: job.max_price,
        addresses: tasks
            .inner
            .network
            .dialable_addresses()
            .await
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    let mut reasons: Vec<String> = Vec::new();
    let mut tried: std::collections::HashSet<PeerId> = std::collections::HashSet::new();
    let mut attempts_left = tasks.inner.settings.max_attempts as usize;
    // Each round announces the task and tries the offers it gets; a round whose offers all
    // failed announces again (those executors excluded) while attempts are left.
    loop {
        let collected = announce_and_collect(tasks, job, &request, &mut offers, &tried).await?;
        if collected.is_empty() {
            return Err(if reasons.is_empty() {
                format!(
                    "no member of guild {} offered to run it within {} ms",
                    job.guild, tasks.inner.settings.offer_window_ms
                )
            } else {
                format!("no executor delivered: {}", reasons.join("; "))
            });
        }
        for (executor, offer) in collected.into_iter().take(attempts_left) {
            attempts_left -= 1;
            tried.insert(executor);
            let span = tracing::info_span!(
                names::TASK_ATTEMPT,
                task.id = job.id.as_str(),
                peer.id = %executor,
                price = offer.price,
            );
            tasks.update(&job.id, |r| {
                r.state = TaskState::Running;
                r.executor = Some(executor.to_string());
            });
            // Only the hash, when the executor said it holds the module.
            let send_module = !offer.has_module || matches!(job.module, ModuleSource::Builtin(_));
            let outcome = attempt(tasks, job, executor, send_module)
                .instrument(span.clone())
                .await;
            match outcome {
                Ok((receipt, output)) => {
                    let failed = receipt.status != "ok";
                    // Fuel is the billing unit; the price is per million units, rounded up.
                    let amount = u64::try_from(
                        (u128::from(receipt.fuel_consumed) * u128::from(offer.price))
                            .div_ceil(1_000_000),
                    )
                    .unwrap_or(u64::MAX);
                    let paid = tasks
                        .inner
                        .payments
                        .pay(executor, amount, sha256(&receipt.signing_bytes()))
                        .await;
                    tasks.paid_late();
                    tasks.update(&job.id, |r| {
                        r.attempts.push(Attempt {
                            executor: executor.to_string(),
                            price: offer.price,
                            outcome: "delivered".into(),
                            module_sent: send_module,
                        });
                        r.error = receipt.error.clone();
                        r.output = Some(B64.encode(&output));
                        r.receipt = Some(receipt);
                        r.payment = Some(paid);
                    });
                    return Ok(if failed {
                        TaskState::Failed
                    } else {
                        TaskState::Succeeded
                    });
                }
                Err(why) => {
                    span.record_error(&zerostate_p2p::Reason(why.clone()));
                    tasks.update(&job.id, |r| {
                        r.attempts.push(Attempt {
                            executor: executor.to_string(),
                            price: offer.price,
                            outcome: why.clone(),
                            module_sent: send_module,
                        });
                        r.executor = None;
                    });
                    reasons.push(format!("{executor}: {why}"));
                }
            }
        }
        if attempts_left == 0 {
            return Err(format!("no executor delivered: {}", reasons.join("; ")));
        }
    }
}

/// Announces the task to the guild and collects offers (from executors not yet tried):
/// until every other member offered, `offer_grace_ms` after the first, or the window ends.
/// Ordered cheapest first, then least loaded.
async fn announce_and_collect(
    tasks: &Tasks,
    job: &Job,
    request: &TaskRequest,
    offers: &mut mpsc::Receiver<(PeerId, TaskOffer)>,
    tried: &std::collections::HashSet<PeerId>,
) -> Result<Vec<(PeerId, TaskOffer)>, String> {
    tasks.update(&job.id, |r| r.state = TaskState::Offered);
    tasks
        .inner
        .guilds
        .send(
            &job.guild,
            wire::TASK_REQUEST,
            serde_json::to_vec(request).unwrap_or_default(),
        )
        .await
        .map_err(|e| {
            format!(
                "announcing the task to guild {}: {}",
                job.guild,
                error_chain(&e)
            )
        })?;
    let window = Duration::from_millis(tasks.inner.settings.offer_window_ms);
    let deadline = tokio::time::Instant::now() + window;
    // Every other member can offer at most once; when all have, there is nothing to wait for.
    let others = tasks
        .inner
        .guilds
        .info(&job.guild)
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
    while collected.len() < others
        && let Ok(Some(offer)) = tokio::time::timeout_at(until, offers.recv()).await
    {
        // Each executor once: not one already tried, not twice in a round.
        if tried.contains(&offer.0) || collected.iter().any(|(p, _)| *p == offer.0) {
            continue;
        }
        if collected.is_empty() {
            // A cheaper offer may still come, but not for long.
            until = until.min(tokio::time::Instant::now() + grace);
        }
        collected.push(offer);
    }
    // Cheapest first, then the least loaded.
    collected.sort_by_key(|(_, o)| (o.price, o.running));
    Ok(collected)
}

/// Hands the task to `executor` (with the module's bytes, or only its hash when
/// `send_module` is false) and checks what comes back.
async fn attempt(
    tasks: &Tasks,
    job: &Job,
    executor: PeerId,
    send_module: bool,
) -> Result<(Receipt, Vec<u8>), String> {
    let run = TaskRun {
        task_id: job.id.clone(),
        module: if send_module {
            job.module.clone()
        } else {
            ModuleSource::Sha256(job.module_sha256.clone())
        },
        input: B64.encode(&job.input),
        limits: job.limits,
    };
    let payload = serde_json::to_vec(&run).map_err(|e| e.to_string())?;
    // The executor has the task's wall time to run it, plus a margin to compile it and to
    // carry the module and the answer; the network's request timeout bounds it too.
    let margin = Duration::from_millis(tasks.inner.settings.timeout_margin_ms);
    let deadline = Duration::from_millis(job.limits.wall_time_ms).saturating_add(margin);
    let request = tasks
        .inner
        .network
        .request(executor, vec![], wire::TASK_RUN, payload);
    let answer = tokio::time::timeout(deadline, request)
        .await
        .map_err(|_| {
            format!(
                "the executor did not answer within the task's wall-time limit ({} ms) and \
                 the margin ({} ms): timed out",
                job.limits.wall_time_ms,
                margin.as_millis()
            )
        })?
        .map_err(|e| error_chain(&e))?;
    if answer.message_type != wire::TASK_RESULT {
        return Err(format!(
            "the executor answered {}: {}",
            answer.message_type,
            String::from_utf8_lossy(&answer.payload)
        ));
    }
    let result: TaskResult = serde_json::from_slice(&answer.payload)
        .map_err(|e| format!("the executor's answer is not a task result: {e}"))?;
    let output = B64
        .decode(&result.output)
        .map_err(|e| format!("the executor's output is not base64: {e}"))?;
    let receipt = result.receipt;
    let output_checked = (receipt.status == "ok").then_some(&output[..]);
    receipt
        .verify_with(Some(&job.module_bytes), Some(&job.input), output_checked)
        .map_err(|e| format!("the receipt does not verify: {e}"))?;
    if receipt.executor != executor.to_string() {
        return Err(format!(
            "the receipt is signed by {}, not by the executor the task was sent to",
            receipt.executor
        ));
    }
    if receipt.task_id != job.id {
        return Err(format!("the receipt is for task {}", receipt.task_id));
    }
    let trace = Span::current()
        .context()
        .map(|c| c.trace_id.to_string())
        .unwrap_or_default();
    if !trace.is_empty() && receipt.trace_id != trace {
        return Err(format!(
            "the receipt names trace {}, not this task's",
            receipt.trace_id
        ));
    }
    Ok((receipt, output))
}

/// An executor's offer for a task this node is collecting offers for.
pub(super) async fn offer(tasks: &Tasks, request: IncomingRequest) {
    let parsed: Result<TaskOffer, _> = serde_json::from_slice(&request.envelope.payload);
    let taken = match parsed {
        Err(e) => Err(format!("not an offer: {e}")),
        Ok(offer) => {
            let sender = tasks.offers().get(&offer.task_id).cloned();
            match sender {
                None => Err("no task of this node is collecting offers under that id".into()),
                Some(tx) => tx
                    .try_send((request.peer, offer))
                    .map_err(|_| "enough offers already".to_owned()),
            }
        }
    };
    let network = tasks.inner.network.clone();
    let (kind, body) = match taken {
        Ok(()) => (wire::TASK_OFFER_TAKEN, Vec::new()),
        Err(why) => ("error", why.into_bytes()),
    };
    if let Err(e) = network.respond(request, kind, body).await {
        tracing::debug!("answering an offer: {}", error_chain(&e));
    }
}
