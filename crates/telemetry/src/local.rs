//! Local spans: cheap children of a `tracing` span, for work with many small steps on one
//! thread (a loop of instructions, the receivers of a fan-out, the phases of a task).
//!
//! A [`LocalParent`] guard makes a recorded `tracing` span the parent of the
//! [`LocalSpan`]s this thread opens until the guard drops; each local span costs two clock
//! readings, a span id and a push onto a thread-local buffer. The guard hands the buffer
//! to the parent's record, and the children travel to the export thread with their
//! parent as one queue entry, so they take no queue slot of their own. Without a guard,
//! or under a span that is not sampled, a local span records nothing.
//!
//! ```
//! use zerostate_telemetry::local::{LocalParent, LocalSpan};
//!
//! let task = tracing::info_span!("execution.task");
//! let _collect = LocalParent::of(&task);
//! for step in 0..3_i64 {
//!     let _s = LocalSpan::enter("execution.step").with_attribute("step", step);
//! }
//! ```

use std::cell::RefCell;
use std::marker::PhantomData;

use opentelemetry::{Key, KeyValue, Value};
use tracing_subscriber::registry::LookupSpan;

use crate::clock::{self, Timestamp};
use crate::context::{SpanId, ids};
use crate::layer::record_mut;

/// The most local spans one parent collects; more are counted as dropped.
pub const MAX_LOCAL_SPANS: usize = 65_536;

/// A finished (or still open) local span.
#[derive(Debug, Clone)]
pub(crate) struct LocalRecord {
    pub(crate) name: &'static str,
    pub(crate) span_id: SpanId,
    pub(crate) parent_span_id: SpanId,
    pub(crate) start: Timestamp,
    pub(crate) end: Timestamp,
    pub(crate) ended: bool,
}

/// What the parent's record receives: the spans, and their attributes as
/// (index of the span, attribute) in the order they were set.
#[derive(Debug, Default)]
pub(crate) struct Children {
    pub(crate) spans: Vec<LocalRecord>,
    pub(crate) attributes: Vec<(u32, KeyValue)>,
    pub(crate) dropped: u64,
}

impl Children {
    pub(crate) fn clear(&mut self) {
        self.spans.clear();
        self.attributes.clear();
        self.dropped = 0;
    }

    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    fn append(&mut self, mut other: Children) {
        let base = self.spans.len() as u32;
        self.spans.append(&mut other.spans);
        self.attributes
            .extend(other.attributes.into_iter().map(|(i, kv)| (i + base, kv)));
        self.dropped += other.dropped;
    }
}

/// One thread's collection under one parent.
struct Collecting {
    children: Children,
    /// Ids of the open local spans, innermost last; the parent's id at the bottom.
    open: Vec<SpanId>,
}

thread_local! {
    static COLLECTING: RefCell<Vec<Collecting>> = const { RefCell::new(Vec::new()) };
}

/// Makes a span the parent of the local spans this thread opens while the guard lives.
/// Guards nest: the innermost collects. Drop guards in the reverse order of creation.
#[must_use = "local spans are collected only while the guard lives"]
pub struct LocalParent {
    span: Option<tracing::Span>,
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for LocalParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalParent")
            .field("collecting", &self.span.is_some())
            .finish()
    }
}

impl LocalParent {
    /// Collects local spans under `span` on this thread. When `span` is not recorded by
    /// this crate's layer or is not sampled, the guard collects nothing.
    pub fn of(span: &tracing::Span) -> Self {
        let parent = span
            .with_subscriber(|(id, dispatch)| {
                let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
                let s = registry.span(id)?;
                let ext = s.extensions();
                let r = crate::layer::record(&ext)?;
                r.is_sampled().then_some(r.span_id)
            })
            .flatten();
        let Some(parent) = parent else {
            return Self {
                span: None,
                _not_send: PhantomData,
            };
        };
        COLLECTING.with(|c| {
            c.borrow_mut().push(Collecting {
                children: Children::default(),
                open: vec![parent],
            });
        });
        Self {
            span: Some(span.clone()),
            _not_send: PhantomData,
        }
    }
}

impl Drop for LocalParent {
    fn drop(&mut self) {
        let Some(span) = self.span.take() else { return };
        let Some(collected) = COLLECTING.with(|c| c.borrow_mut().pop()) else {
            return;
        };
        let end = clock::now();
        let mut children = collected.children;
        // Spans still open end now.
        for r in &mut children.spans {
            if !r.ended {
                r.end = end;
                r.ended = true;
            }
        }
        span.with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
            let s = registry.span(id)?;
            let mut ext = s.extensions_mut();
            let record = record_mut(&mut ext)?;
            record.children.append(children);
            Some(())
        });
    }
}

/// A local span: open from [`LocalSpan::enter`] until dropped. Not `Send`: it belongs to
/// the thread whose [`LocalParent`] collects it.
#[must_use = "a local span ends when dropped"]
pub struct LocalSpan {
    /// Index in the collection, or `u32::MAX` when nothing is recorded.
    index: u32,
    /// How many guards were open when it began: it belongs to the innermost of them.
    depth: u32,
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for LocalSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSpan")
            .field("recorded", &(self.index != u32::MAX))
            .finish()
    }
}

const NOT_RECORDED: u32 = u32::MAX;

impl LocalSpan {
    /// Opens a local span named `name` under the innermost open local span, or under the
    /// guard's span.
    #[inline]
    pub fn enter(name: &'static str) -> Self {
        let (index, depth) = COLLECTING.with(|c| {
            let mut c = c.borrow_mut();
            let depth = c.len() as u32;
            let Some(top) = c.last_mut() else {
                return (NOT_RECORDED, depth);
            };
            if top.children.spans.len() >= MAX_LOCAL_SPANS {
                top.children.dropped += 1;
                return (NOT_RECORDED, depth);
            }
            let span_id = ids::span_id();
            let parent_span_id = *top.open.last().unwrap_or(&SpanId::INVALID);
            let start = clock::now();
            top.children.spans.push(LocalRecord {
                name,
                span_id,
                parent_span_id,
                start,
                end: start,
                ended: false,
            });
            top.open.push(span_id);
            ((top.children.spans.len() - 1) as u32, depth)
        });
        Self {
            index,
            depth,
            _not_send: PhantomData,
        }
    }

    /// Sets an attribute on the span.
    pub fn with_attribute(self, key: &'static str, value: impl Into<Value>) -> Self {
        self.set_attribute(key, value);
        self
    }

    /// Sets an attribute on the open span, once what it says is known. Each call adds one:
    /// set a key once.
    pub fn set_attribute(&self, key: &'static str, value: impl Into<Value>) {
        if self.index != NOT_RECORDED {
            let kv = KeyValue::new(Key::from_static_str(key), value.into());
            COLLECTING.with(|c| {
                let mut c = c.borrow_mut();
                if c.len() == self.depth as usize
                    && let Some(top) = c.last_mut()
                {
                    top.children.attributes.push((self.index, kv));
                }
            });
        }
    }
}

impl Drop for LocalSpan {
    #[inline]
    fn drop(&mut self) {
        if self.index == NOT_RECORDED {
            return;
        }
        let end = clock::now();
        COLLECTING.with(|c| {
            let mut c = c.borrow_mut();
            // A span outliving its guard (or ending under a newer one) records nothing more.
            if c.len() != self.depth as usize {
                return;
            }
            if let Some(top) = c.last_mut()
                && let Some(r) = top.children.spans.get_mut(self.index as usize)
            {
                r.end = end;
                r.ended = true;
                if top.open.last() == Some(&r.span_id) {
                    top.open.pop();
                } else if let Some(i) = top.open.iter().rposition(|id| *id == r.span_id) {
                    top.open.remove(i);
                }
            }
        });
    }
}
