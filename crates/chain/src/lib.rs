//! Settlement of ZeroState payment channels on an EVM chain.
//!
//! The channel contract (`contracts/ZeroStateChannels.sol`, compiled to
//! `contracts/build/ZeroStateChannels.json` by the solc that `scripts/contracts.sh` pins)
//! holds one-way channels in the chain's native coin. A payer pays off chain by signing
//! [`Voucher`]s, EIP-712 typed data over the channel id and the cumulative amount under a
//! domain naming the contract and the chain; the payee closes with the best one at any
//! time; the payer's exit opens the channel's challenge period, fixed when it was opened.
//!
//! [`Chain`] talks to a chain through one node's [`SettlementKey`] (secp256k1, kept at
//! `<data dir>/settlement.key`, bound to the node's ed25519 key by a [`KeyBinding`]).
//! Amounts are the payment crate's [`Amount`](zerostate_payment::Amount): one base unit is
//! 10^9 wei (one gwei), so a whole unit is one coin of 18 decimals.
//!
//! This crate has no feature flags.

mod anvil;
mod book;
mod chain;
mod contract;
mod error;
mod key;
mod units;
mod voucher;

pub use anvil::{Anvil, DEV_KEY, anvil_for_tests, anvil_on_path, coins_to_wei, dev_key};
pub use book::{BookedChannel, ChainBook};
pub use chain::{Chain, ChannelEvent, OnChainChannel, OnChainStatus, Opened, Tx, channel_id};
pub use contract::{BYTECODE, ZeroStateChannels};
pub use error::ChainError;
pub use key::{KeyBinding, SettlementKey};
pub use units::{WEI_PER_UNIT, from_wei, to_wei};
pub use voucher::{Voucher, VoucherDomain};

pub use alloy::primitives::{Address, B256, U256};
