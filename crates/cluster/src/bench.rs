//! `zerostate bench tasks`: tasks across three node processes on loopback — a ledger node,
//! a requester and an executor — timed from submission to paid, with tracing off, at 10 %
//! and at 100 % sampling, in one run; prints a table. `zerostate bench ingest`: see
//! [`ingest`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

mod ingest;

use zerostate_market::{TaskRecord, TaskState};
use zerostate_node::client::NodeClient;
use zerostate_node::process::stop_all;

use crate::harness::{Cluster, Launcher, Member, Spec};

/// Measure the system.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Tasks per second and latency from submission to paid, across three processes.
    Tasks(TasksArgs),
    /// Spans per second a collector process takes over OTLP/HTTP, with random ids, and the
    /// bytes it stores per span.
    Ingest(ingest::IngestArgs),
}

/// `bench tasks`.
#[derive(Debug, Args)]
pub struct TasksArgs {
    /// Tasks measured per sampling setting and round (after 5 unmeasured ones).
    #[arg(long, default_value_t = 100)]
    tasks: usize,
    /// Rounds: the settings run in turn this many times, each on a fresh network.
    ///
    /// So that no setting always runs first; the figures pool every round.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Where the processes keep their data and logs [default: a temporary directory].
    #[arg(long = "data-dir", visible_alias = "data", value_name = "DIR")]
    data: Option<PathBuf>,
    /// The requester's `[tasks] verify_share`: the share of receipts it reruns, 0 to 1.
    ///
    /// It reruns every receipt before paying until one matches, whatever the share but 0.
    #[arg(long, value_name = "SHARE", default_value_t = 0.1)]
    verify_share: f64,
}

impl BenchCommand {
    /// Runs the benchmark.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Self::Tasks(args) => args.run(),
            Self::Ingest(args) => args.run(),
        }
    }
}

/// One sampling setting's measurements, pooled over rounds.
struct Figures {
    label: &'static str,
    latencies_ms: Vec<f64>,
    elapsed: Duration,
}

impl Figures {
    fn per_second(&self) -> f64 {
        self.latencies_ms.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile(&self, q: f64) -> f64 {
        quantile(&mut self.latencies_ms.clone(), q)
    }
}

/// The `q` quantile (0 to 1) of `values`, nearest rank; 0 for none. Sorts `values`.
pub(crate) fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values
        .get(((values.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

impl TasksArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        if !(0.0..=1.0).contains(&self.verify_share) {
            anyhow::bail!(
                "--verify-share {} must be between 0 and 1",
                self.verify_share
            );
        }
        let base = match &self.data {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("zerostate-bench-{}", std::process::id())),
        };
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let settings = [
            ("tracing off", None),
            ("10 % sampled", Some("0.1")),
            ("100 % sampled", Some("1.0")),
        ];
        let mut rows: Vec<Figures> = settings
            .iter()
            .map(|(label, _)| Figures {
                label,
                latencies_ms: Vec::new(),
                elapsed: Duration::ZERO,
            })
            .collect();
        for round in 0..self.rounds.max(1) {
            for (i, (label, sampler)) in settings.iter().enumerate() {
                let dir = base.join(format!("{}-{round}", label.replace([' ', '%'], "")));
                let (latencies, elapsed) = measure(&dir, *sampler, self.tasks, self.verify_share)?;
                rows[i].latencies_ms.extend(latencies);
                rows[i].elapsed += elapsed;
            }
        }
        let off = rows[0].per_second();
        println!(
            "{:<15} {:>7} {:>10} {:>9} {:>9} {:>14}",
            "setting", "tasks", "tasks/s", "p50 ms", "p95 ms", "vs tracing off"
        );
        for r in &rows {
            println!(
                "{:<15} {:>7} {:>10.1} {:>9.2} {:>9.2} {:>13.1}%",
                r.label,
                r.latencies_ms.len(),
                r.per_second(),
                r.quantile(0.5),
                r.quantile(0.95),
                (r.per_second() / off - 1.0) * 100.0
            );
        }
        if self.data.is_none() {
            let _ = std::fs::remove_dir_all(&base);
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// One round of one setting: a ledger node (the coordinator, running no tasks), an
/// executor and a requester, then `count` tasks (after five to warm up) one after another.
fn measure(
    dir: &Path,
    sampler: Option<&str>,
    count: usize,
    verify_share: f64,
) -> anyhow::Result<(Vec<f64>, Duration)> {
    let _ = std::fs::remove_dir_all(dir);
    let s = |v: &str| v.to_owned();
    let launcher = Launcher::this_binary(dir)?;
    // With a sampler, every node exports to the collector sampling that ratio; without,
    // none exports, whatever this process's environment says.
    let (collector, launcher) = match sampler {
        Some(ratio) => {
            let collector = launcher.collector("127.0.0.1:0", "127.0.0.1:0", &[])?;
            let launcher = launcher
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", Some(&collector.otlp))
                .env("OTEL_TRACES_SAMPLER", Some("parentbased_traceidratio"))
                .env("OTEL_TRACES_SAMPLER_ARG", Some(ratio));
            (Some(collector), launcher)
        }
        None => (None, launcher.env("OTEL_EXPORTER_OTLP_ENDPOINT", None)),
    };
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!("[tasks]\noffer_grace_ms = 0\nverify_share = {verify_share:?}\n"),
    )?;
    let ledger_config = dir.join("ledger.toml");
    std::fs::write(&ledger_config, "[tasks]\nexecute = false\n")?;
    let member = |name: &str| Member::new(name, &[s("--config"), config.display().to_string()]);
    let spec = Spec {
        guild: s("bench"),
        coordinator: Member::new(
            "ledger",
            &[
                s("--role"),
                s("bootnode"),
                s("--config"),
                ledger_config.display().to_string(),
            ],
        ),
        ledger: true,
        members: vec![member("executor"), member("requester")],
        faucet: Some(1_000_000_000),
        chain: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cluster = Cluster::start(&launcher, &spec, &runtime)?;
    let requester = cluster.node("requester")?.api.clone();
    let result = runtime.block_on(async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut latencies = Vec::new();
        let mut measured = Duration::ZERO;
        for i in 0..count + 5 {
            let started = Instant::now();
            let record = run_one(&requester).await?;
            let paid = record.payment.as_ref().is_some_and(|p| p.status == "paid");
            if record.state != TaskState::Succeeded || !paid {
                bail!("a task was not run and paid: {record:?}");
            }
            if i >= 5 {
                measured += started.elapsed();
                latencies.push(record.duration_ms.unwrap_or(0.0));
            }
        }
        Ok((latencies, measured))
    });
    cluster.stop(STOP_GRACE);
    stop_all(collector.into_iter().map(|c| c.child).collect(), STOP_GRACE);
    result
}

/// How long the processes have to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Submits a tiny built-in task and waits for its final record.
async fn run_one(node: &NodeClient) -> anyhow::Result<TaskRecord> {
    node.run_task(
        &serde_json::json!({ "module": "builtin:crc32", "input": "zerostate" }),
        Duration::from_micros(500),
        Duration::from_secs(30),
    )
    .await
}
