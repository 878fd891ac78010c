//! Evidence against a cheating executor: a requester whose rerun of a receipt (or whose
//! bill check on the fuel a receipt claims) caught a lie hands the signed receipt, the
//! module and the input to the guild's coordinator, which runs the task again itself and,
//! when the receipt does not hold, removes the executor with the reason `cheated: …` in the
//! signed membership. Members then refuse its offers (it is no member), and it is not
//! admitted again. The coordinator trusts no requester: only the executor's own signature
//! and its own rerun decide.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tracing::Instrument;
use zerostate_execution::{Manifest, Receipt, builtin};
use zerostate_p2p::PeerId;

use crate::transport::{Incoming, Response};
use zerostate_telemetry::SpanExt;
use zerostate_telemetry::names::{attr, span as names};

use super::Tasks;
use super::wire::{self, Evidence, ModuleSource};

/// How long evidence waits for the rerun of other evidence before it is refused as busy
/// (within the network's request timeout).
const JUDGING_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Tasks {
    /// Hands the evidence of `receipt` (for a job of `module` on `input` and `files`) to
    /// the coordinator of `guild`, in the background; what it decides is logged and
    /// counted there.
    pub(super) fn report(
        &self,
        guild: &str,
        receipt: &Receipt,
        module: ModuleSource,
        (input, files): (&[u8], &BTreeMap<String, Vec<u8>>),
    ) {
        let evidence = Evidence {
            guild: guild.to_owned(),
            receipt: receipt.clone(),
            module,
            input: B64.encode(input),
            files: wire::encode_files(files),
        };
        let tasks = self.clone();
        let span = tracing::Span::current();
        self.spawn(
            async move {
                let Ok(info) = tasks.inner.transport.guild(&evidence.guild).await else {
                    return;
                };
                let Ok(coordinator) = info.coordinator.parse::<PeerId>() else {
                    return;
                };
                let body = serde_json::to_vec(&evidence).unwrap_or_default();
                let me = tasks.inner.transport.local_peer();
                let answer = if coordinator == me {
                    judge(&tasks, me, &body).await
                } else {
                    match tasks
                        .inner
                        .transport
                        .ask(coordinator, vec![], wire::TASK_EVIDENCE, body)
                        .await
                    {
                        Ok(a) if a.kind == wire::TASK_EVIDENCE_TAKEN => {
                            Ok(String::from_utf8_lossy(&a.payload).into_owned())
                        }
                        Ok(a) => Err(String::from_utf8_lossy(&a.payload).into_owned()),
                        Err(e) => Err(e),
                    }
                };
                match answer {
                    Ok(done) => tracing::warn!("the coordinator took the evidence: {done}"),
                    Err(why) => tracing::warn!("the coordinator did not take the evidence: {why}"),
                }
            }
            .instrument(span),
        );
    }
}

/// Answers evidence a member handed to this node as its guild's coordinator.
pub(super) async fn serve(tasks: &Tasks, request: Incoming) -> Response {
    let span = request.span.clone();
    let judged = judge(tasks, request.peer, &request.payload)
        .instrument(span.clone())
        .await;
    Some(match judged {
        Ok(done) => (wire::TASK_EVIDENCE_TAKEN, done.into_bytes()),
        Err(why) => {
            span.record_error(&zerostate_p2p::Reason(why.clone()));
            (wire::ERROR, why.into_bytes())
        }
    })
}

/// Checks evidence from `from` and removes the executor when its receipt does not hold on
/// this node's own rerun; what was done, or why nothing was.
async fn judge(tasks: &Tasks, from: PeerId, body: &[u8]) -> Result<String, String> {
    let evidence: Evidence =
        serde_json::from_slice(body).map_err(|e| format!("not evidence: {e}"))?;
    let guild = tasks.inner.transport.guild(&evidence.guild).await?;
    if guild.status != "coordinator" {
        return Err(format!("this node does not coordinate guild {}", guild.id));
    }
    let is_member = |peer: &str| guild.members.iter().any(|m| m.peer_id == peer);
    if !is_member(&from.to_string()) {
        return Err(format!(
            "only members of guild {} may hand it evidence",
            guild.id
        ));
    }
    let receipt = evidence.receipt;
    let executor: PeerId = receipt
        .executor
        .parse()
        .map_err(|_| "the receipt names no peer".to_owned())?;
    if !is_member(&receipt.executor) {
        return Err(format!("{executor} is not a member of guild {}", guild.id));
    }
    let input = B64
        .decode(&evidence.input)
        .map_err(|e| format!("the input is not base64: {e}"))?;
    let module = match &evidence.module {
        ModuleSource::Builtin(name) => {
            builtin::manifest(name, "", Vec::new())
                .ok_or_else(|| format!("no built-in task {name:?}"))?
                .module
        }
        ModuleSource::Base64(b) => B64
            .decode(b)
            .map_err(|e| format!("the module is not base64: {e}"))?,
        ModuleSource::Sha256(_) | ModuleSource::Chunked(_) => {
            return Err("evidence carries its module".into());
        }
    };
    let files = wire::decode_files(&evidence.files, "input files")?;
    // The executor's own signature over the module, input and files given.
    receipt
        .verify_with(Some(&module), Some(&input), None)
        .map_err(|e| format!("the receipt is not the executor's for this module and input: {e}"))?;
    let stated = if files.is_empty() {
        String::new()
    } else {
        zerostate_execution::tree_sha256(&files)
    };
    if receipt.files_sha256 != stated {
        return Err("the receipt is not the executor's for these input files".into());
    }
    if receipt.engine != tasks.inner.engine.id() {
        return Err(format!(
            "not comparable: the receipt names engine {:?}, this node runs {}",
            receipt.engine,
            tasks.inner.engine.id()
        ));
    }
    // One rerun at a time; evidence arriving meanwhile waits its turn, for a while.
    let _one_at_a_time = tokio::time::timeout(JUDGING_WAIT, tasks.inner.judging.acquire())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or("busy with other evidence: try again later")?;
    let span = tracing::info_span!(
        names::TASK_VERIFY,
        task.id = receipt.task_id.as_str(),
        peer.id = receipt.executor.as_str(),
        status = tracing::field::Empty,
    );
    let mut manifest = Manifest::new(receipt.task_id.clone(), module);
    manifest.entry = receipt.entry.clone();
    manifest.args = receipt.args.clone();
    manifest.env = receipt.env.clone();
    manifest.files = files;
    manifest.output_files = !receipt.output_files_sha256.is_empty();
    manifest.limits = receipt.limits;
    manifest.input = input;
    let engine = tasks.inner.engine.clone();
    let in_span = span.clone();
    let mine = tokio::task::spawn_blocking(move || in_span.in_scope(|| engine.run(&manifest)))
        .await
        .map_err(|e| format!("the rerun's thread ended: {e}"))?
        .receipt;
    if mine
        .error
        .as_deref()
        .is_some_and(|e| e.starts_with("wall_time_exceeded"))
    {
        return Err("not comparable: the rerun was cut off by its wall-time limit".into());
    }
    let differs = super::requester::differences(&receipt, &mine);
    if differs.is_empty() {
        span.record(attr::STATUS, "match");
        return Err("the receipt holds: the rerun gives its output and fuel".into());
    }
    span.record(attr::STATUS, "mismatch");
    let why = format!("cheated: {}", differs.join("; "));
    span.record_error(&zerostate_p2p::Reason(why.clone()));
    tasks
        .inner
        .transport
        .remove(&guild.id, executor, &why)
        .await?;
    tracing::warn!(peer.id = %executor, guild.id = %guild.id, "removed a member: {why}");
    Ok(format!("removed {executor} from guild {}: {why}", guild.id))
}
