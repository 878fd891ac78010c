//! How much memory a request will take once decoded, known before decoding it.
//!
//! A protobuf body can decode to far more memory than its own size: an empty attribute is
//! two bytes on the wire and a 72-byte struct in memory, so 64 MiB of them decode to
//! gigabytes. The receiver reserves this estimate from its budget before it decodes.
//!
//! For protobuf the estimate walks the wire format along the OTLP trace schema: every
//! message costs the size of its Rust struct, every string or byte field its length plus a
//! `Vec` header. For JSON every object costs the largest struct (a span), which bounds what
//! decoding can allocate per object.

use std::mem::size_of;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// Nesting deeper than this is refused, as the protobuf decoder refuses it.
const MAX_DEPTH: usize = 100;

#[derive(Clone, Copy)]
enum Kind {
    Request,
    ResourceSpans,
    Resource,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

impl Kind {
    fn size(self) -> u64 {
        (match self {
            Kind::Request => size_of::<ExportTraceServiceRequest>(),
            Kind::ResourceSpans => size_of::<ResourceSpans>(),
            Kind::Resource => size_of::<Resource>(),
            Kind::ScopeSpans => size_of::<ScopeSpans>(),
            Kind::Scope => size_of::<InstrumentationScope>(),
            Kind::Span => size_of::<Span>(),
            Kind::Event => size_of::<Event>(),
            Kind::Link => size_of::<Link>(),
            Kind::Status => size_of::<Status>(),
            Kind::KeyValue => size_of::<KeyValue>(),
            Kind::AnyValue => size_of::<AnyValue>(),
            Kind::ArrayValue => size_of::<ArrayValue>(),
            Kind::KeyValueList => size_of::<KeyValueList>(),
        }) as u64
    }

    /// The message type of a length-delimited field, or `None` for strings and bytes.
    fn child(self, field: u64) -> Option<Kind> {
        Some(match (self, field) {
            (Kind::Request, 1) => Kind::ResourceSpans,
            (Kind::ResourceSpans, 1) => Kind::Resource,
            (Kind::ResourceSpans, 2) => Kind::ScopeSpans,
            (Kind::Resource, 1) => Kind::KeyValue,
            (Kind::ScopeSpans, 1) => Kind::Scope,
            (Kind::ScopeSpans, 2) => Kind::Span,
            (Kind::Scope, 3) => Kind::KeyValue,
            (Kind::Span, 9) => Kind::KeyValue,
            (Kind::Span, 11) => Kind::Event,
            (Kind::Span, 13) => Kind::Link,
            (Kind::Span, 15) => Kind::Status,
            (Kind::Event, 3) => Kind::KeyValue,
            (Kind::Link, 4) => Kind::KeyValue,
            (Kind::KeyValue, 2) => Kind::AnyValue,
            (Kind::AnyValue, 5) => Kind::ArrayValue,
            (Kind::AnyValue, 6) => Kind::KeyValueList,
            (Kind::ArrayValue, 1) => Kind::AnyValue,
            (Kind::KeyValueList, 1) => Kind::KeyValue,
            _ => return None,
        })
    }
}

/// Bytes a protobuf `ExportTraceServiceRequest` will take in memory once decoded; an
/// error when the bytes are not well-formed protobuf.
pub(crate) fn protobuf(bytes: &[u8]) -> Result<u64, String> {
    walk(bytes, Kind::Request, 0)
}

/// An upper bound of the bytes a JSON request takes once decoded.
pub(crate) fn json(bytes: &[u8]) -> u64 {
    let objects = bytes.iter().filter(|&&b| b == b'{').count() as u64;
    objects
        .saturating_mul(Kind::Span.size())
        .saturating_add(bytes.len() as u64)
}

fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at).ok_or("truncated varint")?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than ten bytes".into())
}

fn walk(bytes: &[u8], kind: Kind, depth: usize) -> Result<u64, String> {
    if depth > MAX_DEPTH {
        return Err(format!("messages nested more than {MAX_DEPTH} deep"));
    }
    let mut total = kind.size();
    let mut at = 0;
    while at < bytes.len() {
        let key = varint(bytes, &mut at)?;
        let (field, wire) = (key >> 3, key & 7);
        let skip = match wire {
            0 => {
                varint(bytes, &mut at)?;
                0
            }
            1 => 8,
            5 => 4,
            2 => {
                let len = usize::try_from(varint(bytes, &mut at)?)
                    .map_err(|_| "length does not fit in memory")?;
                let end = at
                    .checked_add(len)
                    .filter(|&e| e <= bytes.len())
                    .ok_or("length runs past the end")?;
                let inner = &bytes[at..end];
                let cost = match kind.child(field) {
                    Some(child) => walk(inner, child, depth + 1)?,
                    // A string or bytes field: its contents and a `Vec` header.
                    None => len as u64 + size_of::<Vec<u8>>() as u64,
                };
                total = total.saturating_add(cost);
                len
            }
            other => return Err(format!("wire type {other} is not valid")),
        };
        at = at
            .checked_add(skip)
            .filter(|&e| e <= bytes.len())
            .ok_or("field runs past the end")?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn an_estimate_covers_what_decoding_allocates_and_flags_amplification() {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "work".into(),
            attributes: vec![KeyValue::default(); 1000],
            ..Span::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        };
        let bytes = request.encode_to_vec();
        let estimate = protobuf(&bytes).expect("well formed");
        let in_memory = 1000 * size_of::<KeyValue>() as u64;
        assert!(estimate >= in_memory, "{estimate} < {in_memory}");
        assert!(
            estimate > 20 * bytes.len() as u64,
            "empty attributes amplify"
        );
    }

    #[test]
    fn malformed_bytes_are_an_error_not_a_panic() {
        for bytes in [&[0x0a, 0xff][..], &[0x0a][..], &[0x0f][..], &[0xff; 11][..]] {
            assert!(protobuf(bytes).is_err(), "{bytes:?}");
        }
    }
}
