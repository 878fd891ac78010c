//! Integration tests of the payment engine: one binary, one module per topic.

mod bad_input;
mod crash;
mod harness;
mod lifecycle;
mod properties;
mod spans;
mod vouchers;
