//! The `tracestate` header, W3C Trace Context Level 2, section 3.3.

use crate::context::TraceState;

use super::trim_ows;

/// The most list members a `tracestate` may have.
pub const MAX_MEMBERS: usize = 32;

/// Parses every `tracestate` header value of one request, combined in order as one list.
///
/// Empty members are skipped. A key that appears again keeps its first member and the later
/// ones are dropped (the header is still inherited, as Level 2 asks). An invalid key or
/// value, or more than 32 members, makes the whole state invalid, and an empty state is
/// returned: the receiver then carries on without it, as the specification allows.
pub fn parse_tracestate(values: &[&str]) -> TraceState {
    let mut members: Vec<(String, String)> = Vec::new();
    let mut count = 0usize;
    for member in values.iter().flat_map(|v| v.split(',')) {
        let member = trim_ows(member);
        if member.is_empty() {
            continue;
        }
        let Some((key, value)) = member.split_once('=') else {
            return TraceState::default();
        };
        if !valid_key(key) || !valid_value(value) {
            return TraceState::default();
        }
        count += 1;
        if count > MAX_MEMBERS {
            return TraceState::default();
        }
        if members.iter().any(|(k, _)| k == key) {
            continue;
        }
        members.push((key.to_owned(), value.to_owned()));
    }
    TraceState::from_members(members)
}

/// `keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"`.
fn key_char(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/' | b'@')
}

/// Level 2: `key = ( lcalpha / DIGIT ) 0*255( keychar )`. The Level 1 split into a tenant
/// id and a system id around one `@`, each with its own length, is gone: a multi-tenant
/// key is any key with an `@` in it, up to 256 characters in all.
fn valid_key(key: &str) -> bool {
    let k = key.as_bytes();
    (1..=256).contains(&k.len())
        && (k[0].is_ascii_lowercase() || k[0].is_ascii_digit())
        && k.iter().all(|&b| key_char(b))
}

/// `value = 0*255(chr) nblk-chr`, `chr = %x20 / nblk-chr`,
/// `nblk-chr = %x21-2B / %x2D-3C / %x3E-7E` (no `,` and no `=`).
fn valid_value(value: &str) -> bool {
    let v = value.as_bytes();
    let nblk = |b: u8| matches!(b, 0x21..=0x2b | 0x2d..=0x3c | 0x3e..=0x7e);
    match v.last() {
        Some(&last) => v.len() <= 256 && nblk(last) && v.iter().all(|&b| b == b' ' || nblk(b)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_level_2_grammar() {
        for good in [
            "a",
            "1a",
            "foo@bar",
            "foo@",
            "foo@@bar",
            "a@b@c",
            &"z".repeat(256),
        ] {
            assert!(valid_key(good), "{good}");
        }
        for bad in ["", "@foo", "Foo", "foo bar", "foo.bar", &"z".repeat(257)] {
            assert!(!valid_key(bad), "{bad}");
        }
    }

    #[test]
    fn value_may_hold_inner_spaces_but_not_end_with_one() {
        assert!(valid_value("a b"));
        assert!(!valid_value(""));
        assert!(!valid_value("a\u{7f}"));
    }
}
