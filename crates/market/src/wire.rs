//! What requesters and executors send each other: JSON in p2p envelopes.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zerostate_execution::{Limits, MAX_FILES, Receipt};

/// Guild message type of a task looking for an executor.
pub const TASK_REQUEST: &str = "task_request";
/// Direct request: an executor's offer to the requester.
pub const TASK_OFFER: &str = "task_offer";
/// Direct request: the requester hands the task to the executor it chose.
pub const TASK_RUN: &str = "task_run";
/// Answer to [`TASK_RUN`].
pub const TASK_RESULT: &str = "task_result";
/// Answer to [`TASK_OFFER`].
pub const TASK_OFFER_TAKEN: &str = "task_offer_taken";
/// Direct request to a guild's coordinator: a receipt that did not hold, with what is
/// needed to rerun it.
pub const TASK_EVIDENCE: &str = "task_evidence";
/// Answer to [`TASK_EVIDENCE`]: the evidence held and the executor was removed.
pub const TASK_EVIDENCE_TAKEN: &str = "task_evidence_taken";
/// Direct request, from an executor handed a module too large for one message, to the
/// requester that holds it: one chunk of it ([`ChunkRequest`]).
pub const MODULE_CHUNK: &str = "module_chunk";
/// Answer to [`MODULE_CHUNK`]: the chunk's bytes.
pub const MODULE_CHUNK_DATA: &str = "module_chunk_data";
/// Answer to [`TASK_OFFER`], [`TASK_RUN`] or [`TASK_EVIDENCE`] refusing it; the payload is
/// the reason (text).
pub const ERROR: &str = zerostate_p2p::REFUSAL;
/// How a refusal of [`TASK_RUN`] begins when the executor turned the task down before
/// running any of it (busy, or started again since it offered): the requester asks again
/// without counting an attempt.
pub const DECLINED: &str = "declined before running";

zerostate_p2p::request_types! {
    /// The direct requests of the market.
    pub enum Call {
        /// An executor offers on a task of this node.
        Offer = TASK_OFFER,
        /// A requester hands this node a task it offered on.
        Run = TASK_RUN,
        /// A requester brings this coordinator a receipt that did not hold.
        Evidence = TASK_EVIDENCE,
        /// An executor asks for a chunk of a module this node handed it by chunks.
        Chunk = MODULE_CHUNK,
    }
}

impl Call {
    /// Decodes `payload` as the body this request carries: what its handler reads first
    /// (and what the fuzz target of the market feeds every request type through).
    pub fn decode(self, payload: &[u8]) -> Result<(), String> {
        fn body<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<(), String> {
            serde_json::from_slice::<T>(payload)
                .map(drop)
                .map_err(|e| e.to_string())
        }
        match self {
            Call::Offer => body::<TaskOffer>(payload),
            Call::Run => body::<TaskRun>(payload),
            Call::Evidence => body::<Evidence>(payload),
            Call::Chunk => body::<ChunkRequest>(payload),
        }
    }
}

/// Sealed to the guild: what the task needs, never its input.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// The task's id, chosen by the requester.
    pub task_id: String,
    /// The requester's peer id: where offers go.
    pub requester: String,
    /// SHA-256 of the module, hex.
    pub module_sha256: String,
    /// Fuel the task may use.
    pub fuel: u64,
    /// The most the requester pays per million fuel units.
    pub max_price: u64,
    /// Where the requester can be reached, for members not yet connected to it.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// An executor's offer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskOffer {
    /// The task offered on.
    pub task_id: String,
    /// Its price per million fuel units.
    pub price: u64,
    /// Tasks it is running now.
    pub running: u32,
    /// Whether it holds the module already (the requester then sends only its hash).
    #[serde(default)]
    pub has_module: bool,
    /// Set when this is no offer but why the executor makes none: a requester nobody
    /// offered to says why, and stops waiting once every member has answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declined: Option<Decline>,
    /// The executor's node name (its `service.name`), shown to the requester's user; a
    /// claim nobody checks, kept only when [`display_name`] accepts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A peer's claimed name, fit to show: at most 64 characters, each a letter, a digit or
/// one of `-_.`; `None` otherwise.
pub fn display_name(name: Option<&str>) -> Option<String> {
    name.filter(|n| {
        !n.is_empty()
            && n.chars().count() <= 64
            && n.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c))
    })
    .map(str::to_owned)
}

/// Why an executor makes no offer on a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decline {
    /// Its price (the offer's `price`) is above the task's `max_price`.
    Price,
    /// It runs as many tasks as it takes (the offer's `running`).
    Busy,
    /// The requester has not paid for as many of its delivered tasks as it gives credit.
    Unpaid,
}

/// The module of a task to run: a built-in by name, or the bytes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ModuleSource {
    /// A built-in task (`zerostate task builtins`).
    Builtin(String),
    /// WebAssembly (binary or text), base64.
    Base64(String),
    /// A module the receiver holds, by its SHA-256 (hex).
    Sha256(String),
    /// A module too large to travel with the task: the receiver fetches its chunks from
    /// the sender ([`MODULE_CHUNK`]), each checked against its hash here, the whole
    /// against `sha256`.
    Chunked(Chunked),
}

/// Bytes of a module that travel with the task at most; a larger one travels by chunks.
pub const INLINE_MODULE_BYTES: usize = 512 << 10;
/// Bytes of the input, or of one input file, that travel with the task at most; a larger
/// one travels by chunks, as a large module does.
pub const INLINE_BLOB_BYTES: usize = 64 << 10;
/// Bytes of input and input files that travel with the task at most, together.
pub const INLINE_INPUT_BYTES: usize = 512 << 10;
/// Bytes of one chunk (the last may be shorter).
pub const CHUNK_BYTES: usize = 256 << 10;

/// A module (or an input, or an input file) sent by chunks: its hash, size, and the hash
/// of each chunk in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunked {
    /// SHA-256 of the whole module, hex.
    pub sha256: String,
    /// Its size, bytes.
    pub size: u64,
    /// SHA-256 of each [`CHUNK_BYTES`] chunk, hex, in order.
    pub chunks: Vec<String>,
}

impl Chunked {
    /// The chunk list of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            sha256: hex::encode(zerostate_execution::sha256(bytes)),
            size: bytes.len() as u64,
            chunks: bytes
                .chunks(CHUNK_BYTES)
                .map(|c| hex::encode(zerostate_execution::sha256(c)))
                .collect(),
        }
    }

    /// Why this list cannot describe a module of at most `max` bytes, if it cannot: the
    /// count of chunks must be what the size makes.
    pub fn problem(&self, max: u64) -> Option<String> {
        if self.size == 0 || self.size > max {
            return Some(format!(
                "a module of {} bytes sent by chunks (at most {max})",
                self.size
            ));
        }
        let count = self.size.div_ceil(CHUNK_BYTES as u64);
        if self.chunks.len() as u64 != count {
            return Some(format!(
                "{} chunk hashes for a module of {} bytes, which has {count}",
                self.chunks.len(),
                self.size
            ));
        }
        None
    }

    /// The size chunk `index` must have.
    pub fn chunk_size(&self, index: usize) -> u64 {
        let start = (index * CHUNK_BYTES) as u64;
        self.size.saturating_sub(start).min(CHUNK_BYTES as u64)
    }
}

/// One chunk of a module, asked for by its module's hash and its place.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkRequest {
    /// SHA-256 of the module, hex.
    pub sha256: String,
    /// Which chunk, from 0.
    pub index: u32,
}

/// Files by name (a relative path), each base64, as tasks carry them.
pub type Files = BTreeMap<String, String>;

/// `files` as they travel.
pub fn encode_files(files: &BTreeMap<String, Vec<u8>>) -> Files {
    files
        .iter()
        .map(|(n, b)| (n.clone(), B64.encode(b)))
        .collect()
}

/// `files` as they travelled, at most [`MAX_FILES`] of them; `what` names them in the
/// error.
pub fn decode_files(files: &Files, what: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    if files.len() > MAX_FILES {
        return Err(format!(
            "{} {what}; a task takes at most {MAX_FILES}",
            files.len()
        ));
    }
    files
        .iter()
        .map(|(n, b)| {
            B64.decode(b)
                .map(|bytes| (n.clone(), bytes))
                .map_err(|e| format!("{what}: {n:?} is not base64: {e}"))
        })
        .collect()
}

/// The task itself, to the chosen executor.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRun {
    /// The task's id.
    pub task_id: String,
    /// Its module.
    pub module: ModuleSource,
    /// The input, base64.
    pub input: String,
    /// The limits it runs under.
    pub limits: Limits,
    /// The program's arguments (after its name), at most
    /// [`zerostate_execution::MAX_ARGS`] of [`zerostate_execution::MAX_ARG_BYTES`]
    /// together; absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The function to call, when not `_start` (nor a built-in's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// The environment, each `KEY=VALUE`, bounded as the arguments are; absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Input files, readable under `/input`; absent when none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: Files,
    /// The input, when it travels by chunks (`input` is then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_chunked: Option<Chunked>,
    /// Input files that travel by chunks (more than [`INLINE_BLOB_BYTES`] each).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub file_chunks: BTreeMap<String, Chunked>,
    /// Whether the task has a writable `/output` whose files come back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_files: bool,
    /// The requester's channel to the executor (hex) that holds the task's most expensive
    /// bill, locked on the ledger; absent when the requester has no ledger.
    #[serde(default)]
    pub channel: Option<String>,
}

/// The executor's answer: the output and the signed receipt.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskResult {
    /// The output, base64.
    pub output: String,
    /// The executor's signed receipt.
    pub receipt: Receipt,
    /// The task's exit code.
    pub exit_code: i32,
    /// What the program wrote to stderr (the first 64 KiB), base64; absent when nothing.
    /// Not signed: a diagnostic for the task's author, never checked or paid for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr: String,
    /// The files it left in `/output`; absent when none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: Files,
    /// The executor's standing offer for the requester's next task, when it makes one:
    /// absent when it makes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standing: Option<StandingOffer>,
}

/// An executor's offer to take the requester's next task without an offer round: at this
/// price, handed over within this long. A promise the executor keeps for itself: it
/// remembers what it gave, and a hand-over on it is checked as one on an offer taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandingOffer {
    /// Its price per million fuel units.
    pub price: u64,
    /// How long it stands from the answer that carries it, milliseconds.
    pub valid_ms: u64,
}

/// Evidence against an executor: its signed receipt, and the module and input it names, so
/// that anyone can run the task again and compare.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// The guild the executor is a member of.
    pub guild: String,
    /// The executor's signed receipt.
    pub receipt: Receipt,
    /// The module: a built-in by name, or the bytes.
    pub module: ModuleSource,
    /// The input, base64.
    pub input: String,
    /// The input files; absent when none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: Files,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_decodes_its_own_body_and_no_other() {
        let offer = serde_json::to_vec(&TaskOffer {
            task_id: "t".into(),
            price: 1,
            running: 0,
            has_module: false,
            declined: None,
            name: None,
        })
        .expect("json");
        let chunk = serde_json::to_vec(&ChunkRequest {
            sha256: "00".into(),
            index: 0,
        })
        .expect("json");
        assert!(Call::Offer.decode(&offer).is_ok());
        assert!(Call::Chunk.decode(&chunk).is_ok());
        for call in [Call::Run, Call::Evidence, Call::Chunk] {
            assert!(call.decode(&offer).is_err(), "{call:?}");
        }
        assert!(Call::Offer.decode(b"\xff").is_err());
    }
}
