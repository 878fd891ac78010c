//! The executor's side: offering on the tasks a guild announces, and running the one it is
//! handed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::sync::broadcast::error::RecvError;
use tracing::Instrument;
use zerostate_execution::{Manifest, builtin};
use zerostate_p2p::PeerId;
use zerostate_telemetry::SpanExt;
use zerostate_telemetry::names::span as names;

use super::Tasks;
use super::transport::{Incoming, Response};
use super::wire::{self, ModuleSource, TaskOffer, TaskRequest, TaskResult, TaskRun};

/// Listens to every guild this node is in for task requests, and offers on those it can take.
/// The feed is subscribed to at once, not when the listening first runs: a request announced
/// in between would not be seen.
pub(super) fn listen(tasks: Tasks) -> impl std::future::Future<Output = ()> + Send + 'static {
    let opened = tasks.inner.transport.messages();
    offer_on(tasks, opened)
}

async fn offer_on(
    tasks: Tasks,
    mut opened: tokio::sync::broadcast::Receiver<zerostate_guild::GuildMessage>,
) {
    loop {
        let message = match opened.recv().await {
            Ok(m) => m,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!("{n} guild messages were not looked at for tasks (too many)");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if message.message_type != wire::TASK_REQUEST {
            continue;
        }
        let span = tracing::info_span!(
            names::TASK_OFFER,
            task.id = tracing::field::Empty,
            guild.id = message.guild.as_str(),
            peer.id = %message.from,
        );
        if let Some(cx) = &message.context {
            span.set_parent(cx);
        }
        let this = tasks.clone();
        tasks.spawn(
            async move {
                if let Err(why) = offer(&this, message.from, &message.body).await {
                    tracing::Span::current().record_error(&*why);
                }
            }
            .instrument(span),
        );
    }
}

/// Offers to run the task `body` describes, if this node can and the price suits.
async fn offer(tasks: &Tasks, from: PeerId, body: &[u8]) -> Result<(), zerostate_p2p::Cause> {
    let request: TaskRequest = serde_json::from_slice(body)?;
    tracing::Span::current().record("task.id", request.task_id.as_str());
    let settings = &tasks.inner.settings;
    if request.requester != from.to_string() {
        return Err("the task request names another requester than its sender".into());
    }
    // Misbehaviour `overprice`: offer far above what the requester pays.
    let price = if tasks.inner.misbehave.overprice {
        request.max_price.saturating_mul(10).max(1)
    } else {
        settings.price
    };
    let running = tasks.running();
    let owed = tasks.inner.payments.owes(from);
    // A member that makes no offer says why, so that a requester nobody offered to can too.
    // (An overpricing executor offers all the same, for the requester to refuse.)
    let declined = if price > request.max_price && !tasks.inner.misbehave.overprice {
        tracing::info!(
            "not offering: this node's price {} is above the requester's {}",
            settings.price,
            request.max_price
        );
        Some(wire::Decline::Price)
    } else if running >= settings.max_running {
        // Busy and unpaid pass: those stay silent, as under load a decline per announcement
        // from every busy member is traffic the requester's next round makes up for anyway.
        tracing::info!("not offering: {running} tasks already running");
        return Ok(());
    } else if owed >= settings.credit as usize {
        tracing::info!(
            "not offering: the requester has not paid for {owed} delivered task(s) (credit {})",
            settings.credit
        );
        return Ok(());
    } else {
        None
    };
    let offer = TaskOffer {
        has_module: tasks.modules().get(&request.module_sha256).is_some(),
        task_id: request.task_id.clone(),
        price,
        running,
        declined,
        name: Some(tasks.inner.name.clone()),
    };
    // At most a few addresses, each of which must name the requester.
    let addresses: Vec<zerostate_p2p::Multiaddr> = request
        .addresses
        .iter()
        .take(8)
        .filter_map(|a| a.parse().ok())
        .filter(|a| zerostate_p2p::peer_of(a) == Some(from))
        .collect();
    let answer = tasks
        .inner
        .transport
        .ask(
            from,
            addresses,
            wire::TASK_OFFER,
            serde_json::to_vec(&offer)?,
        )
        .await?;
    if declined.is_some() {
        return Ok(());
    }
    if answer.kind == wire::TASK_OFFER_TAKEN {
        // Only a task this node offered on, to the requester that took the offer, runs.
        tasks.offer_taken(&request.task_id, from);
    } else {
        tracing::info!(
            "the requester did not take the offer: {}",
            String::from_utf8_lossy(&answer.payload)
        );
    }
    Ok(())
}

/// Runs a task handed to this node and answers with its output and signed receipt, or
/// refuses with a reason.
pub(super) async fn run(tasks: &Tasks, request: Incoming) -> Response {
    let span = request.span.clone();
    // A task handed again by its requester, the same hand-over to the byte (the
    // connection of the first dropped, while its module was coming, say), is answered with
    // the first hand-over's outcome, once there is one: it runs once and is billed once.
    let key = (request.peer, zerostate_execution::sha256(&request.payload));
    let first = tasks.handed_over(&key);
    let outcome = match first {
        Ok(mut earlier) => {
            let wait = tasks.wall_time_cap() + std::time::Duration::from_secs(60);
            let answer = tokio::time::timeout(wait, earlier.wait_for(Option::is_some)).await;
            match answer {
                Ok(Ok(done)) => done
                    .clone()
                    .unwrap_or_else(|| Err("the first hand-over of this task ended".into())),
                _ => Err("the first hand-over of this task did not end in time".into()),
            }
        }
        Err(publish) => {
            let answer = hand_over(tasks, &request, &span).await;
            if let Err(why) = &answer
                && why.starts_with(wire::DECLINED)
            {
                tasks.forget_hand_over(&key);
            }
            let _ = publish.send(Some(answer.clone()));
            answer
        }
    };
    Some(reply(&span, outcome))
}

/// Runs a task handed over: prepares it, runs it in the engine, accounts for its bill.
async fn hand_over(
    tasks: &Tasks,
    request: &Incoming,
    span: &tracing::Span,
) -> Result<TaskResult, String> {
    // Only a member of a guild this node is in may hand it work.
    let member = tasks.inner.transport.is_member(request.peer).await;
    let prepared = if member {
        prepare(tasks, request).await
    } else {
        Err("only members of this node's guilds may hand it tasks".to_owned())
    };
    match prepared {
        Err(why) => Err(why),
        Ok((manifest, slot, reservation)) => {
            let engine = tasks.inner.engine.clone();
            let metrics = tasks.inner.metrics.clone();
            let misbehave = tasks.inner.misbehave.clone();
            let in_span = span.clone();
            let ran = tokio::task::spawn_blocking(move || {
                in_span.in_scope(|| {
                    let execution = engine.run(&manifest);
                    // Counted with this request's trace as the duration's exemplar.
                    metrics.task_ran(
                        execution
                            .result
                            .as_ref()
                            .map_or_else(|e| e.kind(), |()| "ok"),
                        execution.measurement.wall_time.as_secs_f64(),
                        execution.receipt.fuel_consumed,
                        execution.measurement.cache_hit,
                    );
                    metrics.evicted("compiled_modules", execution.measurement.disk_evicted);
                    let (receipt, output, files) = misbehave.lie(
                        &engine,
                        execution.receipt,
                        execution.output,
                        execution.files,
                    );
                    TaskResult {
                        output: B64.encode(&output),
                        receipt,
                        exit_code: execution.exit_code,
                        stderr: B64.encode(&execution.stderr),
                        files: wire::encode_files(&files),
                        standing: None,
                    }
                })
            })
            .await;
            let stall = tasks.inner.misbehave.stall_answers_ms;
            if stall > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(stall)).await;
            }
            drop(slot);
            let ran = ran
                .map_err(|e| format!("the task's thread ended: {e}"))
                .and_then(|result| fits(tasks, result))
                .map(|mut result| {
                    result.standing = tasks.stand_for(request.peer);
                    result
                });
            if let Some(reservation) = reservation {
                let payments = &tasks.inner.payments;
                match &ran {
                    Ok(result) => payments.delivered(
                        reservation,
                        zerostate_execution::sha256(&result.receipt.signing_bytes()),
                        super::requester::bill(
                            result.receipt.fuel_consumed,
                            tasks.inner.settings.price,
                        ),
                    ),
                    Err(_) => payments.release(reservation),
                }
            }
            ran
        }
    }
}

/// Room in a message for its envelope (type, trace context, framing).
const ENVELOPE_ROOM: usize = 1024;

/// `result`, when it fits in one message back to the requester; otherwise why not (the
/// task's output and output files travel with its answer).
fn fits(tasks: &Tasks, result: TaskResult) -> Result<TaskResult, String> {
    let size = serde_json::to_vec(&result).map_or(0, |b| b.len());
    let limit = tasks.inner.transport.max_message_bytes();
    if size + ENVELOPE_ROOM > limit {
        return Err(format!(
            "the task's answer ({size} bytes with its output and output files, base64) is \
             more than one network message carries ({limit} bytes): give it a smaller output \
             limit"
        ));
    }
    Ok(result)
}

/// The answer to a task's hand-over: its result, or the reason it did not run.
fn reply(span: &tracing::Span, answer: Result<TaskResult, String>) -> (&'static str, Vec<u8>) {
    match answer {
        Ok(result) => (
            wire::TASK_RESULT,
            serde_json::to_vec(&result).unwrap_or_default(),
        ),
        Err(why) => {
            span.record_error(&zerostate_p2p::Reason(why.clone()));
            (wire::ERROR, why.into_bytes())
        }
    }
}

/// The manifest of a task handed to this node, the slot it runs in and the reservation of
/// its most expensive bill on the requester's channel, or why it will not run it: only a
/// task this node offered on, handed over by the requester that took the offer, with a
/// wall time the requester waits for, while a slot is free, against money the ledger
/// confirmed locked, to a requester that does not owe for more than its credit.
async fn prepare(
    tasks: &Tasks,
    request: &Incoming,
) -> Result<(Manifest, super::Slot, Option<u64>), String> {
    if !tasks.inner.settings.execute {
        return Err("this node does not run tasks for others".into());
    }
    let run: TaskRun =
        serde_json::from_slice(&request.payload).map_err(|e| format!("not a task: {e}"))?;
    let cap = u64::try_from(tasks.wall_time_cap().as_millis()).unwrap_or(u64::MAX);
    if run.limits.wall_time_ms > cap {
        return Err(format!(
            "a wall time of {} ms is more than a requester waits for an answer ({cap} ms)",
            run.limits.wall_time_ms
        ));
    }
    let offered = tasks.take_offered(&run.task_id, request.peer);
    let standing = !offered && tasks.take_standing(request.peer);
    if !offered && !standing {
        return Err(format!(
            "{}: this node made no offer for task {} that you took, and no standing offer \
             of it to you stands",
            wire::DECLINED,
            run.task_id
        ));
    }
    // The money first: a payer owing its credit is held a moment for a payment on its way
    // (see the payment protocol), and a slot taken before would turn others away meanwhile.
    // An offer made in a round was made while the requester owed less than its credit, and
    // the task it was for may run while it owes one more; a standing offer was given
    // before the task it came with was paid for, so its hand-over is held to the credit
    // itself, and turned down as the round would be: the requester then makes one.
    let settings = &tasks.inner.settings;
    let credit = if standing {
        settings.credit
    } else {
        settings.credit.saturating_add(1)
    };
    let reservation = tasks
        .inner
        .payments
        .reserve(
            request.peer,
            run.channel.as_deref(),
            super::requester::bill(run.limits.fuel, settings.price),
            credit,
        )
        .await
        .map_err(|why| {
            if standing {
                format!("{}: {why}", wire::DECLINED)
            } else {
                why
            }
        })?;
    let release = |why: String| {
        if let Some(r) = reservation {
            tasks.inner.payments.release(r);
        }
        why
    };
    let slot = tasks.reserve().map_err(|running| {
        release(format!(
            "{}: busy: {running} tasks running already",
            wire::DECLINED
        ))
    })?;
    // Within what the requester waits for an answer at most: a requester that sends its
    // chunks slowly holds the slot no longer.
    let wait = tasks.inner.transport.request_timeout();
    match tokio::time::timeout(wait, fetch_chunked(tasks, request.peer, &run)).await {
        Ok(fetched) => {
            fetched.map_err(|why| release(format!("the task's data did not come: {why}")))?
        }
        Err(_) => {
            return Err(release(format!(
                "the task's data did not come within {} s",
                wait.as_secs()
            )));
        }
    }
    let manifest = manifest_of(tasks, run).map_err(release)?;
    Ok((manifest, slot, reservation))
}

/// Fetches what of `run` travels by chunks (its module, input, input files) from the
/// requester, each at most what the engine allows.
async fn fetch_chunked(tasks: &Tasks, from: PeerId, run: &TaskRun) -> Result<(), String> {
    let policy = *tasks.inner.engine.policy();
    if let ModuleSource::Chunked(list) = &run.module {
        tasks
            .fetch(from, "module", list, policy.max_module_bytes)
            .await?;
    }
    let declared = run
        .input_chunked
        .iter()
        .chain(run.file_chunks.values())
        .fold(0u64, |sum, list| sum.saturating_add(list.size));
    if declared > policy.max_input_bytes {
        return Err(format!(
            "an input of {declared} bytes by chunks, above this node's policy of {}",
            policy.max_input_bytes
        ));
    }
    if let Some(list) = &run.input_chunked {
        tasks
            .fetch(from, "input", list, policy.max_input_bytes)
            .await?;
    }
    for (name, list) in &run.file_chunks {
        tasks
            .fetch(
                from,
                &format!("input file {name:?}"),
                list,
                policy.max_input_bytes,
            )
            .await?;
    }
    Ok(())
}

/// Bytes this node holds by `hash` (fetched by chunks), or why not.
fn held(tasks: &Tasks, hash: &str, what: &str) -> Result<Vec<u8>, String> {
    tasks
        .modules()
        .get(hash)
        .map(|b| b.to_vec())
        .ok_or_else(|| format!("this node does not hold the {what} {hash}"))
}

/// The manifest of a task run: its module (kept by hash when it came as bytes), input,
/// limits, arguments, environment and files (the engine checks what they hold).
fn manifest_of(tasks: &Tasks, run: TaskRun) -> Result<Manifest, String> {
    let input = match &run.input_chunked {
        Some(list) => held(tasks, &list.sha256, "input")?,
        None => B64
            .decode(&run.input)
            .map_err(|e| format!("the input is not base64: {e}"))?,
    };
    let mut manifest = match run.module {
        ModuleSource::Builtin(name) => builtin::manifest(&name, run.task_id, input)
            .ok_or_else(|| format!("no built-in task {name:?} here"))?,
        ModuleSource::Base64(b) => {
            let module = B64
                .decode(&b)
                .map_err(|e| format!("the module is not base64: {e}"))?;
            // Kept by its hash, so that the next task with it need not carry it.
            tasks.keep(module.clone());
            let mut m = Manifest::new(run.task_id, module);
            m.input = input;
            m
        }
        ModuleSource::Sha256(hash) => {
            // Held when the requester was told so, and evicted since: nothing ran, and the
            // requester asks again, sending the module this time.
            let module =
                held(tasks, &hash, "module").map_err(|why| format!("{}: {why}", wire::DECLINED))?;
            let mut m = Manifest::new(run.task_id, module);
            m.input = input;
            m
        }
        ModuleSource::Chunked(wire::Chunked { sha256: hash, .. }) => {
            let module = held(tasks, &hash, "module")?;
            let mut m = Manifest::new(run.task_id, module);
            m.input = input;
            m
        }
    };
    manifest.limits = run.limits;
    manifest.args = run.args;
    manifest.env = run.env;
    manifest.files = wire::decode_files(&run.files, "input files")?;
    for (name, list) in &run.file_chunks {
        let bytes = held(tasks, &list.sha256, "input file")?;
        if manifest.files.insert(name.clone(), bytes).is_some() {
            return Err(format!("input file {name:?} is given twice"));
        }
    }
    manifest.output_files = run.output_files;
    if let Some(entry) = run.entry {
        manifest.entry = entry;
    }
    Ok(manifest)
}
