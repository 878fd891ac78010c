//! Integration tests of the telemetry crate: one binary, one module per topic.

mod account;
mod backpressure;
mod catalog;
mod dead_collector;
mod harness;
mod local;
mod logs;
mod otlp;
mod sampling;
mod spans;
mod spool;
mod w3c;
