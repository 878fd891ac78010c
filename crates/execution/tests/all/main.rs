//! Integration tests of the execution engine: one binary, one module per topic.

mod builtin;
mod determinism;
mod disk_cache;
mod harness;
mod host;
mod hostile;
mod programs;
mod receipts;
mod runs;
