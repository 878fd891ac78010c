//! Distributed tracing for ZeroState: tracer set-up, sampling, OTLP export, W3C
//! propagation, the names spans are written in, and logs that point at their traces.
//!
//! Every other ZeroState crate instruments with plain `tracing` spans and the constants in
//! [`names`]; this crate turns those spans into OpenTelemetry spans and ships them over
//! OTLP/HTTP (protobuf, gzip) to the embedded collector or any OpenTelemetry backend.
//!
//! ```no_run
//! use std::time::Instant;
//! use zerostate_telemetry::{SpanExt, TelemetryConfig, names};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = TelemetryConfig::from_env()?; // OTEL_* variables
//! config.service_name = "edge-node-1".into(); // code wins over the environment
//! let mut telemetry = zerostate_telemetry::init(config)?;
//!
//! let started = Instant::now();
//! let span = tracing::info_span!(names::span::EXECUTION_TASK, task.id = "t-1");
//! span.in_scope(|| { /* work */ });
//! span.record_success(started.elapsed());
//! drop(span);
//!
//! telemetry.shutdown()?; // flushes, bounded by the shutdown timeout
//! # Ok(())
//! # }
//! ```
//!
//! Across processes, [`propagation::inject_current`] writes the current span's W3C
//! `traceparent`, `tracestate` and `baggage` into a carrier and [`propagation::extract`]
//! reads them back; [`SpanExt::set_parent`] makes the remote span a local span's parent.
//!
//! Feature flags: `testing` adds [`testing`], an OTLP/HTTP receiver that multi-process
//! tests export to; nothing else is optional.

mod client;
mod clock;
pub mod config;
pub mod context;
mod export;
mod layer;
pub mod local;
mod log;
pub mod metrics;
pub mod names;
pub mod propagation;
mod setup;
mod span_ext;
mod spool;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

pub use config::{BatchConfig, ConfigError, LogFormat, Sampling, TelemetryConfig};
pub use context::{Baggage, BaggageEntry, TraceContext, TraceState};
pub use export::TelemetryStats;
pub use layer::{MAX_ATTRIBUTES, MAX_EVENTS, SpanLayer};
pub use log::is_power_of_ten;
pub use setup::{FlushError, InitError, StatsReader, TelemetryBuilder, TelemetryGuard, init};
pub use span_ext::{SpanExt, error_chain};
