//! `zerostate bench idle`: what idle nodes cost. A guild of `--nodes` node processes on
//! loopback, exporting their spans to a collector process as users run them, is left
//! alone; each process's CPU time (user and system, all its threads, from
//! `/proc/<pid>/stat`) is read before and after a window, and printed as a share of one
//! core.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use crate::harness::{Cluster, Launcher, Member, Spec};
use zerostate_node::process::stop_all;

/// `bench idle`.
#[derive(Debug, Args)]
pub struct IdleArgs {
    /// Nodes in the guild, the coordinator included (2 to 128).
    #[arg(long, default_value_t = 16)]
    nodes: usize,
    /// Seconds the CPU time is measured over.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds left to settle after the guild formed, before measuring.
    #[arg(long, default_value_t = 5)]
    settle: u64,
    /// Where the processes keep their data and logs [default: a temporary directory].
    #[arg(long = "data-dir", visible_alias = "data", value_name = "DIR")]
    data: Option<PathBuf>,
    /// A node config file every node reads, to measure what its settings cost.
    ///
    /// For instance `[guild] heartbeat_interval_ms = 10000`, `[network] gossip_heartbeat_ms`,
    /// or `[telemetry] enabled = false`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Nodes export no spans (no collector is started).
    #[arg(long)]
    no_tracing: bool,
}

/// A process's CPU time so far (user and system, every thread), in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: fields count after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no ')' in /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are the 14th and 15th fields; the state (3rd) is the first here.
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .context("/proc/<pid>/stat is shorter than expected")?
            .parse()
            .context("a CPU time in /proc/<pid>/stat is not a number")
    };
    Ok(field(14)? + field(15)?)
}

/// Clock ticks a second (`getconf CLK_TCK`; 100 when it cannot say, Linux's USER_HZ).
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

impl IdleArgs {
    /// Runs the benchmark and prints its table.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        if !(2..=128).contains(&self.nodes) {
            anyhow::bail!("--nodes {} must be between 2 and 128", self.nodes);
        }
        if self.seconds == 0 {
            anyhow::bail!("--seconds must be at least 1");
        }
        let base = match &self.data {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("zerostate-idle-{}", std::process::id())),
        };
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let result = self.measure(&base);
        if self.data.is_none() {
            let _ = std::fs::remove_dir_all(&base);
        }
        result.map(|()| ExitCode::SUCCESS)
    }

    fn measure(&self, dir: &Path) -> anyhow::Result<()> {
        let launcher = Launcher::this_binary(dir)?;
        let (collector, launcher) = if self.no_tracing {
            (None, launcher.env("OTEL_EXPORTER_OTLP_ENDPOINT", None))
        } else {
            let collector = launcher.collector("127.0.0.1:0", "127.0.0.1:0", &[])?;
            let launcher = launcher.env("OTEL_EXPORTER_OTLP_ENDPOINT", Some(&collector.otlp));
            (Some(collector), launcher)
        };
        let args: Vec<String> = match &self.config {
            Some(file) => {
                let file = std::path::absolute(file)
                    .with_context(|| format!("the config file {}", file.display()))?;
                vec!["--config".to_owned(), file.display().to_string()]
            }
            None => Vec::new(),
        };
        let spec = Spec {
            guild: "idle".to_owned(),
            coordinator: Member::new("node-0", &args),
            ledger: false,
            members: (1..self.nodes)
                .map(|i| Member::new(&format!("node-{i}"), &args))
                .collect(),
            faucet: None,
            chain: None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let cluster = match Cluster::start(&launcher, &spec, &runtime) {
            Ok(c) => c,
            Err(e) => {
                stop_all(collector.into_iter().map(|c| c.child).collect(), STOP_GRACE);
                return Err(e);
            }
        };
        std::thread::sleep(Duration::from_secs(self.settle));
        let mut pids: Vec<(String, u32)> = cluster
            .nodes
            .iter()
            .map(|n| (n.name().to_owned(), n.child.pid()))
            .collect();
        if let Some(c) = &collector {
            pids.push(("collector".to_owned(), c.child.pid()));
        }
        let read =
            || -> anyhow::Result<Vec<u64>> { pids.iter().map(|(_, p)| cpu_ticks(*p)).collect() };
        let before = read();
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs(self.seconds));
        let after = read();
        let window = started.elapsed().as_secs_f64();
        cluster.stop(STOP_GRACE);
        let collector_share = collector.is_some();
        stop_all(collector.into_iter().map(|c| c.child).collect(), STOP_GRACE);
        let (before, after) = (before?, after?);
        let per_second = ticks_per_second();
        let shares: Vec<f64> = before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.saturating_sub(*b) as f64 / per_second / window * 100.0)
            .collect();
        println!(
            "{} idle nodes in one guild on loopback, {}; CPU over {window:.1} s, after {} s to \
             settle:",
            self.nodes,
            if self.no_tracing {
                "exporting no spans"
            } else {
                "exporting to a collector"
            },
            self.settle
        );
        println!("{:<12} {:>12}", "process", "% of a core");
        for ((name, _), share) in pids.iter().zip(&shares) {
            println!("{name:<12} {share:>12.2}");
        }
        let mut nodes = shares[..self.nodes].to_vec();
        let sum: f64 = nodes.iter().sum();
        let median = super::quantile(&mut nodes, 0.5);
        let most = nodes.last().copied().unwrap_or(0.0);
        let collector = if collector_share {
            format!("; the collector {:.2} %", shares[self.nodes])
        } else {
            String::new()
        };
        println!(
            "an idle node: median {median:.2} %, most {most:.2} % of a core; all {} nodes \
             {sum:.1} %{collector} (one tick is {:.2} % over this window)",
            self.nodes,
            100.0 / per_second / window
        );
        Ok(())
    }
}

/// How long the processes have to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_spent_cpu_time_and_it_grows() {
        let pid = std::process::id();
        let before = cpu_ticks(pid).expect("readable");
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(100) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(cpu_ticks(pid).expect("readable") > before);
        assert!(cpu_ticks(u32::MAX).is_err());
    }
}
