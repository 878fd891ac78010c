//! Log lines that point at their trace: every event inside a recorded span carries the
//! span's `trace_id` and `span_id`, so a log line leads to its trace in the viewer.

use std::fmt;

use serde_json::{Map, Value as Json};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::layer::record;

/// Formats one event per line, as text or as a JSON object. A JSON line also names the
/// process (`service.name`, and its instance: a node's peer id), so that lines shipped
/// from many nodes to one store say where they come from.
#[derive(Debug, Clone)]
pub(crate) struct LogFormat {
    pub(crate) json: bool,
    pub(crate) ansi: bool,
    pub(crate) service: std::sync::Arc<str>,
    pub(crate) instance: Option<std::sync::Arc<str>>,
}

impl<S, N> FormatEvent<S, N> for LogFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let ids = ctx.event_scope().and_then(|scope| {
            scope.into_iter().find_map(|s| {
                let ext = s.extensions();
                // The exported name (`otel.name` when set, as in `p2p.message.<type>`).
                record(&ext).map(|r| (r.trace_id, r.span_id, r.name.to_string()))
            })
        });
        let mut visitor = JsonVisitor::default();
        event.record(&mut visitor);
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;

        if self.json {
            let mut obj = Map::new();
            obj.insert("timestamp".into(), Json::String(time));
            obj.insert("level".into(), Json::String(meta.level().to_string()));
            obj.insert("target".into(), Json::String(meta.target().to_owned()));
            obj.insert("service".into(), Json::String(self.service.to_string()));
            if let Some(instance) = &self.instance {
                obj.insert("peer_id".into(), Json::String(instance.to_string()));
            }
            if let Some(m) = visitor.message {
                obj.insert("message".into(), Json::String(m));
            }
            for (k, v) in visitor.fields {
                obj.insert(k, v);
            }
            if let Some((trace_id, span_id, name)) = ids {
                obj.insert("span".into(), Json::String(name));
                obj.insert("trace_id".into(), Json::String(trace_id.to_string()));
                obj.insert("span_id".into(), Json::String(span_id.to_string()));
            }
            let line = serde_json::to_string(&obj).map_err(|_| fmt::Error)?;
            return writeln!(w, "{line}");
        }

        let level = meta.level();
        if self.ansi {
            let colour = match *level {
                tracing::Level::ERROR => "31",
                tracing::Level::WARN => "33",
                tracing::Level::INFO => "32",
                tracing::Level::DEBUG => "34",
                tracing::Level::TRACE => "35",
            };
            write!(w, "\x1b[2m{time}\x1b[0m \x1b[{colour}m{level:>5}\x1b[0m ")?;
        } else {
            write!(w, "{time} {level:>5} ")?;
        }
        write!(w, "{}: ", meta.target())?;
        if let Some(m) = &visitor.message {
            write!(w, "{m}")?;
        }
        for (k, v) in &visitor.fields {
            match v {
                Json::String(s) => write!(w, " {k}={s:?}")?,
                other => write!(w, " {k}={other}")?,
            }
        }
        if let Some((trace_id, span_id, name)) = ids {
            write!(w, " span={name} trace_id={trace_id} span_id={span_id}")?;
        }
        writeln!(w)
    }
}

#[derive(Default)]
struct JsonVisitor {
    message: Option<String>,
    fields: Vec<(String, Json)>,
}

impl JsonVisitor {
    fn put(&mut self, f: &Field, v: Json) {
        if f.name() == "message" {
            self.message = Some(match v {
                Json::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.fields.push((f.name().to_owned(), v));
        }
    }
}

impl Visit for JsonVisitor {
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.put(f, Json::from(v));
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.put(f, Json::from(v));
    }
    fn record_f64(&mut self, f: &Field, v: f64) {
        self.put(f, Json::from(v));
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.put(f, Json::from(v));
    }
    fn record_str(&mut self, f: &Field, v: &str) {
        self.put(f, Json::from(v));
    }
    fn record_error(&mut self, f: &Field, v: &(dyn std::error::Error + 'static)) {
        self.put(f, Json::from(crate::span_ext::error_chain(v)));
    }
    fn record_debug(&mut self, f: &Field, v: &dyn fmt::Debug) {
        self.put(f, Json::from(format!("{v:?}")));
    }
}

/// Whether `n` is 1, 10, 100, ...: the counts at which a repeated event (an offence, a
/// failed batch) is logged, so that a flood of them cannot flood the log.
pub fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

#[cfg(test)]
mod power_of_ten_tests {
    use super::is_power_of_ten;

    #[test]
    fn repeated_events_are_logged_at_powers_of_ten() {
        let logged: Vec<u64> = (1..=1000).filter(|&n| is_power_of_ten(n)).collect();
        assert_eq!(logged, [1, 10, 100, 1000]);
        assert!(!is_power_of_ten(0));
    }
}
