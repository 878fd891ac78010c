//! The collector over real HTTP on loopback: ingest, queries, hostile input, restarts and
//! retention.

mod bounds;
mod forward;
mod harness;
mod incomplete;
mod ingest;
mod python;
mod skew;
mod store;
mod tls;
mod viewer;
