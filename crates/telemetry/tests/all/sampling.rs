//! Sampling decisions: parent-based, ratio, and what export sees.

use std::collections::HashMap;

use zerostate_telemetry::{SpanExt, propagation};

use crate::harness::{Captured, test_config};

fn remote(flags: &str) -> zerostate_telemetry::TraceContext {
    let mut h = HashMap::new();
    h.insert(
        "traceparent".to_string(),
        format!("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-{flags}"),
    );
    propagation::extract(&h).expect("valid")
}

#[test]
fn a_sampled_parent_keeps_children_sampled_even_at_ratio_zero() {
    let mut config = test_config();
    config.sampling.ratio = 0.0;
    let t = Captured::new(config);
    t.run(|| {
        let root = tracing::info_span!("server");
        root.set_parent(&remote("01"));
        root.in_scope(|| tracing::info_span!("child").in_scope(|| {}));
        // A new root at ratio 0 is not kept.
        tracing::info_span!("new.root").in_scope(|| {});
    });
    let spans = t.spans();
    let mut names: Vec<_> = spans.iter().map(|s| s.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["child", "server"]);
}

#[test]
fn an_unsampled_parent_keeps_children_unsampled_and_says_so_downstream() {
    let t = Captured::new(test_config());
    let header = t.run(|| {
        let root = tracing::info_span!("server");
        root.set_parent(&remote("00"));
        root.in_scope(|| {
            let _child = tracing::info_span!("child").entered();
            let mut out = HashMap::new();
            propagation::inject_current(&mut out);
            out.remove("traceparent").expect("injected")
        })
    });
    assert!(t.spans().is_empty());
    assert!(header.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
    assert!(header.ends_with("-00"), "{header}");
}

#[test]
fn a_ratio_of_a_quarter_keeps_about_a_quarter_of_roots() {
    let mut config = test_config();
    config.sampling.ratio = 0.25;
    config.batch.max_queue_size = 16_384;
    let t = Captured::new(config);
    t.run(|| {
        for _ in 0..10_000 {
            tracing::info_span!("root").in_scope(|| tracing::info_span!("child").in_scope(|| {}));
        }
    });
    let spans = t.spans();
    let roots = spans.iter().filter(|s| s.name == "root").count();
    let children = spans.iter().filter(|s| s.name == "child").count();
    // Binomial(10000, 0.25): sd is 43, so 2200..2800 is a seven-sigma band.
    assert!(
        (2200..=2800).contains(&roots),
        "kept {roots} of 10000 roots"
    );
    assert_eq!(
        children, roots,
        "each kept root keeps its child, each dropped root drops it"
    );
    assert_eq!(t.guard.stats().spans_dropped, 0);
}

#[test]
fn without_parent_based_sampling_the_ratio_decides_by_trace_id_everywhere() {
    let mut config = test_config();
    config.sampling.parent_based = false;
    config.sampling.ratio = 0.5;
    let t = Captured::new(config);
    // Low 63 bits of ...ffff are above any ratio below 1, so this trace is never kept,
    // even though the caller sampled it.
    let mut h = HashMap::new();
    h.insert(
        "traceparent".to_string(),
        "00-0af7651916cd43ddffffffffffffffff-b7ad6b7169203331-01".to_string(),
    );
    t.run(|| {
        let s = tracing::info_span!("server");
        s.set_parent(&propagation::extract(&h).expect("valid"));
    });
    assert!(t.spans().is_empty());
}
