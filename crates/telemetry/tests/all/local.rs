//! Local spans: children collected on one thread and exported with their parent.

use opentelemetry::trace::SpanId;
use zerostate_telemetry::local::{LocalParent, LocalSpan, MAX_LOCAL_SPANS};

use crate::harness::{Captured, attr, find, test_config};

#[test]
fn local_spans_are_exported_as_children_with_their_attributes() {
    let t = Captured::new(test_config());
    t.run(|| {
        let task = tracing::info_span!("execution.task", task.id = "t-1");
        let _collect = LocalParent::of(&task);
        for step in 0..3_i64 {
            let _s = LocalSpan::enter("execution.step").with_attribute("step", step);
            if step == 1 {
                let _inner = LocalSpan::enter("execution.inner");
            }
        }
    });
    let spans = t.spans();
    assert_eq!(spans.len(), 5, "the task, three steps, one inner span");
    let task = find(&spans, "execution.task");
    let steps: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "execution.step")
        .collect();
    assert_eq!(steps.len(), 3);
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s.parent_span_id, task.span_context.span_id());
        assert_eq!(s.span_context.trace_id(), task.span_context.trace_id());
        assert!(s.span_context.is_sampled());
        assert_eq!(attr(s, "step").as_deref(), Some(i.to_string().as_str()));
        assert!(s.start_time >= task.start_time && s.end_time <= task.end_time);
        assert!(s.end_time >= s.start_time);
    }
    let inner = find(&spans, "execution.inner");
    assert_eq!(inner.parent_span_id, steps[1].span_context.span_id());
    assert_ne!(inner.span_context.span_id(), SpanId::INVALID);
    assert!(inner.attributes.is_empty());
    assert_eq!(t.guard.stats().spans_dropped, 0);
}

#[test]
fn without_a_parent_or_under_an_unsampled_one_nothing_is_recorded() {
    let mut config = test_config();
    config.sampling.ratio = 0.0;
    let t = Captured::new(config);
    t.run(|| {
        // No guard: nothing collects.
        drop(LocalSpan::enter("lonely").with_attribute("k", 1_i64));
        // A root at ratio 0 is not sampled: its guard collects nothing.
        let root = tracing::info_span!("unsampled");
        let _collect = LocalParent::of(&root);
        drop(LocalSpan::enter("under.unsampled"));
    });
    assert!(t.spans().is_empty());
    // Outside any subscriber the guard is inert as well.
    let span = tracing::info_span!("no.subscriber");
    let _collect = LocalParent::of(&span);
    drop(LocalSpan::enter("nowhere"));
}

#[test]
fn spans_beyond_the_bound_are_counted_as_dropped() {
    let t = Captured::new(test_config());
    t.run(|| {
        let task = tracing::info_span!("big.task");
        let _collect = LocalParent::of(&task);
        for _ in 0..MAX_LOCAL_SPANS + 10 {
            drop(LocalSpan::enter("tiny"));
        }
    });
    let spans = t.spans();
    assert_eq!(spans.len(), MAX_LOCAL_SPANS + 1);
    assert_eq!(t.guard.stats().spans_dropped, 10);
}

#[test]
fn nested_guards_collect_under_the_innermost_span() {
    let t = Captured::new(test_config());
    t.run(|| {
        let outer = tracing::info_span!("outer");
        let _a = LocalParent::of(&outer);
        drop(LocalSpan::enter("under.outer"));
        {
            let inner = outer.in_scope(|| tracing::info_span!("inner"));
            let _b = LocalParent::of(&inner);
            drop(LocalSpan::enter("under.inner"));
        }
        drop(LocalSpan::enter("under.outer.again"));
    });
    let spans = t.spans();
    let outer = find(&spans, "outer");
    let inner = find(&spans, "inner");
    assert_eq!(
        find(&spans, "under.outer").parent_span_id,
        outer.span_context.span_id()
    );
    assert_eq!(
        find(&spans, "under.outer.again").parent_span_id,
        outer.span_context.span_id()
    );
    assert_eq!(
        find(&spans, "under.inner").parent_span_id,
        inner.span_context.span_id()
    );
}

#[test]
fn a_local_span_ending_under_a_newer_guard_does_not_touch_that_guards_spans() {
    let t = Captured::new(test_config());
    t.run(|| {
        let outer = tracing::info_span!("outer");
        let _a = LocalParent::of(&outer);
        let early = LocalSpan::enter("early");
        let inner = tracing::info_span!("inner");
        let b = LocalParent::of(&inner);
        let first = LocalSpan::enter("first.of.inner");
        // `early` ends while `inner` collects: it must not close `first.of.inner`, which
        // stays the parent of what opens next.
        drop(early);
        let second = LocalSpan::enter("second.of.inner");
        drop(second);
        drop(first);
        drop(b);
    });
    let spans = t.spans();
    let first = find(&spans, "first.of.inner");
    assert_eq!(
        first.parent_span_id,
        find(&spans, "inner").span_context.span_id()
    );
    assert_eq!(
        find(&spans, "second.of.inner").parent_span_id,
        first.span_context.span_id()
    );
    // `early` ended when its guard did, after `first.of.inner`.
    assert!(find(&spans, "early").end_time >= first.end_time);
}
