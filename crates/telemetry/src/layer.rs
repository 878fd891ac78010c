//! The `tracing` layer that turns spans into OpenTelemetry spans.
//!
//! Everything on the calling thread is kept small: ids come from a thread-local generator,
//! the sampling decision is a comparison, attributes go into a vector, and a closed span is
//! moved into a bounded lock-free queue. Conversion to OpenTelemetry's `SpanData` and the
//! OTLP request happen on the export thread ([`crate::export`]).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use crossbeam_queue::ArrayQueue;

use opentelemetry::trace::{Event, SpanKind, Status};
use opentelemetry::{Key, KeyValue, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event as TracingEvent, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use crate::clock::{self, Timestamp};
use crate::config::Sampling;
use crate::context::{
    Baggage, FLAG_RANDOM, FLAG_SAMPLED, SpanId, TraceContext, TraceFlags, TraceId, TraceState, ids,
};
use crate::export::ExportQueue;
use crate::names::field;

/// The most attributes kept on one span; more are counted as dropped.
pub const MAX_ATTRIBUTES: usize = 128;
/// The most events kept on one span; more are counted as dropped.
pub const MAX_EVENTS: usize = 128;

/// What the layer keeps about an open span (stored in the span's registry extensions).
#[derive(Debug)]
pub(crate) struct SpanRecord {
    pub(crate) name: Cow<'static, str>,
    pub(crate) target: &'static str,
    pub(crate) kind: SpanKind,
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) parent_span_id: SpanId,
    pub(crate) parent_is_remote: bool,
    pub(crate) flags: u8,
    pub(crate) trace_state: TraceState,
    pub(crate) baggage: Baggage,
    pub(crate) start: Timestamp,
    pub(crate) end: Timestamp,
    pub(crate) attributes: Vec<KeyValue>,
    pub(crate) dropped_attributes: u32,
    pub(crate) events: Vec<Event>,
    pub(crate) dropped_events: u32,
    pub(crate) status: Status,
    /// Local spans collected under this span ([`crate::local`]).
    pub(crate) children: crate::local::Children,
}

impl SpanRecord {
    pub(crate) fn is_sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    pub(crate) fn context(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id: self.span_id,
            flags: TraceFlags::new(self.flags),
            trace_state: self.trace_state.clone(),
            baggage: self.baggage.clone(),
            is_remote: false,
        }
    }

    pub(crate) fn set_attribute(&mut self, kv: KeyValue) {
        if let Some(existing) = self.attributes.iter_mut().find(|a| a.key == kv.key) {
            *existing = kv;
        } else if self.attributes.len() < MAX_ATTRIBUTES {
            self.attributes.push(kv);
        } else {
            self.dropped_attributes += 1;
        }
    }

    pub(crate) fn add_event(&mut self, event: Event) {
        if self.events.len() < MAX_EVENTS {
            self.events.push(event);
        } else {
            self.dropped_events += 1;
        }
    }

    /// Re-parents the span under `cx`, deciding sampling again with `sampling`.
    pub(crate) fn set_parent(&mut self, cx: &TraceContext, sampling: &Sampling) {
        self.trace_id = cx.trace_id;
        self.parent_span_id = cx.span_id;
        self.parent_is_remote = cx.is_remote;
        self.flags = child_flags(sampling, cx.trace_id, cx.flags.to_u8());
        self.trace_state = cx.trace_state.clone();
        self.baggage = cx.baggage.clone();
    }
}

/// How a record sits in a span's registry extensions: boxed once, and the box travels to
/// the export thread and back through [`RecordPool`], so the calling thread neither
/// allocates per span nor has its memory freed by another thread in the steady state.
pub(crate) struct Slot(pub(crate) Box<SpanRecord>);

/// The record in `ext`, if the layer recorded this span.
pub(crate) fn record<'a>(
    ext: &'a tracing_subscriber::registry::Extensions<'_>,
) -> Option<&'a SpanRecord> {
    ext.get::<Slot>().map(|s| &*s.0)
}

/// The record in `ext`, mutably.
pub(crate) fn record_mut<'a>(
    ext: &'a mut tracing_subscriber::registry::ExtensionsMut<'_>,
) -> Option<&'a mut SpanRecord> {
    ext.get_mut::<Slot>().map(|s| &mut *s.0)
}

/// Emptied records waiting to be reused; bounded, and a record that does not fit is freed.
#[derive(Debug)]
pub(crate) struct RecordPool(ArrayQueue<Box<SpanRecord>>);

/// Vectors larger than this are not kept in a pooled record, so the pool stays small.
const POOLED_CAPACITY: usize = 16;
/// Local spans larger than this are not kept in a pooled record.
const POOLED_CHILDREN: usize = 256;

impl RecordPool {
    pub(crate) fn new(capacity: usize) -> Self {
        Self(ArrayQueue::new(capacity.max(1)))
    }

    fn take(&self) -> Box<SpanRecord> {
        self.0.pop().unwrap_or_else(|| {
            Box::new(SpanRecord {
                name: Cow::Borrowed(""),
                target: "",
                kind: SpanKind::Internal,
                trace_id: TraceId::INVALID,
                span_id: SpanId::INVALID,
                parent_span_id: SpanId::INVALID,
                parent_is_remote: false,
                flags: 0,
                trace_state: TraceState::default(),
                baggage: Baggage::default(),
                start: clock::now(),
                end: clock::now(),
                attributes: Vec::new(),
                dropped_attributes: 0,
                events: Vec::new(),
                dropped_events: 0,
                status: Status::Unset,
                children: crate::local::Children::default(),
            })
        })
    }

    /// Returns a record for reuse, dropping what it still refers to.
    pub(crate) fn give(&self, mut record: Box<SpanRecord>) {
        record.name = Cow::Borrowed("");
        record.trace_state = TraceState::default();
        record.baggage = Baggage::default();
        record.status = Status::Unset;
        if record.attributes.capacity() > POOLED_CAPACITY {
            record.attributes = Vec::new();
        } else {
            record.attributes.clear();
        }
        if record.events.capacity() > POOLED_CAPACITY {
            record.events = Vec::new();
        } else {
            record.events.clear();
        }
        if record.children.spans.capacity() > POOLED_CHILDREN {
            record.children = crate::local::Children::default();
        } else {
            record.children.clear();
        }
        // A full pool frees the record instead.
        let _ = self.0.push(record);
    }
}

/// The layer. Install it behind a filter (see [`crate::TelemetryBuilder`]).
#[derive(Debug)]
pub struct SpanLayer {
    pub(crate) sampling: Sampling,
    pub(crate) queue: Option<Arc<ExportQueue>>,
    pub(crate) pool: Arc<RecordPool>,
}

/// The trace-id ratio decision of the OpenTelemetry specification: the trace is kept when
/// the low 63 bits of its id fall below `ratio * 2^63`, so every node that sees the trace
/// id decides the same way.
pub(crate) fn ratio_keeps(trace_id: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let bytes = trace_id.to_bytes();
    let low = u64::from_be_bytes([
        bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15],
    ]) >> 1;
    // `as` saturates; ratio is in (0, 1) here so the product is below 2^63.
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    low < bound
}

/// The flags of a span whose parent has `parent_flags`: the random flag carried on, the
/// sampled flag the parent's (parent-based) or the ratio's decision.
fn child_flags(sampling: &Sampling, trace_id: TraceId, parent_flags: u8) -> u8 {
    let sampled = if sampling.parent_based {
        parent_flags & FLAG_SAMPLED != 0
    } else {
        ratio_keeps(trace_id, sampling.ratio)
    };
    (parent_flags & !FLAG_SAMPLED) | if sampled { FLAG_SAMPLED } else { 0 }
}

/// The record of `span`, or of its nearest ancestor that has one.
pub(crate) fn nearest<'a, R, T>(span: SpanRef<'a, R>, f: impl Fn(&SpanRecord) -> T) -> Option<T>
where
    R: LookupSpan<'a>,
{
    span.scope().find_map(|s| record(&s.extensions()).map(&f))
}

impl<S> tracing_subscriber::Layer<S> for SpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = span.parent().and_then(|p| {
            nearest(p, |r| {
                (
                    r.trace_id,
                    r.span_id,
                    r.flags,
                    r.trace_state.clone(),
                    r.baggage.clone(),
                )
            })
        });
        let (trace_id, parent_span_id, flags, trace_state, baggage) = match parent {
            Some((trace_id, span_id, flags, state, baggage)) => (
                trace_id,
                span_id,
                child_flags(&self.sampling, trace_id, flags),
                state,
                baggage,
            ),
            None => {
                let trace_id = ids::trace_id();
                let sampled = ratio_keeps(trace_id, self.sampling.ratio);
                let flags = FLAG_RANDOM | if sampled { FLAG_SAMPLED } else { 0 };
                (
                    trace_id,
                    SpanId::INVALID,
                    flags,
                    TraceState::default(),
                    Baggage::default(),
                )
            }
        };
        let meta = attrs.metadata();
        let mut record = self.pool.take();
        let r = &mut *record;
        r.name = Cow::Borrowed(meta.name());
        r.target = meta.target();
        r.kind = SpanKind::Internal;
        r.trace_id = trace_id;
        r.span_id = ids::span_id();
        r.parent_span_id = parent_span_id;
        r.parent_is_remote = false;
        r.flags = flags;
        r.trace_state = trace_state;
        r.baggage = baggage;
        r.start = clock::now();
        r.dropped_attributes = 0;
        r.dropped_events = 0;
        if r.is_sampled() {
            // Field names of one callsite are unique: no need to look for duplicates.
            record_fields(r, |v| attrs.record(v), false);
        }
        span.extensions_mut().insert(Slot(record));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(record) = record_mut(&mut ext)
            && record.is_sampled()
        {
            record_fields(record, |v| values.record(v), true);
        }
    }

    fn on_event(&self, event: &TracingEvent<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        for s in span.scope() {
            let mut ext = s.extensions_mut();
            let Some(record) = record_mut(&mut ext) else {
                continue;
            };
            if !record.is_sampled() {
                return;
            }
            let (message, mut attributes) = event_fields(event);
            let level = *event.metadata().level();
            let name = message.unwrap_or_else(|| event.metadata().name().to_owned());
            if level == Level::ERROR && !matches!(record.status, Status::Error { .. }) {
                record.status = Status::error(name.clone());
            }
            attributes.push(KeyValue::new("level", level.as_str()));
            record.add_event(Event::new(name, SystemTime::now(), attributes, 0));
            return;
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(Slot(mut record)) = span.extensions_mut().remove::<Slot>() else {
            return;
        };
        match &self.queue {
            Some(queue) if record.is_sampled() => {
                record.end = clock::now();
                if let Err(record) = queue.push(record) {
                    self.pool.give(record);
                }
            }
            Some(queue) => {
                queue.counters.add_sampled_out();
                self.pool.give(record);
            }
            None => self.pool.give(record),
        }
    }
}

/// A field value as `tracing` hands it over: text is kept apart so callers can treat
/// their special fields (`message`, `otel.*`) before it becomes an attribute value.
enum FieldValue<'a> {
    Value(Value),
    Text(&'a str),
}

impl FieldValue<'_> {
    fn into_value(self) -> Value {
        match self {
            Self::Value(v) => v,
            Self::Text(t) => Value::from(t.to_owned()),
        }
    }
}

/// Converts every field of a span or event and passes it to the closure.
struct Fields<F>(F);

impl<F: FnMut(&Field, FieldValue<'_>)> Visit for Fields<F> {
    fn record_i64(&mut self, f: &Field, v: i64) {
        (self.0)(f, FieldValue::Value(Value::I64(v)));
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        let v = i64::try_from(v).map_or_else(|_| Value::from(v.to_string()), Value::I64);
        (self.0)(f, FieldValue::Value(v));
    }
    fn record_f64(&mut self, f: &Field, v: f64) {
        (self.0)(f, FieldValue::Value(Value::F64(v)));
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        (self.0)(f, FieldValue::Value(Value::Bool(v)));
    }
    fn record_str(&mut self, f: &Field, v: &str) {
        (self.0)(f, FieldValue::Text(v));
    }
    fn record_error(&mut self, f: &Field, v: &(dyn std::error::Error + 'static)) {
        (self.0)(f, FieldValue::Text(&crate::span_ext::error_chain(v)));
    }
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        (self.0)(f, FieldValue::Text(&format!("{v:?}")));
    }
}

/// Applies an `otel.*` field to `record`; false for any other field.
fn special_field(record: &mut SpanRecord, name: &str, value: &str) -> bool {
    match name {
        field::OTEL_NAME => record.name = Cow::Owned(value.to_owned()),
        field::OTEL_KIND => {
            record.kind = match value {
                "server" => SpanKind::Server,
                "client" => SpanKind::Client,
                "producer" => SpanKind::Producer,
                "consumer" => SpanKind::Consumer,
                _ => SpanKind::Internal,
            }
        }
        field::OTEL_STATUS_CODE => match value {
            "ok" | "OK" | "Ok" => record.status = Status::Ok,
            "error" | "ERROR" | "Error" if !matches!(record.status, Status::Error { .. }) => {
                record.status = Status::error("");
            }
            _ => {}
        },
        field::OTEL_STATUS_DESCRIPTION => record.status = Status::error(value.to_owned()),
        _ => return false,
    }
    true
}

/// Records span fields as attributes. Field names of one callsite are unique, so fields
/// given at creation need no duplicate check (`dedupe` false); later ones do.
fn record_fields(record: &mut SpanRecord, values: impl FnOnce(&mut dyn Visit), dedupe: bool) {
    values(&mut Fields(|f: &Field, v: FieldValue<'_>| {
        if let FieldValue::Text(t) = &v
            && special_field(record, f.name(), t)
        {
            return;
        }
        let kv = KeyValue::new(Key::from_static_str(f.name()), v.into_value());
        if dedupe {
            record.set_attribute(kv);
        } else if record.attributes.len() < MAX_ATTRIBUTES {
            record.attributes.push(kv);
        } else {
            record.dropped_attributes += 1;
        }
    }));
}

/// An event's message and its other fields as attributes.
fn event_fields(event: &TracingEvent<'_>) -> (Option<String>, Vec<KeyValue>) {
    let mut message = None;
    let mut attributes = Vec::new();
    event.record(&mut Fields(|f: &Field, v: FieldValue<'_>| match v {
        FieldValue::Text(t) if f.name() == "message" => message = Some(t.to_owned()),
        v if attributes.len() < MAX_ATTRIBUTES => {
            attributes.push(KeyValue::new(
                Key::from_static_str(f.name()),
                v.into_value(),
            ));
        }
        _ => {}
    }));
    (message, attributes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_bounds_are_exact() {
        let id = TraceId::from(u128::MAX);
        assert!(ratio_keeps(id, 1.0));
        assert!(!ratio_keeps(id, 0.0));
        assert!(!ratio_keeps(id, 0.5));
        assert!(ratio_keeps(TraceId::from(1u128), 0.5));
    }
}
