//! The faults of each scenario: what is done to the network at one third of the run, how
//! it is healed, and the checks of what followed.

use super::net::{HEARTBEAT_MS, MISSED_HEARTBEATS};
use super::*;
use zerostate_guild::GuildInfo;

/// Polls `done` every 100 ms for at most `within`; how long it took.
pub(super) fn until(within: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// How long recovery may take before it counts as not recovered.
pub(super) const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

pub(super) fn collector_killed(
    net: &mut Net,
    load: Load,
    third: Duration,
    row: &mut Row,
) -> anyhow::Result<Book> {
    row.fault = format!("collector SIGKILL for {:.0} s", third.as_secs_f64());
    std::thread::sleep(third);
    net.kill_collector();
    std::thread::sleep(third);
    net.restart_collector()?;
    // Export resumed when the new collector stores its first span.
    let resumed = until(RECOVERY_LIMIT, || {
        net.collector_stored().is_ok_and(|n| n > 0)
    });
    row.recovered(resumed, "restart → first span stored");
    row.check(
        "export resumed after the restart",
        resumed.is_some(),
        "the restarted collector stored a span",
    );
    std::thread::sleep(third.saturating_sub(resumed.unwrap_or_default()));
    let book = load.finish(&net.runtime);
    row.all_succeeded(&book, "tasks unaffected");
    Ok(book)
}

pub(super) fn partition(
    net: &mut Net,
    load: Load,
    third: Duration,
    row: &mut Row,
) -> anyhow::Result<Book> {
    let cut = net::ISLANDER;
    if let Some(why) = &net.island_refused {
        row.notes.push(format!(
            "no network namespace could be made ({why}): the partition is a SIGSTOP of the \
             node's process instead"
        ));
    }
    let peer = net.peer(cut)?;
    // Cut off for twice the missed-heartbeat window at least, however short the run.
    let cut_for = third.max(Duration::from_secs(6));
    std::thread::sleep(third);
    let cut_at = load.started.elapsed();
    let how = net.partition(cut, true)?;
    row.fault = format!("{cut} cut off for {:.0} s ({how})", cut_for.as_secs_f64());
    std::thread::sleep(cut_for);
    let coordinator = net.guild_view("coordinator")?;
    let marked_down = !coordinator
        .members
        .iter()
        .any(|m| m.peer_id == peer && m.up);
    row.check(
        "heartbeats marked the cut-off node down",
        marked_down,
        format!(
            "the coordinator's view before the heal: {}",
            serde_json::to_string(&coordinator.members).unwrap_or_default()
        ),
    );
    let healed_at = load.started.elapsed();
    net.partition(cut, false)?;
    let rejoined = until(RECOVERY_LIMIT, || net.converged(cut));
    row.recovered(rejoined, "heal → member again, membership converged");
    row.check(
        "it rejoined and its guild state converged",
        rejoined.is_some(),
        format!("{cut}: {}", net.guild_text(cut)),
    );
    row.check(
        "back within two heartbeat intervals of the heal",
        rejoined.is_some_and(|t| t <= Duration::from_millis(2 * HEARTBEAT_MS)),
        format!(
            "{:.2} s with heartbeats every {HEARTBEAT_MS} ms",
            rejoined.map_or(f64::NAN, |t| t.as_secs_f64())
        ),
    );
    std::thread::sleep(third.saturating_sub(rejoined.unwrap_or_default()));
    let book = load.finish(&net.runtime);
    // Tasks submitted a second after the cut (an offer made just before it may still be
    // taken) until the heal: none may be handed to the cut-off node.
    let handed = book
        .outcomes
        .iter()
        .filter(|o| o.at > cut_at + Duration::from_secs(1) && o.at < healed_at)
        .filter_map(|o| o.record.as_ref())
        .flat_map(|r| r["attempts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["executor"] == peer.as_str())
        .count();
    row.check(
        "tasks avoided the cut-off node",
        handed == 0,
        format!("{handed} attempts handed to it while it was cut off"),
    );
    row.all_succeeded(&book, "every task succeeded");
    Ok(book)
}

pub(super) fn executors_killed(
    net: &mut Net,
    load: Load,
    third: Duration,
    kills: u32,
    row: &mut Row,
) -> anyhow::Result<Book> {
    row.fault = format!("{kills} × executor SIGKILL mid-task, started again");
    let executors = net.executors();
    // The kills spread over the middle two thirds.
    let window = third * 2;
    let every = window / kills.max(1);
    std::thread::sleep(third / 2);
    let mut mid_task = 0;
    let mut rejoins = Vec::new();
    for i in 0..kills {
        let started = Instant::now();
        // An executor running a task now: waited for, up to a second.
        let mut running = None;
        let _ = until(Duration::from_secs(1), || {
            running = load
                .running_on()
                .iter()
                .find_map(|peer| net.name_of(peer).map(str::to_owned));
            running.is_some()
        });
        if running.is_some() {
            mid_task += 1;
        }
        let victim = running.unwrap_or_else(|| executors[i as usize % executors.len()].clone());
        let killed = Instant::now();
        net.kill(&victim)?;
        net.restart(&victim)?;
        let back = until(RECOVERY_LIMIT, || net.converged(&victim));
        rejoins.push(back.map(|_| killed.elapsed()));
        std::thread::sleep(every.saturating_sub(started.elapsed()));
    }
    let rejoined: Vec<Duration> = rejoins.iter().flatten().copied().collect();
    row.recovered(
        rejoined.iter().max().copied(),
        "kill → started again and a member again (slowest)",
    );
    row.notes.push(format!(
        "{mid_task} of {kills} kills hit an executor while it ran a task"
    ));
    row.check(
        "every killed executor came back",
        rejoined.len() == rejoins.len(),
        format!("{} of {} back in the guild", rejoined.len(), rejoins.len()),
    );
    std::thread::sleep(third / 2);
    let book = load.finish(&net.runtime);
    row.all_succeeded(&book, "every task completed on another member");
    Ok(book)
}

pub(super) fn ledger_restarted(
    net: &mut Net,
    load: Load,
    third: Duration,
    row: &mut Row,
) -> anyhow::Result<Book> {
    row.fault = format!("ledger SIGKILL for {:.0} s", third.as_secs_f64());
    std::thread::sleep(third);
    let down_at = load.started.elapsed();
    net.kill("ledger")?;
    std::thread::sleep(third);
    let up_at = load.started.elapsed();
    net.restart("ledger")?;
    let requester = net.client("requester")?;
    let back = until(RECOVERY_LIMIT, || {
        net.runtime
            .block_on(requester.get("/v1/ledger/balance"))
            .is_ok_and(|b| b.is_some())
    });
    row.recovered(back, "restart → the requester's ledger calls answered");
    row.check(
        "the ledger answers again",
        back.is_some(),
        "the requester's balance query succeeded",
    );
    let recovered_at = load.started.elapsed();
    {
        let book = load.book.lock().unwrap_or_else(|e| e.into_inner());
        let during = book
            .outcomes
            .iter()
            .filter(|o| o.at >= down_at && o.at < up_at);
        let (n, paid) = during.fold((0, 0), |(n, p), o| {
            (n + 1, p + usize::from(o.payment() == Some("paid")))
        });
        row.notes.push(format!(
            "while the ledger was down: {n} tasks submitted, {paid} paid over channels \
             opened before"
        ));
    }
    // A channel opened before the restart is settled on the restarted ledger: it kept the
    // channel and takes the latest acknowledged state.
    let channels = net
        .runtime
        .block_on(requester.get("/v1/channels"))?
        .unwrap_or_default();
    let open = channels
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["closing"] == false && c["nonce"].as_u64() > Some(0))
        })
        .cloned();
    match open {
        Some(c) => {
            let id = c["id"].as_str().unwrap_or_default().to_owned();
            let closed = net.runtime.block_on(
                requester.post(&format!("/v1/channels/{id}/close"), &serde_json::json!({})),
            );
            // The payee gets exactly what the payer's latest state says (the channel takes
            // no payment once closing, so it is final now).
            let last = net
                .runtime
                .block_on(requester.get(&format!("/v1/channels/{id}?limit=1")))
                .ok()
                .flatten()
                .unwrap_or_default();
            let cumulative = last["cumulative"].clone();
            let settled = closed
                .as_ref()
                .is_ok_and(|a| a["to_payee"].as_u64().is_some() && a["to_payee"] == cumulative);
            row.check(
                "a channel from before the restart settles on the restarted ledger",
                settled,
                match &closed {
                    Ok(a) => format!("closed {id}, its latest state at {cumulative}: {a}"),
                    Err(e) => short(e),
                },
            );
        }
        None => row.check(
            "a channel from before the restart settles on the restarted ledger",
            false,
            format!("no open channel with payments on the requester: {channels}"),
        ),
    }
    std::thread::sleep(third.saturating_sub(back.unwrap_or_default()));
    let book = load.finish(&net.runtime);
    let paid_after = book
        .outcomes
        .iter()
        .filter(|o| o.at > recovered_at && o.payment() == Some("paid"))
        .count();
    row.check(
        "payments continue after it returns",
        paid_after > 0,
        format!("{paid_after} tasks submitted after the recovery were paid"),
    );
    row.all_succeeded(&book, "every task succeeded");
    Ok(book)
}

/// Polls, every 50 ms for at most `within`, until every node in `names` holds the same
/// coordinator, term and membership version of the guild, and that coordinator is not
/// `not` and says it coordinates; how long it took, and that coordinator's peer id.
pub(super) fn one_coordinator(
    net: &Net,
    names: &[String],
    not: Option<&str>,
    within: Duration,
) -> Option<(Duration, String)> {
    let start = Instant::now();
    while start.elapsed() < within {
        let views: Vec<GuildInfo> = names
            .iter()
            .filter_map(|n| net.guild_view(n).ok())
            .collect();
        let first = views.first();
        let same = views.len() == names.len()
            && views.iter().all(|v| {
                matches!(v.status.as_str(), "coordinator" | "member")
                    && first.is_some_and(|f| {
                        (&v.coordinator, v.term, v.version, v.key_epoch)
                            == (&f.coordinator, f.term, f.version, f.key_epoch)
                    })
            });
        let coordinator = first.map_or("", |f| f.coordinator.as_str());
        // (Not asking the node ruled out: it may be cut off, and its API with it.)
        let coordinating = Some(coordinator) != not
            && net
                .name_of(coordinator)
                .is_some_and(|n| net.guild_view(n).is_ok_and(|v| v.status == "coordinator"));
        if same && coordinating {
            return Some((start.elapsed(), coordinator.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The handover checks shared by `coordinator-lost` and `coordinator-restarted`: tasks
/// submitted once the guild had one coordinator again all succeeded; those in flight
/// during the handover are reported. (That every task was paid is checked once the stores
/// are read, after the run.)
pub(super) fn after_handover(
    row: &mut Row,
    book: &Book,
    lost_at: Duration,
    settled_at: Option<Duration>,
) {
    let settled_at = settled_at.unwrap_or(Duration::MAX);
    let overlapping = |o: &&load::Outcome| o.at <= settled_at && o.at + o.took >= lost_at;
    let during: Vec<&load::Outcome> = book.outcomes.iter().filter(overlapping).collect();
    let after: Vec<&load::Outcome> = book.outcomes.iter().filter(|o| o.at > settled_at).collect();
    let failed_after = after.iter().filter(|o| o.state != "succeeded").count();
    row.notes.push(format!(
        "in flight during the handover: {} tasks, {} succeeded, {} failed; submitted after it: {}, {} succeeded",
        during.len(),
        during.iter().filter(|o| o.state == "succeeded").count(),
        during.iter().filter(|o| o.state != "succeeded").count(),
        after.len(),
        after.len() - failed_after,
    ));
    row.check(
        "every task submitted after the handover succeeds",
        failed_after == 0 && !after.is_empty(),
        format!("{failed_after} of {} did not", after.len()),
    );
    let slowest = book
        .outcomes
        .iter()
        .map(|o| o.took)
        .max()
        .unwrap_or_default();
    row.check(
        "no task hangs",
        slowest < load::TASK_DEADLINE,
        format!("slowest answer {:.1} s", slowest.as_secs_f64()),
    );
}

/// The members that stay: everyone in the guild but the coordinator.
pub(super) fn staying(net: &Net) -> Vec<String> {
    std::iter::once("requester".to_owned())
        .chain(net.executors())
        .collect()
}

pub(super) fn coordinator_lost(
    net: &mut Net,
    load: Load,
    third: Duration,
    row: &mut Row,
) -> anyhow::Result<Book> {
    row.fault = "coordinator SIGKILL, not restarted".to_owned();
    std::thread::sleep(third);
    let old = net.peer("coordinator")?;
    let lost_at = load.started.elapsed();
    net.kill("coordinator")?;
    // The first successor takes over once the coordinator has been silent past the window;
    // every member follows it.
    let handover = super::succession::successor_takes_over(net, &old, row);
    row.recovered(
        handover.as_ref().map(|(took, _)| *took),
        "kill → a successor's membership at every member",
    );
    let settled_at = handover.as_ref().map(|(took, _)| lost_at + *took);
    row.check(
        "handover within 3 s",
        handover
            .as_ref()
            .is_some_and(|(took, _)| *took <= Duration::from_secs(3)),
        format!(
            "{:.2} s with heartbeats every {HEARTBEAT_MS} ms, down after {MISSED_HEARTBEATS}",
            handover.as_ref().map_or(f64::NAN, |(t, _)| t.as_secs_f64())
        ),
    );
    std::thread::sleep((third * 2).saturating_sub(handover.map(|(t, _)| t).unwrap_or_default()));
    let book = load.finish(&net.runtime);
    after_handover(row, &book, lost_at, settled_at);
    Ok(book)
}

pub(super) fn coordinator_restarted(
    net: &mut Net,
    load: Load,
    third: Duration,
    row: &mut Row,
) -> anyhow::Result<Book> {
    row.fault = "coordinator SIGKILL, restarted on its data directory".to_owned();
    std::thread::sleep(third);
    let lost_at = load.started.elapsed();
    net.kill("coordinator")?;
    net.restart("coordinator")?;
    // Back within the window it resumes its guild under a new key; later, a successor has
    // taken over and it comes back as a member. Either way: one coordinator, everyone in.
    let mut everyone = staying(net);
    everyone.push("coordinator".to_owned());
    let settled = one_coordinator(net, &everyone, None, RECOVERY_LIMIT);
    row.recovered(
        settled.as_ref().map(|(took, _)| *took),
        "kill → one coordinator and one membership at every node, the restarted one included",
    );
    let settled_at = settled.as_ref().map(|(took, _)| lost_at + *took);
    let view = net.guild_view("coordinator");
    row.check(
        "the restarted coordinator is back in its guild",
        settled.is_some()
            && view
                .as_ref()
                .is_ok_and(|v| matches!(v.status.as_str(), "coordinator" | "member")),
        match &view {
            Ok(v) => format!(
                "{} as {} at term {}, version {}",
                v.id, v.status, v.term, v.version
            ),
            Err(e) => format!("the coordinator cannot say: {e:#}"),
        },
    );
    std::thread::sleep((third * 2).saturating_sub(settled.map(|(t, _)| t).unwrap_or_default()));
    let book = load.finish(&net.runtime);
    after_handover(row, &book, lost_at, settled_at);
    Ok(book)
}

pub(super) fn slow_collector(
    net: &mut Net,
    load: Load,
    third: Duration,
    slow: &proxy::Delay,
    slow_ms: u64,
    row: &mut Row,
) -> anyhow::Result<Book> {
    row.fault = format!(
        "collector answers {slow_ms} ms late for {:.0} s",
        third.as_secs_f64()
    );
    // The operations listener of every member is asked for /metrics every 200 ms; the
    // slowest answer of each phase is kept.
    let admins: Vec<String> = std::iter::once("requester".to_owned())
        .chain(net.executors())
        .collect();
    let probe = |net: &Net, until_at: Instant| -> Duration {
        let mut worst = Duration::ZERO;
        while Instant::now() < until_at {
            for n in &admins {
                let t = Instant::now();
                let _ = net.metrics(n);
                worst = worst.max(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        worst
    };
    let before = probe(net, Instant::now() + third);
    let slow_from = load.started.elapsed();
    slow.set(Duration::from_millis(slow_ms));
    let during = probe(net, Instant::now() + third);
    slow.set(Duration::ZERO);
    let slow_to = load.started.elapsed();
    std::thread::sleep(third);
    let book = load.finish(&net.runtime);
    let phase = |from: Duration, to: Duration| {
        let mut l: Vec<f64> = book
            .outcomes
            .iter()
            .filter(|o| o.at >= from && o.at < to && o.state == "succeeded")
            .filter_map(|o| o.record.as_ref()?["duration_ms"].as_f64())
            .collect();
        quantile(&mut l, 0.5)
    };
    let (p_before, p_during) = (phase(Duration::ZERO, slow_from), phase(slow_from, slow_to));
    row.notes.push(format!(
        "task p50 {p_before:.1} ms before, {p_during:.1} ms while the collector was slow; \
         slowest /metrics answer {:.0} ms before, {:.0} ms during",
        before.as_secs_f64() * 1000.0,
        during.as_secs_f64() * 1000.0
    ));
    row.recovery = "—".to_owned();
    row.check(
        "the collector was slow",
        slow.held() > 0,
        format!("{} answers held {slow_ms} ms", slow.held()),
    );
    row.check(
        "no node thread blocks",
        during < Duration::from_secs(2),
        format!(
            "slowest /metrics answer while the collector was slow: {:.0} ms",
            during.as_secs_f64() * 1000.0
        ),
    );
    row.all_succeeded(&book, "tasks unaffected");
    Ok(book)
}
