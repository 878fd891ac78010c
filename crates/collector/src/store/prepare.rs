//! Preparing a request's spans for the store on the thread that received them: grouped
//! per trace, encoded lean (no trace id in each span, times relative to the chunk) and
//! compressed with the store's current dictionary. The writer then only turns away
//! repeats and inserts rows, so the work of many requests is shared among threads.

use std::cell::RefCell;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::*;
use crate::estimate::{Checked, Field, Fields, Value};

/// First byte of a chunk compressed with a dictionary: `[DICTIONARY_MARK][varint id]`
/// before the zstd frame. A chunk without one is a bare zstd frame, whose first byte is
/// 0x28 (its magic number).
pub(super) const DICTIONARY_MARK: u8 = 0xdc;

/// A compression dictionary trained on the store's own chunks, stored in `dictionaries`.
#[derive(Debug)]
pub(crate) struct Dictionary {
    pub(super) id: i64,
    pub(super) bytes: Vec<u8>,
    /// Unique in the process: what a thread's compression context is known to hold (ids
    /// are per store, and a thread may prepare for several stores).
    token: u64,
}

impl Dictionary {
    pub(super) fn new(id: i64, bytes: Vec<u8>) -> Self {
        static TOKENS: AtomicU64 = AtomicU64::new(1);
        Self {
            id,
            bytes,
            token: TOKENS.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// A resource or scope row a request refers to, by the id the store gave its content.
#[derive(Clone, Debug)]
pub(super) struct Row {
    pub(super) id: i64,
    pub(super) digest: Vec<u8>,
    pub(super) service: String,
    pub(super) data: Vec<u8>,
}

/// Resource and scope ids by content digest; ids are given here, in order, and written
/// by the writer with the first request that refers to them.
#[derive(Default)]
struct Ids {
    resources: HashMap<Vec<u8>, i64>,
    scopes: HashMap<Vec<u8>, i64>,
    next_resource: i64,
    next_scope: i64,
}

/// What the receiving threads share with the writer: ids of resources and scopes, the
/// current dictionary, and the key of span fingerprints.
pub struct Preparer {
    ids: Mutex<Ids>,
    dictionary: RwLock<Option<Arc<Dictionary>>>,
    keys: std::hash::RandomState,
    /// Set while the writer gathers raw chunks to train a dictionary on.
    samples_wanted: AtomicBool,
}

impl std::fmt::Debug for Preparer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preparer").finish_non_exhaustive()
    }
}

/// A request's spans ready for the writer.
#[derive(Debug)]
pub struct Prepared {
    pub(super) chunks: Vec<PreparedChunk>,
    pub(super) resources: Vec<Row>,
    pub(super) scopes: Vec<Row>,
    /// Distinct (service, span name, kind) of the request; chunks refer to them by index.
    pub(super) ops: Vec<(String, String, i32)>,
    pub(super) dictionary: Option<Arc<Dictionary>>,
    /// Spans sent twice within the request.
    pub(super) duplicates: u64,
    /// Raw chunks offered for training a dictionary, when the writer asked for them.
    pub(super) samples: Vec<Vec<u8>>,
    /// Spans in the request, and of them those with unusable ids (left out).
    received: u64,
    rejected: u64,
}

impl Prepared {
    /// Spans in the request, and of them those with unusable ids (left out).
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.received, self.rejected)
    }

    /// Whether there is anything to store.
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

/// The spans of one trace of a request, compressed as one chunk.
#[derive(Debug)]
pub(super) struct PreparedChunk {
    pub(super) trace_id: [u8; 16],
    pub(super) start: i64,
    pub(super) last: i64,
    /// Fingerprints of its spans' (trace id, span id), in the chunk's order.
    pub(super) keys: Vec<u64>,
    pub(super) ops: Vec<u32>,
    pub(super) data: Vec<u8>,
}

/// The spans of one trace being gathered, per resource and scope.
struct Gather<'a> {
    trace_id: [u8; 16],
    spans: u64,
    groups: Vec<SpanGroup<'a>>,
    ops: Vec<u32>,
}

/// Raw chunks a request offers for training, at most.
const SAMPLES_PER_REQUEST: usize = 16;
/// Largest raw chunk offered for training: what senders choose does not size what the
/// writer holds (at most [`DICTIONARY_SAMPLES`] of these).
const MAX_SAMPLE_BYTES: usize = 64 << 10;

impl Preparer {
    /// Reads the ids given so far and the newest dictionary.
    pub(super) fn load(conn: &Connection) -> Result<Self, StoreError> {
        let mut ids = Ids::default();
        let table = |sql: &str| -> Result<HashMap<Vec<u8>, i64>, StoreError> {
            let mut stmt = conn.prepare(sql)?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        };
        ids.resources = table("SELECT digest, id FROM resources")?;
        ids.scopes = table("SELECT digest, id FROM scopes")?;
        ids.next_resource = ids.resources.values().max().copied().unwrap_or(0) + 1;
        ids.next_scope = ids.scopes.values().max().copied().unwrap_or(0) + 1;
        let dictionary = conn
            .query_row(
                "SELECT id, data FROM dictionaries ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok(Dictionary::new(r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .map(Arc::new);
        Ok(Self {
            samples_wanted: AtomicBool::new(dictionary.is_none()),
            ids: Mutex::new(ids),
            dictionary: RwLock::new(dictionary),
            keys: std::hash::RandomState::new(),
        })
    }

    /// The fingerprint of a span's (trace id, span id), keyed per process.
    pub(super) fn fingerprint(&self, trace_id: &[u8], span_id: &[u8]) -> u64 {
        let mut h = self.keys.build_hasher();
        h.write(trace_id);
        h.write(span_id);
        h.finish()
    }

    pub(super) fn dictionary(&self) -> Option<Arc<Dictionary>> {
        self.dictionary
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set_dictionary(&self, d: Arc<Dictionary>) {
        *self
            .dictionary
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(d);
    }

    pub(super) fn want_samples(&self, wanted: bool) {
        self.samples_wanted.store(wanted, Ordering::Relaxed);
    }

    fn id_of(&self, resource: bool, data: &[u8], service: &str, rows: &mut Vec<Row>) -> i64 {
        let digest = digest(data);
        if let Some(r) = rows.iter().find(|r| r.digest == digest) {
            return r.id;
        }
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        let ids = &mut *ids;
        let (map, next) = if resource {
            (&mut ids.resources, &mut ids.next_resource)
        } else {
            (&mut ids.scopes, &mut ids.next_scope)
        };
        let id = *map.entry(digest.clone()).or_insert_with(|| {
            *next += 1;
            *next - 1
        });
        rows.push(Row {
            id,
            digest,
            service: service.to_owned(),
            data: data.to_vec(),
        });
        id
    }

    /// Groups the spans of an export request with usable ids per trace (at most
    /// [`CHUNK_SPANS`] a chunk) and compresses each group; a span repeated within the
    /// request is kept once. The request is read in place: a span's encoding goes into its
    /// chunk as sent, less its trace id and times.
    pub(crate) fn prepare(&self, request: Checked<'_>) -> Result<Prepared, StoreError> {
        let mut out = Prepared {
            chunks: Vec::new(),
            resources: Vec::new(),
            scopes: Vec::new(),
            ops: Vec::new(),
            dictionary: self.dictionary(),
            duplicates: 0,
            samples: Vec::new(),
            received: 0,
            rejected: 0,
        };
        // service → span name → (kind, index into out.ops): looked up without allocating.
        let mut ops: HashMap<String, HashMap<String, Vec<(i32, u32)>>> = HashMap::new();
        let mut gathers: Vec<Gather<'_>> = Vec::new();
        let mut open: HashMap<[u8; 16], usize> = HashMap::new();
        let mut in_request: HashSet<u64, Fingerprints> = HashSet::with_hasher(Fingerprints);
        for rs in messages(request.bytes, 1) {
            let rs = rs?;
            let mut resource = Resource::default();
            for r in messages(rs, 1) {
                resource.merge(r?).map_err(malformed)?;
            }
            let service = service_of(Some(&resource));
            let resource_id = self.id_of(
                true,
                &resource.encode_to_vec(),
                &service,
                &mut out.resources,
            );
            let names = ops.entry(service.clone()).or_default();
            for ss in messages(rs, 2) {
                let ss = ss?;
                let mut scope = InstrumentationScope::default();
                for s in messages(ss, 1) {
                    scope.merge(s?).map_err(malformed)?;
                }
                let scope_id = self.id_of(false, &scope.encode_to_vec(), "", &mut out.scopes);
                for raw in messages(ss, 2) {
                    let raw = raw?;
                    out.received += 1;
                    let span = read_span(raw)?;
                    if !usable_ids(span.trace_id, span.span_id, span.parent) {
                        out.rejected += 1;
                        continue;
                    }
                    let key = self.fingerprint(span.trace_id, span.span_id);
                    if !in_request.insert(key) {
                        out.duplicates += 1;
                        continue;
                    }
                    let known = names
                        .get(span.name)
                        .and_then(|kinds| kinds.iter().find(|k| k.0 == span.kind).map(|k| k.1));
                    let op = match known {
                        Some(op) => op,
                        None => {
                            let op = out.ops.len() as u32;
                            out.ops
                                .push((service.clone(), span.name.to_owned(), span.kind));
                            names
                                .entry(span.name.to_owned())
                                .or_default()
                                .push((span.kind, op));
                            op
                        }
                    };
                    let mut trace_id = [0u8; 16];
                    trace_id.copy_from_slice(span.trace_id);
                    let i = match open.get(&trace_id) {
                        Some(&i) if gathers[i].spans < CHUNK_SPANS => i,
                        _ => {
                            gathers.push(Gather {
                                trace_id,
                                spans: 0,
                                groups: Vec::new(),
                                ops: Vec::new(),
                            });
                            open.insert(trace_id, gathers.len() - 1);
                            gathers.len() - 1
                        }
                    };
                    let g = &mut gathers[i];
                    g.spans += 1;
                    if !g.ops.contains(&op) {
                        g.ops.push(op);
                    }
                    let group = match g
                        .groups
                        .iter()
                        .rposition(|x| x.resource == resource_id && x.scope == scope_id)
                    {
                        Some(i) => &mut g.groups[i],
                        None => {
                            g.groups.push(SpanGroup {
                                resource: resource_id,
                                scope: scope_id,
                                spans: Vec::new(),
                                keys: Vec::new(),
                            });
                            g.groups.last_mut().expect("just pushed")
                        }
                    };
                    group.spans.push(LeanSpan {
                        raw,
                        kept: span.kept,
                        start: span.start,
                        end: span.end,
                    });
                    group.keys.push(key);
                }
            }
        }
        let sampling = self.samples_wanted.load(Ordering::Relaxed);
        let latest = latest_start();
        // Neighbouring trace ids go into the trace index together.
        gathers.sort_unstable_by_key(|g| g.trace_id);
        let mut raw = Vec::new();
        for g in gathers {
            raw.clear();
            let (start, last) = encode_lean(&g.groups, latest, &mut raw)?;
            let data = compress(out.dictionary.as_deref(), &raw)?;
            if sampling && out.samples.len() < SAMPLES_PER_REQUEST && raw.len() <= MAX_SAMPLE_BYTES
            {
                out.samples.push(raw.clone());
            }
            out.chunks.push(PreparedChunk {
                trace_id: g.trace_id,
                start,
                last,
                keys: g.groups.into_iter().flat_map(|x| x.keys).collect(),
                ops: g.ops,
                data,
            });
        }
        Ok(out)
    }
}

fn malformed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Malformed(e.to_string())
}

/// The embedded messages (or strings, or bytes) of field `number` of a message, in order.
fn messages(bytes: &[u8], number: u64) -> impl Iterator<Item = Result<&[u8], StoreError>> + '_ {
    Fields::new(bytes).filter_map(move |f| match f {
        Ok(Field {
            number: n,
            value: Value::Bytes(b),
            ..
        }) if n == number => Some(Ok(b)),
        Ok(Field { number: n, .. }) if n == number => Some(Err(malformed(format!(
            "field {number} is sent with the wrong wire type"
        )))),
        Ok(_) => None,
        Err(e) => Some(Err(malformed(e))),
    })
}

/// What the store reads of a span's encoding without decoding it.
pub(super) struct SpanFields<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    parent: &'a [u8],
    name: &'a str,
    kind: i32,
    pub(super) start: u64,
    pub(super) end: u64,
    /// Bytes of the encoding a chunk keeps: all but the trace id and the times.
    pub(super) kept: usize,
}

/// Span fields a lean chunk leaves out of a span's encoding: trace id, start and end
/// (kept beside it), and fields the OTLP schema does not have (the decoder skips them).
fn left_out(number: u64) -> bool {
    matches!(number, 1 | 7 | 8) || number > 16
}

/// Reads a span's encoding; of a field sent twice, the last counts, as in decoding.
pub(super) fn read_span(raw: &[u8]) -> Result<SpanFields<'_>, StoreError> {
    let mut span = SpanFields {
        trace_id: &[],
        span_id: &[],
        parent: &[],
        name: "",
        kind: 0,
        start: 0,
        end: 0,
        kept: raw.len(),
    };
    for field in Fields::new(raw) {
        let field = field.map_err(malformed)?;
        if left_out(field.number) {
            span.kept -= field.raw.len();
        }
        match (field.number, field.value) {
            (1, Value::Bytes(b)) => span.trace_id = b,
            (2, Value::Bytes(b)) => span.span_id = b,
            (4, Value::Bytes(b)) => span.parent = b,
            (5, Value::Bytes(b)) => span.name = std::str::from_utf8(b).map_err(malformed)?,
            (6, Value::Varint(v)) => span.kind = v as i32,
            (7, Value::Fixed64(v)) => span.start = v,
            (8, Value::Fixed64(v)) => span.end = v,
            (1 | 2 | 4 | 5 | 6 | 7 | 8, _) => {
                return Err(malformed(format!(
                    "span field {} is sent with the wrong wire type",
                    field.number
                )));
            }
            _ => {}
        }
    }
    Ok(span)
}

/// A span on its way into a lean chunk.
#[derive(Clone, Copy)]
pub(super) struct LeanSpan<'a> {
    /// Its encoding as sent (or as stored in a lean chunk, without trace id and times).
    pub(super) raw: &'a [u8],
    /// Bytes of `raw` the chunk keeps (see [`SpanFields::kept`]).
    pub(super) kept: usize,
    pub(super) start: u64,
    pub(super) end: u64,
}

/// The spans of one resource and scope in a chunk, with their fingerprints.
pub(super) struct SpanGroup<'a> {
    pub(super) resource: i64,
    pub(super) scope: i64,
    pub(super) spans: Vec<LeanSpan<'a>>,
    pub(super) keys: Vec<u64>,
}

/// Encodes a lean chunk ([`StoredChunk`]'s layout) of `groups` into `out`: each span's
/// encoding less its trace id and times, which go beside it, its start after the chunk's
/// earliest and its end less its start. Returns the chunk's indexed first and last start.
pub(super) fn encode_lean(
    groups: &[SpanGroup<'_>],
    latest: u64,
    out: &mut Vec<u8>,
) -> Result<(i64, i64), StoreError> {
    use prost::encoding::{encode_varint, encoded_len_varint};
    let zigzag = |s: &LeanSpan<'_>| {
        let d = s.end.wrapping_sub(s.start) as i64;
        ((d << 1) ^ (d >> 63)) as u64
    };
    let field_len = |len: usize| 1 + encoded_len_varint(len as u64) + len;
    let base = groups
        .iter()
        .flat_map(|g| &g.spans)
        .map(|s| s.start)
        .min()
        .unwrap_or(0);
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for g in groups.iter().filter(|g| !g.spans.is_empty()) {
        let starts: usize = g
            .spans
            .iter()
            .map(|s| encoded_len_varint(s.start - base))
            .sum();
        let ends: usize = g.spans.iter().map(|s| encoded_len_varint(zigzag(s))).sum();
        let mut len = field_len(starts) + field_len(ends);
        len += g.spans.iter().map(|s| field_len(s.kept)).sum::<usize>();
        for id in [g.resource, g.scope].into_iter().filter(|&id| id != 0) {
            len += 1 + encoded_len_varint(id as u64);
        }
        out.push(0x0a);
        encode_varint(len as u64, out);
        let at = out.len();
        for (key, id) in [(0x08, g.resource), (0x10, g.scope)] {
            if id != 0 {
                out.push(key);
                encode_varint(id as u64, out);
            }
        }
        for s in &g.spans {
            out.push(0x1a);
            encode_varint(s.kept as u64, out);
            let from = out.len();
            for field in Fields::new(s.raw) {
                let field = field.map_err(malformed)?;
                if !left_out(field.number) {
                    out.extend_from_slice(field.raw);
                }
            }
            if out.len() - from != s.kept {
                return Err(malformed("a span's encoding changed while it was stored"));
            }
            let indexed = to_i64(s.start.min(latest));
            first = first.min(indexed);
            last = last.max(indexed);
        }
        out.push(0x22);
        encode_varint(starts as u64, out);
        for s in &g.spans {
            encode_varint(s.start - base, out);
        }
        out.push(0x2a);
        encode_varint(ends as u64, out);
        for s in &g.spans {
            encode_varint(zigzag(s), out);
        }
        debug_assert_eq!(out.len() - at, len);
    }
    if base != 0 {
        out.push(0x10);
        encode_varint(base, out);
    }
    out.extend_from_slice(&[0x18, 0x01]);
    Ok((first, last))
}

thread_local! {
    /// This thread's compression context, with the dictionary (token, 0 for none) it holds.
    static COMPRESSOR: RefCell<Option<(u64, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
}

/// A chunk's stored bytes: a zstd frame, behind the mark and the dictionary's id when
/// compressed with one.
pub(super) fn compress(dictionary: Option<&Dictionary>, raw: &[u8]) -> Result<Vec<u8>, StoreError> {
    let id = dictionary.map_or(0, |d| d.id);
    let token = dictionary.map_or(0, |d| d.token);
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|(held, _)| *held != token) {
            let c = match dictionary {
                Some(d) => {
                    let mut c =
                        zstd::bulk::Compressor::with_dictionary(COMPRESSION_LEVEL, &d.bytes)
                            .map_err(StoreError::Compression)?;
                    // The id is ours, in front of the frame.
                    c.set_parameter(zstd::zstd_safe::CParameter::DictIdFlag(false))
                        .map_err(StoreError::Compression)?;
                    c
                }
                None => zstd::bulk::Compressor::new(COMPRESSION_LEVEL)
                    .map_err(StoreError::Compression)?,
            };
            *cell = Some((token, c));
        }
        let (_, c) = cell.as_mut().expect("just set");
        let frame = c.compress(raw).map_err(StoreError::Compression)?;
        if id == 0 {
            return Ok(frame);
        }
        let mut out = Vec::with_capacity(frame.len() + 4);
        out.push(DICTIONARY_MARK);
        prost::encoding::encode_varint(id as u64, &mut out);
        out.extend_from_slice(&frame);
        Ok(out)
    })
}

/// The dictionary id of a stored chunk (0: none) and its zstd frame.
pub(super) fn split_chunk(data: &[u8]) -> Result<(i64, &[u8]), StoreError> {
    match data.split_first() {
        Some((&DICTIONARY_MARK, mut rest)) => {
            let id = prost::encoding::decode_varint(&mut rest)
                .ok()
                .and_then(|id| i64::try_from(id).ok())
                .filter(|&id| id > 0)
                .ok_or(StoreError::ChunkSize)?;
            Ok((id, rest))
        }
        _ => Ok((0, data)),
    }
}

/// A dictionary trained on raw chunks; `None` when the samples do not make one.
pub(super) fn train(samples: &[Vec<u8>]) -> Option<Vec<u8>> {
    match zstd::dict::from_samples(samples, DICTIONARY_BYTES) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::debug!("training a compression dictionary: {e}");
            None
        }
    }
}
