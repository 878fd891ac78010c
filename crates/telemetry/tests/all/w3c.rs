//! The W3C trace-context test suite's cases (test/test.py, strict level 2), as tables run
//! against the parser and against `examples/w3c_validation_server` as a real process.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Path;
use axum::http::HeaderMap;
use axum::routing::post;
use zerostate_telemetry::propagation;

const TRACE: &str = "12345678901234567890123456789012";
const PARENT: &str = "1234567890123456";
const TP01: &str = "00-12345678901234567890123456789012-1234567890123456-01";
const TP00: &str = "00-12345678901234567890123456789012-1234567890123456-00";

#[derive(Debug, Clone, PartialEq)]
enum Want {
    /// The trace continues: same trace id, and these flags on the way out.
    Continue(u8),
    /// A fresh trace starts.
    Fresh,
}

struct ParentCase {
    name: &'static str,
    headers: Vec<(String, String)>,
    want: Want,
}

fn tp(name: &'static str, value: &str, want: Want) -> ParentCase {
    ParentCase {
        name,
        headers: vec![("traceparent".into(), value.into())],
        want,
    }
}

fn traceparent_cases() -> Vec<ParentCase> {
    use Want::{Continue, Fresh};
    let with =
        |v: &str, p: &str, f: &str| format!("{v}-{TRACE}-{p}-{f}").replacen("TRACE", TRACE, 1);
    vec![
        ParentCase {
            name: "both_missing",
            headers: vec![],
            want: Fresh,
        },
        tp("included", TP01, Continue(0x01)),
        ParentCase {
            name: "duplicated",
            headers: vec![
                (
                    "traceparent".into(),
                    "00-12345678901234567890123456789011-1234567890123456-01".into(),
                ),
                ("traceparent".into(), TP01.into()),
            ],
            want: Fresh,
        },
        ParentCase {
            name: "header_name_dash",
            headers: vec![("trace-parent".into(), TP01.into())],
            want: Fresh,
        },
        ParentCase {
            name: "header_name_dot",
            headers: vec![("trace.parent".into(), TP01.into())],
            want: Fresh,
        },
        ParentCase {
            name: "casing_camel",
            headers: vec![("TraceParent".into(), TP01.into())],
            want: Continue(1),
        },
        ParentCase {
            name: "casing_mixed",
            headers: vec![("TrAcEpArEnT".into(), TP01.into())],
            want: Continue(1),
        },
        ParentCase {
            name: "casing_upper",
            headers: vec![("TRACEPARENT".into(), TP01.into())],
            want: Continue(1),
        },
        tp("v00_trailing_dot", &format!("{TP01}."), Fresh),
        tp(
            "v00_trailing_fields",
            &format!("{TP01}-what-the-future-will-be-like"),
            Fresh,
        ),
        tp("vcc", &with("cc", PARENT, "01"), Continue(1)),
        tp(
            "vcc_future_fields",
            &format!("{}-what-the-future-will-be-like", with("cc", PARENT, "01")),
            Continue(1),
        ),
        tp(
            "vcc_bad_separator",
            &format!("{}.what-the-future-will-be-like", with("cc", PARENT, "01")),
            Fresh,
        ),
        tp("vff", &with("ff", PARENT, "01"), Fresh),
        tp("version_illegal_1", &with(".0", PARENT, "01"), Fresh),
        tp("version_illegal_2", &with("0.", PARENT, "01"), Fresh),
        tp("version_too_long_3", &with("000", PARENT, "01"), Fresh),
        tp("version_too_long_4", &with("0000", PARENT, "01"), Fresh),
        tp("version_too_short", &with("0", PARENT, "01"), Fresh),
        tp("version_upper_hex", &with("CC", PARENT, "01"), Fresh),
        tp(
            "trace_id_all_zero",
            "00-00000000000000000000000000000000-1234567890123456-01",
            Fresh,
        ),
        tp(
            "trace_id_illegal_1",
            "00-.2345678901234567890123456789012-1234567890123456-01",
            Fresh,
        ),
        tp(
            "trace_id_illegal_2",
            "00-1234567890123456789012345678901.-1234567890123456-01",
            Fresh,
        ),
        tp(
            "trace_id_too_long",
            "00-123456789012345678901234567890123-1234567890123456-01",
            Fresh,
        ),
        tp(
            "trace_id_too_short",
            "00-1234567890123456789012345678901-1234567890123456-01",
            Fresh,
        ),
        tp(
            "trace_id_upper_hex",
            "00-1234567890123456789012345678901A-1234567890123456-01",
            Fresh,
        ),
        tp(
            "parent_id_all_zero",
            &with("00", "0000000000000000", "01"),
            Fresh,
        ),
        tp(
            "parent_id_illegal_1",
            &with("00", ".234567890123456", "01"),
            Fresh,
        ),
        tp(
            "parent_id_illegal_2",
            &with("00", "123456789012345.", "01"),
            Fresh,
        ),
        tp(
            "parent_id_too_long",
            &with("00", "12345678901234567", "01"),
            Fresh,
        ),
        tp(
            "parent_id_too_short",
            &with("00", "123456789012345", "01"),
            Fresh,
        ),
        tp(
            "parent_id_upper_hex",
            &with("00", "123456789012345A", "01"),
            Fresh,
        ),
        tp("flags_illegal_1", &with("00", PARENT, ".0"), Fresh),
        tp("flags_illegal_2", &with("00", PARENT, "0."), Fresh),
        tp("flags_too_long", &with("00", PARENT, "001"), Fresh),
        tp("flags_too_short", &with("00", PARENT, "1"), Fresh),
        tp("flags_upper_hex", &with("00", PARENT, "0A"), Fresh),
        tp(
            "flags_random_unsampled",
            &with("00", PARENT, "02"),
            Continue(0x02),
        ),
        tp(
            "flags_random_sampled",
            &with("00", PARENT, "03"),
            Continue(0x03),
        ),
        tp(
            "flags_unknown_bits_zeroed",
            &with("00", PARENT, "09"),
            Continue(0x01),
        ),
        tp("ows_leading_space", &format!(" {TP01}"), Continue(1)),
        tp("ows_leading_tab", &format!("\t{TP01}"), Continue(1)),
        tp("ows_trailing_space", &format!("{TP01} "), Continue(1)),
        tp("ows_trailing_tab", &format!("{TP01}\t"), Continue(1)),
        tp("ows_both", &format!("\t {TP01} \t"), Continue(1)),
    ]
}

struct StateCase {
    name: &'static str,
    tracestate: Vec<(String, String)>,
    /// `None`: the state is discarded.
    want: Option<Vec<(&'static str, String)>>,
}

fn ts(
    name: &'static str,
    headers: &[&str],
    want: Option<Vec<(&'static str, String)>>,
) -> StateCase {
    StateCase {
        name,
        tracestate: headers
            .iter()
            .map(|v| ("tracestate".to_string(), v.to_string()))
            .collect(),
        want,
    }
}

fn kv(pairs: &[(&'static str, &str)]) -> Option<Vec<(&'static str, String)>> {
    Some(pairs.iter().map(|(k, v)| (*k, v.to_string())).collect())
}

fn tracestate_cases() -> Vec<StateCase> {
    let lc: String = ('a'..='z').collect();
    let key = format!("{lc}0123456789_-*/");
    let key_vendor = format!("{key}@a-z0-9_-*/");
    let value: String = (0x20u8..=0x2b)
        .chain(0x2d..=0x3c)
        .chain(0x3e..=0x7e)
        .map(char::from)
        .collect();
    let bars = |n: usize| {
        (1..=n)
            .map(|i| format!("bar{i:02}={i:02}"))
            .collect::<Vec<_>>()
    };
    let b32 = bars(32);
    let b33 = bars(33);
    let chunks = |b: &[String]| b.chunks(10).map(|c| c.join(",")).collect::<Vec<_>>();
    let (c32, c33) = (chunks(&b32), chunks(&b33));
    let key_all = Box::leak(key.clone().into_boxed_str());
    let key_vendor_all = Box::leak(key_vendor.clone().into_boxed_str());
    vec![
        ts(
            "included",
            &["foo=1,bar=2"],
            kv(&[("foo", "1"), ("bar", "2")]),
        ),
        StateCase {
            name: "header_name_dash",
            tracestate: vec![("trace-state".into(), "foo=1".into())],
            want: None,
        },
        StateCase {
            name: "header_name_casing",
            tracestate: vec![("TrAcEsTaTe".into(), "foo=1".into())],
            want: kv(&[("foo", "1")]),
        },
        ts("empty_header", &[""], None),
        ts("empty_then_value", &["", "foo=1"], kv(&[("foo", "1")])),
        ts("value_then_empty", &["foo=1", ""], kv(&[("foo", "1")])),
        ts(
            "multiple_headers_combined_in_order",
            &["foo=1,bar=2", "rojo=1,congo=2", "baz=3"],
            kv(&[
                ("foo", "1"),
                ("bar", "2"),
                ("rojo", "1"),
                ("congo", "2"),
                ("baz", "3"),
            ]),
        ),
        // Level 2: the header is still inherited; we keep a key's first member.
        ts(
            "duplicated_keys_same_value",
            &["foo=1,foo=1"],
            kv(&[("foo", "1")]),
        ),
        ts(
            "duplicated_keys_other_value",
            &["foo=1,foo=2"],
            kv(&[("foo", "1")]),
        ),
        ts(
            "duplicated_across_headers",
            &["foo=1", "foo=1"],
            kv(&[("foo", "1")]),
        ),
        ts(
            "duplicated_across_headers_other_value",
            &["foo=1", "foo=2"],
            kv(&[("foo", "1")]),
        ),
        ts(
            "duplicated_keep_the_others",
            &["foo=1,bar=2,foo=3"],
            kv(&[("foo", "1"), ("bar", "2")]),
        ),
        ts(
            "all_allowed_characters",
            &[&format!("{key}={value}")],
            kv(&[(key_all, &value)]),
        ),
        ts(
            "all_allowed_characters_vendor",
            &[&format!("{key_vendor}={value}")],
            kv(&[(key_vendor_all, &value)]),
        ),
        ts(
            "ows_around_members",
            &["foo=1 \t , \t bar=2, \t baz=3"],
            kv(&[("foo", "1"), ("bar", "2"), ("baz", "3")]),
        ),
        ts(
            "ows_tabs",
            &["foo=1\t \t,\t \tbar=2,\t \tbaz=3"],
            kv(&[("foo", "1"), ("bar", "2"), ("baz", "3")]),
        ),
        ts("ows_leading", &[" foo=1"], kv(&[("foo", "1")])),
        ts("ows_trailing_tab", &["foo=1\t"], kv(&[("foo", "1")])),
        ts("ows_both", &["\t foo=1 \t"], kv(&[("foo", "1")])),
        ts("key_with_space", &["foo =1"], None),
        ts("key_upper_case", &["FOO=1"], None),
        ts("key_with_dot", &["foo.bar=1"], None),
        // Level 2: `key = ( lcalpha / DIGIT ) 0*255( keychar )`, `@` a keychar.
        ts(
            "vendor_empty",
            &["foo@=1,bar=2"],
            kv(&[("foo@", "1"), ("bar", "2")]),
        ),
        ts("tenant_empty", &["@foo=1,bar=2"], None),
        ts(
            "double_at",
            &["foo@@bar=1,bar=2"],
            kv(&[("foo@@bar", "1"), ("bar", "2")]),
        ),
        ts(
            "two_ats",
            &["foo@bar@baz=1,bar=2"],
            kv(&[("foo@bar@baz", "1"), ("bar", "2")]),
        ),
        ts("key_digit_first", &["1foo=1"], kv(&[("1foo", "1")])),
        StateCase {
            name: "32_members",
            tracestate: c32
                .iter()
                .map(|c| ("tracestate".to_string(), c.clone()))
                .collect(),
            want: Some(
                b32.iter()
                    .map(|m| {
                        let (k, v) = m.split_once('=').expect("pair");
                        (&*Box::leak(k.to_string().into_boxed_str()), v.to_string())
                    })
                    .collect(),
            ),
        },
        StateCase {
            name: "33_members",
            tracestate: c33
                .iter()
                .map(|c| ("tracestate".to_string(), c.clone()))
                .collect(),
            want: None,
        },
        ts(
            "key_256",
            &["foo=1", &format!("{}=1", "z".repeat(256))],
            Some(vec![
                ("foo", "1".into()),
                (Box::leak("z".repeat(256).into_boxed_str()), "1".into()),
            ]),
        ),
        ts(
            "key_257",
            &["foo=1", &format!("{}=1", "z".repeat(257))],
            None,
        ),
        ts(
            "tenant_241_vendor_14",
            &[
                "foo=1",
                &format!("{}@{}=1", "t".repeat(241), "v".repeat(14)),
            ],
            Some(vec![
                ("foo", "1".into()),
                (
                    Box::leak(format!("{}@{}", "t".repeat(241), "v".repeat(14)).into_boxed_str()),
                    "1".into(),
                ),
            ]),
        ),
        ts(
            "tenant_242",
            &["foo=1", &format!("{}@v=1", "t".repeat(242))],
            Some(vec![
                ("foo", "1".into()),
                (
                    Box::leak(format!("{}@v", "t".repeat(242)).into_boxed_str()),
                    "1".into(),
                ),
            ]),
        ),
        ts(
            "vendor_15",
            &["foo=1", &format!("t@{}=1", "v".repeat(15))],
            Some(vec![
                ("foo", "1".into()),
                (
                    Box::leak(format!("t@{}", "v".repeat(15)).into_boxed_str()),
                    "1".into(),
                ),
            ]),
        ),
        ts(
            "multi_tenant_key_257",
            &[
                "foo=1",
                &format!("{}@{}=1", "t".repeat(200), "v".repeat(56)),
            ],
            None,
        ),
        ts("value_with_equals", &["foo=bar=baz"], None),
        ts("value_empty", &["foo=,bar=3"], None),
        ts("value_257", &[&format!("foo={}", "v".repeat(257))], None),
    ]
}

fn extract(headers: &[(String, String)]) -> Option<zerostate_telemetry::TraceContext> {
    propagation::extract(&headers.to_vec())
}

#[test]
fn traceparent_cases_against_the_parser() {
    for case in traceparent_cases() {
        let got = extract(&case.headers);
        match case.want {
            Want::Continue(flags) => {
                let cx =
                    got.unwrap_or_else(|| panic!("{}: expected the trace to continue", case.name));
                assert_eq!(cx.trace_id.to_string(), TRACE, "{}", case.name);
                assert_eq!(cx.span_id.to_string(), PARENT, "{}", case.name);
                assert_eq!(cx.flags.to_u8(), flags, "{}", case.name);
            }
            Want::Fresh => assert!(
                got.is_none(),
                "{}: expected a fresh trace, parsed {got:?}",
                case.name
            ),
        }
    }
}

#[test]
fn tracestate_cases_against_the_parser() {
    for case in tracestate_cases() {
        let mut headers = vec![("traceparent".to_string(), TP00.to_string())];
        headers.extend(case.tracestate.clone());
        let cx = extract(&headers).unwrap_or_else(|| panic!("{}: traceparent is valid", case.name));
        let members: Vec<(String, String)> = cx
            .trace_state
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let want: Vec<(String, String)> = case
            .want
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(members, want, "{}", case.name);
    }
}

#[test]
fn tracestate_without_traceparent_is_discarded() {
    let headers = vec![("tracestate".to_string(), "foo=1".to_string())];
    assert!(extract(&headers).is_none());
}

/// The validation server, as a child process on an ephemeral port.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start() -> Self {
        let exe = std::env::current_exe().expect("test binary path");
        let dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target dir");
        let bin = dir.join("examples").join("w3c_validation_server");
        assert!(
            bin.exists(),
            "{} is missing: `cargo test` builds the examples; run it from the workspace",
            bin.display()
        );
        let mut child = Command::new(&bin)
            .arg("127.0.0.1:0")
            .env("OTEL_SDK_DISABLED", "true")
            .env("ZEROSTATE_LOG_FORMAT", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("validation server starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reads its address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected: {line:?}"));
        Self {
            url: format!("http://{addr}/test"),
            child,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Calls = Arc<Mutex<HashMap<String, Vec<(String, String)>>>>;

/// Receives the server's callbacks, as the suite's harness does.
async fn harness() -> (String, Calls) {
    let calls: Calls = Arc::default();
    let store = calls.clone();
    let app = Router::new().route(
        "/cb/{id}",
        post(move |Path(id): Path<String>, headers: HeaderMap| {
            let store = store.clone();
            async move {
                let h = headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                    .collect();
                store.lock().expect("lock").insert(id, h);
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, calls)
}

/// Sends `headers` to the server, asking for `count` callbacks; returns their headers.
async fn call(
    server: &Server,
    base: &str,
    calls: &Calls,
    tag: &str,
    headers: &[(String, String)],
    count: usize,
) -> Vec<Vec<(String, String)>> {
    let ids: Vec<String> = (0..count).map(|i| format!("{tag}-{i}")).collect();
    let body: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| serde_json::json!({"url": format!("{base}/cb/{id}"), "arguments": []}))
        .collect();
    let mut request = reqwest::Client::new().post(&server.url).json(&body);
    for (k, v) in headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let status = request.send().await.expect("server answers").status();
    assert!(status.is_success(), "{tag}: status {status}");
    let calls = calls.lock().expect("lock");
    ids.iter()
        .map(|id| {
            calls
                .get(id)
                .cloned()
                .unwrap_or_else(|| panic!("{tag}: no callback {id}"))
        })
        .collect()
}

fn parent_of(headers: &[(String, String)]) -> (String, String, String) {
    let values: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(values.len(), 1, "exactly one traceparent: {values:?}");
    let p = propagation::parse_traceparent(&values)
        .unwrap_or_else(|| panic!("valid traceparent {values:?}"));
    (
        p.trace_id.to_string(),
        p.span_id.to_string(),
        format!("{:02x}", p.flags.to_u8()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validation_server_passes_the_suite() {
    let server = Server::start();
    let (base, calls) = harness().await;

    for case in traceparent_cases() {
        let out = call(&server, &base, &calls, case.name, &case.headers, 1).await;
        let (trace, parent, flags) = parent_of(&out[0]);
        assert_ne!(parent, PARENT, "{}: a new span id is sent", case.name);
        match case.want {
            Want::Continue(f) => {
                assert_eq!(trace, TRACE, "{}", case.name);
                assert_eq!(flags, format!("{f:02x}"), "{}", case.name);
            }
            Want::Fresh => {
                assert_ne!(trace, TRACE, "{}", case.name);
                assert_ne!(trace, "00000000000000000000000000000000", "{}", case.name);
            }
        }
    }

    for case in tracestate_cases() {
        let mut headers = vec![("traceparent".to_string(), TP00.to_string())];
        headers.extend(case.tracestate.clone());
        let out = call(&server, &base, &calls, case.name, &headers, 1).await;
        let (trace, _, _) = parent_of(&out[0]);
        assert_eq!(trace, TRACE, "{}", case.name);
        let states: Vec<&str> = out[0]
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("tracestate"))
            .map(|(_, v)| v.as_str())
            .collect();
        let got: Vec<(String, String)> = propagation::parse_tracestate(&states)
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let want: Vec<(String, String)> = case
            .want
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(got, want, "{}", case.name);
    }

    // Advanced: several callbacks share the trace and each has its own parent id.
    for (tag, headers, same_trace) in [
        (
            "adv_valid",
            vec![("traceparent".to_string(), TP01.to_string())],
            true,
        ),
        ("adv_missing", vec![], false),
        (
            "adv_illegal",
            vec![(
                "traceparent".to_string(),
                "00-00000000000000000000000000000000-1234567890123456-01".to_string(),
            )],
            false,
        ),
    ] {
        let out = call(&server, &base, &calls, tag, &headers, 3).await;
        let parents: Vec<_> = out.iter().map(|h| parent_of(h)).collect();
        let traces: std::collections::HashSet<_> = parents.iter().map(|p| p.0.clone()).collect();
        let spans: std::collections::HashSet<_> = parents.iter().map(|p| p.1.clone()).collect();
        assert_eq!(spans.len(), 3, "{tag}: each callback has its own parent id");
        assert_eq!(traces.len(), 1, "{tag}: one trace");
        assert_eq!(traces.contains(TRACE), same_trace, "{tag}");
        assert!(
            !traces.contains("00000000000000000000000000000000"),
            "{tag}"
        );
    }

    // A body that is not the expected JSON is answered with 400, and the server lives on.
    let status = reqwest::Client::new()
        .post(&server.url)
        .body("not json")
        .send()
        .await
        .expect("answers")
        .status();
    assert_eq!(status, 400);
    let out = call(&server, &base, &calls, "after_bad_body", &[], 1).await;
    parent_of(&out[0]);
}
