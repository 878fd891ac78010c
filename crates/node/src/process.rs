//! Running `zerostate` as child processes, for the devnet and for every multi-process test:
//! spawn, wait for the ready line, read later event lines, and stop them all at once
//! (SIGTERM, then SIGKILL after a grace period).
//!
//! A child started here exits on its own when its parent dies (it is told so by
//! [`EXIT_WITH_PARENT_ENV`] and watches its parent process id), so a devnet killed with
//! SIGKILL leaves no node behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Set on a child to make it exit when the process that started it is gone.
pub const EXIT_WITH_PARENT_ENV: &str = "ZEROSTATE_EXIT_WITH_PARENT";

/// How often a child checks that its parent is alive.
const PARENT_CHECK: Duration = Duration::from_millis(500);

/// Completes when the parent process is gone, if [`EXIT_WITH_PARENT_ENV`] is set; never
/// otherwise. A process whose parent dies is given a new one (init or a subreaper), which
/// is how the death is seen.
pub async fn parent_gone() {
    if std::env::var_os(EXIT_WITH_PARENT_ENV).is_none() {
        return std::future::pending().await;
    }
    let parent = std::os::unix::process::parent_id();
    loop {
        tokio::time::sleep(PARENT_CHECK).await;
        if std::os::unix::process::parent_id() != parent {
            return;
        }
    }
}

/// Every stdout line a child wrote, shared with the thread that reads them.
#[derive(Default)]
struct Lines {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

/// A running `zerostate` process.
pub struct Child {
    name: String,
    child: std::process::Child,
    ready: serde_json::Value,
    lines: Arc<Lines>,
    log: PathBuf,
}

impl std::fmt::Debug for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl Child {
    /// Starts `command` (its stderr goes to `log`) and waits up to `timeout` for its first
    /// stdout line, a JSON ready line.
    pub fn spawn(
        name: &str,
        mut command: Command,
        log: &Path,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let stderr =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .env(EXIT_WITH_PARENT_ENV, "1");
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let lines = Arc::new(Lines::default());
        let writer = lines.clone();
        // Every line is kept, and the pipe is drained for the child's whole life so that it
        // never writes into a closed pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut guard = writer.lines.lock().unwrap_or_else(|e| e.into_inner());
                guard.0.push(line);
                writer.changed.notify_all();
            }
            writer.lines.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
            writer.changed.notify_all();
        });
        let mut process = Self {
            name: name.to_owned(),
            child,
            ready: serde_json::Value::Null,
            lines,
            log: log.to_owned(),
        };
        let first = process.wait_line(timeout, |_| true).ok_or_else(|| {
            anyhow::anyhow!(
                "{name} did not start; its log is {}:\n{}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })?;
        process.ready = serde_json::from_str(&first)
            .with_context(|| format!("{name} said {first:?} instead of its ready line"))?;
        Ok(process)
    }

    /// The first line satisfying `wanted`, waiting up to `timeout`.
    fn wait_line(&self, timeout: Duration, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lines.lines.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(line) = guard.0.iter().find(|l| wanted(l)) {
                return Some(line.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if guard.1 {
                return None;
            }
            guard = self
                .lines
                .changed
                .wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The first event line of this kind (`{"event": kind, ...}`), waiting up to `timeout`.
    pub fn event(&self, kind: &str, timeout: Duration) -> Option<serde_json::Value> {
        self.event_of(&[kind], timeout)
    }

    /// The first stdout event of any of `kinds` (`guild_created`, or `guild_resumed` from
    /// a node restarted on its data directory), within `timeout`.
    pub fn event_of(&self, kinds: &[&str], timeout: Duration) -> Option<serde_json::Value> {
        let is = |l: &str| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| kinds.iter().any(|k| v["event"] == *k))
        };
        self.wait_line(timeout, is)
            .and_then(|l| serde_json::from_str(&l).ok())
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ready line it started with.
    pub fn ready(&self) -> &serde_json::Value {
        &self.ready
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file its stderr goes to.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Kills it with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends signal `sig` (`TERM`, `STOP`, `CONT`, ...) to every process in `pids`.
pub fn signal(pids: &[u32], sig: &str) -> anyhow::Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -{sig} {pids:?} failed");
    Ok(())
}

/// Stops every child at once: SIGTERM to all, then SIGKILL to those still running after
/// `grace`. Returns each one's name and how it exited (`None` when it had to be killed).
pub fn stop_all(mut children: Vec<Child>, grace: Duration) -> Vec<(String, Option<ExitStatus>)> {
    let pids: Vec<u32> = children.iter().map(Child::pid).collect();
    let _ = signal(&pids, "TERM");
    let deadline = Instant::now() + grace;
    let mut exits: Vec<Option<ExitStatus>> = vec![None; children.len()];
    while Instant::now() < deadline && exits.iter().any(Option::is_none) {
        for (c, exit) in children.iter_mut().zip(exits.iter_mut()) {
            if exit.is_none() {
                *exit = c.child.try_wait().ok().flatten();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    children
        .iter_mut()
        .zip(exits)
        .map(|(c, exit)| {
            if exit.is_none() {
                c.kill();
            }
            (c.name.clone(), exit)
        })
        .collect()
}
