//! Receipts: what an executor signs for every task it ran, failed runs included.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::manifest::{Limits, sha256};

/// Receipts that name their engine.
const DOMAIN: &[u8] = b"zerostate/receipt/v3\n";
/// Receipts from before the engine was named: still verified, never issued.
const DOMAIN_V2: &[u8] = b"zerostate/receipt/v2\n";

/// A signed statement of what ran, on what, with what result and cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The task.
    pub task_id: String,
    /// SHA-256 of the module, hex.
    pub module_sha256: String,
    /// SHA-256 of the input, hex.
    pub input_sha256: String,
    /// SHA-256 of the output, hex (of nothing, for a failed run).
    pub output_sha256: String,
    /// The function that was called.
    pub entry: String,
    /// The arguments the task was given (after the program name).
    pub args: Vec<String>,
    /// The environment it was given, each `KEY=VALUE`; absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// The hash of its input files ([`crate::tree_sha256`]); absent when it had none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub files_sha256: String,
    /// The hash of the files it left in `/output` ([`crate::tree_sha256`]; of none, for a
    /// run the engine cut short); absent when it had no output directory.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_files_sha256: String,
    /// The limits it ran under.
    pub limits: Limits,
    /// `ok` or `failed`.
    pub status: String,
    /// For a failed run: the error's kind and message.
    pub error: Option<String>,
    /// Fuel consumed.
    pub fuel_consumed: u64,
    /// Peak linear memory, bytes.
    pub peak_memory_bytes: u64,
    /// Wall time of the execution, microseconds.
    pub wall_time_us: u64,
    /// The executor's libp2p peer id.
    pub executor: String,
    /// The trace the execution belongs to, hex (empty when not traced).
    pub trace_id: String,
    /// When the receipt was issued, unix milliseconds.
    pub issued_at: u64,
    /// The engine that ran it: the wasmtime version and a fingerprint of everything that
    /// decides output and fuel ([`crate::Engine::id`]); a rerun under another engine is
    /// not comparable. Empty in receipts issued before engines were named.
    #[serde(default)]
    pub engine: String,
    /// Ed25519 signature over [`Receipt::signing_bytes`], hex.
    pub signature: String,
}

/// Why a receipt does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The executor field is not an ed25519 peer id.
    #[error("executor {0:?} is not an ed25519 peer id")]
    BadExecutor(String),
    /// The signature field is not 64 hex-encoded bytes.
    #[error("signature is not 64 hex-encoded bytes")]
    MalformedSignature,
    /// The signature does not match the receipt's contents and executor.
    #[error("signature does not match: the receipt was altered or not signed by {0}")]
    BadSignature(String),
    /// A hash the verifier can check does not match.
    #[error("{what} SHA-256 does not match the receipt")]
    HashMismatch {
        /// `module`, `input` or `output`.
        what: &'static str,
    },
    /// Not JSON, or not a receipt.
    #[error("not a receipt: {0}")]
    Malformed(String),
}

/// The fields that are signed, in their fixed order.
#[derive(Serialize)]
struct Body<'a> {
    task_id: &'a str,
    module_sha256: &'a str,
    input_sha256: &'a str,
    output_sha256: &'a str,
    entry: &'a str,
    args: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    env: &'a [String],
    #[serde(skip_serializing_if = "str::is_empty")]
    files_sha256: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    output_files_sha256: &'a str,
    limits: &'a Limits,
    status: &'a str,
    error: &'a Option<String>,
    fuel_consumed: u64,
    peak_memory_bytes: u64,
    wall_time_us: u64,
    executor: &'a str,
    trace_id: &'a str,
    issued_at: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    engine: &'a str,
}

impl Receipt {
    /// The canonical bytes signed: a domain tag, then every field but the signature as
    /// compact JSON in declaration order (a receipt that names no engine is one of the
    /// format before, with its own tag).
    pub fn signing_bytes(&self) -> Vec<u8> {
        let body = Body {
            task_id: &self.task_id,
            module_sha256: &self.module_sha256,
            input_sha256: &self.input_sha256,
            output_sha256: &self.output_sha256,
            entry: &self.entry,
            args: &self.args,
            env: &self.env,
            files_sha256: &self.files_sha256,
            output_files_sha256: &self.output_files_sha256,
            limits: &self.limits,
            status: &self.status,
            error: &self.error,
            fuel_consumed: self.fuel_consumed,
            peak_memory_bytes: self.peak_memory_bytes,
            wall_time_us: self.wall_time_us,
            executor: &self.executor,
            trace_id: &self.trace_id,
            issued_at: self.issued_at,
            engine: &self.engine,
        };
        // Serializing plain strings and integers cannot fail.
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let domain = if self.engine.is_empty() {
            DOMAIN_V2
        } else {
            DOMAIN
        };
        [domain, &json].concat()
    }

    /// Signs the receipt with the executor's key, setting `executor` and `signature`.
    pub fn sign(mut self, key: &ExecutorKey) -> Self {
        self.executor = key.peer_id();
        self.signature = hex::encode(key.0.sign(&self.signing_bytes()).to_bytes());
        self
    }

    /// Checks the signature against the executor named in the receipt.
    pub fn verify(&self) -> Result<(), ReceiptError> {
        let key = public_key_of(&self.executor)?;
        let sig: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(ReceiptError::MalformedSignature)?;
        key.verify_strict(
            &self.signing_bytes(),
            &ed25519_dalek::Signature::from_bytes(&sig),
        )
        .map_err(|_| ReceiptError::BadSignature(self.executor.clone()))
    }

    /// Checks the signature and whichever of module, input and output the caller has.
    pub fn verify_with(
        &self,
        module: Option<&[u8]>,
        input: Option<&[u8]>,
        output: Option<&[u8]>,
    ) -> Result<(), ReceiptError> {
        self.verify()?;
        for (what, bytes, stated) in [
            ("module", module, &self.module_sha256),
            ("input", input, &self.input_sha256),
            ("output", output, &self.output_sha256),
        ] {
            if let Some(b) = bytes
                && hex::encode(sha256(b)) != *stated
            {
                return Err(ReceiptError::HashMismatch { what });
            }
        }
        Ok(())
    }

    /// Reads a receipt from JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ReceiptError> {
        serde_json::from_slice(bytes).map_err(|e| ReceiptError::Malformed(e.to_string()))
    }

    /// The receipt as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// An executor's ed25519 key: the same key that makes its libp2p peer id.
pub struct ExecutorKey(SigningKey);

impl std::fmt::Debug for ExecutorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExecutorKey({})", self.peer_id())
    }
}

impl ExecutorKey {
    /// The key for a 32-byte secret seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// A 32-byte secret for `purpose`, derived from the key's secret: SHA-256 of a domain
    /// tag, the purpose and the seed. Used to authenticate what the node writes for itself.
    pub fn derive_secret(&self, purpose: &str) -> [u8; 32] {
        let mut bytes = b"zerostate/derived-secret/v1\n".to_vec();
        bytes.extend_from_slice(purpose.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(self.0.as_bytes());
        sha256(&bytes)
    }

    /// The libp2p peer id of this key (`12D3KooW...`).
    pub fn peer_id(&self) -> String {
        peer_id_of(&self.0.verifying_key().to_bytes())
    }
}

// A libp2p peer id for an ed25519 key is the identity multihash (code 0, length 36) of the
// protobuf `PublicKey { Type = Ed25519 (1), Data = 32 bytes }`, in base58.
const PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// The libp2p peer id of an ed25519 public key.
pub fn peer_id_of(public: &[u8; 32]) -> String {
    let mut bytes = PEER_ID_PREFIX.to_vec();
    bytes.extend_from_slice(public);
    bs58::encode(bytes).into_string()
}

fn public_key_of(peer_id: &str) -> Result<VerifyingKey, ReceiptError> {
    let bad = || ReceiptError::BadExecutor(peer_id.to_owned());
    let bytes = bs58::decode(peer_id).into_vec().map_err(|_| bad())?;
    let key = bytes.strip_prefix(&PEER_ID_PREFIX[..]).ok_or_else(bad)?;
    let key: [u8; 32] = key.try_into().map_err(|_| bad())?;
    VerifyingKey::from_bytes(&key).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_look_like_libp2p_ones_and_round_trip() {
        let key = ExecutorKey::from_seed([3; 32]);
        let id = key.peer_id();
        assert!(id.starts_with("12D3KooW"), "{id}");
        assert_eq!(
            public_key_of(&id).expect("decodes").to_bytes(),
            key.0.verifying_key().to_bytes()
        );
        assert!(public_key_of("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N").is_err());
    }
}
