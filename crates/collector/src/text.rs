//! A trace as the collector's query API gives it (OTLP JSON), fetched and drawn as text:
//! what `zerostate trace show` and the devnet print.

use std::collections::HashMap;
use std::fmt::Write as _;

use anyhow::Context;

/// `GET url` on a collector's query API: the JSON answer, `None` for 404.
pub async fn fetch(url: &str) -> anyhow::Result<Option<serde_json::Value>> {
    let response = reqwest::get(url).await.with_context(|| {
        format!(
            "asking the collector at {url} (is `zerostate collector` or a devnet running? \
             --collector or ZEROSTATE_COLLECTOR names another)"
        )
    })?;
    if response.status() == 404 {
        return Ok(None);
    }
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("reading the collector's answer from {url}"))?;
    if !status.is_success() {
        anyhow::bail!(
            "the collector said {status}: {}",
            body["error"]["message"]
                .as_str()
                .unwrap_or("no reason given")
        );
    }
    Ok(Some(body))
}

/// A span as the tree needs it.
struct Node {
    id: String,
    parent: String,
    name: String,
    service: String,
    start: u64,
    end: u64,
    error: Option<String>,
    /// The attributes drawn beside its name ([`SHOWN`]), as `key=value, …`.
    shown: String,
}

/// Attributes drawn beside a span's name: whether a module came from the cache, and the
/// transaction a settlement on chain was mined in.
const SHOWN: [&str; 3] = ["cache.hit", "tx.hash", "tx.block"];

fn number(v: &serde_json::Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

fn attribute(attrs: &serde_json::Value, key: &str) -> Option<String> {
    let kv = attrs.as_array()?.iter().find(|kv| kv["key"] == key)?;
    let v = &kv["value"];
    v["stringValue"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| v["boolValue"].as_bool().map(|b| b.to_string()))
        .or_else(|| v["intValue"].as_str().map(str::to_owned))
        .or_else(|| v["intValue"].as_i64().map(|i| i.to_string()))
}

/// Draws a trace (OTLP JSON) as an indented tree, roots first, children by start time.
pub fn render(traces: &serde_json::Value) -> String {
    let mut nodes = Vec::new();
    for rs in traces["resourceSpans"].as_array().into_iter().flatten() {
        let service = attribute(&rs["resource"]["attributes"], "service.name")
            .unwrap_or_else(|| "unknown_service".into());
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for s in ss["spans"].as_array().into_iter().flatten() {
                let error = (s["status"]["code"] == 2
                    || s["status"]["code"] == "STATUS_CODE_ERROR")
                    .then(|| s["status"]["message"].as_str().unwrap_or("").to_owned());
                nodes.push(Node {
                    id: s["spanId"].as_str().unwrap_or("").to_owned(),
                    parent: s["parentSpanId"].as_str().unwrap_or("").to_owned(),
                    name: s["name"].as_str().unwrap_or("").to_owned(),
                    service: service.clone(),
                    start: number(&s["startTimeUnixNano"]),
                    end: number(&s["endTimeUnixNano"]),
                    error,
                    shown: SHOWN
                        .iter()
                        .filter_map(|k| attribute(&s["attributes"], k).map(|v| format!("{k}={v}")))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
    }
    nodes.sort_by_key(|n| n.start);
    let ids: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        match ids.get(n.parent.as_str()) {
            Some(&p) if !n.parent.is_empty() => children.entry(p).or_default().push(i),
            _ => roots.push(i),
        }
    }
    // Drawn with an explicit stack, so that a hostile trace thousands of spans deep cannot
    // overflow the thread's stack: (span, prefix, branch, parent's service).
    let mut out = String::new();
    let mut stack: Vec<(usize, String, &str, Option<usize>)> = roots
        .iter()
        .rev()
        .map(|&r| (r, String::new(), "", None))
        .collect();
    while let Some((i, prefix, branch, parent)) = stack.pop() {
        let n = &nodes[i];
        let _ = write!(
            out,
            "{prefix}{branch}{} [{}]",
            n.name,
            duration(n.end.saturating_sub(n.start))
        );
        if !n.shown.is_empty() {
            let _ = write!(out, " ({})", n.shown);
        }
        if parent.map(|p| nodes[p].service.as_str()) != Some(n.service.as_str()) {
            let _ = write!(out, " @ {}", n.service);
        }
        if let Some(e) = &n.error {
            let _ = write!(out, " ERROR {e}");
        }
        out.push('\n');
        let kids = children.get(&i).map(Vec::as_slice).unwrap_or(&[]);
        let child_prefix = match branch {
            "" => prefix.clone(),
            "└─ " => format!("{prefix}   "),
            _ => format!("{prefix}│  "),
        };
        for (k, &c) in kids.iter().enumerate().rev() {
            let last = k + 1 == kids.len();
            stack.push((
                c,
                child_prefix.clone(),
                if last { "└─ " } else { "├─ " },
                Some(i),
            ));
        }
    }
    out
}

/// A duration as people read it: `0.20ms`, `180ms`, `2.61s`.
pub fn duration(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_draws_as_the_seed_shows_it() {
        let t = serde_json::json!({"resourceSpans": [
            {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "edge-node-1"}}]},
             "scopeSpans": [{"spans": [
                {"spanId": "01", "parentSpanId": "", "name": "guild.send_message", "startTimeUnixNano": "0", "endTimeUnixNano": "4000000"},
                {"spanId": "02", "parentSpanId": "01", "name": "p2p.gossip.publish", "startTimeUnixNano": "100", "endTimeUnixNano": "3000100"}
             ]}]},
            {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "edge-node-2"}}]},
             "scopeSpans": [{"spans": [
                {"spanId": "03", "parentSpanId": "02", "name": "p2p.message.task_request", "startTimeUnixNano": 200, "endTimeUnixNano": 1000200},
                {"spanId": "04", "parentSpanId": "03", "name": "execution.wasm.compile", "startTimeUnixNano": 300, "endTimeUnixNano": 180000300,
                 "attributes": [{"key": "cache.hit", "value": {"boolValue": false}}],
                 "status": {"code": 2, "message": "boom"}}
             ]}]}
        ]});
        let expected = [
            "guild.send_message [4.00ms] @ edge-node-1",
            "└─ p2p.gossip.publish [3.00ms]",
            "   └─ p2p.message.task_request [1.00ms] @ edge-node-2",
            "      └─ execution.wasm.compile [180ms] (cache.hit=false) ERROR boom",
        ]
        .join("\n")
            + "\n";
        assert_eq!(render(&t), expected);
    }
}
