//! How tasks behave on a node: the `[tasks]` section.

use serde::{Deserialize, Serialize};

/// How tasks behave on this node (`[tasks]`). Every field says its default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskSettings {
    /// The longest a requester collects offers before it picks, milliseconds; it picks at
    /// once when every other member of the guild has offered. Default 1000.
    pub offer_window_ms: u64,
    /// How long a requester still waits for cheaper offers once the first has arrived,
    /// milliseconds (within the window). Default 20.
    pub offer_grace_ms: u64,
    /// Executors a task is handed to before it fails. Default 3.
    pub max_attempts: u32,
    /// How long past the task's wall-time limit a requester waits for an executor's answer
    /// before the attempt fails as timed out, milliseconds (compiling the module and
    /// carrying it and the answer take time too); the network's request timeout bounds it
    /// too. Default 5000.
    pub timeout_margin_ms: u64,
    /// How long a task waits for a free executor while the guild's executors are busy,
    /// milliseconds: announced again while nobody offers and this node has other tasks under
    /// way, and after a hand-over declined as busy (100 ms times the declines so far later,
    /// at most a second), until this long after the guild was first found busy. Default
    /// 30000: a queue of tasks several times the guild's slots drains in it.
    pub busy_wait_ms: u64,
    /// Tasks this node runs for others at once; more are refused. Default 2.
    pub max_running: u32,
    /// This node's price per million fuel units, as an executor. Default 1.
    pub price: u64,
    /// Whether this node offers to run tasks for its guilds. Default true.
    pub execute: bool,
    /// The share of receipts this node, as a requester, reruns in its own engine before
    /// paying them (a spot check), 0 to 1; every receipt of an executor is checked until
    /// one of them matches (with 0, none is). Default 0.1: a cheater that is honest at
    /// first is caught after ten more tasks on average, and the checks cost this node
    /// about a tenth of the work it pays for.
    pub verify_share: f64,
    /// As an executor: how many delivered tasks a requester may owe for before it gets no
    /// more offers (a task already offered on still runs while it owes one more). Default
    /// 1.
    pub credit: u32,
    /// As an executor: how long the standing offer it gives with each task it delivers
    /// stands, milliseconds: the requester may hand it its next task in that guild without
    /// an offer round (0: it gives none). Default 1000.
    pub standing_offer_ms: u64,
}

impl Default for TaskSettings {
    fn default() -> Self {
        Self {
            offer_window_ms: 1000,
            offer_grace_ms: 20,
            max_attempts: 3,
            timeout_margin_ms: 5000,
            busy_wait_ms: 30_000,
            max_running: 2,
            price: 1,
            execute: true,
            verify_share: 0.1,
            credit: 1,
            standing_offer_ms: 1000,
        }
    }
}

impl TaskSettings {
    /// Checks the settings, naming each one out of range.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if !(10..=60_000).contains(&self.offer_window_ms) {
            problems.push(format!(
                "offer_window_ms = {} must be between 10 and 60000",
                self.offer_window_ms
            ));
        }
        if self.offer_grace_ms > 60_000 {
            problems.push(format!(
                "offer_grace_ms = {} must be at most 60000",
                self.offer_grace_ms
            ));
        }
        if !(1..=20).contains(&self.max_attempts) {
            problems.push(format!(
                "max_attempts = {} must be between 1 and 20",
                self.max_attempts
            ));
        }
        if !(100..=600_000).contains(&self.timeout_margin_ms) {
            problems.push(format!(
                "timeout_margin_ms = {} must be between 100 and 600000",
                self.timeout_margin_ms
            ));
        }
        if self.busy_wait_ms > 600_000 {
            problems.push(format!(
                "busy_wait_ms = {} must be at most 600000",
                self.busy_wait_ms
            ));
        }
        if !(1..=256).contains(&self.max_running) {
            problems.push(format!(
                "max_running = {} must be between 1 and 256",
                self.max_running
            ));
        }
        if !(1..=1000).contains(&self.credit) {
            problems.push(format!(
                "credit = {} must be between 1 and 1000",
                self.credit
            ));
        }
        if self.standing_offer_ms > 60_000 {
            problems.push(format!(
                "standing_offer_ms = {} must be at most 60000",
                self.standing_offer_ms
            ));
        }
        if !(0.0..=1.0).contains(&self.verify_share) {
            problems.push(format!(
                "verify_share = {} must be between 0 and 1",
                self.verify_share
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}
