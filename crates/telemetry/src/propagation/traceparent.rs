//! The `traceparent` header, W3C Trace Context Level 2, section 3.2.

use crate::context::{KNOWN_FLAGS, SpanId, TraceFlags, TraceId};

use super::trim_ows;

/// What a valid `traceparent` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The version the sender used (`00`, or a future one parsed as `00`).
    pub version: u8,
    /// The trace id; never zero.
    pub trace_id: TraceId,
    /// The sender's span id; never zero.
    pub span_id: SpanId,
    /// Sampled and random flags; unknown bits are zeroed.
    pub flags: TraceFlags,
}

const V0_LEN: usize = 55;

/// Parses the `traceparent` header values of one request. More than one value, or one that
/// breaks any rule of the specification, gives `None`.
///
/// - version: two lower-case hex digits, `ff` is invalid; version `00` is exactly 55
///   characters; a higher version is parsed as `00` and may carry more fields after a `-`.
/// - trace id: 32 lower-case hex digits, not all zero; parent id: 16, not all zero;
///   flags: 2 lower-case hex digits.
/// - optional white space around the value is ignored.
pub fn parse_traceparent(values: &[&str]) -> Option<TraceParent> {
    let [value] = values else { return None };
    let s = trim_ows(value).as_bytes();
    if s.len() < V0_LEN {
        return None;
    }
    let version = hex_u8(&s[0..2])?;
    if version == 0xff || s[2] != b'-' || s[35] != b'-' || s[52] != b'-' {
        return None;
    }
    match (version, s.len()) {
        (0, V0_LEN) => {}
        (0, _) => return None,
        (_, V0_LEN) => {}
        (_, _) if s[V0_LEN] == b'-' => {}
        _ => return None,
    }
    let trace_id = u128::from_str_radix(lower_hex(&s[3..35])?, 16).ok()?;
    let span_id = u64::from_str_radix(lower_hex(&s[36..52])?, 16).ok()?;
    let flags = hex_u8(&s[53..55])?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some(TraceParent {
        version,
        trace_id: TraceId::from(trace_id),
        span_id: SpanId::from(span_id),
        flags: TraceFlags::new(flags & KNOWN_FLAGS),
    })
}

/// The bytes as a `&str` if every one is a lower-case hex digit.
fn lower_hex(s: &[u8]) -> Option<&str> {
    if s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        std::str::from_utf8(s).ok()
    } else {
        None
    }
}

fn hex_u8(s: &[u8]) -> Option<u8> {
    u8::from_str_radix(lower_hex(s)?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_specification_example() {
        let p = parse_traceparent(&["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"])
            .expect("valid");
        assert_eq!(p.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(p.flags.to_u8(), 1);
    }

    #[test]
    fn keeps_the_random_flag_and_zeroes_unknown_bits() {
        let p = parse_traceparent(&["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff"])
            .expect("valid");
        assert_eq!(p.flags.to_u8(), 0x03);
    }

    #[test]
    fn multibyte_input_is_rejected_without_panicking() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01";
        assert_eq!(parse_traceparent(&[s]), None);
    }
}
