//! The envelope every message travels in: a version byte, then a protobuf body with the
//! message type, the payload, the sender's trace context and the send time.
//!
//! ```text
//! byte 0      version (1)
//! bytes 1..   protobuf message Envelope {
//!               uint64 id = 1;            // random, names the message in logs
//!               string message_type = 2;  // [a-z0-9_], 1 to 64 bytes
//!               bytes  payload = 3;
//!               string traceparent = 4;   // W3C, empty when there was no span
//!               string tracestate = 5;
//!               string baggage = 6;
//!               uint64 sent_at_unix_nanos = 7;
//!             }
//! ```
//!
//! The version byte comes first so that a node can refuse an envelope from a future version
//! by its first byte, before it parses anything. Decoding checks the size bound first, never
//! panics, and names what was wrong.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use zerostate_telemetry::{TraceContext, propagation};

/// The envelope version this node writes and reads.
pub const VERSION: u8 = 1;

/// Default size bound of an encoded envelope: 1 MiB.
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;

/// Longest message type, in bytes.
pub const MAX_TYPE_LEN: usize = 64;

/// A message, with where it came from in the trace.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Envelope {
    /// Random id naming this message in logs and spans.
    pub id: u64,
    /// What the payload is (`task_request`, `heartbeat`, ...): lower-case letters, digits and
    /// `_`, 1 to 64 bytes. It names the message span, `p2p.message.<type>`.
    pub message_type: String,
    /// The message itself; the envelope does not look inside.
    pub payload: Vec<u8>,
    /// The sender's W3C `traceparent`; empty when the sender had no span.
    pub traceparent: String,
    /// The sender's W3C `tracestate`; may be empty.
    pub tracestate: String,
    /// The sender's W3C `baggage`; may be empty.
    pub baggage: String,
    /// When the sender sent it, in nanoseconds since the Unix epoch.
    pub sent_at_unix_nanos: u64,
}

/// Why bytes are not an envelope this node accepts.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Longer than the size bound.
    #[error("envelope of {size} bytes is larger than the limit of {limit} bytes")]
    Oversized {
        /// Its size.
        size: usize,
        /// The bound.
        limit: usize,
    },
    /// No bytes at all.
    #[error("empty envelope")]
    Empty,
    /// A version this node does not speak.
    #[error("envelope version {0} is not supported (this node speaks version {VERSION})")]
    UnknownVersion(u8),
    /// The body is not a valid protobuf envelope.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// The message type is empty, too long or has characters outside `[a-z0-9_]`.
    #[error("invalid message type {0:?}: expected 1 to 64 of [a-z0-9_]")]
    BadType(String),
}

impl EnvelopeError {
    /// A short word for the kind of problem, used as a counter label and `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Oversized { .. } => "oversized",
            Self::Empty | Self::Malformed(_) => "malformed",
            Self::UnknownVersion(_) => "unknown_version",
            Self::BadType(_) => "bad_type",
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct Wire {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(string, tag = "2")]
    message_type: String,
    #[prost(bytes = "vec", tag = "3")]
    payload: Vec<u8>,
    #[prost(string, tag = "4")]
    traceparent: String,
    #[prost(string, tag = "5")]
    tracestate: String,
    #[prost(string, tag = "6")]
    baggage: String,
    #[prost(uint64, tag = "7")]
    sent_at_unix_nanos: u64,
}

/// Whether `t` is a valid message type.
pub fn valid_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_TYPE_LEN
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Envelope {
    /// A new envelope with a random id, stamped now, carrying `cx` (the sending span's
    /// context) when there is one.
    pub fn new(
        message_type: impl Into<String>,
        payload: Vec<u8>,
        cx: Option<&TraceContext>,
    ) -> Self {
        let mut headers = HashMap::new();
        if let Some(cx) = cx {
            propagation::inject(cx, &mut headers);
        }
        let mut take = |k: &str| headers.remove(k).unwrap_or_default();
        Self {
            id: fastrand::u64(..),
            message_type: message_type.into(),
            payload,
            traceparent: take(propagation::TRACEPARENT),
            tracestate: take(propagation::TRACESTATE),
            baggage: take(propagation::BAGGAGE),
            sent_at_unix_nanos: unix_nanos(SystemTime::now()),
        }
    }

    /// The sender's trace context, if it sent a valid one. Invalid context is ignored (the
    /// receiver starts a fresh trace), as W3C Trace Context asks.
    pub fn trace_context(&self) -> Option<TraceContext> {
        if self.traceparent.is_empty() {
            return None;
        }
        let mut headers = HashMap::with_capacity(3);
        headers.insert(
            propagation::TRACEPARENT.to_owned(),
            self.traceparent.clone(),
        );
        if !self.tracestate.is_empty() {
            headers.insert(propagation::TRACESTATE.to_owned(), self.tracestate.clone());
        }
        if !self.baggage.is_empty() {
            headers.insert(propagation::BAGGAGE.to_owned(), self.baggage.clone());
        }
        propagation::extract(&headers)
    }

    /// How long ago it was sent by the sender's clock; zero if the clocks disagree.
    pub fn age(&self) -> Duration {
        let now = unix_nanos(SystemTime::now());
        Duration::from_nanos(now.saturating_sub(self.sent_at_unix_nanos))
    }

    /// The encoded form.
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            id: self.id,
            message_type: self.message_type.clone(),
            payload: self.payload.clone(),
            traceparent: self.traceparent.clone(),
            tracestate: self.tracestate.clone(),
            baggage: self.baggage.clone(),
            sent_at_unix_nanos: self.sent_at_unix_nanos,
        };
        let mut out = Vec::with_capacity(1 + wire.encoded_len());
        out.push(VERSION);
        wire.encode(&mut out)
            .expect("a Vec grows to fit, so encoding cannot run out of room");
        out
    }

    /// Decodes and checks an envelope of at most `max_bytes`.
    pub fn decode(bytes: &[u8], max_bytes: usize) -> Result<Self, EnvelopeError> {
        if bytes.len() > max_bytes {
            return Err(EnvelopeError::Oversized {
                size: bytes.len(),
                limit: max_bytes,
            });
        }
        let (&version, body) = bytes.split_first().ok_or(EnvelopeError::Empty)?;
        if version != VERSION {
            return Err(EnvelopeError::UnknownVersion(version));
        }
        let wire = Wire::decode(body).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        if !valid_type(&wire.message_type) {
            return Err(EnvelopeError::BadType(wire.message_type));
        }
        Ok(Self {
            id: wire.id,
            message_type: wire.message_type,
            payload: wire.payload,
            traceparent: wire.traceparent,
            tracestate: wire.tracestate,
            baggage: wire.baggage,
            sent_at_unix_nanos: wire.sent_at_unix_nanos,
        })
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_type() -> impl Strategy<Value = String> {
        "[a-z0-9_]{1,64}"
    }

    proptest! {
        #[test]
        fn round_trip(
            id: u64,
            t in arb_type(),
            payload in proptest::collection::vec(any::<u8>(), 0..2048),
            tp in "[ -~]{0,60}",
            ts in "[ -~]{0,60}",
            bg in "[ -~]{0,60}",
            at: u64,
        ) {
            let e = Envelope {
                id,
                message_type: t,
                payload,
                traceparent: tp,
                tracestate: ts,
                baggage: bg,
                sent_at_unix_nanos: at,
            };
            let bytes = e.encode();
            prop_assert_eq!(Envelope::decode(&bytes, DEFAULT_MAX_BYTES), Ok(e));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Envelope::decode(&bytes, DEFAULT_MAX_BYTES);
            let _ = Envelope::decode(&bytes, 16);
        }

        #[test]
        fn arbitrary_bodies_after_the_version_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut bytes = vec![VERSION];
            bytes.extend(body);
            if let Ok(e) = Envelope::decode(&bytes, DEFAULT_MAX_BYTES) {
                prop_assert!(valid_type(&e.message_type));
                let _ = e.trace_context();
            }
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        let good = Envelope::new("task_request", vec![1; 100], None).encode();
        assert_eq!(
            Envelope::decode(&good, 50),
            Err(EnvelopeError::Oversized {
                size: good.len(),
                limit: 50
            })
        );
        assert_eq!(Envelope::decode(&[], 50), Err(EnvelopeError::Empty));
        let mut future = good.clone();
        future[0] = 2;
        assert_eq!(
            Envelope::decode(&future, DEFAULT_MAX_BYTES),
            Err(EnvelopeError::UnknownVersion(2))
        );
        let bad_type = Envelope::new("Task-Request", vec![], None).encode();
        assert!(matches!(
            Envelope::decode(&bad_type, DEFAULT_MAX_BYTES),
            Err(EnvelopeError::BadType(_))
        ));
        assert!(matches!(
            Envelope::decode(&[VERSION, 0xff, 0xff], DEFAULT_MAX_BYTES),
            Err(EnvelopeError::Malformed(_))
        ));
    }

    #[test]
    fn context_round_trips_and_invalid_context_is_ignored() {
        let headers: HashMap<String, String> = [
            (
                "traceparent".to_owned(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
            ),
            ("tracestate".to_owned(), "zs=1".to_owned()),
            ("baggage".to_owned(), "guild=g1".to_owned()),
        ]
        .into_iter()
        .collect();
        let cx = propagation::extract(&headers).expect("valid");
        let e = Envelope::new("heartbeat", vec![], Some(&cx));
        let back = Envelope::decode(&e.encode(), DEFAULT_MAX_BYTES)
            .expect("decodes")
            .trace_context()
            .expect("context");
        assert_eq!(back.trace_id, cx.trace_id);
        assert_eq!(back.span_id, cx.span_id);
        assert_eq!(back.trace_state.get("zs"), Some("1"));
        assert_eq!(back.baggage.get("guild"), Some("g1"));

        let mut forged = e.clone();
        forged.traceparent = "00-00000000000000000000000000000000-00f067aa0ba902b7-01".into();
        assert!(forged.trace_context().is_none());
        assert!(Envelope::new("x", vec![], None).trace_context().is_none());
    }
}
