//! The channel contract's bindings, generated from the committed build.

#![allow(missing_docs)]

use alloy::sol;

sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    ZeroStateChannels,
    "../../contracts/build/ZeroStateChannels.json"
);

/// The contract's creation bytecode, as the pinned compiler made it.
pub static BYTECODE: &alloy::primitives::Bytes = &ZeroStateChannels::BYTECODE;
