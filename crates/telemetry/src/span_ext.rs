//! Helpers on `tracing::Span`: record outcomes and ids, read a span's context, and continue
//! a trace that started in another process.

use std::fmt::Display;
use std::time::Duration;

use opentelemetry::trace::{Event, Status};
use opentelemetry::{Key, KeyValue, Value};
use tracing::Span;
use tracing_subscriber::Registry;
use tracing_subscriber::registry::LookupSpan;

use crate::context::TraceContext;
use crate::layer::{SpanLayer, SpanRecord, nearest, record_mut};
use crate::names::{EXCEPTION_EVENT, attr};

/// Extra operations on a [`tracing::Span`] recorded by the ZeroState layer. On a span the
/// layer does not record (filtered out, or no ZeroState subscriber) each is a no-op.
pub trait SpanExt {
    /// The span's context, to inject into an outgoing message. For a span the layer does
    /// not record, the context of its nearest recorded ancestor.
    fn context(&self) -> Option<TraceContext>;

    /// Makes `parent` (usually from [`crate::propagation::extract`]) this span's parent:
    /// same trace id, parent span id, flags, `tracestate` and `baggage`, and sampling
    /// decided again. Call it before the span has children.
    fn set_parent(&self, parent: &TraceContext);

    /// Sets an attribute (replacing one with the same key).
    fn set_attribute(&self, key: &'static str, value: impl Into<Value>);

    /// Marks the span successful and records `duration.ms`.
    fn record_success(&self, elapsed: Duration);

    /// Marks the span failed: status Error, `error.message` and `error.type` attributes,
    /// and an `exception` event with `exception.type` and `exception.message`. The message
    /// is the error's whole `source()` chain.
    fn record_error<E: std::error::Error + ?Sized>(&self, error: &E);

    /// Sets `peer.id`.
    fn record_peer_id(&self, peer: impl Display) {
        self.set_attribute(attr::PEER_ID, peer.to_string());
    }

    /// Sets `guild.id`.
    fn record_guild_id(&self, guild: impl Display) {
        self.set_attribute(attr::GUILD_ID, guild.to_string());
    }

    /// Sets `task.id`.
    fn record_task_id(&self, task: impl Display) {
        self.set_attribute(attr::TASK_ID, task.to_string());
    }
}

impl SpanExt for Span {
    fn context(&self) -> Option<TraceContext> {
        self.with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            nearest(registry.span(id)?, SpanRecord::context)
        })
        .flatten()
    }

    fn set_parent(&self, parent: &TraceContext) {
        self.with_subscriber(|(id, dispatch)| {
            let Some(layer) = dispatch.downcast_ref::<SpanLayer>() else {
                return;
            };
            with_own_record(dispatch, id, |r| r.set_parent(parent, &layer.sampling));
        });
    }

    fn set_attribute(&self, key: &'static str, value: impl Into<Value>) {
        let kv = KeyValue::new(Key::from_static_str(key), value);
        self.with_subscriber(|(id, dispatch)| {
            with_own_record(dispatch, id, |r| {
                if r.is_sampled() {
                    r.set_attribute(kv)
                }
            });
        });
    }

    fn record_success(&self, elapsed: Duration) {
        self.with_subscriber(|(id, dispatch)| {
            with_own_record(dispatch, id, |r| {
                r.status = Status::Ok;
                r.set_attribute(KeyValue::new(
                    attr::DURATION_MS,
                    elapsed.as_secs_f64() * 1e3,
                ));
            });
        });
    }

    fn record_error<E: std::error::Error + ?Sized>(&self, error: &E) {
        let message = error_chain_of(error);
        let kind = std::any::type_name::<E>();
        self.with_subscriber(|(id, dispatch)| {
            with_own_record(dispatch, id, |r| {
                r.status = Status::error(message.clone());
                if !r.is_sampled() {
                    return;
                }
                r.set_attribute(KeyValue::new(attr::ERROR_MESSAGE, message.clone()));
                r.set_attribute(KeyValue::new(attr::ERROR_TYPE, kind));
                r.add_event(Event::new(
                    EXCEPTION_EVENT,
                    std::time::SystemTime::now(),
                    vec![
                        KeyValue::new(attr::EXCEPTION_TYPE, kind),
                        KeyValue::new(attr::EXCEPTION_MESSAGE, message.clone()),
                    ],
                    0,
                ));
            });
        });
    }
}

fn with_own_record(
    dispatch: &tracing::Dispatch,
    id: &tracing::Id,
    f: impl FnOnce(&mut SpanRecord),
) {
    let Some(registry) = dispatch.downcast_ref::<Registry>() else {
        return;
    };
    let Some(span) = registry.span(id) else {
        return;
    };
    let mut ext = span.extensions_mut();
    if let Some(record) = record_mut(&mut ext) {
        f(record);
    }
}

/// The context of the current span on this thread, if a recorded one is open.
pub(crate) fn current_context() -> Option<TraceContext> {
    tracing::dispatcher::get_default(|dispatch| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        let current = tracing::Subscriber::current_span(registry);
        nearest(registry.span(current.id()?)?, SpanRecord::context)
    })
}

/// An error and its sources, joined by `: ` (each cause once): what a user reads where an
/// error becomes text outside `anyhow`'s `{:#}`.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn error_chain_of<E: std::error::Error + ?Sized>(error: &E) -> String {
    match error.source() {
        Some(source) => format!("{error}: {}", error_chain(source)),
        None => error.to_string(),
    }
}
