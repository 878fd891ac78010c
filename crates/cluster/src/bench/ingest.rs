//! `zerostate bench ingest`: a `zerostate collector` process fed OTLP/HTTP protobuf requests
//! of spans with random W3C ids, as real exporters send them, over several connections;
//! prints what it acknowledged and stored per second, the 503 answers, and the bytes its
//! store takes per span.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use crate::harness::Launcher;
use zerostate_node::process::stop_all;

/// `bench ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Spans sent in all, in requests of `--spans-per-request`, all generated before the
    /// clock starts.
    #[arg(long, default_value_t = 300_000)]
    spans: usize,
    /// Spans in each request (traces of 10 spans over five services).
    #[arg(long, default_value_t = 1_000)]
    spans_per_request: usize,
    /// Connections sending at once.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Where the collector keeps its store and log [default: a temporary directory].
    #[arg(long = "data-dir", visible_alias = "data", value_name = "DIR")]
    data: Option<PathBuf>,
}

const SERVICES: [&str; 5] = [
    "bootnode",
    "relay-node",
    "edge-node-1",
    "edge-node-2",
    "edge-node-3",
];
const NAMES: [&str; 5] = [
    "p2p.message.task_request",
    "guild.receive_message",
    "execution.task",
    "payment.verify",
    "task.attempt",
];

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(b)
}

fn kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

/// One request: `spans` spans in traces of 10, each trace's spans spread over the five
/// services, random trace and span ids, three attributes a span.
fn request(spans: usize, now_ns: u64) -> anyhow::Result<Vec<u8>> {
    let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES.len()];
    let mut made = 0;
    while made < spans {
        let trace: [u8; 16] = random()?;
        let mut parent: Option<[u8; 8]> = None;
        for i in 0..10.min(spans - made) {
            let id: [u8; 8] = random()?;
            let start = now_ns + (made as u64) * 1_000;
            by_service[i % SERVICES.len()].push(Span {
                trace_id: trace.to_vec(),
                span_id: id.to_vec(),
                parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
                name: NAMES[i % NAMES.len()].to_owned(),
                kind: 1,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 250_000,
                attributes: vec![
                    kv("peer.id", format!("12D3KooW{}", hex::encode(&id[..4]))),
                    kv("task.id", hex::encode(&trace[..8])),
                    kv("message.type", "task_request".to_owned()),
                ],
                ..Default::default()
            });
            parent = Some(id);
            made += 1;
        }
    }
    let request = ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .zip(SERVICES)
            .map(|(spans, service)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", service.to_owned())],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    Ok(request.encode_to_vec())
}

impl IngestArgs {
    /// Runs the benchmark and prints its table.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let dir = match &self.data {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("zerostate-ingest-{}", std::process::id())),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let per = self.spans_per_request.clamp(10, 100_000);
        let count = self.spans.div_ceil(per).max(1);
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        eprintln!("ingest: generating {count} requests of {per} spans");
        let bodies: Vec<Vec<u8>> = (0..count)
            .map(|i| request(per, now_ns + (i as u64) * 1_000_000_000))
            .collect::<anyhow::Result<_>>()?;
        let wire: usize = bodies.iter().map(Vec::len).sum();
        let collector =
            Launcher::this_binary(&dir)?.collector("127.0.0.1:0", "127.0.0.1:0", &[])?;
        let (otlp, ui) = (collector.otlp.clone(), collector.ui.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let result = runtime.block_on(send(bodies, &otlp, &ui, self.connections.max(1)));
        drop(runtime);
        let _ = stop_all(vec![collector.child], Duration::from_secs(15));
        // What is on disk once the collector has stopped: every acknowledged span must be.
        // (`zerostate collector --data-dir D` keeps its store in D/traces.)
        let store = dir.join("traces");
        let on_disk = zerostate_collector::Store::reader(&store)
            .and_then(|s| s.span_count())
            .with_context(|| format!("reading the store in {}", store.display()));
        if self.data.is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let r = result?;
        let on_disk = on_disk?;
        let spans = (count * per) as f64;
        let lost = ((count * per) as u64).saturating_sub(on_disk);
        println!(
            "{:>9} {:>9} {:>16} {:>14} {:>9} {:>9} {:>14} {:>14}",
            "spans",
            "seconds",
            "acknowledged/s",
            "stored/s",
            "503s",
            "lost",
            "wire B/span",
            "store B/span"
        );
        println!(
            "{:>9} {:>9.2} {:>16.0} {:>14.0} {:>9} {:>9} {:>14.1} {:>14.1}",
            count * per,
            r.acknowledged.as_secs_f64(),
            spans / r.acknowledged.as_secs_f64(),
            r.stored_spans as f64 / r.stored.as_secs_f64(),
            r.refused,
            lost,
            wire as f64 / spans,
            r.store_bytes as f64 / r.stored_spans.max(1) as f64,
        );
        if lost > 0 {
            eprintln!(
                "ingest: {lost} acknowledged spans are not in the store ({on_disk} of {} on disk)",
                count * per
            );
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    }
}

struct Run {
    /// Until the last request was answered 200.
    acknowledged: Duration,
    /// Until the collector counted every span stored.
    stored: Duration,
    stored_spans: u64,
    /// 503 answers (each request was sent again after a pause).
    refused: u64,
    store_bytes: u64,
}

async fn send(
    bodies: Vec<Vec<u8>>,
    otlp: &str,
    ui: &str,
    connections: usize,
) -> anyhow::Result<Run> {
    // Counted before the clock starts: decoding a million spans here takes a while.
    let expected = bodies
        .iter()
        .map(|b| {
            ExportTraceServiceRequest::decode(&b[..])
                .map(|r| {
                    r.resource_spans
                        .iter()
                        .flat_map(|rs| &rs.scope_spans)
                        .map(|s| s.spans.len() as u64)
                        .sum::<u64>()
                })
                .unwrap_or(0)
        })
        .sum::<u64>();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let url = format!("{otlp}/v1/traces");
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..connections {
        let (bodies, next, refused, url) =
            (bodies.clone(), next.clone(), refused.clone(), url.clone());
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                loop {
                    let answer = client
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .body(body.clone())
                        .send()
                        .await
                        .context("posting spans")?;
                    match answer.status().as_u16() {
                        200 => break,
                        503 | 429 => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        other => anyhow::bail!("the collector answered {other}"),
                    }
                }
            }
        }));
    }
    for s in senders {
        s.await.context("a sender stopped")??;
    }
    let acknowledged = started.elapsed();
    let client = reqwest::Client::new();
    let (stored, stored_spans) = loop {
        let stats: serde_json::Value = client
            .get(format!("{ui}/api/zerostate/stats"))
            .send()
            .await?
            .json()
            .await?;
        let n = stats["spans_stored"].as_u64().unwrap_or(0);
        if n >= expected || started.elapsed() > acknowledged + Duration::from_secs(120) {
            break (started.elapsed(), n);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let metrics = client
        .get(format!("{ui}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let store_bytes = metrics
        .lines()
        .find_map(|l| l.strip_prefix("collector_stored_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok(Run {
        acknowledged,
        stored,
        stored_spans,
        refused: refused.load(Ordering::Relaxed),
        store_bytes,
    })
}
