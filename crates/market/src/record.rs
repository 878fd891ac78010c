//! What a node knows of a task it submitted, and the modules it holds by hash.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zerostate_execution::Receipt;

use crate::wire;

/// Where a task is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Accepted, not yet announced.
    Queued,
    /// Announced to the guild; collecting offers.
    Offered,
    /// Handed to an executor.
    Running,
    /// Ran to the end and the receipt verified.
    Succeeded,
    /// Failed: inside its sandbox (a trap, a limit: a result, with a receipt), or because
    /// no executor delivered (no receipt; every attempt's reason is in `attempts`).
    Failed,
}

impl TaskState {
    /// Whether the task has ended (succeeded or failed): its record changes no more but for
    /// a payment that arrives late.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }

    /// Its name, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Offered => "offered",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// One executor's try at a task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attempt {
    /// The executor's peer id.
    pub executor: String,
    /// The name the executor gave itself in its offer (its `service.name`), for display
    /// only: anyone can claim any name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_name: Option<String>,
    /// Its price per million fuel units.
    pub price: u64,
    /// `delivered`, or why not.
    pub outcome: String,
    /// Whether the module was sent (`false`: the executor held it, only its hash went).
    pub module_sent: bool,
    /// Whether it was handed over on the executor's standing offer, without an offer
    /// round (absent when not).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standing_offer: bool,
}

/// Modules this node holds by SHA-256: uploaded to it, or run by it for others. Bounded
/// in count and bytes; the oldest go first.
#[derive(Default)]
pub struct Modules {
    by_hash: HashMap<String, Arc<Vec<u8>>>,
    order: VecDeque<String>,
    bytes: usize,
}

/// Modules (and inputs, input files that travel by chunks) kept, at most.
const MODULES_KEPT: usize = 4096;
/// Bytes of modules kept, at most (16 modules of the largest size the engine takes).
const MODULE_BYTES_KEPT: usize = 256 << 20;

impl Modules {
    /// Keeps `bytes`; returns their SHA-256 (hex) and how many older modules went to make
    /// room.
    pub fn put(&mut self, bytes: Vec<u8>) -> (String, u64) {
        let hash = hex::encode(zerostate_execution::sha256(&bytes));
        let size = bytes.len();
        if self.by_hash.insert(hash.clone(), Arc::new(bytes)).is_none() {
            self.order.push_back(hash.clone());
            self.bytes += size;
        }
        let mut evicted = 0;
        while self.order.len() > MODULES_KEPT
            || (self.bytes > MODULE_BYTES_KEPT && self.order.len() > 1)
        {
            if let Some(old) = self.order.pop_front() {
                if let Some(gone) = self.by_hash.remove(&old) {
                    self.bytes -= gone.len();
                }
                evicted += 1;
            }
        }
        (hash, evicted)
    }

    /// The module with this SHA-256 (hex), if held.
    pub fn get(&self, hash: &str) -> Option<Arc<Vec<u8>>> {
        self.by_hash.get(hash).cloned()
    }
}

/// What a node knows of a task it submitted: `GET /v1/tasks/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task's id.
    pub id: String,
    /// The guild it was announced to.
    pub guild: String,
    /// Where it is.
    pub state: TaskState,
    /// The trace it belongs to.
    pub trace_id: String,
    /// The executor it is with, or that delivered it.
    pub executor: Option<String>,
    /// The name that executor gave itself (display only; see [`Attempt::executor_name`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_name: Option<String>,
    /// Every executor it was handed to, in order.
    pub attempts: Vec<Attempt>,
    /// The verified receipt.
    pub receipt: Option<Receipt>,
    /// The output, base64 (empty for a failed run).
    pub output: Option<String>,
    /// The files the task left in `/output`, each base64 (none for a failed run, or a task
    /// without an output directory).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub output_files: wire::Files,
    /// The program's own exit code (0 when it returned), once a receipt came back.
    pub exit_code: Option<i32>,
    /// What the program wrote to stderr (the first 64 KiB), base64, as the executor said:
    /// not covered by the receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// The payment for the fuel the receipt states, once the receipt verified.
    pub payment: Option<zerostate_payment_protocol::PaymentRecord>,
    /// When it was submitted, unix milliseconds.
    pub submitted_at: u64,
    /// From submission to its final state (paid included), milliseconds.
    pub duration_ms: Option<f64>,
}

/// Task records kept for the API; the oldest go first.
pub(crate) const RECORDS_KEPT: usize = 1000;
/// Bytes of task records kept for the API, at most (outputs are most of it: a task may
/// return up to its output limit).
pub(crate) const RECORD_BYTES_KEPT: usize = 64 << 20;

/// About what a record holds in memory: its output, error and attempts, and the rest.
pub(crate) fn weight(r: &TaskRecord) -> usize {
    2048 + r.output.as_ref().map_or(0, String::len)
        + r.output_files
            .iter()
            .map(|(n, f)| 64 + n.len() + f.len())
            .sum::<usize>()
        + r.error.as_ref().map_or(0, String::len)
        + r.stderr.as_ref().map_or(0, String::len)
        + r.attempts
            .iter()
            .map(|a| 256 + a.outcome.len())
            .sum::<usize>()
}
