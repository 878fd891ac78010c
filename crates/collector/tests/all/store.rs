//! What survives a restart, and what retention removes.

use prost::Message;
use zerostate_collector::Store;

use crate::harness::{collector, eventually, get, get_ok, post, request, span};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_survive_a_restart_and_age_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path(), |_| {}).await;
    let body = request("svc", vec![span(1, 1, 0, "kept", 0, 1)]).encode_to_vec();
    assert_eq!(
        post(&c, "application/x-protobuf", false, body)
            .await
            .status(),
        200
    );
    let path = format!("/api/v3/traces/{}", hex::encode([1u8; 16]));
    get_ok(&c, &path).await;
    c.shutdown().await;

    let c = collector(dir.path(), |_| {}).await;
    let (status, _) = get(&c, &path).await;
    assert_eq!(status, 200, "the trace survives a restart");
    c.shutdown().await;

    // The test spans are from 2026-11-25T13:00Z; a one-minute retention drops them when
    // the collector starts.
    let c = collector(dir.path(), |cfg| cfg.retention_secs = 60).await;
    eventually("retention to remove the span", || async {
        (get(&c, &path).await.0 == 404).then_some(())
    })
    .await;
    assert_eq!(c.stats().spans_expired, 1);
    c.shutdown().await;
}

#[test]
fn the_store_keeps_under_its_byte_bound_by_dropping_the_oldest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path()).expect("open");
    let spans: Vec<_> = (0..20_000u32)
        .map(|i| {
            let mut s = span(2, 1, 0, "s", u64::from(i), 1);
            s.trace_id = [&[2u8; 12][..], &i.to_be_bytes()].concat();
            s
        })
        .collect();
    store.ingest(&request("svc", spans)).expect("ingest");
    let used = store.used_bytes().expect("bytes");
    let bound = used / 2;
    let far_future = u64::MAX / 2;
    let deleted = store
        .enforce_limits(0, std::time::Duration::from_secs(far_future), bound)
        .expect("enforce");
    assert!(deleted >= 10_000 - 2_000, "deleted {deleted}");
    assert!(store.used_bytes().expect("bytes") <= bound);
    // The newest survive.
    let newest = [&[2u8; 12][..], &19_999u32.to_be_bytes()].concat();
    assert!(store.trace(&newest).expect("trace").is_some());
    let oldest = [&[2u8; 12][..], &0u32.to_be_bytes()].concat();
    assert!(store.trace(&oldest).expect("trace").is_none());
}
