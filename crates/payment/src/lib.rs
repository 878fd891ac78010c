//! Payment channels for ZeroState: executors are paid per receipt through off-chain
//! channels, settled on a ledger only when a channel closes.
//!
//! A channel is a one-way voucher channel: the payer locks a deposit on the ledger
//! ([`Settlement::open`]), then pays by signing ever newer [`ChannelState`]s (nonce + 1, a
//! higher cumulative amount, the hash of the receipt paid for). The payee verifies and
//! persists each before acknowledging it ([`PayeeStore::accept`]); the payer persists each
//! before sending it ([`PayerStore::pay`]). Closing is cooperative (settles at once) or
//! unilateral (a challenge window in which a state with a higher cumulative amount wins a
//! dispute). Every signed byte string names the ledger ([`LedgerId`]), and every ledger
//! operation takes its caller, whom the node takes from the authenticated peer. The crate
//! knows nothing of the network.
//!
//! ```
//! use zerostate_payment::*;
//!
//! # fn main() -> Result<(), PaymentError> {
//! let (payer, payee) = (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]));
//! let ledger_id = LedgerId::of_operator(&Keypair::from_seed([9; 32]).public());
//! let ledger = SqliteLedger::in_memory(ledger_id, 3600)?;
//! ledger.fund(&payer.public(), "10".parse().expect("amount"))?;
//!
//! let params = ChannelParams {
//!     ledger: ledger_id,
//!     payer: payer.public(),
//!     payee: payee.public(),
//!     deposit: "5".parse().expect("amount"),
//!     expiry: 2_000_000_000,
//!     nonce: 1,
//! };
//! let bytes = params.open_bytes();
//! let id = ledger.open(
//!     &payer.public(),
//!     &OpenRequest { params, payer_signature: payer.sign(&bytes), payee_signature: payee.sign(&bytes) },
//!     1_700_000_000,
//! )?;
//!
//! let state = ChannelState { ledger: ledger_id, channel: id, nonce: 1, cumulative: "0.25".parse().expect("amount"), receipt: [7; 32] }
//!     .sign(&payer);
//! let settled = ledger.close_cooperative(
//!     &payee.public(),
//!     &state,
//!     &payee.sign(&state.state.close_bytes()),
//!     1_700_000_100,
//! )?;
//! assert_eq!(settled.to_payee.decimal(), "0.25");
//! assert_eq!(ledger.balance(&payer.public())?.decimal(), "9.75");
//! # Ok(())
//! # }
//! ```
//!
//! This crate has no feature flags.

mod amount;
mod channel;
mod db;
mod error;
mod keys;
mod ledger;
mod store;

pub use amount::{Amount, AmountError, DECIMALS, UNIT};
pub use channel::{ChannelId, ChannelParams, ChannelState, LedgerId, SignedAnswer, SignedState};
pub use error::PaymentError;
pub use keys::{Keypair, PublicKey, Signature, verify};
pub use ledger::{
    Audit, ChannelRecord, ChannelStatus, OpenRequest, Settled, Settlement, SqliteLedger,
};
pub use store::{
    Ack, HeldVoucher, LocalChannel, MAX_UNACKNOWLEDGED, PayeeStore, PayerStore, Payment,
};
