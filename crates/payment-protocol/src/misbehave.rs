//! What a payer or payee under test is told to do wrong (the node's `--misbehave` items
//! that concern payments); all off by default.

/// The payment protocol's misbehaviours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Misbehaviour {
    /// `withhold-payment-acks=N`: as a payee, keeps the first N payments but answers each
    /// with an error; 0 when off.
    pub withhold_payment_acks: u64,
    /// `never-pay`: as a requester, never pays for a receipt.
    pub never_pay: bool,
    /// `skip-ledger-open`: as a requester, opens channels with executors but never asks
    /// the ledger to lock them.
    pub skip_ledger_open: bool,
    /// `close-on-nothing`: as a payer, starts a unilateral close on nothing paid, whatever
    /// it signed (the payee's watchtower answers it).
    pub close_on_nothing: bool,
}
