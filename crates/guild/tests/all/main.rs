//! Guilds of real nodes on loopback: formation, secrecy, failure detection, hostile input.

mod admission;
mod convergence;
mod guilds;
mod harness;
mod hostile;
mod succession;
