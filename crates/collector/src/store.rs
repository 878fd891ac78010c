//! Traces on disk: one SQLite database holding, per trace and write, the trace's spans
//! compressed together; resources and scopes stored once each; bounded by age and by
//! bytes. [`Store`] describes the layout.

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

mod accounts;
mod analytics;
mod migrate;
mod read;
mod retention;
mod write;

pub use accounts::{ACCOUNT, Account};
use write::*;

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
    /// Compressing or decompressing a chunk of spans failed.
    #[error("trace store: compressing or decompressing a chunk of spans")]
    Compression(#[source] std::io::Error),
    /// A stored chunk does not say its size, or says one larger than any chunk written.
    #[error("trace store: a stored chunk has no usable size")]
    ChunkSize,
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
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    trace_id BLOB NOT NULL,
    start_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    spans INTEGER NOT NULL,
    terms BLOB NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_trace ON chunks (trace_id);
CREATE INDEX IF NOT EXISTS chunks_by_last ON chunks (last_ns);
CREATE TABLE IF NOT EXISTS terms (
    id INTEGER PRIMARY KEY,
    service TEXT NOT NULL,
    name TEXT NOT NULL,
    UNIQUE (service, name)
);
CREATE TABLE IF NOT EXISTS postings (
    term_id INTEGER NOT NULL,
    chunk_id INTEGER NOT NULL,
    PRIMARY KEY (term_id, chunk_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS operations (
    service TEXT NOT NULL,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    PRIMARY KEY (service, name, kind)
) WITHOUT ROWID;
";

/// OTLP status code of an error.
const STATUS_ERROR: i32 = 2;
/// zstd level of stored chunks: fast to write, and most of a span's bytes are random ids
/// that no level compresses.
const COMPRESSION_LEVEL: i32 = 3;
/// Most spans in one chunk; a larger share of one trace in one write is split.
const CHUNK_SPANS: u64 = 10_000;
/// Largest decompressed chunk read back (a chunk of [`CHUNK_SPANS`] spans is far smaller).
const MAX_CHUNK_BYTES: u64 = 256 << 20;
/// (trace id, span id) pairs remembered to turn away a span sent again soon after.
const RECENT_SPANS: usize = 1 << 18;
/// Most spans the service map and the operations table read (the newest of the window).
pub const MAX_WINDOW_SPANS: usize = 2_000_000;
/// Most traces whose earlier spans the service map reads to find parents outside the window.
const MAX_PARENT_TRACES: usize = 10_000;
/// Resources and scopes a reader keeps decoded.
const MAX_CACHED: usize = 10_000;

/// The spans of one trace written together, compressed as one row. Spans are kept as
/// their OTLP encoding, grouped by resource and scope (ids into those tables).
#[derive(Clone, PartialEq, prost::Message)]
struct StoredChunk {
    #[prost(message, repeated, tag = "1")]
    groups: Vec<StoredGroup>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StoredGroup {
    #[prost(int64, tag = "1")]
    resource: i64,
    #[prost(int64, tag = "2")]
    scope: i64,
    #[prost(bytes = "vec", repeated, tag = "3")]
    spans: Vec<Vec<u8>>,
}

/// A span read back, with the ids of its resource and scope.
struct StoredSpan {
    resource: i64,
    scope: i64,
    span: Span,
}

/// The trace store.
///
/// Layout: each write groups its spans by trace; the spans of one trace become one row
/// of `chunks` (append-ordered, zstd-compressed protobuf), found by trace id through a
/// small index of one entry per chunk. Searches find chunks through `postings`: for each
/// service, and each service and span name, the chunks holding such spans, newest last.
/// Random trace ids therefore cost one index entry per trace per write instead of four
/// B-tree entries per span.
pub struct Store {
    conn: Connection,
    writer: WriterState,
    reader: std::cell::RefCell<ReaderState>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// What the writer remembers between writes.
struct WriterState {
    /// service → (its term, span name → (its term, kinds recorded)).
    terms: HashMap<String, (i64, HashMap<String, NameTerm>)>,
    recent: HashSet<[u8; 24]>,
    recent_order: std::collections::VecDeque<[u8; 24]>,
    compressor: Option<zstd::bulk::Compressor<'static>>,
}

/// A span name's term, and the span kinds recorded for it.
type NameTerm = (i64, Vec<i32>);

/// What a reader keeps: decoded resources and scopes (ids are never reused) and a
/// decompression context.
struct ReaderState {
    resources: HashMap<i64, (String, Resource)>,
    scopes: HashMap<i64, InstrumentationScope>,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
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
    /// Opens (or creates) the store in `dir`. A store written by an earlier version (one
    /// row per span) is converted in place, keeping every span.
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
        let mut store = Self::with(conn);
        store.convert_span_rows()?;
        Ok(store)
    }

    /// A second handle on the same database, for readers.
    pub fn reader(dir: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            dir.join("traces.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(Self::with(conn))
    }

    fn with(conn: Connection) -> Self {
        Self {
            conn,
            writer: WriterState::new(),
            reader: std::cell::RefCell::new(ReaderState {
                resources: HashMap::new(),
                scopes: HashMap::new(),
                decompressor: None,
            }),
        }
    }

    /// Stores the valid spans of a request in one transaction; spans with invalid ids are
    /// skipped (the receiver has already counted them). A span whose trace and span id
    /// were stored in the last [`RECENT_SPANS`] spans (or earlier in the request) is a
    /// duplicate and is not stored again; one that comes back later is stored again and
    /// shown once, as reads drop repeated span ids.
    pub fn ingest(&mut self, request: &ExportTraceServiceRequest) -> Result<Ingested, StoreError> {
        // Immediate: take the write lock up front (waiting for it), rather than fail when a
        // read turns into a write.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut out = Ingested::default();
        let latest = latest_start();
        let mut batch = Batch::default();
        let mut keys = Vec::new();
        let mut in_request = HashSet::new();
        for rs in &request.resource_spans {
            let resource = rs.resource.clone().unwrap_or_default();
            let service = service_of(Some(&resource));
            let resource_id = intern(&tx, Table::Resources, &resource.encode_to_vec(), &service)?;
            for ss in &rs.scope_spans {
                let scope = ss.scope.clone().unwrap_or_default();
                let scope_id = intern(&tx, Table::Scopes, &scope.encode_to_vec(), "")?;
                for span in ss.spans.iter().filter(|s| valid_ids(s)) {
                    let mut key = [0u8; 24];
                    key[..16].copy_from_slice(&span.trace_id);
                    key[16..].copy_from_slice(&span.span_id);
                    if self.writer.seen_recently(&key) || !in_request.insert(key) {
                        out.duplicates += 1;
                        continue;
                    }
                    let terms = self.writer.terms_of(&tx, &service, &span.name, span.kind)?;
                    let mut trace_id = [0u8; 16];
                    trace_id.copy_from_slice(&span.trace_id);
                    batch.add(
                        trace_id,
                        resource_id,
                        scope_id,
                        indexed_start(span, latest),
                        span.encode_to_vec(),
                        terms,
                    );
                    keys.push(key);
                    out.stored += 1;
                }
            }
        }
        self.writer.write(&tx, batch)?;
        tx.commit()?;
        self.writer.remember(keys);
        Ok(out)
    }

    /// Decompresses and decodes a chunk.
    fn chunk(&self, data: &[u8]) -> Result<StoredChunk, StoreError> {
        let size = zstd::zstd_safe::get_frame_content_size(data)
            .ok()
            .flatten()
            .filter(|&n| n <= MAX_CHUNK_BYTES)
            .ok_or(StoreError::ChunkSize)?;
        let mut reader = self.reader.borrow_mut();
        let d = match &mut reader.decompressor {
            Some(d) => d,
            None => reader
                .decompressor
                .insert(zstd::bulk::Decompressor::new().map_err(StoreError::Compression)?),
        };
        let raw = d
            .decompress(data, size as usize)
            .map_err(StoreError::Compression)?;
        Ok(StoredChunk::decode(&raw[..])?)
    }

    /// Every span of a trace, each once, earliest first (then by span id).
    fn trace_spans(&self, trace_id: &[u8]) -> Result<Vec<StoredSpan>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT data FROM chunks WHERE trace_id = ?1 ORDER BY id")?;
        let mut rows = stmt.query(params![trace_id])?;
        let mut out = Vec::new();
        let mut chunks = 0;
        while let Some(row) = rows.next()? {
            chunks += 1;
            let chunk = self.chunk(blob(row, 0)?)?;
            for g in chunk.groups {
                for bytes in g.spans {
                    out.push(StoredSpan {
                        resource: g.resource,
                        scope: g.scope,
                        span: Span::decode(&bytes[..])?,
                    });
                }
            }
        }
        out.sort_by(|a, b| {
            (a.span.start_time_unix_nano, &a.span.span_id)
                .cmp(&(b.span.start_time_unix_nano, &b.span.span_id))
        });
        if chunks > 1 {
            let mut seen = HashSet::new();
            out.retain(|s| seen.insert(s.span.span_id.clone()));
        }
        Ok(out)
    }

    /// The service and decoded resource of a resource id.
    fn resource(&self, id: i64) -> Result<(String, Resource), StoreError> {
        if let Some(r) = self.reader.borrow().resources.get(&id) {
            return Ok(r.clone());
        }
        let (service, data): (String, Vec<u8>) = self
            .conn
            .prepare_cached("SELECT service, data FROM resources WHERE id = ?1")?
            .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let r = (service, Resource::decode(&data[..])?);
        let mut reader = self.reader.borrow_mut();
        if reader.resources.len() >= MAX_CACHED {
            reader.resources.clear();
        }
        reader.resources.insert(id, r.clone());
        Ok(r)
    }

    fn service(&self, resource: i64) -> Result<String, StoreError> {
        Ok(self.resource(resource)?.0)
    }

    fn scope(&self, id: i64) -> Result<InstrumentationScope, StoreError> {
        if let Some(s) = self.reader.borrow().scopes.get(&id) {
            return Ok(s.clone());
        }
        let data: Vec<u8> = self
            .conn
            .prepare_cached("SELECT data FROM scopes WHERE id = ?1")?
            .query_row(params![id], |r| r.get(0))?;
        let s = InstrumentationScope::decode(&data[..])?;
        let mut reader = self.reader.borrow_mut();
        if reader.scopes.len() >= MAX_CACHED {
            reader.scopes.clear();
        }
        reader.scopes.insert(id, s.clone());
        Ok(s)
    }
}

/// A scope's id, the scope, and its spans.
type ScopeGroup = (i64, InstrumentationScope, Vec<Span>);

#[derive(Clone, Copy)]
enum Table {
    Resources,
    Scopes,
}

/// The id of a resource or scope, stored once by content. Ids are never reused (rows are
/// kept when their spans age out), so readers may keep them decoded.
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
        Table::Resources => conn
            .prepare_cached("INSERT INTO resources (digest, service, data) VALUES (?1, ?2, ?3)")?
            .execute(params![d, service, data])?,
        Table::Scopes => conn
            .prepare_cached("INSERT INTO scopes (digest, data) VALUES (?1, ?2)")?
            .execute(params![d, data])?,
    };
    Ok(conn.last_insert_rowid())
}

/// The byte strings of which a span whose attribute shows as `value` (see
/// [`value_string`]) holds at least one in its encoding, to skip other spans before
/// decoding them; `None` when no such test is safe (an empty value, or one that may be a
/// number or a boolean, whose encoding is not its text).
fn needles(value: &str) -> Option<Vec<Vec<u8>>> {
    if value.is_empty()
        || value.parse::<i64>().is_ok()
        || value.parse::<f64>().is_ok()
        || value.parse::<bool>().is_ok()
    {
        return None;
    }
    let mut out = vec![value.as_bytes().to_vec()];
    // A bytes value shows as hex.
    if let Ok(raw) = hex::decode(value) {
        out.push(raw);
    }
    Some(out)
}

/// Column `i` of `row` as bytes.
fn blob<'a>(row: &'a rusqlite::Row<'_>, i: usize) -> Result<&'a [u8], StoreError> {
    row.get_ref(i)?.as_blob().map_err(|e| {
        StoreError::Sqlite(rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Blob,
            Box::new(e),
        ))
    })
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
