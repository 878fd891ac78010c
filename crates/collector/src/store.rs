//! Traces on disk: one SQLite database, spans keyed by (trace id, span id) so that
//! duplicates are stored once, resources and scopes stored once each, bounded by age and
//! by bytes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

/// Most traces one search returns.
pub const MAX_SEARCH_LIMIT: usize = 1_000;
/// Most spans a search examines before it answers with what it found.
pub const MAX_SEARCH_SCAN: usize = 200_000;
/// Most spans one answer carries (a trace, or all traces of a search); the total is given
/// beside them.
pub const MAX_TRACE_SPANS: u64 = 10_000;
/// The most spans one page of a trace holds (`?limit=` of the trace API).
pub const MAX_TRACE_PAGE: u64 = 50_000;
/// How far past the collector's clock a span's start may be indexed; a later start is
/// indexed at this bound (the span itself is kept as sent), so that it can be found by
/// time and expires with its neighbours.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Every reader was taken (not expected: readers are handed out by a semaphore).
    #[error("trace store: no reader free")]
    Busy,
    /// SQLite said no.
    #[error("trace store")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row did not decode (the file was changed by something else).
    #[error("trace store: a stored span does not decode")]
    Corrupt(#[from] prost::DecodeError),
}

/// What one ingest did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Spans stored (new ones).
    pub stored: u64,
    /// Spans already stored (same trace and span id), ignored.
    pub duplicates: u64,
}

/// A search. Every field is optional; `limit` caps the number of traces.
#[derive(Clone, Debug, Default)]
pub struct TraceQuery {
    /// Spans of this service.
    pub service: Option<String>,
    /// Spans with this name.
    pub operation: Option<String>,
    /// Spans carrying every one of these attributes (string form).
    pub attributes: BTreeMap<String, String>,
    /// Spans at least this long.
    pub duration_min: Option<Duration>,
    /// Spans at most this long.
    pub duration_max: Option<Duration>,
    /// Spans starting at or after, in unix nanoseconds.
    pub start_min_ns: Option<u64>,
    /// Spans starting at or before, in unix nanoseconds.
    pub start_max_ns: Option<u64>,
    /// Most traces returned (newest first). Default 20 when 0.
    pub limit: usize,
    /// Only traces whose root span has this name.
    pub root_operation: Option<String>,
    /// Only spans that failed (status Error), so only traces with an error.
    pub errors_only: bool,
    /// Only spans whose parent ran in this service: with `service`, the traces that cross
    /// the map's edge from this service to that one.
    pub caller_service: Option<String>,
}

/// A service's operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The span name.
    pub name: String,
    /// The OTLP span kind number.
    pub kind: i32,
}

/// Calls from one service to another: spans whose parent ran in another service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// The calling service (the parent span's).
    pub from: String,
    /// The called service (the child span's).
    pub to: String,
    /// Spans across this edge.
    pub calls: u64,
    /// Of those, spans with an error status.
    pub errors: u64,
}

/// Figures of one operation (a service's span name) over a window.
#[derive(Clone, Debug, PartialEq)]
pub struct OperationStats {
    /// The service.
    pub service: String,
    /// The span name.
    pub name: String,
    /// Spans.
    pub count: u64,
    /// Spans per second over the window.
    pub rate: f64,
    /// Share of spans with an error status, 0 to 1.
    pub error_rate: f64,
    /// Median duration, ms.
    pub p50_ms: f64,
    /// 95th percentile duration, ms.
    pub p95_ms: f64,
    /// 99th percentile duration, ms.
    pub p99_ms: f64,
}

/// Summary of a stored trace, for lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceSummary {
    /// Trace id, hex.
    pub trace_id: String,
    /// Name of its earliest span (the root, when the root arrived).
    pub root: String,
    /// Service of that span.
    pub service: String,
    /// Spans stored.
    pub spans: u64,
    /// From the earliest start to the latest end, nanoseconds.
    pub duration_ns: u64,
    /// Earliest start, unix nanoseconds.
    pub start_ns: u64,
    /// Spans whose status is error.
    pub errors: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS resources (
    id INTEGER PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,
    service TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS scopes (
    id INTEGER PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS spans (
    trace_id BLOB NOT NULL,
    span_id BLOB NOT NULL,
    parent_span_id BLOB NOT NULL,
    resource_id INTEGER NOT NULL,
    scope_id INTEGER NOT NULL,
    service TEXT NOT NULL,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    duration_ns INTEGER NOT NULL,
    status INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (trace_id, span_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS spans_by_service ON spans (service, name, start_ns);
CREATE INDEX IF NOT EXISTS spans_by_start ON spans (start_ns);
CREATE INDEX IF NOT EXISTS spans_by_service_start ON spans (service, start_ns);
";

/// OTLP status code of an error.
const STATUS_ERROR: i32 = 2;

/// The trace store.
pub struct Store {
    conn: Connection,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn digest(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes)[..16].to_vec()
}

/// The `service.name` of a resource, or `unknown_service` as OpenTelemetry says.
pub fn service_of(resource: Option<&Resource>) -> String {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| kv.value.as_ref())
        .map(value_string)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown_service".to_owned())
}

/// An attribute value as text.
pub fn value_string(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex::encode(b),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Whether a span's ids are usable: a 16-byte trace id and an 8-byte span id, neither all
/// zero, and a parent id that is empty or 8 bytes.
pub fn valid_ids(span: &Span) -> bool {
    span.trace_id.len() == 16
        && span.span_id.len() == 8
        && span.trace_id.iter().any(|&b| b != 0)
        && span.span_id.iter().any(|&b| b != 0)
        && (span.parent_span_id.is_empty() || span.parent_span_id.len() == 8)
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!("creating {}: {e}", dir.display())),
            )
        })?;
        let conn = Connection::open(dir.join("traces.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn })
    }

    /// A second handle on the same database, for readers.
    pub fn reader(dir: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            dir.join("traces.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(Self { conn })
    }

    /// Stores the valid spans of a request in one transaction; spans with invalid ids are
    /// skipped (the receiver has already counted them).
    pub fn ingest(&mut self, request: &ExportTraceServiceRequest) -> Result<Ingested, StoreError> {
        // Immediate: take the write lock up front (waiting for it), rather than fail when a
        // read turns into a write.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut out = Ingested::default();
        let latest_start = crate::now_ns()
            .saturating_add(MAX_CLOCK_SKEW.as_nanos() as u64)
            .min(i64::MAX as u64 / 2);
        for rs in &request.resource_spans {
            let resource = rs.resource.clone().unwrap_or_default();
            let service = service_of(Some(&resource));
            let resource_id = intern(&tx, Table::Resources, &resource.encode_to_vec(), &service)?;
            for ss in &rs.scope_spans {
                let scope = ss.scope.clone().unwrap_or_default();
                let scope_id = intern(&tx, Table::Scopes, &scope.encode_to_vec(), "")?;
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO spans (trace_id, span_id, parent_span_id, \
                     resource_id, scope_id, service, name, kind, start_ns, duration_ns, \
                     status, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?;
                for span in ss.spans.iter().filter(|s| valid_ids(s)) {
                    // Indexed times stay within i64 and near the present, so that sums
                    // of them cannot overflow and retention reaches every span.
                    let start = span.start_time_unix_nano.min(latest_start);
                    let duration = span
                        .end_time_unix_nano
                        .saturating_sub(span.start_time_unix_nano)
                        .min(i64::MAX as u64 - start);
                    let status = span.status.as_ref().map_or(0, |s| s.code);
                    let n = insert.execute(params![
                        span.trace_id,
                        span.span_id,
                        span.parent_span_id,
                        resource_id,
                        scope_id,
                        service,
                        span.name,
                        span.kind,
                        to_i64(start),
                        to_i64(duration),
                        status,
                        span.encode_to_vec(),
                    ])?;
                    if n == 1 {
                        out.stored += 1;
                    } else {
                        out.duplicates += 1;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// The spans of a trace (at most [`MAX_TRACE_SPANS`], earliest first), grouped by
    /// resource and scope as OTLP has them, and how many it has in all; `None` when there
    /// is none.
    pub fn trace(&self, trace_id: &[u8]) -> Result<Option<(TracesData, u64)>, StoreError> {
        self.trace_page(trace_id, 0, MAX_TRACE_SPANS)
    }

    /// How many spans of a trace are stored.
    pub fn trace_span_count(&self, trace_id: &[u8]) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM spans WHERE trace_id = ?1")?
            .query_row(params![trace_id], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// One page of a trace: at most `limit` spans (capped at [`MAX_TRACE_PAGE`]) from the
    /// `offset`-th on, earliest first, and how many it has in all; `None` when the trace
    /// has no span at all or none from `offset` on.
    pub fn trace_page(
        &self,
        trace_id: &[u8],
        offset: u64,
        limit: u64,
    ) -> Result<Option<(TracesData, u64)>, StoreError> {
        let (data, total) =
            self.spans_of(&[trace_id.to_vec()], offset, limit.min(MAX_TRACE_PAGE))?;
        Ok((!data.resource_spans.is_empty()).then_some((data, total)))
    }

    /// The spans of these traces (at most [`MAX_TRACE_SPANS`] in all), as one OTLP
    /// document, and how many they have in all.
    pub fn traces(&self, trace_ids: &[Vec<u8>]) -> Result<(TracesData, u64), StoreError> {
        self.spans_of(trace_ids, 0, MAX_TRACE_SPANS)
    }

    /// The spans of these traces from the `offset`-th on, at most `limit`, earliest first.
    fn spans_of(
        &self,
        trace_ids: &[Vec<u8>],
        offset: u64,
        limit: u64,
    ) -> Result<(TracesData, u64), StoreError> {
        let mut count = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM spans WHERE trace_id = ?1")?;
        let mut total = 0u64;
        for id in trace_ids {
            let n: i64 = count.query_row(params![id], |r| r.get(0))?;
            total = total.saturating_add(n.max(0) as u64);
        }
        let mut taken = 0u64;
        let mut stmt = self.conn.prepare_cached(
            "SELECT s.resource_id, s.scope_id, r.data, c.data, s.data FROM spans s \
             JOIN resources r ON r.id = s.resource_id JOIN scopes c ON c.id = s.scope_id \
             WHERE s.trace_id = ?1 ORDER BY s.start_ns, s.span_id LIMIT -1 OFFSET ?2",
        )?;
        let mut skip = offset;
        // (resource id, resource, scopes), in first-seen order.
        let mut groups: Vec<(i64, Resource, Vec<ScopeGroup>)> = Vec::new();
        for id in trace_ids {
            let n: i64 = count.query_row(params![id], |r| r.get(0))?;
            let here = n.max(0) as u64;
            if skip >= here {
                skip -= here;
                continue;
            }
            let mut rows = stmt.query(params![id, skip as i64])?;
            skip = 0;
            while let Some(row) = rows.next()? {
                if taken >= limit {
                    break;
                }
                taken += 1;
                let rid: i64 = row.get(0)?;
                let sid: i64 = row.get(1)?;
                let span = Span::decode(&row.get::<_, Vec<u8>>(4)?[..])?;
                let g = match groups.iter_mut().position(|g| g.0 == rid) {
                    Some(i) => &mut groups[i],
                    None => {
                        let resource = Resource::decode(&row.get::<_, Vec<u8>>(2)?[..])?;
                        groups.push((rid, resource, Vec::new()));
                        groups.last_mut().expect("just pushed")
                    }
                };
                let scopes = &mut g.2;
                match scopes.iter_mut().position(|s| s.0 == sid) {
                    Some(i) => scopes[i].2.push(span),
                    None => {
                        let scope = InstrumentationScope::decode(&row.get::<_, Vec<u8>>(3)?[..])?;
                        scopes.push((sid, scope, vec![span]));
                    }
                }
            }
        }
        let data = TracesData {
            resource_spans: groups
                .into_iter()
                .map(|(_, resource, scopes)| ResourceSpans {
                    resource: Some(resource),
                    scope_spans: scopes
                        .into_iter()
                        .map(|(_, scope, spans)| ScopeSpans {
                            scope: Some(scope),
                            spans,
                            schema_url: String::new(),
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
        };
        Ok((data, total))
    }

    /// Services that sent spans, sorted.
    pub fn services(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT service FROM resources ORDER BY service")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A service's operations (span names and kinds), sorted.
    pub fn operations(&self, service: &str) -> Result<Vec<Operation>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT name, kind FROM spans WHERE service = ?1 ORDER BY name, kind",
        )?;
        let rows = stmt.query_map(params![service], |r| {
            Ok(Operation {
                name: r.get(0)?,
                kind: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Trace ids matching a query, newest first.
    pub fn search(&self, q: &TraceQuery) -> Result<Vec<Vec<u8>>, StoreError> {
        let limit = if q.limit == 0 { 20 } else { q.limit }.min(MAX_SEARCH_LIMIT);
        let mut sql = String::from("SELECT trace_id, data FROM spans WHERE 1 = 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, v: rusqlite::types::Value| {
            args.push(v);
            sql.push_str(&format!(" AND {clause} ?{}", args.len()));
        };
        if let Some(s) = &q.service {
            arg(&mut sql, "service =", s.clone().into());
        }
        if let Some(o) = &q.operation {
            arg(&mut sql, "name =", o.clone().into());
        }
        if let Some(d) = q.duration_min {
            arg(
                &mut sql,
                "duration_ns >=",
                to_i64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)).into(),
            );
        }
        if let Some(d) = q.duration_max {
            arg(
                &mut sql,
                "duration_ns <=",
                to_i64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)).into(),
            );
        }
        if let Some(t) = q.start_min_ns {
            arg(&mut sql, "start_ns >=", to_i64(t).into());
        }
        if let Some(t) = q.start_max_ns {
            arg(&mut sql, "start_ns <=", to_i64(t).into());
        }
        if q.errors_only {
            arg(&mut sql, "status =", i64::from(STATUS_ERROR).into());
        }
        if let Some(caller) = &q.caller_service {
            args.push(caller.clone().into());
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM spans p WHERE p.trace_id = spans.trace_id \
                 AND p.span_id = spans.parent_span_id AND p.service = ?{})",
                args.len()
            ));
        }
        sql.push_str(" ORDER BY start_ns DESC");
        let mut root = self.conn.prepare_cached(
            "SELECT 1 FROM spans WHERE trace_id = ?1 AND name = ?2 AND parent_span_id = x''",
        )?;
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut scanned = 0usize;
        while let Some(row) = rows.next()? {
            scanned += 1;
            if scanned > MAX_SEARCH_SCAN {
                break;
            }
            let trace_id: Vec<u8> = row.get(0)?;
            if seen.contains(&trace_id) {
                continue;
            }
            if !q.attributes.is_empty() {
                let span = Span::decode(&row.get::<_, Vec<u8>>(1)?[..])?;
                let matches = q.attributes.iter().all(|(k, v)| {
                    span.attributes.iter().any(|kv| {
                        &kv.key == k && kv.value.as_ref().map(value_string).as_ref() == Some(v)
                    })
                });
                if !matches {
                    continue;
                }
            }
            if let Some(name) = &q.root_operation
                && !root.exists(params![trace_id, name])?
            {
                seen.insert(trace_id);
                continue;
            }
            seen.insert(trace_id.clone());
            out.push(trace_id);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// A summary of each of these traces.
    pub fn summaries(&self, trace_ids: &[Vec<u8>]) -> Result<Vec<TraceSummary>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT COUNT(*), MIN(start_ns), \
             MAX(start_ns + MIN(duration_ns, 9223372036854775807 - start_ns)), \
             SUM(status = ?2) FROM spans WHERE trace_id = ?1",
        )?;
        let mut first = self.conn.prepare_cached(
            "SELECT name, service FROM spans WHERE trace_id = ?1 \
             ORDER BY (parent_span_id = x'') DESC, start_ns LIMIT 1",
        )?;
        let mut out = Vec::new();
        for id in trace_ids {
            let (spans, start, end, errors): (i64, i64, i64, i64) = stmt
                .query_row(params![id, STATUS_ERROR], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?;
            let (root, service): (String, String) =
                first.query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            out.push(TraceSummary {
                trace_id: hex::encode(id),
                root,
                service,
                spans: spans as u64,
                duration_ns: end.saturating_sub(start) as u64,
                start_ns: start as u64,
                errors: errors as u64,
            });
        }
        Ok(out)
    }

    /// The service map: calls and errors per edge, for spans starting at or after
    /// `since_ns`.
    pub fn edges(&self, since_ns: u64) -> Result<Vec<Edge>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT p.service, c.service, COUNT(*), SUM(c.status = ?2) FROM spans c \
             JOIN spans p ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id \
             WHERE c.start_ns >= ?1 AND c.service != p.service \
             GROUP BY p.service, c.service ORDER BY p.service, c.service",
        )?;
        let rows = stmt.query_map(params![to_i64(since_ns), STATUS_ERROR], |r| {
            Ok(Edge {
                from: r.get(0)?,
                to: r.get(1)?,
                calls: r.get::<_, i64>(2)? as u64,
                errors: r.get::<_, i64>(3)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Calls between nodes: like [`Self::edges`], each end named by its service and its
    /// `service.instance.id` (a node's peer id), as `service (…last 6 of the id)`, or the
    /// service alone when its spans carry no instance id.
    pub fn node_edges(&self, since_ns: u64) -> Result<Vec<Edge>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT p.resource_id, c.resource_id, COUNT(*), SUM(c.status = ?2) FROM spans c \
             JOIN spans p ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id \
             WHERE c.start_ns >= ?1 AND c.resource_id != p.resource_id \
             GROUP BY p.resource_id, c.resource_id",
        )?;
        let rows = stmt
            .query_map(params![to_i64(since_ns), STATUS_ERROR], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)? as u64,
                    r.get::<_, i64>(3)? as u64,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut names: HashMap<i64, String> = HashMap::new();
        let mut resource = self
            .conn
            .prepare_cached("SELECT service, data FROM resources WHERE id = ?1")?;
        let mut name_of = |id: i64| -> Result<String, StoreError> {
            if let Some(n) = names.get(&id) {
                return Ok(n.clone());
            }
            let (service, data): (String, Vec<u8>) =
                resource.query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let instance = Resource::decode(&data[..])?
                .attributes
                .iter()
                .find(|kv| kv.key == "service.instance.id")
                .and_then(|kv| kv.value.as_ref().map(value_string));
            let name = match instance {
                Some(i) if !i.is_empty() => {
                    let tail: String = i
                        .chars()
                        .rev()
                        .take(6)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    format!("{service} (…{tail})")
                }
                _ => service,
            };
            names.insert(id, name.clone());
            Ok(name)
        };
        let mut merged: std::collections::BTreeMap<(String, String), (u64, u64)> =
            std::collections::BTreeMap::new();
        for (from, to, calls, errors) in rows {
            let key = (name_of(from)?, name_of(to)?);
            if key.0 == key.1 {
                continue;
            }
            let e = merged.entry(key).or_default();
            e.0 += calls;
            e.1 += errors;
        }
        Ok(merged
            .into_iter()
            .map(|((from, to), (calls, errors))| Edge {
                from,
                to,
                calls,
                errors,
            })
            .collect())
    }

    /// Rate, error rate and latency percentiles of every operation (or one service's)
    /// over the window from `since_ns` to `until_ns`.
    pub fn operation_stats(
        &self,
        service: Option<&str>,
        since_ns: u64,
        until_ns: u64,
    ) -> Result<Vec<OperationStats>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT service, name, duration_ns, status FROM spans \
             WHERE start_ns >= ?1 AND (?2 IS NULL OR service = ?2) \
             ORDER BY service, name, duration_ns",
        )?;
        let mut rows = stmt.query(params![to_i64(since_ns), service])?;
        let window = (until_ns.saturating_sub(since_ns) as f64 / 1e9).max(1e-9);
        let mut out = Vec::new();
        let mut current: Option<(String, String, Vec<u64>, u64)> = None;
        let finish = |(service, name, d, errors): (String, String, Vec<u64>, u64)| {
            let pct = |p: f64| d[((d.len() - 1) as f64 * p).round() as usize] as f64 / 1e6;
            OperationStats {
                service,
                name,
                count: d.len() as u64,
                rate: d.len() as f64 / window,
                error_rate: errors as f64 / d.len() as f64,
                p50_ms: pct(0.50),
                p95_ms: pct(0.95),
                p99_ms: pct(0.99),
            }
        };
        while let Some(row) = rows.next()? {
            let svc: String = row.get(0)?;
            let name: String = row.get(1)?;
            let duration = row.get::<_, i64>(2)?.max(0) as u64;
            let error = u64::from(row.get::<_, i32>(3)? == STATUS_ERROR);
            match &mut current {
                Some((s, n, d, e)) if *s == svc && *n == name => {
                    d.push(duration);
                    *e += error;
                }
                _ => {
                    if let Some(done) = current.take() {
                        out.push(finish(done));
                    }
                    current = Some((svc, name, vec![duration], error));
                }
            }
        }
        if let Some(done) = current.take() {
            out.push(finish(done));
        }
        Ok(out)
    }

    /// Spans stored.
    pub fn span_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM spans", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Bytes the database uses (pages in use times page size).
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(((pages - free).max(0) * size) as u64)
    }

    /// Deletes spans that started before `now - retention`, then the oldest spans until
    /// the database uses at most `max_bytes`. Returns the spans deleted.
    pub fn enforce_limits(
        &mut self,
        now_ns: u64,
        retention: Duration,
        max_bytes: u64,
    ) -> Result<u64, StoreError> {
        let cutoff = now_ns.saturating_sub(u64::try_from(retention.as_nanos()).unwrap_or(u64::MAX));
        let mut deleted = self.conn.execute(
            "DELETE FROM spans WHERE start_ns < ?1",
            params![to_i64(cutoff)],
        )? as u64;
        while self.used_bytes()? > max_bytes {
            let total = self.span_count()?;
            if total == 0 {
                break;
            }
            // The oldest tenth (at least one span) at a time.
            let n = (total / 10).max(1);
            deleted += self.conn.execute(
                "DELETE FROM spans WHERE (trace_id, span_id) IN \
                 (SELECT trace_id, span_id FROM spans ORDER BY start_ns LIMIT ?1)",
                params![to_i64(n)],
            )? as u64;
        }
        if deleted > 0 {
            self.conn.execute(
                "DELETE FROM resources WHERE id NOT IN (SELECT DISTINCT resource_id FROM spans)",
                [],
            )?;
            self.conn.execute(
                "DELETE FROM scopes WHERE id NOT IN (SELECT DISTINCT scope_id FROM spans)",
                [],
            )?;
        }
        Ok(deleted)
    }
}

/// A scope's id, the scope, and its spans.
type ScopeGroup = (i64, InstrumentationScope, Vec<Span>);

#[derive(Clone, Copy)]
enum Table {
    Resources,
    Scopes,
}

/// The id of a resource or scope, stored once by content.
fn intern(conn: &Connection, table: Table, data: &[u8], service: &str) -> Result<i64, StoreError> {
    let d = digest(data);
    let select = match table {
        Table::Resources => "SELECT id FROM resources WHERE digest = ?1",
        Table::Scopes => "SELECT id FROM scopes WHERE digest = ?1",
    };
    if let Some(id) = conn
        .prepare_cached(select)?
        .query_row(params![d], |r| r.get(0))
        .optional()?
    {
        return Ok(id);
    }
    match table {
        Table::Resources => conn.execute(
            "INSERT INTO resources (digest, service, data) VALUES (?1, ?2, ?3)",
            params![d, service, data],
        )?,
        Table::Scopes => conn.execute(
            "INSERT INTO scopes (digest, data) VALUES (?1, ?2)",
            params![d, data],
        )?,
    };
    Ok(conn.last_insert_rowid())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
