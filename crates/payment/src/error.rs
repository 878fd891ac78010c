//! What can go wrong with a payment, each case a variant a caller can act on.

use crate::{Amount, ChannelId, LedgerId, PublicKey};

/// A payment operation that was refused. Nothing is persisted when one is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PaymentError {
    /// The signature is not the expected signer's (forged, or made with another key).
    #[error("signature is not a valid signature of {signer}")]
    BadSignature {
        /// Whose signature was expected.
        signer: PublicKey,
    },
    /// A state's nonce is not the next one.
    #[error("nonce {got} is not the next one (expected {expected})")]
    StaleNonce {
        /// The nonce received.
        got: u64,
        /// The nonce that would have been accepted.
        expected: u64,
    },
    /// A state's cumulative amount does not exceed the last accepted one.
    #[error("cumulative amount {got} does not exceed the last accepted {last}")]
    NotIncreasing {
        /// The amount received.
        got: Amount,
        /// The last accepted amount.
        last: Amount,
    },
    /// Paying would exceed the channel's deposit.
    #[error("cumulative amount {cumulative} exceeds the channel deposit {deposit}")]
    Overdraft {
        /// What would have been owed.
        cumulative: Amount,
        /// What the channel holds.
        deposit: Amount,
    },
    /// The channel has expired.
    #[error("channel expired at {expiry} (now {now})")]
    Expired {
        /// Expiry, unix seconds.
        expiry: u64,
        /// Now, unix seconds.
        now: u64,
    },
    /// A payment of nothing.
    #[error("amount must be above zero")]
    ZeroAmount,
    /// Arithmetic would overflow.
    #[error("amount overflows")]
    Overflow,
    /// No channel with this id.
    #[error("unknown channel {0}")]
    UnknownChannel(ChannelId),
    /// A channel with this id exists already.
    #[error("channel {0} exists already")]
    DuplicateChannel(ChannelId),
    /// The caller may not do this to this channel.
    #[error("{caller} may not {operation} channel {channel}: {reason}")]
    NotAllowed {
        /// Who asked.
        caller: PublicKey,
        /// The channel.
        channel: ChannelId,
        /// What was attempted.
        operation: &'static str,
        /// Who may.
        reason: &'static str,
    },
    /// Something signed for another ledger.
    #[error("signed for ledger {got}, this is ledger {expected}")]
    WrongLedger {
        /// This ledger.
        expected: LedgerId,
        /// The ledger named in the signed bytes.
        got: LedgerId,
    },
    /// The channel is not in a state that allows the operation.
    #[error("channel {channel} is {status}, cannot {operation}")]
    WrongStatus {
        /// The channel.
        channel: ChannelId,
        /// Its status.
        status: &'static str,
        /// What was attempted.
        operation: &'static str,
    },
    /// A challenge window is still open, or already closed.
    #[error("challenge window of channel {channel} ends at {ends} (now {now})")]
    ChallengeWindow {
        /// The channel.
        channel: ChannelId,
        /// When the window ends, unix seconds.
        ends: u64,
        /// Now, unix seconds.
        now: u64,
    },
    /// The refund is not due yet.
    #[error("channel {channel} can be refunded from {from} (now {now})")]
    RefundNotDue {
        /// The channel.
        channel: ChannelId,
        /// When the refund becomes possible, unix seconds.
        from: u64,
        /// Now, unix seconds.
        now: u64,
    },
    /// The account does not hold enough.
    #[error("account {account} holds {available}, needs {needed}")]
    InsufficientFunds {
        /// The account.
        account: PublicKey,
        /// What it holds.
        available: Amount,
        /// What was needed.
        needed: Amount,
    },
    /// Bytes that are not a valid encoding.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The parameters of a channel are unusable (same payer and payee, zero deposit, past expiry).
    #[error("invalid channel: {0}")]
    InvalidChannel(&'static str),
    /// No randomness was available for a new key.
    #[error("no randomness for a new key: {0}")]
    Randomness(String),
    /// Too many payments are waiting for the payee's acknowledgement.
    #[error("{limit} payments are waiting for acknowledgement; deliver them before paying more")]
    TooManyUnacknowledged {
        /// The limit.
        limit: usize,
    },
    /// A group commit failed; none of its payments were acknowledged.
    #[error("group commit failed, no payment in it was acknowledged: {0}")]
    CommitFailed(String),
    /// The database failed.
    #[error("payment storage failed")]
    Storage(#[from] rusqlite::Error),
}
