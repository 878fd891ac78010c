//! A compact byte form of a [`TraceContext`], for binary envelopes such as p2p messages.
//!
//! ```text
//! 0      format (0)
//! 1..17  trace id
//! 17..25 span id
//! 25     flags
//! then fields, each: tag (1 byte), length (u16, big endian), bytes
//!        tag 1: tracestate header, tag 2: baggage header; unknown tags are skipped
//! ```
//!
//! Decoding applies the same rules as the text headers, so a context that arrives in bytes
//! is exactly as trustworthy as one that arrives in HTTP headers.

use crate::context::{KNOWN_FLAGS, SpanId, TraceContext, TraceFlags, TraceId, TraceState};

use super::{baggage, parse_tracestate};

const FORMAT: u8 = 0;
const HEADER_LEN: usize = 26;
const TAG_TRACESTATE: u8 = 1;
const TAG_BAGGAGE: u8 = 2;

/// Encodes `cx`; a `tracestate` or `baggage` longer than 65535 bytes is left out.
pub fn to_bytes(cx: &TraceContext) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.push(FORMAT);
    out.extend_from_slice(&cx.trace_id.to_bytes());
    out.extend_from_slice(&cx.span_id.to_bytes());
    out.push(cx.flags.to_u8() & KNOWN_FLAGS);
    for (tag, value) in [
        (TAG_TRACESTATE, cx.trace_state.header()),
        (TAG_BAGGAGE, cx.baggage.header()),
    ] {
        if let Ok(len) = u16::try_from(value.len())
            && len > 0
        {
            out.push(tag);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
    }
    out
}

/// Decodes bytes made by [`to_bytes`]. `None` for a wrong format, zero ids or truncation;
/// an invalid `tracestate` or `baggage` field is dropped like its header counterpart.
pub fn from_bytes(bytes: &[u8]) -> Option<TraceContext> {
    let (head, mut rest) = bytes.split_at_checked(HEADER_LEN)?;
    if head[0] != FORMAT {
        return None;
    }
    let trace_id = TraceId::from_bytes(head[1..17].try_into().ok()?);
    let span_id = SpanId::from_bytes(head[17..25].try_into().ok()?);
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let mut cx = TraceContext {
        trace_id,
        span_id,
        flags: TraceFlags::new(head[25] & KNOWN_FLAGS),
        trace_state: TraceState::default(),
        baggage: Default::default(),
        is_remote: true,
    };
    while let [tag, l0, l1, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let (value, tail) = tail.split_at_checked(len)?;
        let value = std::str::from_utf8(value).ok();
        match (*tag, value) {
            (TAG_TRACESTATE, Some(v)) => cx.trace_state = parse_tracestate(&[v]),
            (TAG_BAGGAGE, Some(v)) => cx.baggage = baggage::parse(&[v]),
            _ => {}
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return None;
    }
    Some(cx)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::context::Baggage;

    fn context(
        trace: u128,
        span: u64,
        flags: u8,
        state: &str,
        bag: Vec<(String, String)>,
    ) -> TraceContext {
        TraceContext {
            trace_id: TraceId::from(trace),
            span_id: SpanId::from(span),
            flags: TraceFlags::new(flags & KNOWN_FLAGS),
            trace_state: parse_tracestate(&[state]),
            baggage: Baggage::from_pairs(bag),
            is_remote: true,
        }
    }

    proptest! {
        #[test]
        fn round_trips(
            trace in 1u128..,
            span in 1u64..,
            flags in any::<u8>(),
            state in "([a-z][a-z0-9_*/-]{0,8}=[!-+\\--<>-~]{1,8},){0,5}",
            bag in proptest::collection::vec(("[A-Za-z0-9_.-]{1,8}", "\\PC{0,12}"), 0..6),
        ) {
            let cx = context(trace, span, flags, &state, bag);
            prop_assert_eq!(from_bytes(&to_bytes(&cx)), Some(cx));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = from_bytes(&bytes);
        }

        #[test]
        fn arbitrary_headers_never_panic(parent in "\\PC{0,80}", state in "\\PC{0,80}", bag in "\\PC{0,80}") {
            let _ = super::super::parse_traceparent(&[&parent]);
            let _ = parse_tracestate(&[&state]);
            let _ = baggage::parse(&[&bag]);
        }
    }

    #[test]
    fn truncated_input_is_rejected() {
        let cx = context(7, 9, 1, "a=1", vec![("k".into(), "v".into())]);
        let bytes = to_bytes(&cx);
        // Field boundaries decode (fields are optional); every other cut is rejected.
        let tracestate_end = HEADER_LEN + 3 + "a=1".len();
        for cut in 0..bytes.len() {
            let decoded = from_bytes(&bytes[..cut]);
            if cut == HEADER_LEN || cut == tracestate_end {
                assert!(decoded.is_some(), "cut at {cut}");
            } else {
                assert_eq!(decoded, None, "cut at {cut}");
            }
        }
        assert_eq!(from_bytes(&bytes), Some(cx));
    }
}
