//! What can go wrong talking to a chain, in words a user can act on.

use std::path::PathBuf;

/// A refusal or failure of a chain operation.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The JSON-RPC endpoint did not answer or answered with an error that is not the
    /// contract's.
    #[error("the chain at {url} did not answer: {reason}")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The contract refused the call; `reason` is its error, decoded (`NotPayee`,
    /// `AmountOverDeposit(..)`, `BadSignature`, ...).
    #[error("the channel contract refused {operation}: {reason}")]
    Refused {
        /// The contract function called.
        operation: &'static str,
        /// The contract's error.
        reason: String,
    },
    /// There is no contract with the channel contract's code at the configured address.
    #[error("no ZeroState channel contract at {contract} on chain {chain_id}")]
    NoContract {
        /// The configured address.
        contract: String,
        /// The chain it was looked for on.
        chain_id: u64,
    },
    /// The settlement key file could not be read, made or used.
    #[error("settlement key {path}: {reason}", path = .path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// An amount that cannot be a payment amount, or a voucher or event that does not
    /// parse.
    #[error("{0}")]
    Amount(String),
    /// The node's book of channels on chain (`chain.db`) could not be read or written.
    #[error("the book of channels on chain: {0}")]
    Book(String),
    /// A signature that is not 65 bytes of r, s and v, or that recovers to no address.
    #[error("a voucher signature is malformed: {0}")]
    Signature(String),
}
