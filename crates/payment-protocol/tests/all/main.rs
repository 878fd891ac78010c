//! The payment protocol driven through its state, with nodes wired to each other in
//! memory (no sockets): what a payer, a payee and the ledger say to each other, and what
//! each keeps, when messages arrive out of order, twice, or not at all.

mod chain;
mod delivery;
mod harness;
mod money;
mod opening;
mod watch;
