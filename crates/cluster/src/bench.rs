//! `zerostate bench tasks`: tasks across three node processes on loopback — a ledger node,
//! a requester and an executor — timed from submission to paid, with tracing off, at 10 %
//! and at 100 % sampling, interleaved over rounds in one run; prints the pooled figures,
//! each round's median and spread, whether tracing's cost stands out of that spread, and
//! where a task's time goes (from its spans at 100 %). `zerostate bench ingest`: see
//! [`ingest`]; `zerostate bench idle`: see [`idle`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

mod idle;
mod ingest;
mod phases;

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
    /// The CPU idle nodes spend, as a share of a core, in a guild of many on loopback.
    Idle(idle::IdleArgs),
}

/// `bench tasks`.
#[derive(Debug, Args)]
pub struct TasksArgs {
    /// Tasks measured per sampling setting and round (after 5 unmeasured ones).
    #[arg(long, default_value_t = 100)]
    tasks: usize,
    /// Rounds: the settings run in turn this many times, each on a fresh network.
    ///
    /// So that no setting always runs first; the table pools every round, and the spread
    /// between rounds says whether tracing's cost can be told from the machine's noise.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Where the processes keep their data and logs [default: a temporary directory].
    #[arg(long = "data-dir", visible_alias = "data", value_name = "DIR")]
    data: Option<PathBuf>,
    /// The requester's `[tasks] verify_share`: the share of receipts it reruns, 0 to 1.
    ///
    /// It reruns every receipt before paying until one matches, whatever the share but 0.
    #[arg(long, value_name = "SHARE", default_value_t = 0.1)]
    verify_share: f64,
    /// Executors in the guild, each its own process.
    #[arg(long, value_name = "N", default_value_t = 3)]
    executors: usize,
    /// Tasks the requester has under way at once: each one ended starts the next.
    #[arg(long = "in-flight", value_name = "N", default_value_t = 1)]
    in_flight: usize,
    /// How long an executor's standing offer stands (0: an offer round per task).
    ///
    /// The executors' `[tasks] standing_offer_ms`: a delivered task's answer carries an
    /// offer for the requester's next task, taken without announcing it.
    #[arg(long = "standing-offer-ms", value_name = "MS", default_value_t = 1000)]
    standing_offer_ms: u64,
}

impl BenchCommand {
    /// Runs the benchmark.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Self::Tasks(args) => args.run(),
            Self::Ingest(args) => args.run(),
            Self::Idle(args) => args.run(),
        }
    }
}

/// One sampling setting's measurements, pooled over rounds, and each round's.
struct Figures {
    label: &'static str,
    latencies_ms: Vec<f64>,
    elapsed: Duration,
    /// Each round's tasks per second and p50 (ms).
    rounds: Vec<(f64, f64)>,
    /// Each measured task's phases (at 100 % sampling).
    phases: Vec<phases::Phases>,
}

impl Figures {
    fn per_second(&self) -> f64 {
        self.latencies_ms.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile(&self, q: f64) -> f64 {
        quantile(&mut self.latencies_ms.clone(), q)
    }

    /// The median, least and most of a figure over the rounds.
    fn spread(&self, figure: impl Fn(&(f64, f64)) -> f64) -> (f64, f64, f64) {
        let mut v: Vec<f64> = self.rounds.iter().map(figure).collect();
        let median = quantile(&mut v, 0.5);
        (median, v[0], v[v.len() - 1])
    }
}

/// One round of one setting.
struct Round {
    latencies_ms: Vec<f64>,
    elapsed: Duration,
    phases: Vec<phases::Phases>,
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
        if !(1..=16).contains(&self.executors) {
            anyhow::bail!("--executors {} must be between 1 and 16", self.executors);
        }
        if !(1..=64).contains(&self.in_flight) {
            anyhow::bail!("--in-flight {} must be between 1 and 64", self.in_flight);
        }
        if self.standing_offer_ms > 60_000 {
            anyhow::bail!(
                "--standing-offer-ms {} must be at most 60000",
                self.standing_offer_ms
            );
        }
        println!(
            "one requester, {} executor(s), {} task(s) in flight, standing offers {}",
            self.executors,
            self.in_flight,
            if self.standing_offer_ms == 0 {
                "off".to_owned()
            } else {
                format!("for {} ms", self.standing_offer_ms)
            }
        );
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
                rounds: Vec::new(),
                phases: Vec::new(),
            })
            .collect();
        for round in 0..self.rounds.max(1) {
            for (i, (label, sampler)) in settings.iter().enumerate() {
                let dir = base.join(format!("{}-{round}", label.replace([' ', '%'], "")));
                let mut round = measure(&dir, *sampler, &self)?;
                let row = &mut rows[i];
                let per_second = round.latencies_ms.len() as f64 / round.elapsed.as_secs_f64();
                row.rounds
                    .push((per_second, quantile(&mut round.latencies_ms, 0.5)));
                row.latencies_ms.extend(round.latencies_ms);
                row.elapsed += round.elapsed;
                row.phases.extend(round.phases);
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
        print_rounds(&rows);
        print_phases(&rows[rows.len() - 1]);
        if self.data.is_none() {
            let _ = std::fs::remove_dir_all(&base);
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Each setting's median over the rounds with the least and most, and whether 100 %
/// sampling differs from tracing off by more than the rounds disagree: the settings run
/// side by side in each round, so each round gives one ratio, and a difference the bench
/// can tell is one of the same sign in every round.
fn print_rounds(rows: &[Figures]) {
    println!();
    println!(
        "{:<15} {:>26} {:>26}",
        "per round", "tasks/s median [min–max]", "p50 ms median [min–max]"
    );
    for r in rows {
        let (t, t_lo, t_hi) = r.spread(|x| x.0);
        let (p, p_lo, p_hi) = r.spread(|x| x.1);
        println!(
            "{:<15} {:>26} {:>26}",
            r.label,
            format!("{t:.1} [{t_lo:.1}–{t_hi:.1}]"),
            format!("{p:.2} [{p_lo:.2}–{p_hi:.2}]")
        );
    }
    let (off, full) = (&rows[0], &rows[rows.len() - 1]);
    let mut ratios: Vec<f64> = off
        .rounds
        .iter()
        .zip(&full.rounds)
        .map(|(o, f)| (f.0 / o.0 - 1.0) * 100.0)
        .collect();
    let median = quantile(&mut ratios, 0.5);
    let (lo, hi) = (ratios[0], ratios[ratios.len() - 1]);
    let verdict = if ratios.len() < 3 {
        "too few rounds to tell (--rounds 3 at least)".to_owned()
    } else if lo > 0.0 || hi < 0.0 {
        format!(
            "the difference is larger than the spread: {} in every one of {} rounds",
            if hi < 0.0 { "slower" } else { "faster" },
            ratios.len()
        )
    } else {
        "the bench cannot tell them apart: the rounds disagree in sign, so the cost of \
         tracing is within this machine's noise between rounds"
            .to_owned()
    };
    println!(
        "{} vs {}: {median:+.1} % tasks/s (median of the rounds' ratios, {lo:+.1} % to \
         {hi:+.1} %); {verdict}",
        full.label, off.label
    );
}

/// Where a task's time goes, from the requester's spans of each measured task at 100 %
/// sampling: each phase's median and 95th percentile.
fn print_phases(full: &Figures) {
    if full.phases.is_empty() {
        return;
    }
    println!();
    let standing = full.phases.iter().filter(|p| !p.announced).count();
    println!(
        "where a task's time goes ({}, the requester's spans of {} tasks, {standing} of them \
         handed over on a standing offer, unannounced):",
        full.label,
        full.phases.len()
    );
    println!("{:<15} {:>9} {:>9}", "phase", "p50 ms", "p95 ms");
    let names = phases::PHASES
        .iter()
        .chain(&["submit → checked", "submit → paid"]);
    for (i, name) in names.enumerate() {
        let mut v: Vec<f64> = full.phases.iter().map(|p| p.ms[i]).collect();
        let (p50, p95) = (quantile(&mut v, 0.5), quantile(&mut v, 0.95));
        println!("{name:<15} {p50:>9.2} {p95:>9.2}");
    }
}

/// One round of one setting: a ledger node (the coordinator, running no tasks), the
/// executors and a requester, then five tasks one after another to warm up, then
/// `args.tasks`, `args.in_flight` at a time.
fn measure(dir: &Path, sampler: Option<&str>, args: &TasksArgs) -> anyhow::Result<Round> {
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
        format!(
            "[tasks]\noffer_grace_ms = 0\nverify_share = {:?}\nstanding_offer_ms = {}\n",
            args.verify_share, args.standing_offer_ms
        ),
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
        members: (1..=args.executors)
            .map(|n| member(&format!("executor-{n}")))
            .chain([member("requester")])
            .collect(),
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
        for _ in 0..WARM_UP {
            run_paid(&requester).await?;
        }
        // Each worker runs tasks one after another until `args.tasks` were started.
        let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let clock = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..args.in_flight {
            let (started, requester, count) = (started.clone(), requester.clone(), args.tasks);
            workers.spawn(async move {
                let mut latencies = Vec::new();
                while started.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                    latencies.push(run_paid(&requester).await?);
                }
                anyhow::Ok(latencies)
            });
        }
        let mut latencies = Vec::new();
        while let Some(worker) = workers.join_next().await {
            latencies.extend(worker??);
        }
        anyhow::Ok((latencies, clock.elapsed()))
    });
    // Stopped, the nodes have sent every span; the phases come from the collector.
    cluster.stop(STOP_GRACE);
    let phases = match (&collector, sampler) {
        (Some(c), Some("1.0")) => runtime.block_on(phases::read(&c.ui, "requester", WARM_UP)),
        _ => Ok(Vec::new()),
    };
    stop_all(collector.into_iter().map(|c| c.child).collect(), STOP_GRACE);
    let (latencies_ms, elapsed) = result?;
    Ok(Round {
        latencies_ms,
        elapsed,
        phases: phases.context("reading the tasks' traces back from the collector")?,
    })
}

/// Tasks run first in each round and not measured.
const WARM_UP: usize = 5;

/// How long the processes have to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs one task and checks that it succeeded and was paid; its duration, milliseconds.
async fn run_paid(node: &NodeClient) -> anyhow::Result<f64> {
    let record = run_one(node).await?;
    let paid = record.payment.as_ref().is_some_and(|p| p.status == "paid");
    if record.state != TaskState::Succeeded || !paid {
        bail!("a task was not run and paid: {record:?}");
    }
    Ok(record.duration_ms.unwrap_or(0.0))
}

/// Submits a tiny built-in task and waits for its final record.
async fn run_one(node: &NodeClient) -> anyhow::Result<TaskRecord> {
    node.run_task(
        &serde_json::json!({ "module": "builtin:crc32", "input": "zerostate" }),
        Duration::from_secs(30),
    )
    .await
}
