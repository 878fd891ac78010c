//! The `baggage` header, W3C Baggage.

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use crate::context::{Baggage, BaggageEntry};

use super::trim_ows;

/// The most entries propagated.
pub const MAX_ENTRIES: usize = 64;
/// The most bytes the encoded header may take.
pub const MAX_BYTES: usize = 8192;

/// Characters a value must percent-encode: everything but `baggage-octet`.
const VALUE_ESCAPES: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b',')
    .add(b';')
    .add(b'\\')
    .add(b'%');

/// Parses every `baggage` header value of one request, combined in order.
///
/// A malformed entry is skipped; entries past 64, or past 8192 encoded bytes, are left out.
pub fn parse(values: &[&str]) -> Baggage {
    let entries = values
        .iter()
        .flat_map(|v| v.split(','))
        .filter_map(parse_entry);
    limit(entries)
}

fn parse_entry(member: &str) -> Option<BaggageEntry> {
    let member = trim_ows(member);
    if member.is_empty() {
        return None;
    }
    let (pair, properties) = match member.split_once(';') {
        Some((pair, props)) => (pair, trim_ows(props)),
        None => (member, ""),
    };
    let (key, value) = pair.split_once('=')?;
    let (key, value) = (trim_ows(key), trim_ows(value));
    if key.is_empty() || !key.bytes().all(is_tchar) || !value.bytes().all(is_baggage_octet) {
        return None;
    }
    let value = percent_decode_str(value).decode_utf8().ok()?.into_owned();
    Some(BaggageEntry {
        key: key.to_owned(),
        value,
        properties: properties.to_owned(),
    })
}

/// Keeps entries in order while both limits hold.
pub(crate) fn limit(entries: impl Iterator<Item = BaggageEntry>) -> Baggage {
    let mut kept = Vec::new();
    let mut bytes = 0;
    for e in entries {
        if kept.len() == MAX_ENTRIES || !e.key.bytes().all(is_tchar) || e.key.is_empty() {
            continue;
        }
        let len = encoded_len(&e) + usize::from(!kept.is_empty());
        if bytes + len > MAX_BYTES {
            continue;
        }
        bytes += len;
        kept.push(e);
    }
    Baggage::from_entries(kept)
}

fn encoded_len(e: &BaggageEntry) -> usize {
    let props = if e.properties.is_empty() {
        0
    } else {
        e.properties.len() + 1
    };
    e.key.len()
        + 1
        + utf8_percent_encode(&e.value, VALUE_ESCAPES)
            .map(str::len)
            .sum::<usize>()
        + props
}

pub(crate) fn format(baggage: &Baggage) -> String {
    let mut out = String::new();
    for e in baggage.iter() {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&e.key);
        out.push('=');
        out.extend(utf8_percent_encode(&e.value, VALUE_ESCAPES));
        if !e.properties.is_empty() {
            out.push(';');
            out.push_str(&e.properties);
        }
    }
    out
}

/// RFC 7230 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `baggage-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E`.
fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_values_and_keeps_properties() {
        let b = parse(&[
            "userId=alice%20smith;ttl=5, serverNode = DF%2028 ",
            "bad key=1,x=y",
        ]);
        assert_eq!(b.get("userId"), Some("alice smith"));
        assert_eq!(b.get("serverNode"), Some("DF 28"));
        assert_eq!(b.get("x"), Some("y"));
        assert_eq!(b.len(), 3);
        assert_eq!(
            b.header(),
            "userId=alice%20smith;ttl=5,serverNode=DF%2028,x=y"
        );
    }

    #[test]
    fn enforces_the_entry_limit() {
        let header: Vec<String> = (0..100).map(|i| format!("k{i}=v")).collect();
        let header = header.join(",");
        assert_eq!(parse(&[&header]).len(), MAX_ENTRIES);
    }

    #[test]
    fn enforces_the_byte_limit() {
        let big = "v".repeat(5000);
        let b = parse(&[&format!("a={big},b={big},c=1")]);
        assert_eq!(b.len(), 2);
        assert!(b.header().len() <= MAX_BYTES);
    }
}
