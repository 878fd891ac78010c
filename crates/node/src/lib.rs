//! A ZeroState node as a library: its runtime (what it starts and stops, in order), its
//! settings, its HTTP API and operations listener, and what the `zerostate` command line and
//! the cluster harness share with it (the ready line, the API client, child processes).

pub use zerostate_http::address;
pub mod admin;
pub mod api;
pub mod client;
pub mod console;
pub mod data;
pub mod metrics;
pub mod misbehave;
pub mod node_file;
pub mod process;
pub mod runtime;
pub mod settings;
pub mod units;
