//! What the payment protocol shows of itself: a payment's record for a task, channels and their payments for the API, the steps of a settlement.

use super::*;

/// What a payment did, for a task record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PaymentRecord {
    /// `paid`, `unpaid` (nothing owed, or no ledger configured) or `failed`.
    pub status: String,
    /// The channel, hex.
    pub channel: Option<String>,
    /// What this payment added, base units.
    pub amount: u64,
    /// The channel's cumulative amount after it.
    pub cumulative: Option<u64>,
    /// The state's nonce.
    pub nonce: Option<u64>,
    /// SHA-256 of the receipt paid for (of its signed bytes), hex: the `receipt` the
    /// channel's history (`GET /v1/channels/{id}`) lists for this payment.
    pub receipt: Option<String>,
    /// Why it was not paid, when it was not.
    pub reason: Option<String>,
}

impl PaymentRecord {
    pub(crate) fn unpaid(amount: u64, reason: impl Into<String>, status: &str) -> Self {
        Self {
            status: status.to_owned(),
            channel: None,
            amount,
            cumulative: None,
            nonce: None,
            receipt: None,
            reason: Some(reason.into()),
        }
    }
}

/// One channel as `GET /v1/channels` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChannelView {
    /// Its id, hex.
    pub id: String,
    /// `payer` or `payee`: this node's side.
    pub side: String,
    /// The other party's payment key, hex.
    pub counterparty: String,
    /// Locked by the payer, base units.
    pub deposit: u64,
    /// Paid so far, base units.
    pub cumulative: u64,
    /// Payments so far.
    pub nonce: u64,
    /// Hash of the receipt the latest payment was for, hex.
    pub last_receipt: String,
    /// Whether this node has agreed to or started its settlement (no more payments).
    pub closing: bool,
    /// Whether this node, the payer, sent the open to the ledger without learning that the
    /// deposit is locked (the answer was lost, or the node stopped): no payment is made
    /// on it until the ledger says so. Asked again when the node starts.
    #[serde(default)]
    pub opening: bool,
}

impl ChannelView {
    /// `c` as this node's `side` (`payer` or `payee`) sees it.
    pub(crate) fn of(side: &str, c: &zerostate_payment::LocalChannel) -> Self {
        let other = if side == "payer" {
            c.params.payee
        } else {
            c.params.payer
        };
        Self {
            id: hex::encode(c.params.id().0),
            side: side.to_owned(),
            counterparty: hex::encode(other.0),
            deposit: c.params.deposit.base_units(),
            cumulative: c.state.cumulative.base_units(),
            nonce: c.state.nonce,
            last_receipt: hex::encode(c.state.receipt),
            closing: c.closing,
            opening: c.opening.is_some(),
        }
    }
}

/// A channel with its payments, as `GET /v1/channels/{id}` answers.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelHistory {
    /// The channel.
    #[serde(flatten)]
    pub channel: ChannelView,
    /// Its newest payments, newest first.
    pub payments: Vec<PaymentView>,
}

/// One payment on a channel.
#[derive(Clone, Debug, Serialize)]
pub struct PaymentView {
    /// The signed state's nonce.
    pub nonce: u64,
    /// What it added, base units.
    pub amount: u64,
    /// The cumulative amount after it, base units.
    pub cumulative: u64,
    /// SHA-256 of the receipt it paid for, hex (a task's `payment.receipt`).
    pub receipt: String,
}

/// A step of a unilateral settlement (see [`Payments::settle`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// Start a close on this node's best state; the other party may dispute until the
    /// challenge window ends.
    Start,
    /// Replace the closing state with this node's, when its amount is higher.
    Dispute,
    /// Pay out once the challenge window has ended.
    Finalize,
    /// Return the whole deposit to the payer of a channel nobody closed by its expiry plus
    /// its challenge period.
    Refund,
}
