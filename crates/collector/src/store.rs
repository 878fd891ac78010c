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

/// The spans of one trace gathered for one chunk.
struct Pending {
    trace_id: [u8; 16],
    start: i64,
    last: i64,
    spans: u64,
    groups: Vec<StoredGroup>,
    terms: Vec<i64>,
}

impl Pending {
    fn new(trace_id: [u8; 16]) -> Self {
        Self {
            trace_id,
            start: i64::MAX,
            last: i64::MIN,
            spans: 0,
            groups: Vec::new(),
            terms: Vec::new(),
        }
    }

    fn add(&mut self, resource: i64, scope: i64, start: i64, encoded: Vec<u8>, terms: [i64; 2]) {
        let group = match self
            .groups
            .iter()
            .rposition(|g| g.resource == resource && g.scope == scope)
        {
            Some(i) => &mut self.groups[i],
            None => {
                self.groups.push(StoredGroup {
                    resource,
                    scope,
                    spans: Vec::new(),
                });
                self.groups.last_mut().expect("just pushed")
            }
        };
        group.spans.push(encoded);
        self.start = self.start.min(start);
        self.last = self.last.max(start);
        self.spans += 1;
        for t in terms {
            if !self.terms.contains(&t) {
                self.terms.push(t);
            }
        }
    }
}

/// Gathers spans into chunks per trace, at most [`CHUNK_SPANS`] a chunk.
#[derive(Default)]
struct Batch {
    pending: Vec<Pending>,
    open: HashMap<[u8; 16], usize>,
}

impl Batch {
    fn add(
        &mut self,
        trace_id: [u8; 16],
        resource: i64,
        scope: i64,
        start: i64,
        encoded: Vec<u8>,
        terms: [i64; 2],
    ) {
        let i = match self.open.get(&trace_id) {
            Some(&i) if self.pending[i].spans < CHUNK_SPANS => i,
            _ => {
                self.pending.push(Pending::new(trace_id));
                let i = self.pending.len() - 1;
                self.open.insert(trace_id, i);
                i
            }
        };
        self.pending[i].add(resource, scope, start, encoded, terms);
    }
}

/// A span's indexed start: within i64 and at most [`MAX_CLOCK_SKEW`] past `latest`, so that
/// sums cannot overflow and retention reaches every span.
fn indexed_start(span: &Span, latest: u64) -> i64 {
    to_i64(span.start_time_unix_nano.min(latest))
}

fn latest_start() -> u64 {
    crate::now_ns()
        .saturating_add(MAX_CLOCK_SKEW.as_nanos() as u64)
        .min(i64::MAX as u64 / 2)
}

fn duration_of(span: &Span) -> u64 {
    span.end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano)
}

fn pack_terms(terms: &[i64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(terms.len() * 2);
    for &t in terms {
        prost::encoding::encode_varint(t as u64, &mut out);
    }
    out
}

fn unpack_terms(mut bytes: &[u8]) -> Vec<i64> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        match prost::encoding::decode_varint(&mut bytes) {
            Ok(v) => out.push(v as i64),
            Err(_) => break,
        }
    }
    out
}

impl WriterState {
    fn new() -> Self {
        Self {
            terms: HashMap::new(),
            recent: HashSet::new(),
            recent_order: std::collections::VecDeque::new(),
            compressor: None,
        }
    }

    /// The terms of a span: its service's and its service and name's, recording the
    /// operation (name and kind) when new.
    fn terms_of(
        &mut self,
        conn: &Connection,
        service: &str,
        name: &str,
        kind: i32,
    ) -> Result<[i64; 2], StoreError> {
        if self.terms.len() > MAX_CACHED {
            self.terms.clear();
        }
        if !self.terms.contains_key(service) {
            let id = term(conn, service, "")?;
            self.terms.insert(service.to_owned(), (id, HashMap::new()));
        }
        let (service_term, names) = self.terms.get_mut(service).expect("just inserted");
        if names.len() > MAX_CACHED {
            names.clear();
        }
        if !names.contains_key(name) {
            let id = term(conn, service, name)?;
            names.insert(name.to_owned(), (id, Vec::new()));
        }
        let (name_term, kinds) = names.get_mut(name).expect("just inserted");
        if !kinds.contains(&kind) {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO operations (service, name, kind) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![service, name, kind])?;
            kinds.push(kind);
        }
        Ok([*service_term, *name_term])
    }

    fn seen_recently(&self, key: &[u8; 24]) -> bool {
        self.recent.contains(key)
    }

    fn remember(&mut self, keys: Vec<[u8; 24]>) {
        for k in keys {
            if self.recent.insert(k) {
                self.recent_order.push_back(k);
            }
        }
        while self.recent_order.len() > RECENT_SPANS {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }

    /// Writes the chunks of a batch.
    fn write(&mut self, conn: &Connection, batch: Batch) -> Result<(), StoreError> {
        let mut pending = batch.pending;
        // Neighbouring trace ids go into the trace index together.
        pending.sort_unstable_by_key(|p| p.trace_id);
        let compressor = match &mut self.compressor {
            Some(c) => c,
            None => self.compressor.insert(
                zstd::bulk::Compressor::new(COMPRESSION_LEVEL).map_err(StoreError::Compression)?,
            ),
        };
        let mut insert = conn.prepare_cached(
            "INSERT INTO chunks (trace_id, start_ns, last_ns, spans, terms, data) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut post = conn
            .prepare_cached("INSERT OR IGNORE INTO postings (term_id, chunk_id) VALUES (?1, ?2)")?;
        for p in pending {
            let raw = StoredChunk { groups: p.groups }.encode_to_vec();
            let data = compressor.compress(&raw).map_err(StoreError::Compression)?;
            insert.execute(params![
                &p.trace_id[..],
                p.start,
                p.last,
                p.spans as i64,
                pack_terms(&p.terms),
                data
            ])?;
            let id = conn.last_insert_rowid();
            for t in p.terms {
                post.execute(params![t, id])?;
            }
        }
        Ok(())
    }
}

/// The id of the term (service, name); name "" is the service's own term.
fn term(conn: &Connection, service: &str, name: &str) -> Result<i64, StoreError> {
    if let Some(id) = conn
        .prepare_cached("SELECT id FROM terms WHERE service = ?1 AND name = ?2")?
        .query_row(params![service, name], |r| r.get(0))
        .optional()?
    {
        return Ok(id);
    }
    conn.prepare_cached("INSERT INTO terms (service, name) VALUES (?1, ?2)")?
        .execute(params![service, name])?;
    Ok(conn.last_insert_rowid())
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

    /// Moves the spans of an earlier version's `spans` table (one row per span) into
    /// chunks, in one transaction, and drops that table.
    fn convert_span_rows(&mut self) -> Result<(), StoreError> {
        let old: bool = self.conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'spans'",
            [],
            |r| r.get::<_, i64>(0),
        )? > 0;
        if !old {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let latest = latest_start();
        let mut moved = 0u64;
        {
            let mut rows = tx.prepare(
                "SELECT s.trace_id, s.resource_id, s.scope_id, r.service, s.data FROM spans s \
                 JOIN resources r ON r.id = s.resource_id ORDER BY s.trace_id",
            )?;
            let mut rows = rows.query([])?;
            let mut batch = Batch::default();
            while let Some(row) = rows.next()? {
                let span = Span::decode(&row.get::<_, Vec<u8>>(4)?[..])?;
                let Ok(trace_id) = <[u8; 16]>::try_from(&row.get::<_, Vec<u8>>(0)?[..]) else {
                    continue;
                };
                let service: String = row.get(3)?;
                let terms = self.writer.terms_of(&tx, &service, &span.name, span.kind)?;
                batch.add(
                    trace_id,
                    row.get(1)?,
                    row.get(2)?,
                    indexed_start(&span, latest),
                    span.encode_to_vec(),
                    terms,
                );
                moved += 1;
                if batch.pending.len() >= 10_000 {
                    self.writer.write(&tx, std::mem::take(&mut batch))?;
                }
            }
            self.writer.write(&tx, batch)?;
        }
        tx.execute_batch("DROP TABLE spans")?;
        tx.commit()?;
        tracing::info!(
            spans = moved,
            "converted the trace store to compressed chunks"
        );
        Ok(())
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

    /// The spans of a trace (at most [`MAX_TRACE_SPANS`], earliest first), grouped by
    /// resource and scope as OTLP has them, and how many it has in all; `None` when there
    /// is none.
    pub fn trace(&self, trace_id: &[u8]) -> Result<Option<(TracesData, u64)>, StoreError> {
        self.trace_page(trace_id, 0, MAX_TRACE_SPANS)
    }

    /// How many spans of a trace are stored.
    pub fn trace_span_count(&self, trace_id: &[u8]) -> Result<u64, StoreError> {
        Ok(self.trace_spans(trace_id)?.len() as u64)
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
        let mut total = 0u64;
        let mut skip = offset;
        let mut taken = 0u64;
        // (resource id, resource, scopes), in first-seen order.
        let mut groups: Vec<(i64, Resource, Vec<ScopeGroup>)> = Vec::new();
        for id in trace_ids {
            let spans = self.trace_spans(id)?;
            total = total.saturating_add(spans.len() as u64);
            for s in spans {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                if taken >= limit {
                    continue;
                }
                taken += 1;
                let g = match groups.iter().position(|g| g.0 == s.resource) {
                    Some(i) => &mut groups[i],
                    None => {
                        groups.push((s.resource, self.resource(s.resource)?.1, Vec::new()));
                        groups.last_mut().expect("just pushed")
                    }
                };
                match g.2.iter_mut().position(|c| c.0 == s.scope) {
                    Some(i) => g.2[i].2.push(s.span),
                    None => g.2.push((s.scope, self.scope(s.scope)?, vec![s.span])),
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
        let mut stmt = self.conn.prepare_cached(
            "SELECT service FROM terms t WHERE name = '' \
             AND EXISTS (SELECT 1 FROM postings p WHERE p.term_id = t.id) ORDER BY service",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A service's operations (span names and kinds), sorted.
    pub fn operations(&self, service: &str) -> Result<Vec<Operation>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.name, o.kind FROM operations o JOIN terms t \
             ON t.service = o.service AND t.name = o.name WHERE o.service = ?1 \
             AND EXISTS (SELECT 1 FROM postings p WHERE p.term_id = t.id) ORDER BY o.name, o.kind",
        )?;
        let rows = stmt.query_map(params![service], |r| {
            Ok(Operation {
                name: r.get(0)?,
                kind: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Trace ids matching a query, the trace written last first.
    ///
    /// With a service (and an operation) only the chunks holding such spans are read,
    /// through `postings`; otherwise every chunk, newest first. At most
    /// [`MAX_SEARCH_SCAN`] spans are examined.
    pub fn search(&self, q: &TraceQuery) -> Result<Vec<Vec<u8>>, StoreError> {
        let limit = if q.limit == 0 { 20 } else { q.limit }.min(MAX_SEARCH_LIMIT);
        let term = match &q.service {
            Some(s) => {
                let name = q.operation.as_deref().unwrap_or("");
                match self
                    .conn
                    .prepare_cached("SELECT id FROM terms WHERE service = ?1 AND name = ?2")?
                    .query_row(params![s, name], |r| r.get::<_, i64>(0))
                    .optional()?
                {
                    Some(t) => Some(t),
                    None => return Ok(Vec::new()),
                }
            }
            None => None,
        };
        let mut stmt = match term {
            Some(_) => self.conn.prepare_cached(
                "SELECT c.trace_id, c.start_ns, c.last_ns, c.spans, c.data FROM postings p \
                 JOIN chunks c ON c.id = p.chunk_id WHERE p.term_id = ?1 \
                 ORDER BY p.chunk_id DESC",
            )?,
            None => self.conn.prepare_cached(
                "SELECT trace_id, start_ns, last_ns, spans, data FROM chunks \
                 WHERE ?1 IS NULL ORDER BY id DESC",
            )?,
        };
        let mut rows = stmt.query(params![term])?;
        let needles: Vec<Vec<Vec<u8>>> = q.attributes.values().filter_map(|v| needles(v)).collect();
        let start_min = q.start_min_ns.map(to_i64);
        let start_max = q.start_max_ns.map(to_i64);
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut out = Vec::new();
        let mut scanned = 0usize;
        while let Some(row) = rows.next()? {
            let trace_id: Vec<u8> = row.get(0)?;
            if seen.contains(&trace_id) {
                continue;
            }
            let (first, last): (i64, i64) = (row.get(1)?, row.get(2)?);
            if start_min.is_some_and(|m| last < m) || start_max.is_some_and(|m| first > m) {
                continue;
            }
            scanned += row.get::<_, i64>(3)?.max(0) as usize;
            if scanned > MAX_SEARCH_SCAN {
                break;
            }
            let chunk = self.chunk(blob(row, 4)?)?;
            let mut hit = false;
            'groups: for g in &chunk.groups {
                if let Some(s) = &q.service
                    && self.service(g.resource)? != *s
                {
                    continue;
                }
                for bytes in &g.spans {
                    if !needles.iter().all(|alternatives| {
                        alternatives
                            .iter()
                            .any(|n| memchr::memmem::find(bytes, n).is_some())
                    }) {
                        continue;
                    }
                    let span = Span::decode(&bytes[..])?;
                    if self.span_matches(&span, q)? {
                        hit = true;
                        if q.caller_service.is_none() {
                            break 'groups;
                        }
                        if self.called_from(&trace_id, &span, q.caller_service.as_deref())? {
                            break 'groups;
                        }
                        hit = false;
                    }
                }
            }
            if !hit {
                continue;
            }
            if let Some(name) = &q.root_operation
                && !self
                    .trace_spans(&trace_id)?
                    .iter()
                    .any(|s| s.span.parent_span_id.is_empty() && s.span.name == *name)
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

    /// Whether a span (of a chunk the query's service selected) meets the query.
    fn span_matches(&self, span: &Span, q: &TraceQuery) -> Result<bool, StoreError> {
        if q.operation.as_ref().is_some_and(|o| *o != span.name) {
            return Ok(false);
        }
        let duration = duration_of(span);
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        if q.duration_min.is_some_and(|d| duration < nanos(d))
            || q.duration_max.is_some_and(|d| duration > nanos(d))
        {
            return Ok(false);
        }
        let start = span.start_time_unix_nano;
        if q.start_min_ns.is_some_and(|t| start < t) || q.start_max_ns.is_some_and(|t| start > t) {
            return Ok(false);
        }
        if q.errors_only && span.status.as_ref().map_or(0, |s| s.code) != STATUS_ERROR {
            return Ok(false);
        }
        Ok(q.attributes.iter().all(|(k, v)| {
            span.attributes
                .iter()
                .any(|kv| &kv.key == k && kv.value.as_ref().map(value_string).as_ref() == Some(v))
        }))
    }

    /// Whether the parent of `span` ran in `caller`.
    fn called_from(
        &self,
        trace_id: &[u8],
        span: &Span,
        caller: Option<&str>,
    ) -> Result<bool, StoreError> {
        let Some(caller) = caller else {
            return Ok(true);
        };
        if span.parent_span_id.is_empty() {
            return Ok(false);
        }
        for s in self.trace_spans(trace_id)? {
            if s.span.span_id == span.parent_span_id {
                return Ok(self.service(s.resource)? == caller);
            }
        }
        Ok(false)
    }

    /// A summary of each of these traces.
    pub fn summaries(&self, trace_ids: &[Vec<u8>]) -> Result<Vec<TraceSummary>, StoreError> {
        let mut out = Vec::new();
        for id in trace_ids {
            let spans = self.trace_spans(id)?;
            let Some(first) = spans
                .iter()
                .find(|s| s.span.parent_span_id.is_empty())
                .or(spans.first())
            else {
                continue;
            };
            let start = spans
                .iter()
                .map(|s| s.span.start_time_unix_nano)
                .min()
                .unwrap_or(0);
            let end = spans
                .iter()
                .map(|s| {
                    s.span
                        .start_time_unix_nano
                        .saturating_add(duration_of(&s.span))
                })
                .max()
                .unwrap_or(start);
            let errors = spans
                .iter()
                .filter(|s| s.span.status.as_ref().map_or(0, |st| st.code) == STATUS_ERROR)
                .count();
            out.push(TraceSummary {
                trace_id: hex::encode(id),
                root: first.span.name.clone(),
                service: self.service(first.resource)?,
                spans: spans.len() as u64,
                duration_ns: end.saturating_sub(start),
                start_ns: start,
                errors: errors as u64,
            });
        }
        Ok(out)
    }

    /// The spans of chunks holding a span that started at or after `since_ns`, the newest
    /// chunks first, at most [`MAX_WINDOW_SPANS`].
    fn window(
        &self,
        since_ns: u64,
        mut each: impl FnMut(&[u8], i64, Span) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // The window's chunks, newest first, chosen by their small columns alone (so that
        // ordering them never sorts their data), then read one by one.
        let mut ids = Vec::new();
        {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id, spans FROM chunks WHERE last_ns >= ?1 ORDER BY id DESC",
            )?;
            let mut rows = stmt.query(params![to_i64(since_ns)])?;
            let mut read = 0usize;
            while let Some(row) = rows.next()? {
                read += row.get::<_, i64>(1)?.max(0) as usize;
                if read > MAX_WINDOW_SPANS {
                    break;
                }
                ids.push(row.get::<_, i64>(0)?);
            }
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT trace_id, data FROM chunks WHERE id = ?1")?;
        for id in ids {
            let Some((trace_id, chunk)) = stmt
                .query_row(params![id], |row| {
                    Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?))
                })
                .optional()?
            else {
                continue;
            };
            for g in self.chunk(&chunk)?.groups {
                for bytes in g.spans {
                    each(&trace_id, g.resource, Span::decode(&bytes[..])?)?;
                }
            }
        }
        Ok(())
    }

    /// Calls between resources: (parent resource, child resource, calls, errors) for spans
    /// starting at or after `since_ns` whose parent ran in another resource.
    fn resource_edges(&self, since_ns: u64) -> Result<Vec<(i64, i64, u64, u64)>, StoreError> {
        // Per trace: span id → resource, and the children in the window.
        let mut owners: HashMap<Vec<u8>, HashMap<Vec<u8>, i64>> = HashMap::new();
        let mut children: Vec<(Vec<u8>, Vec<u8>, i64, bool)> = Vec::new();
        self.window(since_ns, |trace, resource, span| {
            owners
                .entry(trace.to_vec())
                .or_default()
                .insert(span.span_id.clone(), resource);
            if span.start_time_unix_nano >= since_ns && !span.parent_span_id.is_empty() {
                let error = span.status.as_ref().map_or(0, |s| s.code) == STATUS_ERROR;
                children.push((trace.to_vec(), span.parent_span_id, resource, error));
            }
            Ok(())
        })?;
        // Parents that started before the window.
        let mut missing: Vec<Vec<u8>> = children
            .iter()
            .filter(|(t, p, ..)| !owners.get(t).is_some_and(|o| o.contains_key(p)))
            .map(|(t, ..)| t.clone())
            .collect();
        missing.sort();
        missing.dedup();
        for t in missing.into_iter().take(MAX_PARENT_TRACES) {
            let spans = self.trace_spans(&t)?;
            let o = owners.entry(t).or_default();
            for s in spans {
                o.insert(s.span.span_id, s.resource);
            }
        }
        let mut edges: HashMap<(i64, i64), (u64, u64)> = HashMap::new();
        for (trace, parent, resource, error) in children {
            if let Some(&from) = owners.get(&trace).and_then(|o| o.get(&parent))
                && from != resource
            {
                let e = edges.entry((from, resource)).or_default();
                e.0 += 1;
                e.1 += u64::from(error);
            }
        }
        Ok(edges
            .into_iter()
            .map(|((from, to), (calls, errors))| (from, to, calls, errors))
            .collect())
    }

    /// The service map: calls and errors per edge, for spans starting at or after
    /// `since_ns` (of the newest [`MAX_WINDOW_SPANS`]).
    pub fn edges(&self, since_ns: u64) -> Result<Vec<Edge>, StoreError> {
        self.merge_edges(since_ns, |id| self.service(id))
    }

    /// Calls between nodes: like [`Self::edges`], each end named by its service and its
    /// `service.instance.id` (a node's peer id), as `service (…last 6 of the id)`, or the
    /// service alone when its spans carry no instance id.
    pub fn node_edges(&self, since_ns: u64) -> Result<Vec<Edge>, StoreError> {
        self.merge_edges(since_ns, |id| {
            let (service, resource) = self.resource(id)?;
            let instance = resource
                .attributes
                .iter()
                .find(|kv| kv.key == "service.instance.id")
                .and_then(|kv| kv.value.as_ref().map(value_string));
            Ok(match instance {
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
            })
        })
    }

    /// Resource edges merged under `name`, dropping calls within one name, sorted.
    fn merge_edges(
        &self,
        since_ns: u64,
        name: impl Fn(i64) -> Result<String, StoreError>,
    ) -> Result<Vec<Edge>, StoreError> {
        let mut merged: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for (from, to, calls, errors) in self.resource_edges(since_ns)? {
            let key = (name(from)?, name(to)?);
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
    /// over the window from `since_ns` to `until_ns` (of the newest [`MAX_WINDOW_SPANS`]).
    pub fn operation_stats(
        &self,
        service: Option<&str>,
        since_ns: u64,
        until_ns: u64,
    ) -> Result<Vec<OperationStats>, StoreError> {
        let mut by_op: BTreeMap<(String, String), (Vec<u64>, u64)> = BTreeMap::new();
        self.window(since_ns, |_, resource, span| {
            if span.start_time_unix_nano < since_ns {
                return Ok(());
            }
            let svc = self.service(resource)?;
            if service.is_some_and(|s| s != svc) {
                return Ok(());
            }
            let error = u64::from(span.status.as_ref().map_or(0, |s| s.code) == STATUS_ERROR);
            let e = by_op.entry((svc, span.name.clone())).or_default();
            e.0.push(duration_of(&span).min(i64::MAX as u64));
            e.1 += error;
            Ok(())
        })?;
        let window = (until_ns.saturating_sub(since_ns) as f64 / 1e9).max(1e-9);
        Ok(by_op
            .into_iter()
            .map(|((service, name), (mut d, errors))| {
                d.sort_unstable();
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
            })
            .collect())
    }

    /// Spans stored.
    pub fn span_count(&self) -> Result<u64, StoreError> {
        let n: i64 =
            self.conn
                .query_row("SELECT COALESCE(SUM(spans), 0) FROM chunks", [], |r| {
                    r.get(0)
                })?;
        Ok(n.max(0) as u64)
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

    /// Deletes the chunks whose spans all started before `now - retention`, then the
    /// oldest chunks until the database uses at most `max_bytes`. Returns the spans
    /// deleted.
    pub fn enforce_limits(
        &mut self,
        now_ns: u64,
        retention: Duration,
        max_bytes: u64,
    ) -> Result<u64, StoreError> {
        let cutoff = now_ns.saturating_sub(u64::try_from(retention.as_nanos()).unwrap_or(u64::MAX));
        let mut deleted = self.delete_chunks(
            "SELECT id, spans, terms FROM chunks WHERE last_ns < ?1",
            to_i64(cutoff),
        )?;
        while self.used_bytes()? > max_bytes {
            let chunks: i64 = self
                .conn
                .query_row("SELECT COUNT(*) FROM chunks", [], |r| r.get(0))?;
            if chunks == 0 {
                break;
            }
            // The oldest tenth (at least one chunk) at a time.
            deleted += self.delete_chunks(
                "SELECT id, spans, terms FROM chunks ORDER BY id LIMIT ?1",
                (chunks / 10).max(1),
            )?;
        }
        if deleted > 0 {
            let gone = self.conn.execute(
                "DELETE FROM terms WHERE NOT EXISTS \
                 (SELECT 1 FROM postings p WHERE p.term_id = terms.id)",
                [],
            )?;
            if gone > 0 {
                self.conn.execute(
                    "DELETE FROM operations WHERE NOT EXISTS (SELECT 1 FROM terms t \
                     WHERE t.service = operations.service AND t.name = operations.name)",
                    [],
                )?;
                self.writer.terms.clear();
            }
        }
        Ok(deleted)
    }

    /// Deletes the chunks `select` (id, spans, terms; one parameter) names, with their
    /// postings, in one transaction. Returns their spans.
    fn delete_chunks(&mut self, select: &str, arg: i64) -> Result<u64, StoreError> {
        let tx = self.conn.transaction()?;
        let doomed: Vec<(i64, i64, Vec<u8>)> = tx
            .prepare(select)?
            .query_map(params![arg], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let mut spans = 0u64;
        {
            let mut post =
                tx.prepare_cached("DELETE FROM postings WHERE term_id = ?1 AND chunk_id = ?2")?;
            let mut chunk = tx.prepare_cached("DELETE FROM chunks WHERE id = ?1")?;
            for (id, n, terms) in &doomed {
                for t in unpack_terms(terms) {
                    post.execute(params![t, id])?;
                }
                chunk.execute(params![id])?;
                spans += (*n).max(0) as u64;
            }
        }
        tx.commit()?;
        Ok(spans)
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
mod tests {
    use super::*;

    fn span(trace: u8, id: u8, parent: Option<u8>, name: &str) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: name.into(),
            start_time_unix_nano: 1_000 + u64::from(id),
            end_time_unix_nano: 2_000 + u64::from(id),
            ..Default::default()
        }
    }

    fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![opentelemetry_proto::tonic::common::v1::KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(service.into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn names(store: &Store, trace: u8) -> Vec<String> {
        let (data, _) = store.trace(&[trace; 16]).expect("read").expect("found");
        data.resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.clone())
            .collect()
    }

    #[test]
    fn a_store_of_one_row_per_span_is_converted_keeping_every_span() {
        let dir = tempfile::tempdir().expect("dir");
        {
            // The layout of the earlier version, with two spans of one trace in it.
            let conn = Connection::open(dir.path().join("traces.db")).expect("open");
            conn.execute_batch(
                "CREATE TABLE resources (id INTEGER PRIMARY KEY, digest BLOB NOT NULL UNIQUE, \
                 service TEXT NOT NULL, data BLOB NOT NULL);
                 CREATE TABLE scopes (id INTEGER PRIMARY KEY, digest BLOB NOT NULL UNIQUE, \
                 data BLOB NOT NULL);
                 CREATE TABLE spans (trace_id BLOB NOT NULL, span_id BLOB NOT NULL, \
                 parent_span_id BLOB NOT NULL, resource_id INTEGER NOT NULL, \
                 scope_id INTEGER NOT NULL, service TEXT NOT NULL, name TEXT NOT NULL, \
                 kind INTEGER NOT NULL, start_ns INTEGER NOT NULL, duration_ns INTEGER NOT NULL, \
                 status INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (trace_id, span_id)) \
                 WITHOUT ROWID;",
            )
            .expect("old schema");
            let resource = request("old-node", vec![]).resource_spans[0]
                .resource
                .clone()
                .expect("resource")
                .encode_to_vec();
            conn.execute(
                "INSERT INTO resources (id, digest, service, data) VALUES (1, x'01', 'old-node', ?1)",
                params![resource],
            )
            .expect("resource");
            conn.execute(
                "INSERT INTO scopes (id, digest, data) VALUES (1, x'02', x'')",
                [],
            )
            .expect("scope");
            for s in [span(7, 1, None, "root"), span(7, 2, Some(1), "child")] {
                conn.execute(
                    "INSERT INTO spans VALUES (?1, ?2, ?3, 1, 1, 'old-node', ?4, 0, ?5, 1000, 0, ?6)",
                    params![
                        s.trace_id,
                        s.span_id,
                        s.parent_span_id,
                        s.name,
                        s.start_time_unix_nano as i64,
                        s.encode_to_vec()
                    ],
                )
                .expect("span");
            }
        }
        let store = Store::open(dir.path()).expect("converts");
        assert_eq!(names(&store, 7), ["root", "child"]);
        assert_eq!(store.span_count().expect("count"), 2);
        assert_eq!(store.services().expect("services"), ["old-node"]);
        let found = store
            .search(&TraceQuery {
                service: Some("old-node".into()),
                operation: Some("child".into()),
                ..Default::default()
            })
            .expect("search");
        assert_eq!(found, vec![vec![7u8; 16]]);
        let old: i64 = store
            .conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'spans'",
                [],
                |r| r.get(0),
            )
            .expect("schema");
        assert_eq!(old, 0, "the old table is gone");
        drop(store);
        // Opening again changes nothing.
        let store = Store::open(dir.path()).expect("reopens");
        assert_eq!(store.span_count().expect("count"), 2);
    }

    #[test]
    fn spans_of_one_trace_written_apart_are_read_together_once_each() {
        let dir = tempfile::tempdir().expect("dir");
        let mut store = Store::open(dir.path()).expect("open");
        let first = request(
            "a",
            vec![span(9, 1, None, "root"), span(9, 2, Some(1), "a.work")],
        );
        let done = store.ingest(&first).expect("ingest");
        assert_eq!((done.stored, done.duplicates), (2, 0));
        // Sent again at once: nothing is written twice.
        let again = store.ingest(&first).expect("ingest");
        assert_eq!((again.stored, again.duplicates), (0, 2));
        store
            .ingest(&request("b", vec![span(9, 3, Some(2), "b.work")]))
            .expect("ingest");
        // A resend the writer no longer remembers is written, and read once.
        store.writer.recent.clear();
        store.writer.recent_order.clear();
        store.ingest(&first).expect("ingest");
        assert_eq!(names(&store, 9), ["root", "a.work", "b.work"]);
        assert_eq!(store.trace_span_count(&[9; 16]).expect("count"), 3);
        // Attributes of every type are found by their text.
        let mut typed = span(11, 1, None, "typed");
        typed.attributes = [
            ("n", any_value::Value::IntValue(3)),
            ("f", any_value::Value::DoubleValue(1.5)),
            ("b", any_value::Value::BoolValue(true)),
            ("raw", any_value::Value::BytesValue(vec![0xab, 0xcd])),
            ("s", any_value::Value::StringValue("text".into())),
        ]
        .into_iter()
        .map(|(k, v)| opentelemetry_proto::tonic::common::v1::KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        })
        .collect();
        store
            .ingest(&request("typed", vec![typed]))
            .expect("ingest");
        // Searches by service and operation, by caller, and by root.
        let q = |f: &dyn Fn(&mut TraceQuery)| {
            let mut q = TraceQuery::default();
            f(&mut q);
            store.search(&q).expect("search")
        };
        assert_eq!(q(&|q| q.service = Some("b".into())).len(), 1);
        assert!(q(&|q| q.operation = Some("nothing".into())).is_empty());
        assert_eq!(
            q(&|q| {
                q.service = Some("b".into());
                q.caller_service = Some("a".into());
            })
            .len(),
            1
        );
        assert!(
            q(&|q| {
                q.service = Some("b".into());
                q.caller_service = Some("b".into());
            })
            .is_empty()
        );
        assert_eq!(q(&|q| q.root_operation = Some("root".into())).len(), 1);
        assert!(q(&|q| q.root_operation = Some("a.work".into())).is_empty());
        for (k, v, found) in [
            ("n", "3", true),
            ("n", "4", false),
            ("f", "1.5", true),
            ("b", "true", true),
            ("raw", "abcd", true),
            ("s", "text", true),
            ("s", "other", false),
        ] {
            let hits = q(&|q| {
                q.attributes.insert(k.into(), v.into());
            });
            assert_eq!(hits.len(), usize::from(found), "{k}={v}");
        }
        let edges = store.edges(0).expect("edges");
        assert_eq!(edges.len(), 1);
        assert_eq!((edges[0].from.as_str(), edges[0].to.as_str()), ("a", "b"));
        let summary = &store.summaries(&[vec![9; 16]]).expect("summaries")[0];
        assert_eq!((summary.root.as_str(), summary.spans), ("root", 3));
        let ops = store.operations("a").expect("operations");
        assert_eq!(ops.len(), 2);
        // Retention removes everything (all spans started at 1 µs after the epoch).
        let gone = store
            .enforce_limits(10_000_000_000, Duration::from_secs(1), u64::MAX)
            .expect("retention");
        assert!(gone >= 3);
        assert!(store.trace(&[9; 16]).expect("read").is_none());
        assert!(store.services().expect("services").is_empty());
        assert!(store.operations("a").expect("operations").is_empty());
    }
}
