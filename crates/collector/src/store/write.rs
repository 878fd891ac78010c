//! Writing: a write's spans gathered per trace into chunks, and what the writer remembers
//! between writes (terms, recent span ids).

use super::*;

/// The spans of one trace gathered for one chunk.
pub(super) struct Pending {
    pub(super) trace_id: [u8; 16],
    pub(super) start: i64,
    pub(super) last: i64,
    pub(super) spans: u64,
    pub(super) groups: Vec<StoredGroup>,
    pub(super) terms: Vec<i64>,
}

impl Pending {
    pub(super) fn new(trace_id: [u8; 16]) -> Self {
        Self {
            trace_id,
            start: i64::MAX,
            last: i64::MIN,
            spans: 0,
            groups: Vec::new(),
            terms: Vec::new(),
        }
    }

    pub(super) fn add(
        &mut self,
        resource: i64,
        scope: i64,
        start: i64,
        encoded: Vec<u8>,
        terms: [i64; 2],
    ) {
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
pub(super) struct Batch {
    pub(super) pending: Vec<Pending>,
    pub(super) open: HashMap<[u8; 16], usize>,
}

impl Batch {
    pub(super) fn add(
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
pub(super) fn indexed_start(span: &Span, latest: u64) -> i64 {
    to_i64(span.start_time_unix_nano.min(latest))
}

pub(super) fn latest_start() -> u64 {
    crate::now_ns()
        .saturating_add(MAX_CLOCK_SKEW.as_nanos() as u64)
        .min(i64::MAX as u64 / 2)
}

pub(super) fn duration_of(span: &Span) -> u64 {
    span.end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano)
}

pub(super) fn pack_terms(terms: &[i64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(terms.len() * 2);
    for &t in terms {
        prost::encoding::encode_varint(t as u64, &mut out);
    }
    out
}

pub(super) fn unpack_terms(mut bytes: &[u8]) -> Vec<i64> {
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
    pub(super) fn new() -> Self {
        Self {
            terms: HashMap::new(),
            recent: HashSet::new(),
            recent_order: std::collections::VecDeque::new(),
            compressor: None,
        }
    }

    /// The terms of a span: its service's and its service and name's, recording the
    /// operation (name and kind) when new.
    pub(super) fn terms_of(
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

    pub(super) fn seen_recently(&self, key: &[u8; 24]) -> bool {
        self.recent.contains(key)
    }

    pub(super) fn remember(&mut self, keys: Vec<[u8; 24]>) {
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
    pub(super) fn write(&mut self, conn: &Connection, batch: Batch) -> Result<(), StoreError> {
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
pub(super) fn term(conn: &Connection, service: &str, name: &str) -> Result<i64, StoreError> {
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
