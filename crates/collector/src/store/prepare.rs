//! Preparing a request's spans for the store on the thread that received them: grouped
//! per trace, encoded lean (no trace id in each span, times relative to the chunk) and
//! compressed with the store's current dictionary. The writer then only turns away
//! repeats and inserts rows, so the work of many requests is shared among threads.

use std::cell::RefCell;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::*;

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
struct Gather {
    trace_id: [u8; 16],
    spans: u64,
    groups: Vec<(i64, i64, Vec<Span>, Vec<u64>)>,
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

    /// Groups the valid spans of a request per trace (at most [`CHUNK_SPANS`] a chunk) and
    /// compresses each group; a span repeated within the request is kept once.
    pub fn prepare(&self, request: ExportTraceServiceRequest) -> Result<Prepared, StoreError> {
        let mut out = Prepared {
            chunks: Vec::new(),
            resources: Vec::new(),
            scopes: Vec::new(),
            ops: Vec::new(),
            dictionary: self.dictionary(),
            duplicates: 0,
            samples: Vec::new(),
        };
        // service → span name → (kind, index into out.ops): looked up without allocating.
        let mut ops: HashMap<String, HashMap<String, Vec<(i32, u32)>>> = HashMap::new();
        let mut gathers: Vec<Gather> = Vec::new();
        let mut open: HashMap<[u8; 16], usize> = HashMap::new();
        let mut in_request: HashSet<u64, Fingerprints> = HashSet::with_hasher(Fingerprints);
        for rs in request.resource_spans {
            let resource = rs.resource.unwrap_or_default();
            let service = service_of(Some(&resource));
            let resource_id = self.id_of(
                true,
                &resource.encode_to_vec(),
                &service,
                &mut out.resources,
            );
            let names = ops.entry(service.clone()).or_default();
            for ss in rs.scope_spans {
                let scope = ss.scope.unwrap_or_default();
                let scope_id = self.id_of(false, &scope.encode_to_vec(), "", &mut out.scopes);
                for span in ss.spans.into_iter().filter(valid_ids) {
                    let key = self.fingerprint(&span.trace_id, &span.span_id);
                    if !in_request.insert(key) {
                        out.duplicates += 1;
                        continue;
                    }
                    let known = names
                        .get(span.name.as_str())
                        .and_then(|kinds| kinds.iter().find(|k| k.0 == span.kind).map(|k| k.1));
                    let op = match known {
                        Some(op) => op,
                        None => {
                            let op = out.ops.len() as u32;
                            out.ops
                                .push((service.clone(), span.name.clone(), span.kind));
                            names
                                .entry(span.name.clone())
                                .or_default()
                                .push((span.kind, op));
                            op
                        }
                    };
                    let mut trace_id = [0u8; 16];
                    trace_id.copy_from_slice(&span.trace_id);
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
                        .rposition(|x| x.0 == resource_id && x.1 == scope_id)
                    {
                        Some(i) => &mut g.groups[i],
                        None => {
                            g.groups
                                .push((resource_id, scope_id, Vec::new(), Vec::new()));
                            g.groups.last_mut().expect("just pushed")
                        }
                    };
                    group.2.push(span);
                    group.3.push(key);
                }
            }
        }
        let sampling = self.samples_wanted.load(Ordering::Relaxed);
        let latest = latest_start();
        // Neighbouring trace ids go into the trace index together.
        gathers.sort_unstable_by_key(|g| g.trace_id);
        for g in gathers {
            let (chunk, keys, start, last) = lean_chunk(g.groups, latest);
            let raw = chunk.encode_to_vec();
            let data = compress(out.dictionary.as_deref(), &raw)?;
            if sampling && out.samples.len() < SAMPLES_PER_REQUEST && raw.len() <= MAX_SAMPLE_BYTES
            {
                out.samples.push(raw);
            }
            out.chunks.push(PreparedChunk {
                trace_id: g.trace_id,
                start,
                last,
                keys,
                ops: g.ops,
                data,
            });
        }
        Ok(out)
    }
}

/// A lean chunk as written: the spans kept as messages, which are encoded exactly as
/// [`StoredChunk`]'s bytes are read (a length-delimited field either way), so that each
/// span is encoded once, in place.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct LeanChunk {
    #[prost(message, repeated, tag = "1")]
    groups: Vec<LeanGroup>,
    #[prost(uint64, tag = "2")]
    base_ns: u64,
    #[prost(bool, tag = "3")]
    lean: bool,
}

/// A [`StoredGroup`] as written.
#[derive(Clone, PartialEq, prost::Message)]
struct LeanGroup {
    #[prost(int64, tag = "1")]
    resource: i64,
    #[prost(int64, tag = "2")]
    scope: i64,
    #[prost(message, repeated, tag = "3")]
    spans: Vec<Span>,
    #[prost(uint64, repeated, tag = "4")]
    starts: Vec<u64>,
    #[prost(sint64, repeated, tag = "5")]
    ends: Vec<i64>,
}

/// A chunk of the lean layout from spans grouped by (resource, scope), with their
/// fingerprints in the chunk's order and its indexed first and last start.
pub(super) fn lean_chunk(
    groups: Vec<(i64, i64, Vec<Span>, Vec<u64>)>,
    latest: u64,
) -> (LeanChunk, Vec<u64>, i64, i64) {
    let base = groups
        .iter()
        .flat_map(|g| &g.2)
        .map(|s| s.start_time_unix_nano)
        .min()
        .unwrap_or(0);
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let mut keys = Vec::new();
    let mut stored = Vec::with_capacity(groups.len());
    for (resource, scope, mut spans, fingerprints) in groups {
        let mut group = LeanGroup {
            resource,
            scope,
            starts: Vec::with_capacity(spans.len()),
            ends: Vec::with_capacity(spans.len()),
            spans: Vec::new(),
        };
        for span in &mut spans {
            let indexed = indexed_start(span, latest);
            first = first.min(indexed);
            last = last.max(indexed);
            group.starts.push(span.start_time_unix_nano - base);
            group.ends.push(
                span.end_time_unix_nano
                    .wrapping_sub(span.start_time_unix_nano) as i64,
            );
            span.trace_id = Vec::new();
            span.start_time_unix_nano = 0;
            span.end_time_unix_nano = 0;
        }
        group.spans = spans;
        keys.extend(fingerprints);
        stored.push(group);
    }
    let chunk = LeanChunk {
        groups: stored,
        base_ns: base,
        lean: true,
    };
    (chunk, keys, first, last)
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
