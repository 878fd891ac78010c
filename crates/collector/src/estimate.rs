//! Reading OTLP protobuf in place, and how much memory a request will take once decoded,
//! known before decoding it.
//!
//! A protobuf body can decode to far more memory than its own size: an empty attribute is
//! two bytes on the wire and a 72-byte struct in memory, so 64 MiB of them decode to
//! gigabytes. The receiver reserves this estimate from its budget before it decodes.
//!
//! For protobuf the check walks the wire format along the OTLP trace schema: every
//! message costs the size of its Rust struct, every string or byte field its length plus a
//! `Vec` header. On the way it refuses what the protobuf decoder refuses (a known field of
//! the wrong wire type, text that is not UTF-8, nesting too deep), so that a request it
//! passes can be read field by field ([`Fields`]) without decoding it into structs. For
//! JSON every object costs the largest struct (a span), which bounds what decoding can
//! allocate per object.

use std::mem::size_of;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// Nesting deeper than this is refused, as the protobuf decoder refuses it.
const MAX_DEPTH: usize = 100;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Request,
    ResourceSpans,
    Resource,
    EntityRef,
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

/// What a known field holds, so what its wire type must be.
#[derive(Clone, Copy)]
enum Holds {
    Message(Kind),
    Text,
    Bytes,
    Varint,
    Fixed64,
    Fixed32,
}

impl Kind {
    fn size(self) -> u64 {
        (match self {
            Kind::Request => size_of::<ExportTraceServiceRequest>(),
            Kind::ResourceSpans => size_of::<ResourceSpans>(),
            Kind::Resource => size_of::<Resource>(),
            Kind::EntityRef => size_of::<EntityRef>(),
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

    /// What a field of this message holds in the OTLP schema; `None` for a field the
    /// schema does not have (the decoder skips it).
    fn field(self, field: u64) -> Option<Holds> {
        use Holds::*;
        Some(match (self, field) {
            (Kind::Request, 1) => Message(Kind::ResourceSpans),
            (Kind::ResourceSpans, 1) => Message(Kind::Resource),
            (Kind::ResourceSpans, 2) => Message(Kind::ScopeSpans),
            (Kind::ResourceSpans | Kind::ScopeSpans, 3) => Text,
            (Kind::Resource, 1) => Message(Kind::KeyValue),
            (Kind::Resource, 2) => Varint,
            (Kind::Resource, 3) => Message(Kind::EntityRef),
            (Kind::EntityRef, 1..=4) => Text,
            (Kind::ScopeSpans, 1) => Message(Kind::Scope),
            (Kind::ScopeSpans, 2) => Message(Kind::Span),
            (Kind::Scope, 1 | 2) => Text,
            (Kind::Scope, 3) => Message(Kind::KeyValue),
            (Kind::Scope, 4) => Varint,
            (Kind::Span, 1 | 2 | 4) => Bytes,
            (Kind::Span, 3 | 5) => Text,
            (Kind::Span, 6 | 10 | 12 | 14) => Varint,
            (Kind::Span, 7 | 8) => Fixed64,
            (Kind::Span, 9) => Message(Kind::KeyValue),
            (Kind::Span, 11) => Message(Kind::Event),
            (Kind::Span, 13) => Message(Kind::Link),
            (Kind::Span, 15) => Message(Kind::Status),
            (Kind::Span, 16) => Fixed32,
            (Kind::Event, 1) => Fixed64,
            (Kind::Event, 2) => Text,
            (Kind::Event, 3) => Message(Kind::KeyValue),
            (Kind::Event, 4) => Varint,
            (Kind::Link, 1 | 2) => Bytes,
            (Kind::Link, 3) => Text,
            (Kind::Link, 4) => Message(Kind::KeyValue),
            (Kind::Link, 5) => Varint,
            (Kind::Link, 6) => Fixed32,
            (Kind::Status, 2) => Text,
            (Kind::Status, 3) => Varint,
            (Kind::KeyValue, 1) => Text,
            (Kind::KeyValue, 2) => Message(Kind::AnyValue),
            (Kind::KeyValue, 3) => Varint,
            (Kind::AnyValue, 1) => Text,
            (Kind::AnyValue, 2 | 3 | 8) => Varint,
            (Kind::AnyValue, 4) => Fixed64,
            (Kind::AnyValue, 5) => Message(Kind::ArrayValue),
            (Kind::AnyValue, 6) => Message(Kind::KeyValueList),
            (Kind::AnyValue, 7) => Bytes,
            (Kind::ArrayValue, 1) => Message(Kind::AnyValue),
            (Kind::KeyValueList, 1) => Message(Kind::KeyValue),
            _ => return None,
        })
    }
}

/// A protobuf `ExportTraceServiceRequest` the protobuf decoder would accept, with the
/// bytes it will take in memory once decoded.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Checked<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) decoded: u64,
}

/// Checks a protobuf `ExportTraceServiceRequest` along the OTLP schema and estimates the
/// memory it takes once decoded; an error says what is wrong.
pub(crate) fn protobuf(bytes: &[u8]) -> Result<Checked<'_>, String> {
    let decoded = walk(bytes, Kind::Request, 0)?;
    Ok(Checked { bytes, decoded })
}

/// An upper bound of the bytes a JSON request takes once decoded.
pub(crate) fn json(bytes: &[u8]) -> u64 {
    let objects = bytes.iter().filter(|&&b| b == b'{').count() as u64;
    objects
        .saturating_mul(Kind::Span.size())
        .saturating_add(bytes.len() as u64)
}

/// A field's value as on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    /// A string, bytes or an embedded message.
    Bytes(&'a [u8]),
}

/// One field of a message: its number, value, and its whole encoding (key included).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Field<'a> {
    pub(crate) number: u64,
    pub(crate) value: Value<'a>,
    pub(crate) raw: &'a [u8],
}

/// The fields of a message's encoding in order; after an error, nothing more.
pub(crate) struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn next_field(&mut self) -> Result<Field<'a>, String> {
        let bytes = self.bytes;
        let from = self.at;
        let key = varint(bytes, &mut self.at)?;
        let (number, wire) = (key >> 3, key & 7);
        if key > u64::from(u32::MAX) || number == 0 {
            return Err(format!("field number {number} is not valid"));
        }
        let at = &mut self.at;
        let value = match wire {
            0 => Value::Varint(varint(bytes, at)?),
            1 => Value::Fixed64(u64::from_le_bytes(
                take(bytes, at, 8)?.try_into().expect("eight bytes"),
            )),
            5 => Value::Fixed32(u32::from_le_bytes(
                take(bytes, at, 4)?.try_into().expect("four bytes"),
            )),
            2 => {
                let len = usize::try_from(varint(bytes, at)?)
                    .map_err(|_| "length does not fit in memory")?;
                Value::Bytes(take(bytes, at, len).map_err(|_| "length runs past the end")?)
            }
            other => return Err(format!("wire type {other} is not valid")),
        };
        Ok(Field {
            number,
            value,
            raw: &bytes[from..self.at],
        })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let field = self.next_field();
        if field.is_err() {
            self.at = self.bytes.len();
        }
        Some(field)
    }
}

/// The next `n` bytes at `at`, moving past them.
fn take<'a>(bytes: &'a [u8], at: &mut usize, n: usize) -> Result<&'a [u8], String> {
    let end = at
        .checked_add(n)
        .filter(|&e| e <= bytes.len())
        .ok_or("field runs past the end")?;
    let v = &bytes[*at..end];
    *at = end;
    Ok(v)
}

fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at).ok_or("truncated varint")?;
        *at += 1;
        // The tenth byte holds one bit; the decoder refuses more.
        if shift == 63 && b > 1 {
            return Err("varint larger than 64 bits".into());
        }
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
    for field in Fields::new(bytes) {
        let Field { number, value, .. } = field?;
        let cost = match (kind.field(number), value) {
            (Some(Holds::Message(child)), Value::Bytes(inner)) => walk(inner, child, depth + 1)?,
            (Some(Holds::Text), Value::Bytes(text)) => {
                std::str::from_utf8(text)
                    .map_err(|_| format!("field {number} of a {kind:?} is not UTF-8 text"))?;
                text.len() as u64 + size_of::<Vec<u8>>() as u64
            }
            // A string or bytes field: its contents and a `Vec` header.
            (Some(Holds::Bytes) | None, Value::Bytes(b)) => {
                b.len() as u64 + size_of::<Vec<u8>>() as u64
            }
            (None, _)
            | (Some(Holds::Varint), Value::Varint(_))
            | (Some(Holds::Fixed64), Value::Fixed64(_))
            | (Some(Holds::Fixed32), Value::Fixed32(_)) => 0,
            (Some(_), _) => {
                return Err(format!(
                    "field {number} of a {kind:?} is sent with the wrong wire type"
                ));
            }
        };
        total = total.saturating_add(cost);
    }
    Ok(total)
}

/// A fixed pseudo-random sequence (xorshift) from a non-zero seed, for tests that change
/// bytes the same way every run.
#[cfg(test)]
pub(crate) fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
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
        let estimate = protobuf(&bytes).expect("well formed").decoded;
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

    /// A request with one span whose encoding is `span`.
    fn with_span(span: &[u8]) -> Vec<u8> {
        let mut scope_spans = vec![0x12, span.len() as u8];
        scope_spans.extend_from_slice(span);
        let mut resource_spans = vec![0x12, scope_spans.len() as u8];
        resource_spans.extend(scope_spans);
        let mut request = vec![0x0a, resource_spans.len() as u8];
        request.extend(resource_spans);
        request
    }

    #[test]
    fn the_check_refuses_what_the_decoder_refuses_and_passes_what_it_takes() {
        let cases: &[&[u8]] = &[
            // A name that is not UTF-8.
            &[0x2a, 0x02, 0xc3, 0x28],
            // A name sent as a number.
            &[0x28, 0x05],
            // A start time sent as a varint.
            &[0x38, 0x01],
            // An attribute whose key is not UTF-8, nested two deep.
            &[0x4a, 0x04, 0x0a, 0x02, 0xff, 0xfe],
            // An attribute whose value is a double sent as fixed32.
            &[0x4a, 0x07, 0x12, 0x05, 0x25, 0, 0, 0, 0],
            // Fine: a name, a kind, times, an unknown field of each wire type.
            &[
                0x2a, 0x01, b'a', 0x30, 0x02, 0x39, 1, 0, 0, 0, 0, 0, 0, 0, 0xf8, 0x07, 0x01, 0xfa,
                0x07, 0x00, 0xfd, 0x07, 0, 0, 0, 0,
            ],
            // Fine: a link's flags, a status, an event's time.
            &[
                0x6a, 0x05, 0x35, 1, 0, 0, 0, 0x7a, 0x02, 0x18, 0x02, 0x5a, 0x09, 0x09, 1, 0, 0, 0,
                0, 0, 0, 0,
            ],
        ];
        for span in cases {
            let bytes = with_span(span);
            let decoder = ExportTraceServiceRequest::decode(&bytes[..]).is_ok();
            assert_eq!(protobuf(&bytes).is_ok(), decoder, "{span:02x?}");
        }
    }

    #[test]
    fn on_mangled_bodies_the_check_and_the_decoder_agree() {
        use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
        let value = |v| Some(AnyValue { value: Some(v) });
        let attribute = |key: &str, v| KeyValue {
            key: key.into(),
            value: value(v),
            ..KeyValue::default()
        };
        let attributes = vec![
            attribute("s", V::StringValue("text".into())),
            attribute("b", V::BoolValue(true)),
            attribute("i", V::IntValue(-3)),
            attribute("d", V::DoubleValue(0.5)),
            attribute("y", V::BytesValue(vec![1, 2])),
            attribute(
                "a",
                V::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(V::StringValue("x".into())),
                    }],
                }),
            ),
        ];
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            parent_span_id: vec![3; 8],
            trace_state: "k=v".into(),
            name: "work".into(),
            kind: 2,
            start_time_unix_nano: 5,
            end_time_unix_nano: 9,
            attributes: attributes.clone(),
            events: vec![Event {
                time_unix_nano: 7,
                name: "e".into(),
                attributes: attributes.clone(),
                dropped_attributes_count: 1,
            }],
            links: vec![Link {
                trace_id: vec![4; 16],
                span_id: vec![5; 8],
                attributes: attributes.clone(),
                flags: 1,
                ..Link::default()
            }],
            status: Some(Status {
                message: "m".into(),
                code: 2,
            }),
            flags: 257,
            ..Span::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: attributes.clone(),
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "scope".into(),
                        version: "1".into(),
                        attributes,
                        dropped_attributes_count: 0,
                    }),
                    spans: vec![span],
                    schema_url: "u".into(),
                }],
                schema_url: "u".into(),
            }],
        };
        let body = request.encode_to_vec();
        // The same mangled bodies every run.
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let (mut taken, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut b = body.clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() % b.len() as u64) as usize;
                b[at] = next() as u8;
            }
            let decoded = ExportTraceServiceRequest::decode(&b[..]);
            match (protobuf(&b), decoded) {
                (Ok(_), Ok(_)) => taken += 1,
                (Err(_), Err(_)) => refused += 1,
                (Ok(_), Err(e)) => {
                    panic!("the check takes what the decoder refuses ({e}): {b:02x?}")
                }
                // The check refuses groups (deprecated since proto3), which the decoder skips.
                (Err(e), Ok(_)) => assert!(
                    e == "wire type 3 is not valid" || e == "wire type 4 is not valid",
                    "the check refuses what the decoder takes ({e}): {b:02x?}"
                ),
            }
        }
        assert!(
            taken > 1000 && refused > 1000,
            "{taken} taken, {refused} refused"
        );
    }
}
