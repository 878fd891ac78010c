//! The requester's checks of what an executor delivered before it pays: the bill against
//! what it already knows, and a share of receipts rerun in its own engine.

use super::*;

/// How an attempt's reason starts when the executor's receipt is false: such an executor
/// is refused for the rest of the session.
pub(super) const LIE: &str = "the receipt does not verify";

/// Checks an executor's bill from what this node already knows (the price it accepted, the
/// job it sent, the limits it set, the guild it announced to) before paying it; the amount
/// owed, or why the bill does not hold. The receipt's signature only says who claims.
pub(super) async fn check_bill(
    tasks: &Tasks,
    job: &Job,
    executor: PeerId,
    offer: &TaskOffer,
    delivered: &Delivered,
) -> Result<u64, (String, bool)> {
    check_terms(tasks, job, executor, offer, delivered)
        .await
        .map_err(|why| (why, false))?;
    let receipt = &delivered.receipt;
    if receipt.fuel_consumed > job.limits.fuel {
        // Signed, and impossible: evidence.
        return Err((
            format!(
                "it claims {} fuel, above the task's limit of {}",
                receipt.fuel_consumed, job.limits.fuel
            ),
            true,
        ));
    }
    let most = bill(job.limits.fuel, offer.price);
    let amount = bill(receipt.fuel_consumed, offer.price);
    if amount > most {
        return Err((
            format!("{amount} is above the price agreed times the fuel limit ({most})"),
            false,
        ));
    }
    let deposit = tasks.inner.payments.deposit();
    if amount > deposit {
        return Err((
            format!(
                "{amount} is more than a channel holds ({deposit}): no bill opens a second \
                 channel"
            ),
            false,
        ));
    }
    Ok(amount)
}

/// The terms of a bill: the price accepted, the executor a member, the receipt for the job
/// that was sent (its environment and input files too), the output files those it states
/// and within the output limit, a failed run without output.
async fn check_terms(
    tasks: &Tasks,
    job: &Job,
    executor: PeerId,
    offer: &TaskOffer,
    delivered: &Delivered,
) -> Result<(), String> {
    let (receipt, output) = (&delivered.receipt, &delivered.output);
    if offer.price > job.max_price {
        return Err(format!(
            "the price {} is above the most this node pays ({})",
            offer.price, job.max_price
        ));
    }
    if !tasks.is_member(&job.guild, executor).await {
        return Err(format!(
            "{executor} is not a current member of guild {}",
            job.guild
        ));
    }
    let mismatch = |what: &str, stated: &dyn std::fmt::Debug, sent: &dyn std::fmt::Debug| {
        Err(format!(
            "the receipt's {what} is {stated:?}, not the job's {sent:?}"
        ))
    };
    if receipt.module_sha256 != job.module_sha256 {
        return mismatch("module", &receipt.module_sha256, &job.module_sha256);
    }
    let input = hex::encode(sha256(&job.input));
    if receipt.input_sha256 != input {
        return mismatch("input", &receipt.input_sha256, &input);
    }
    if receipt.entry != job.entry {
        return mismatch("entry", &receipt.entry, &job.entry);
    }
    if receipt.args != job.args {
        return mismatch("arguments", &receipt.args, &job.args);
    }
    if receipt.limits != job.limits {
        return mismatch("limits", &receipt.limits, &job.limits);
    }
    if receipt.env != job.env {
        return mismatch("environment", &receipt.env, &job.env);
    }
    let files = if job.files.is_empty() {
        String::new()
    } else {
        zerostate_execution::tree_sha256(&job.files)
    };
    if receipt.files_sha256 != files {
        return mismatch("input files", &receipt.files_sha256, &files);
    }
    let returned = if job.output_files {
        zerostate_execution::tree_sha256(&delivered.files)
    } else if delivered.files.is_empty() {
        String::new()
    } else {
        return Err(format!(
            "{} output files came back for a task without an output directory",
            delivered.files.len()
        ));
    };
    if receipt.output_files_sha256 != returned {
        return mismatch(
            "output files",
            &receipt.output_files_sha256,
            &format!("{returned} (of the files that came back)"),
        );
    }
    let size = output.len() as u64
        + delivered
            .files
            .values()
            .map(|f| f.len() as u64)
            .sum::<u64>();
    if size > job.limits.output_bytes {
        return Err(format!(
            "{size} bytes of output and output files came back, above the task's output limit of {}",
            job.limits.output_bytes
        ));
    }
    // A program that exited with its own code keeps its output; any other failure has none.
    let exited = receipt
        .error
        .as_deref()
        .is_some_and(|e| e.starts_with("exited:"));
    if receipt.status != "ok" && !exited && !(output.is_empty() && delivered.files.is_empty()) {
        return Err(format!(
            "a failed run came with {} bytes of output and {} output files",
            output.len(),
            delivered.files.len()
        ));
    }
    Ok(())
}

/// What a rerun's receipt (`mine`) says differently from the one `claimed`: status,
/// output, fuel.
pub(crate) fn differences(claimed: &Receipt, mine: &Receipt) -> Vec<String> {
    let mut differs = Vec::new();
    if mine.status != claimed.status {
        differs.push(format!(
            "status {} claimed, {} on rerun",
            claimed.status, mine.status
        ));
    }
    if mine.output_sha256 != claimed.output_sha256 {
        differs.push(format!(
            "output {} claimed, {} on rerun",
            claimed.output_sha256, mine.output_sha256
        ));
    }
    if mine.output_files_sha256 != claimed.output_files_sha256 {
        differs.push(format!(
            "output files {} claimed, {} on rerun",
            claimed.output_files_sha256, mine.output_files_sha256
        ));
    }
    if mine.fuel_consumed != claimed.fuel_consumed {
        differs.push(format!(
            "fuel {} claimed, {} on rerun",
            claimed.fuel_consumed, mine.fuel_consumed
        ));
    }
    differs
}

/// A number in [0, 1) from the system's random source (0 when it fails: checked then).
fn uniform() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.0;
    }
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// What `fuel` costs at `price` per million fuel units, rounded up.
pub(crate) fn bill(fuel: u64, price: u64) -> u64 {
    u64::try_from((u128::from(fuel) * u128::from(price)).div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// Reruns an executor's receipts until one matches, then a share of the others (`[tasks]
/// verify_share`) in this node's own engine before paying them, in a `task.verify` span: execution is deterministic, so an honest receipt
/// has the output and the fuel the rerun gets. A run cut off by its wall-time limit is not
/// comparable (how far it got depends on the machine) and is not rerun.
pub(super) async fn spot_check(tasks: &Tasks, job: &Job, receipt: &Receipt) -> Result<(), String> {
    let share = tasks.inner.settings.verify_share;
    let executor: Option<PeerId> = receipt.executor.parse().ok();
    // Until one of its receipts has matched a rerun, every receipt of an executor is
    // checked (receipts that arrive while the first check runs included).
    let vouched = executor.is_some_and(|e| tasks.vouched(e));
    if share <= 0.0 || (vouched && share < 1.0 && uniform() >= share) {
        return Ok(());
    }
    if receipt
        .error
        .as_deref()
        .is_some_and(|e| e.starts_with("wall_time_exceeded"))
    {
        return Ok(());
    }
    let span = tracing::info_span!(
        names::TASK_VERIFY,
        task.id = job.id.as_str(),
        peer.id = receipt.executor.as_str(),
        status = tracing::field::Empty,
    );
    let engine = tasks.inner.engine.clone();
    let manifest = job.manifest();
    let in_span = span.clone();
    let rerun = tokio::task::spawn_blocking(move || in_span.in_scope(|| engine.run(&manifest)))
        .await
        .map_err(|e| format!("the spot check's thread ended: {e}"))?;
    let differs = differences(receipt, &rerun.receipt);
    if differs.is_empty() {
        span.record(zerostate_telemetry::names::attr::STATUS, "match");
        if let Some(e) = executor {
            tasks.vouch(e);
        }
        return Ok(());
    }
    let why = format!("the spot check does not match: {}", differs.join("; "));
    span.record(zerostate_telemetry::names::attr::STATUS, "mismatch");
    span.record_error(&zerostate_p2p::Reason(why.clone()));
    Err(why)
}
