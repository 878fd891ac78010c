//! Where a task's time goes, from its own spans: each measured task's trace, read back
//! from the bench's collector, cut at the requester's spans into phases.

use std::collections::HashMap;

/// The phases, in order: from `task.submit` to the end of the sealed request's
/// `guild.send_message` (announce); from there to the last `task.attempt` (the offer
/// round; for a task handed over on a standing offer, which is not announced, announce is
/// 0 and this runs from `task.submit`); from that attempt's start to the end of its `p2p.message.task_run` request
/// (locking the bill on the channel, the hand-over, the run on the executor, the receipt
/// back); from there to `payment.flow` (the bill and receipt checks, a rerun when one is
/// due); `payment.flow` (signing, the payee's acknowledgement, both commits).
pub(super) const PHASES: [&str; 5] = ["announce", "offers", "run", "receipt check", "payment"];

/// One task's phases.
pub(super) struct Phases {
    /// Each phase in milliseconds; from submission to the receipt checked (all but the
    /// payment); and their sum.
    pub(super) ms: [f64; PHASES.len() + 2],
    /// Whether the task was announced (not handed over on a standing offer at once).
    pub(super) announced: bool,
}

/// A span as the query API answers it (OTLP JSON).
struct Span {
    start: u64,
    end: u64,
}

fn nanos(v: &serde_json::Value) -> u64 {
    match v {
        serde_json::Value::String(s) => s.parse().unwrap_or(0),
        other => other.as_u64().unwrap_or(0),
    }
}

/// The phases of one trace (`/api/v3/traces/{id}`'s answer), counting only `service`'s
/// spans; `None` when it lacks one of the spans that bound them.
pub(super) fn of_trace(answer: &serde_json::Value, service: &str) -> Option<Phases> {
    let mut by_name: HashMap<&str, Vec<Span>> = HashMap::new();
    for rs in answer["result"]["resourceSpans"].as_array()? {
        let ours = rs["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|kv| kv["key"] == "service.name" && kv["value"]["stringValue"] == service);
        if !ours {
            continue;
        }
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for s in ss["spans"].as_array().into_iter().flatten() {
                let name = s["name"].as_str().unwrap_or_default();
                by_name.entry(name).or_default().push(Span {
                    start: nanos(&s["startTimeUnixNano"]),
                    end: nanos(&s["endTimeUnixNano"]),
                });
            }
        }
    }
    let first = |name: &str| by_name.get(name)?.iter().min_by_key(|s| s.start);
    let last = |name: &str| by_name.get(name)?.iter().max_by_key(|s| s.start);
    let submit = first("task.submit")?;
    let announce = first("guild.send_message");
    let announced = announce.map_or(submit.start, |a| a.end);
    let attempt = last("task.attempt")?;
    let run = last("p2p.message.task_run")?;
    let payment = last("payment.flow")?;
    let ms = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e6;
    let phases = [
        ms(submit.start, announced),
        ms(announced, attempt.start),
        ms(attempt.start, run.end),
        ms(run.end, payment.start),
        ms(payment.start, payment.end),
    ];
    let mut out = [0.0; PHASES.len() + 2];
    out[..PHASES.len()].copy_from_slice(&phases);
    out[PHASES.len()] = ms(submit.start, payment.start);
    out[PHASES.len() + 1] = ms(submit.start, payment.end);
    Some(Phases {
        ms: out,
        announced: announce.is_some(),
    })
}

/// Reads every trace rooted at `service`'s `task.submit` from the collector at `ui`, the
/// earliest `skip` left out (the warm-up), and returns each one's phases.
pub(super) async fn read(ui: &str, service: &str, skip: usize) -> anyhow::Result<Vec<Phases>> {
    let client = reqwest::Client::new();
    let list: serde_json::Value = client
        .get(format!(
            "{ui}/api/zerostate/traces?query.serviceName={service}\
             &query.operationName=task.submit&query.searchDepth=1000"
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut traces: Vec<(u64, String)> = list["traces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| Some((nanos(&t["startNs"]), t["traceId"].as_str()?.to_owned())))
        .collect();
    traces.sort();
    let mut out = Vec::new();
    for (_, id) in traces.into_iter().skip(skip) {
        let answer: serde_json::Value = client
            .get(format!("{ui}/api/v3/traces/{id}"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        out.extend(of_trace(&answer, service));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(name: &str, start: u64, end: u64) -> serde_json::Value {
        serde_json::json!({
            "name": name,
            "startTimeUnixNano": (start * 1_000_000).to_string(),
            "endTimeUnixNano": (end * 1_000_000).to_string(),
        })
    }

    fn trace(service: &str, spans: Vec<serde_json::Value>) -> serde_json::Value {
        serde_json::json!({"result": {"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeSpans": [{"spans": spans}],
        }]}})
    }

    #[test]
    fn a_trace_is_cut_at_the_requesters_spans() {
        let t = trace(
            "requester",
            vec![
                span("task.submit", 100, 101),
                span("guild.send_message", 100, 102),
                span("task.attempt", 103, 104),
                // A failed attempt, then the one that ran: the last counts. An attempt
                // lasts until its task is paid.
                span("task.attempt", 103, 104),
                span("p2p.message.task_run", 103, 104),
                span("task.attempt", 105, 112),
                span("p2p.message.task_run", 106, 108),
                span("payment.flow", 109, 111),
            ],
        );
        let cut = of_trace(&t, "requester").expect("cut");
        assert_eq!(cut.ms, [2.0, 3.0, 3.0, 1.0, 2.0, 9.0, 11.0]);
        assert!(cut.announced);
        // Another node's spans are not the requester's.
        assert!(of_trace(&t, "executor").is_none());
        // Without a payment there is nothing to cut.
        let unpaid = trace("requester", vec![span("task.submit", 1, 2)]);
        assert!(of_trace(&unpaid, "requester").is_none());
        // Handed over on a standing offer: no announcement, the offer phase from submission.
        let standing = trace(
            "requester",
            vec![
                span("task.submit", 100, 101),
                span("task.attempt", 101, 106),
                span("p2p.message.task_run", 101, 103),
                span("payment.flow", 104, 106),
            ],
        );
        let cut = of_trace(&standing, "requester").expect("cut");
        assert_eq!(cut.ms, [0.0, 1.0, 2.0, 1.0, 2.0, 4.0, 6.0]);
        assert!(!cut.announced);
    }
}
