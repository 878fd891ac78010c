//! The part of a span that crosses process boundaries.

use std::fmt;
use std::sync::Arc;

pub use opentelemetry::trace::{SpanId, TraceFlags, TraceId};

/// Trace flag bit 0: the trace is sampled.
pub const FLAG_SAMPLED: u8 = 0x01;
/// Trace flag bit 1 (W3C Trace Context Level 2): the trace id's right 7 bytes are random.
pub const FLAG_RANDOM: u8 = 0x02;
/// The flags this implementation understands and propagates; other bits are zeroed.
pub(crate) const KNOWN_FLAGS: u8 = FLAG_SAMPLED | FLAG_RANDOM;

/// The identity of a span as another process sees it: ids, flags, `tracestate` and `baggage`.
///
/// Obtained from [`crate::propagation::extract`] (remote) or [`crate::SpanExt::context`]
/// (local), and given to [`crate::SpanExt::set_parent`] to continue a trace.
#[derive(Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace this span belongs to; never all zero.
    pub trace_id: TraceId,
    /// The span's own id; never all zero.
    pub span_id: SpanId,
    /// Sampled and random flags.
    pub flags: TraceFlags,
    /// Vendor-specific state, propagated unchanged.
    pub trace_state: TraceState,
    /// Application key-value pairs travelling with the trace.
    pub baggage: Baggage,
    /// Whether this context was received from another process.
    pub is_remote: bool,
}

impl TraceContext {
    /// Whether the sampled flag is set.
    pub fn is_sampled(&self) -> bool {
        self.flags.to_u8() & FLAG_SAMPLED != 0
    }

    /// The `traceparent` header value (always version `00`).
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            self.flags.to_u8() & KNOWN_FLAGS
        )
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContext")
            .field("traceparent", &self.traceparent())
            .field("tracestate", &self.trace_state.header())
            .field("baggage", &self.baggage.header())
            .field("is_remote", &self.is_remote)
            .finish()
    }
}

/// A validated W3C `tracestate`: at most 32 members, unique keys, kept in order.
///
/// Cloning is cheap (shared); every child span of a trace carries the same state.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TraceState(Option<Arc<[(String, String)]>>);

impl TraceState {
    /// The members in header order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .flat_map(|m| m.iter())
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The header value: members joined by `,`, or an empty string.
    pub fn header(&self) -> String {
        join_members(self.iter(), "=")
    }

    pub(crate) fn from_members(members: Vec<(String, String)>) -> Self {
        if members.is_empty() {
            Self(None)
        } else {
            Self(Some(members.into()))
        }
    }
}

impl fmt::Debug for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceState({:?})", self.header())
    }
}

/// One W3C baggage entry: a key, its decoded value, and its raw properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaggageEntry {
    /// The key (an HTTP token).
    pub key: String,
    /// The value, percent-decoded.
    pub value: String,
    /// Properties after the value (`;prop=1;flag`), verbatim, without the leading `;`.
    pub properties: String,
}

/// W3C baggage: at most 64 entries and 8192 bytes when encoded, in order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Baggage(Option<Arc<[BaggageEntry]>>);

impl Baggage {
    /// Builds baggage from key-value pairs; entries beyond the W3C limits are left out.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let entries = pairs.into_iter().map(|(k, v)| BaggageEntry {
            key: k.into(),
            value: v.into(),
            properties: String::new(),
        });
        crate::propagation::baggage::limit(entries)
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = &BaggageEntry> {
        self.0.iter().flat_map(|m| m.iter())
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|e| e.key == key).map(|e| e.value.as_str())
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `baggage` header value, values percent-encoded.
    pub fn header(&self) -> String {
        crate::propagation::baggage::format(self)
    }

    pub(crate) fn from_entries(entries: Vec<BaggageEntry>) -> Self {
        if entries.is_empty() {
            Self(None)
        } else {
            Self(Some(entries.into()))
        }
    }
}

impl fmt::Debug for Baggage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Baggage({:?})", self.header())
    }
}

fn join_members<'a>(members: impl Iterator<Item = (&'a str, &'a str)>, sep: &str) -> String {
    let mut out = String::new();
    for (k, v) in members {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(k);
        out.push_str(sep);
        out.push_str(v);
    }
    out
}

/// Fresh ids from a fast thread-local generator (seeded from the OS's hash keys).
pub(crate) mod ids {
    use super::{SpanId, TraceId};

    /// A random, non-zero trace id.
    pub(crate) fn trace_id() -> TraceId {
        loop {
            let id = fastrand::u128(..);
            if id != 0 {
                return TraceId::from(id);
            }
        }
    }

    /// A random, non-zero span id.
    pub(crate) fn span_id() -> SpanId {
        SpanId::from(fastrand::u64(1..))
    }
}
