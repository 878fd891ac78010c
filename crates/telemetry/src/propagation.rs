//! W3C Trace Context (Level 2) and W3C Baggage propagation, to and from string maps and a
//! compact byte form.
//!
//! Parsing never fails loudly: input that does not follow the specification yields `None`
//! (or an empty `tracestate`/`baggage`), and the receiver starts a fresh trace. Nothing here
//! panics on any input.
//!
//! ```
//! use std::collections::HashMap;
//! use zerostate_telemetry::propagation;
//!
//! let mut headers = HashMap::new();
//! headers.insert(
//!     "traceparent".to_string(),
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
//! );
//! let cx = propagation::extract(&headers).expect("valid traceparent");
//! assert!(cx.is_sampled());
//! let mut out = HashMap::new();
//! propagation::inject(&cx, &mut out);
//! assert_eq!(out["traceparent"], headers["traceparent"]);
//! ```

pub(crate) mod baggage;
mod binary;
mod traceparent;
mod tracestate;

use std::collections::{BTreeMap, HashMap};

use crate::context::TraceContext;

pub use baggage::{
    MAX_BYTES as BAGGAGE_MAX_BYTES, MAX_ENTRIES as BAGGAGE_MAX_ENTRIES, parse as parse_baggage,
};
pub use binary::{from_bytes, to_bytes};
pub use traceparent::{TraceParent, parse_traceparent};
pub use tracestate::{MAX_MEMBERS as TRACESTATE_MAX_MEMBERS, parse_tracestate};

/// Header name of the trace parent.
pub const TRACEPARENT: &str = "traceparent";
/// Header name of the vendor trace state.
pub const TRACESTATE: &str = "tracestate";
/// Header name of the baggage.
pub const BAGGAGE: &str = "baggage";

/// Where propagation fields are read from. Names are matched case-insensitively; a carrier
/// that can hold a field more than once returns every value in order.
pub trait Extractor {
    /// All values stored under `name` (any letter case).
    fn get_all(&self, name: &str) -> Vec<&str>;
}

/// Where propagation fields are written to.
pub trait Injector {
    /// Stores `value` under `name`, replacing what was there.
    fn set(&mut self, name: &str, value: String);
}

/// Reads a [`TraceContext`] from a carrier. `None` when there is no valid `traceparent`;
/// the `tracestate` and `baggage` that come with a valid one are kept if valid themselves.
pub fn extract(carrier: &impl Extractor) -> Option<TraceContext> {
    let parents = carrier.get_all(TRACEPARENT);
    let parent = parse_traceparent(&parents)?;
    let trace_state = parse_tracestate(&carrier.get_all(TRACESTATE));
    let baggage = baggage::parse(&carrier.get_all(BAGGAGE));
    Some(TraceContext {
        trace_id: parent.trace_id,
        span_id: parent.span_id,
        flags: parent.flags,
        trace_state,
        baggage,
        is_remote: true,
    })
}

/// Writes `cx` into a carrier: `traceparent`, and `tracestate`/`baggage` when not empty.
pub fn inject(cx: &TraceContext, carrier: &mut impl Injector) {
    carrier.set(TRACEPARENT, cx.traceparent());
    if !cx.trace_state.is_empty() {
        carrier.set(TRACESTATE, cx.trace_state.header());
    }
    if !cx.baggage.is_empty() {
        carrier.set(BAGGAGE, cx.baggage.header());
    }
}

/// Writes the context of the current `tracing` span into a carrier. Returns whether there
/// was one (a span recorded by the ZeroState layer, or a parent of it).
pub fn inject_current(carrier: &mut impl Injector) -> bool {
    match crate::span_ext::current_context() {
        Some(cx) => {
            inject(&cx, carrier);
            true
        }
        None => false,
    }
}

fn eq_name(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl<S: std::hash::BuildHasher> Extractor for HashMap<String, String, S> {
    fn get_all(&self, name: &str) -> Vec<&str> {
        match self.get(name) {
            Some(v) => vec![v.as_str()],
            None => self
                .iter()
                .filter(|(k, _)| eq_name(k, name))
                .map(|(_, v)| v.as_str())
                .collect(),
        }
    }
}

impl<S: std::hash::BuildHasher> Injector for HashMap<String, String, S> {
    fn set(&mut self, name: &str, value: String) {
        self.insert(name.to_owned(), value);
    }
}

impl Extractor for BTreeMap<String, String> {
    fn get_all(&self, name: &str) -> Vec<&str> {
        self.iter()
            .filter(|(k, _)| eq_name(k, name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl Injector for BTreeMap<String, String> {
    fn set(&mut self, name: &str, value: String) {
        self.insert(name.to_owned(), value);
    }
}

/// A list of header lines, where a name may repeat (as on the wire).
impl Extractor for Vec<(String, String)> {
    fn get_all(&self, name: &str) -> Vec<&str> {
        self.iter()
            .filter(|(k, _)| eq_name(k, name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl Injector for Vec<(String, String)> {
    fn set(&mut self, name: &str, value: String) {
        self.retain(|(k, _)| !eq_name(k, name));
        self.push((name.to_owned(), value));
    }
}

/// Trims the optional white space (space and tab) that HTTP allows around values.
pub(crate) fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}
