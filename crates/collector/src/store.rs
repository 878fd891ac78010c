//! Traces on disk: one SQLite database holding, per trace and write, the trace's spans
//! compressed together; resources and scopes stored once each; bounded by age and by
//! bytes. [`Store`] describes the layout.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
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
mod prepare;
mod read;
mod retention;
mod write;

pub use accounts::{ACCOUNT, Account};
use prepare::{Dictionary, compress, split_chunk};
pub use prepare::{Prepared, Preparer};
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
    /// A reader was asked to write.
    #[error("trace store: opened for reading only")]
    ReadOnly,
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
    /// A stored chunk's spans and their times do not match.
    #[error("trace store: a stored chunk's spans and times do not match")]
    ChunkTimes,
    /// A request did not read as the OTLP schema says (the receiver checks it first, so
    /// this is not expected).
    #[error("trace store: the request is not well-formed OTLP protobuf: {0}")]
    Malformed(String),
    /// A stored chunk names a compression dictionary the store does not have.
    #[error("trace store: a stored chunk's compression dictionary {0} is missing")]
    Dictionary(i64),
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
CREATE TABLE IF NOT EXISTS dictionaries (
    id INTEGER PRIMARY KEY,
    last_chunk INTEGER NOT NULL,
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
CREATE TABLE IF NOT EXISTS runs (
    term_id INTEGER NOT NULL,
    last_chunk INTEGER NOT NULL,
    first_chunk INTEGER NOT NULL,
    PRIMARY KEY (term_id, last_chunk)
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
/// Size of a compression dictionary. A chunk is small (a trace's spans of one request),
/// so the names, keys and values its spans share with other traces' would be spelled
/// out in every chunk; a dictionary trained on the store's own chunks holds them once.
const DICTIONARY_BYTES: usize = 4096;
/// Raw chunks gathered before a dictionary is trained.
const DICTIONARY_SAMPLES: usize = 500;
/// Spans stored with one dictionary before the next is trained on newer chunks.
const DICTIONARY_SPANS: u64 = 1_000_000;
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
/// their OTLP encoding, grouped by resource and scope (ids into those tables). In a
/// `lean` chunk (every chunk written since 2026-12-07) a span's encoding lacks its trace
/// id (the row's) and its times, which its group keeps beside it relative to `base_ns`.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredChunk {
    #[prost(message, repeated, tag = "1")]
    groups: Vec<StoredGroup>,
    /// The earliest start of the chunk's spans, unix nanoseconds.
    #[prost(uint64, tag = "2")]
    base_ns: u64,
    #[prost(bool, tag = "3")]
    lean: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StoredGroup {
    #[prost(int64, tag = "1")]
    resource: i64,
    #[prost(int64, tag = "2")]
    scope: i64,
    #[prost(bytes = "vec", repeated, tag = "3")]
    spans: Vec<Vec<u8>>,
    /// Lean: each span's start after the chunk's `base_ns`.
    #[prost(uint64, repeated, tag = "4")]
    starts: Vec<u64>,
    /// Lean: each span's end minus its start (negative when a sender's end is earlier).
    #[prost(sint64, repeated, tag = "5")]
    ends: Vec<i64>,
}

impl StoredChunk {
    /// Whether a lean chunk has the times of every span.
    fn check(&self) -> Result<(), StoreError> {
        let whole = !self.lean
            || self
                .groups
                .iter()
                .all(|g| g.starts.len() == g.spans.len() && g.ends.len() == g.spans.len());
        if whole {
            Ok(())
        } else {
            Err(StoreError::ChunkTimes)
        }
    }

    /// The `i`-th span of group `g` decoded, whole again: a lean chunk's trace id and
    /// times put back.
    fn span(&self, g: &StoredGroup, i: usize, trace_id: &[u8]) -> Result<Span, StoreError> {
        let mut span = Span::decode(&g.spans[i][..])?;
        if self.lean {
            span.trace_id = trace_id.to_vec();
            (span.start_time_unix_nano, span.end_time_unix_nano) = self.times(g, i);
        }
        Ok(span)
    }

    /// A lean chunk's start and end of the `i`-th span of group `g`.
    fn times(&self, g: &StoredGroup, i: usize) -> (u64, u64) {
        let start = self.base_ns.wrapping_add(g.starts[i]);
        (start, start.wrapping_add(g.ends[i] as u64))
    }
}

/// A span read back, with the ids of its resource and scope.
struct StoredSpan {
    resource: i64,
    scope: i64,
    span: Span,
}

/// Pages of write-ahead log after which the writer checkpoints itself.
const WAL_BACKSTOP_PAGES: i64 = 16_384;

/// Copies what the writer committed from the write-ahead log into the database, on a
/// connection of its own, so that the writer does not stop to do it: a passive
/// checkpoint never waits for the writer, and once it has caught up the writer's next
/// transaction starts the log from its beginning again.
pub struct Checkpointer {
    conn: Connection,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer").finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Opens a connection to the store in `dir` (opened by [`Store::open`] first).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(dir.join("traces.db"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(Self { conn })
    }

    /// One passive checkpoint: returns the log's pages and how many of them are now in the
    /// database.
    pub fn checkpoint(&self) -> Result<(i64, i64), StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })?)
    }
}

/// The trace store.
///
/// Layout: each write groups its spans by trace; the spans of one trace become one row
/// of `chunks` (append-ordered, zstd-compressed protobuf), found by trace id through a
/// small index of one entry per chunk. Searches find chunks through `runs`: for each
/// service, and each service and span name, the ranges of chunk ids written together
/// (one transaction) among which are all chunks holding such spans; each chunk lists its
/// terms, so a search skips the others of a range without decompressing them. Random
/// trace ids therefore cost one index entry per trace per write instead of four B-tree
/// entries per span, and a term one entry per write instead of one per chunk.
pub struct Store {
    conn: Connection,
    /// Shared with the threads that receive spans (writers only).
    preparer: Option<Arc<Preparer>>,
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
    /// Fingerprints of the spans stored last (see [`Preparer::fingerprint`]).
    recent: HashSet<u64, Fingerprints>,
    recent_order: std::collections::VecDeque<u64>,
    /// Resource and scope ids known to be in the database.
    written: HashSet<(bool, i64)>,
    /// Raw chunks gathered to train the next dictionary on.
    samples: Vec<Vec<u8>>,
    /// Spans stored since the current dictionary was made.
    since_dictionary: u64,
}

/// A span name's term, and the span kinds recorded for it.
type NameTerm = (i64, Vec<i32>);

/// What a reader keeps: decoded resources and scopes (ids are never reused) and a
/// decompression context.
struct ReaderState {
    resources: HashMap<i64, (String, Resource)>,
    scopes: HashMap<i64, InstrumentationScope>,
    /// A decompression context and the dictionary (id, 0 for none) it holds.
    decompressor: Option<(i64, zstd::bulk::Decompressor<'static>)>,
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
    usable_ids(&span.trace_id, &span.span_id, &span.parent_span_id)
}

fn usable_ids(trace_id: &[u8], span_id: &[u8], parent: &[u8]) -> bool {
    trace_id.len() == 16
        && span_id.len() == 8
        && trace_id.iter().any(|&b| b != 0)
        && span_id.iter().any(|&b| b != 0)
        && (parent.is_empty() || parent.len() == 8)
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
        // Checkpoints are a [`Checkpointer`]'s work, beside the writer; the writer does one
        // itself only when the log has grown this far (the checkpointer is behind).
        conn.pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        let mut store = Self::with(conn);
        store.convert_span_rows()?;
        store.convert_postings()?;
        store.preparer = Some(Arc::new(Preparer::load(&store.conn)?));
        Ok(store)
    }

    /// What the threads that receive spans prepare them with (`None` for a reader).
    pub fn preparer(&self) -> Option<Arc<Preparer>> {
        self.preparer.clone()
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
            preparer: None,
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
    /// shown once, as reads drop repeated span ids. (The collector prepares each request
    /// on the thread that received it and writes several at once: [`Store::write`].)
    pub fn ingest(&mut self, request: &ExportTraceServiceRequest) -> Result<Ingested, StoreError> {
        self.ingest_export(&request.encode_to_vec())
    }

    /// [`Store::ingest`] for a protobuf `ExportTraceServiceRequest` as received, read as
    /// the collector reads it: checked along the OTLP schema, then in place.
    pub fn ingest_export(&mut self, body: &[u8]) -> Result<Ingested, StoreError> {
        let preparer = self.preparer.clone().ok_or(StoreError::ReadOnly)?;
        let checked = crate::estimate::protobuf(body).map_err(StoreError::Malformed)?;
        let prepared = preparer.prepare(checked)?;
        let mut done = self.write(vec![prepared])?;
        Ok(done.pop().unwrap_or_default())
    }

    /// Decompresses and decodes a chunk.
    fn chunk(&self, data: &[u8]) -> Result<StoredChunk, StoreError> {
        let (dictionary, frame) = split_chunk(data)?;
        let held = self.reader.borrow().decompressor.as_ref().map(|d| d.0);
        if held != Some(dictionary) {
            let d = if dictionary == 0 {
                zstd::bulk::Decompressor::new()
            } else {
                let bytes: Vec<u8> = self
                    .conn
                    .prepare_cached("SELECT data FROM dictionaries WHERE id = ?1")?
                    .query_row(params![dictionary], |r| r.get(0))
                    .optional()?
                    .ok_or(StoreError::Dictionary(dictionary))?;
                zstd::bulk::Decompressor::with_dictionary(&bytes)
            }
            .map_err(StoreError::Compression)?;
            self.reader.borrow_mut().decompressor = Some((dictionary, d));
        }
        let mut reader = self.reader.borrow_mut();
        let (_, d) = reader.decompressor.as_mut().expect("just set");
        decode_chunk(d, frame)
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
            for g in &chunk.groups {
                for i in 0..g.spans.len() {
                    out.push(StoredSpan {
                        resource: g.resource,
                        scope: g.scope,
                        span: chunk.span(g, i, trace_id)?,
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

/// A chunk's zstd frame decompressed (at most [`MAX_CHUNK_BYTES`]), decoded and checked.
fn decode_chunk(
    d: &mut zstd::bulk::Decompressor<'_>,
    frame: &[u8],
) -> Result<StoredChunk, StoreError> {
    let size = zstd::zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten()
        .filter(|&n| n <= MAX_CHUNK_BYTES)
        .ok_or(StoreError::ChunkSize)?;
    let raw = d
        .decompress(frame, size as usize)
        .map_err(StoreError::Compression)?;
    let chunk = StoredChunk::decode(&raw[..])?;
    chunk.check()?;
    Ok(chunk)
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
