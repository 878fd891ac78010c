//! Integration tests of the execution engine: one binary, one module per topic.

mod harness;
mod hostile;
mod receipts;
mod runs;
