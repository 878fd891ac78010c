//! The export account: every interval a process says, in a span of its own, what became of
//! the spans it made (exported, spooled, dropped and why), so a backend can tell why one
//! is missing.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};

use zerostate_telemetry::names::{account, span};
use zerostate_telemetry::testing::{OtlpReceiver, ReceivedSpan};
use zerostate_telemetry::{SpanExt, TelemetryBuilder, TelemetryConfig, propagation};

use crate::harness::{test_config, until};

fn config(endpoint: String) -> TelemetryConfig {
    let mut c = test_config();
    c.endpoint = endpoint;
    c.account_interval_ms = 200;
    c.batch.export_timeout_ms = 1000;
    c.shutdown_timeout_ms = 3000;
    c
}

fn accounts(receiver: &OtlpReceiver) -> Vec<ReceivedSpan> {
    receiver
        .spans()
        .into_iter()
        .filter(|s| s.span.name == span::TELEMETRY_EXPORT_ACCOUNT)
        .collect()
}

/// The sum of an account attribute over `accounts`.
fn sum(accounts: &[ReceivedSpan], key: &str) -> u64 {
    accounts
        .iter()
        .map(|a| {
            a.attribute(key)
                .unwrap_or_else(|| panic!("an account without {key}: {a:?}"))
                .parse::<u64>()
                .expect("a count")
        })
        .sum()
}

/// Spans continuing a remote trace whose caller sampled it out.
fn under_unsampled_parent(n: usize) {
    let headers = HashMap::from([(
        "traceparent".to_owned(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00".to_owned(),
    )]);
    let cx = propagation::extract(&headers).expect("a context");
    for _ in 0..n {
        let s = tracing::info_span!("continued");
        s.set_parent(&cx);
        s.in_scope(|| {});
    }
}

#[test]
fn every_interval_says_what_became_of_the_spans_and_the_sums_match_the_totals() {
    let receiver = OtlpReceiver::start();
    let mut c = config(receiver.endpoint());
    // A queue this small overflows under a burst.
    c.batch.max_queue_size = 4;
    c.batch.max_export_batch_size = 4;
    let (dispatch, mut guard) = TelemetryBuilder::new(c).build().expect("builds");
    tracing::dispatcher::with_default(&dispatch, || {
        under_unsampled_parent(7);
        for _ in 0..2000 {
            tracing::info_span!("burst").in_scope(|| {});
        }
    });
    until("two accounts", || accounts(&receiver).len() >= 2);
    guard.shutdown().expect("shuts down");
    let stats = guard.stats();
    let accounts = accounts(&receiver);
    assert!(stats.spans_dropped > 0, "the burst overflowed: {stats:?}");
    assert_eq!(stats.spans_sampled_out, 7, "{stats:?}");
    // Every count is the interval's: over all accounts they add up to the totals (the
    // final account is exported after it was counted, so it is in none).
    assert_eq!(
        sum(&accounts, account::DROPPED_QUEUE_FULL),
        stats.spans_dropped
    );
    assert_eq!(sum(&accounts, account::DROPPED_SAMPLED_OUT), 7);
    assert_eq!(
        sum(&accounts, account::SPANS_EXPORTED),
        stats.spans_exported - 1
    );
    assert_eq!(sum(&accounts, account::SPANS_MADE), stats.spans_made() - 1);
    let last = accounts.last().expect("accounts");
    assert_eq!(last.attribute(account::FINAL).as_deref(), Some("true"));
    assert_eq!(last.attribute(account::INTERVAL_MS).as_deref(), Some("200"));
    // Each account is alone in its trace, covering its interval.
    for a in &accounts {
        assert!(a.span.parent_span_id.is_empty(), "{a:?}");
        assert!(a.span.end_time_unix_nano >= a.span.start_time_unix_nano);
        assert_eq!(a.attribute(account::FAILING_SINCE_MS), None, "{a:?}");
    }
    let traces: std::collections::HashSet<_> =
        accounts.iter().map(|a| a.span.trace_id.clone()).collect();
    assert_eq!(traces.len(), accounts.len());
}

#[test]
fn accounts_made_while_the_collector_is_down_say_since_when_and_arrive_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mut c = config(format!("http://{addr}"));
    c.spool_dir = Some(dir.path().to_owned());
    let down_at = std::time::SystemTime::now();
    let (dispatch, mut guard) = TelemetryBuilder::new(c).build().expect("builds");
    tracing::dispatcher::with_default(&dispatch, || {
        for _ in 0..50 {
            tracing::info_span!("during").in_scope(|| {});
        }
    });
    until("a few accounts spooled", || guard.stats().spool_spans >= 53);
    let receiver = OtlpReceiver::start_on(addr).expect("the port is free again");
    until("the spool sent", || guard.stats().spool_spans == 0);
    guard.shutdown().expect("shuts down");
    let accounts = accounts(&receiver);
    let failing: Vec<_> = accounts
        .iter()
        .filter(|a| a.attribute(account::FAILING_SINCE_MS).is_some())
        .collect();
    assert!(failing.len() >= 3, "{accounts:?}");
    let down_ms = down_at
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    for a in &failing {
        let since: u64 = a
            .attribute(account::FAILING_SINCE_MS)
            .and_then(|v| v.parse().ok())
            .expect("a time");
        assert!(
            since >= down_ms && since < down_ms + 5000,
            "{since} {down_ms}"
        );
        let error = a.attribute(account::ERROR).expect("why it fails");
        assert!(error.contains("onnect"), "{error}");
    }
    assert!(
        failing
            .iter()
            .any(|a| a.attribute(account::SPOOL_SPANS).is_some_and(|n| n != "0")),
        "{failing:?}"
    );
    assert_eq!(sum(&accounts, account::SPANS_SPOOLED), {
        let s = guard.stats();
        s.spans_spooled
    });
}
