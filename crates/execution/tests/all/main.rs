//! Integration tests of the execution engine: one binary, one module per topic.

mod disk_cache;
mod harness;
mod hostile;
mod receipts;
mod runs;
