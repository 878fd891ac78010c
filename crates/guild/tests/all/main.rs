//! Guilds of real nodes on loopback: formation, secrecy, failure detection, hostile input.

mod guilds;
mod harness;
mod hostile;
