//! The channel contract and its client against a real `anvil`.

mod anvil;
mod contract;
