//! The market driven by messages through nodes wired in memory: no sockets, real engines
//! and payment stores.

mod harness;
mod market;
