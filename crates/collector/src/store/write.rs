//! Writing: a write's spans gathered per trace into chunks, and what the writer remembers
//! between writes (terms, recent span ids).

use super::prepare::{self, PreparedChunk};
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
                    ..Default::default()
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

/// Hashes a span fingerprint to itself: it is a keyed hash already.
#[derive(Clone, Copy, Default)]
pub(super) struct Fingerprints;

impl std::hash::BuildHasher for Fingerprints {
    type Hasher = Fingerprint;
    fn build_hasher(&self) -> Fingerprint {
        Fingerprint(0)
    }
}

pub(super) struct Fingerprint(u64);

impl std::hash::Hasher for Fingerprint {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl WriterState {
    pub(super) fn new() -> Self {
        Self {
            terms: HashMap::new(),
            recent: HashSet::with_hasher(Fingerprints),
            recent_order: std::collections::VecDeque::new(),
            written: HashSet::new(),
            samples: Vec::new(),
            since_dictionary: 0,
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

    /// Records a fingerprint as stored; false when it was stored recently.
    fn remember(&mut self, key: u64) -> bool {
        if !self.recent.insert(key) {
            return false;
        }
        self.recent_order.push_back(key);
        true
    }

    /// Forgets fingerprints recorded by a write that did not commit.
    fn forget(&mut self, keys: &[u64]) {
        for k in keys {
            self.recent.remove(k);
        }
        let keep = self.recent_order.len().saturating_sub(keys.len());
        self.recent_order.truncate(keep);
    }

    /// Forgets the oldest fingerprints beyond [`RECENT_SPANS`].
    fn trim(&mut self) {
        while self.recent_order.len() > RECENT_SPANS {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }

    /// Writes the chunks of a batch (the conversion of an earlier layout).
    pub(super) fn write(&mut self, conn: &Connection, batch: Batch) -> Result<(), StoreError> {
        let mut pending = batch.pending;
        // Neighbouring trace ids go into the trace index together.
        pending.sort_unstable_by_key(|p| p.trace_id);
        let mut runs = Runs::default();
        for p in pending {
            let raw = StoredChunk {
                groups: p.groups,
                ..Default::default()
            }
            .encode_to_vec();
            let data = compress(None, &raw)?;
            let id = insert_chunk(conn, &p.trace_id, p.start, p.last, p.spans, &p.terms, &data)?;
            runs.add(&p.terms, id);
        }
        runs.insert(conn)
    }
}

/// Inserts a chunk; returns its id.
fn insert_chunk(
    conn: &Connection,
    trace_id: &[u8],
    start: i64,
    last: i64,
    spans: u64,
    terms: &[i64],
    data: &[u8],
) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO chunks (trace_id, start_ns, last_ns, spans, terms, data) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        trace_id,
        start,
        last,
        spans as i64,
        pack_terms(terms),
        data
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Per term, the first and last chunk a transaction wrote with it.
#[derive(Default)]
pub(super) struct Runs(HashMap<i64, (i64, i64)>);

impl Runs {
    pub(super) fn add(&mut self, terms: &[i64], chunk: i64) {
        for &t in terms {
            let run = self.0.entry(t).or_insert((chunk, chunk));
            run.0 = run.0.min(chunk);
            run.1 = run.1.max(chunk);
        }
    }

    /// Records the runs, in the transaction that wrote their chunks.
    pub(super) fn insert(self, conn: &Connection) -> Result<(), StoreError> {
        let mut stmt = conn.prepare_cached(
            "INSERT OR REPLACE INTO runs (term_id, last_chunk, first_chunk) VALUES (?1, ?2, ?3)",
        )?;
        for (t, (first, last)) in self.0 {
            stmt.execute(params![t, last, first])?;
        }
        Ok(())
    }
}

impl Store {
    /// Stores prepared requests in one transaction (a group commit), each span once: one
    /// whose trace and span id were stored in the last [`RECENT_SPANS`] spans, or earlier
    /// in this write, is a duplicate. Returns what each request did; on an error nothing
    /// of any is stored.
    pub fn write(&mut self, jobs: Vec<Prepared>) -> Result<Vec<Ingested>, StoreError> {
        let mut keys = Vec::new();
        let result = self.write_all(&jobs, &mut keys);
        match result {
            Ok(done) => {
                self.writer.trim();
                self.writer.since_dictionary += keys.len() as u64;
                for job in jobs {
                    let room = DICTIONARY_SAMPLES.saturating_sub(self.writer.samples.len());
                    self.writer
                        .samples
                        .extend(job.samples.into_iter().take(room));
                }
                self.train_when_ready();
                Ok(done)
            }
            Err(e) => {
                self.writer.forget(&keys);
                // What was recorded as written may have been rolled back.
                self.writer.written.clear();
                self.writer.terms.clear();
                Err(e)
            }
        }
    }

    fn write_all(
        &mut self,
        jobs: &[Prepared],
        keys: &mut Vec<u64>,
    ) -> Result<Vec<Ingested>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let latest = latest_start();
        let mut done = Vec::with_capacity(jobs.len());
        // Per dictionary, the last chunk written with it.
        let mut used: Vec<(&Arc<Dictionary>, i64)> = Vec::new();
        let mut runs = Runs::default();
        for job in jobs {
            let mut out = Ingested {
                stored: 0,
                duplicates: job.duplicates,
            };
            for (resource, rows) in [(true, &job.resources), (false, &job.scopes)] {
                for row in rows {
                    if self.writer.written.contains(&(resource, row.id)) {
                        continue;
                    }
                    let sql = if resource {
                        "INSERT OR IGNORE INTO resources (id, digest, service, data) \
                         VALUES (?1, ?2, ?3, ?4)"
                    } else {
                        "INSERT OR IGNORE INTO scopes (id, digest, data) VALUES (?1, ?2, ?4)"
                    };
                    tx.prepare_cached(sql)?.execute(params![
                        row.id,
                        row.digest,
                        row.service,
                        row.data
                    ])?;
                    self.writer.written.insert((resource, row.id));
                }
            }
            let mut op_terms = Vec::with_capacity(job.ops.len());
            for (service, name, kind) in &job.ops {
                op_terms.push(self.writer.terms_of(&tx, service, name, *kind)?);
            }
            for chunk in &job.chunks {
                let before = keys.len();
                let mut repeated = Vec::new();
                for (i, &k) in chunk.keys.iter().enumerate() {
                    if self.writer.remember(k) {
                        keys.push(k);
                    } else {
                        repeated.push(i);
                    }
                }
                let mut terms: Vec<i64> = Vec::new();
                for &op in &chunk.ops {
                    for t in op_terms.get(op as usize).copied().unwrap_or_default() {
                        if !terms.contains(&t) {
                            terms.push(t);
                        }
                    }
                }
                let stored = (keys.len() - before) as u64;
                out.duplicates += repeated.len() as u64;
                if stored == 0 {
                    continue;
                }
                let id = if repeated.is_empty() {
                    insert_chunk(
                        &tx,
                        &chunk.trace_id,
                        chunk.start,
                        chunk.last,
                        stored,
                        &terms,
                        &chunk.data,
                    )?
                } else {
                    let (data, start, last) =
                        without(job.dictionary.as_deref(), chunk, &repeated, latest)?;
                    insert_chunk(&tx, &chunk.trace_id, start, last, stored, &terms, &data)?
                };
                out.stored += stored;
                runs.add(&terms, id);
                if let Some(d) = &job.dictionary {
                    match used.iter_mut().find(|(u, _)| u.id == d.id) {
                        Some(u) => u.1 = id,
                        None => used.push((d, id)),
                    }
                }
            }
            done.push(out);
        }
        runs.insert(&tx)?;
        for (d, last) in used {
            // A dictionary deleted by retention while this request was on its way comes back.
            tx.prepare_cached(
                "INSERT INTO dictionaries (id, last_chunk, data) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (id) DO UPDATE SET last_chunk = MAX(last_chunk, excluded.last_chunk)",
            )?
            .execute(params![d.id, last, d.bytes])?;
        }
        tx.commit()?;
        Ok(done)
    }

    /// Trains a dictionary once enough raw chunks are gathered, and asks for samples again
    /// once the current one has served [`DICTIONARY_SPANS`] spans.
    fn train_when_ready(&mut self) {
        let Some(preparer) = self.preparer.clone() else {
            return;
        };
        if self.writer.samples.len() >= DICTIONARY_SAMPLES {
            // Whether or not the samples make a dictionary, the next try is after
            // DICTIONARY_SPANS more spans.
            preparer.want_samples(false);
            self.writer.since_dictionary = 0;
            let samples = std::mem::take(&mut self.writer.samples);
            if let Some(bytes) = prepare::train(&samples) {
                match self.add_dictionary(bytes) {
                    Ok(d) => {
                        tracing::debug!(id = d.id, "a new compression dictionary for chunks");
                        preparer.set_dictionary(d);
                    }
                    Err(e) => tracing::warn!("storing a compression dictionary: {e}"),
                }
            }
        } else if self.writer.since_dictionary >= DICTIONARY_SPANS {
            self.writer.since_dictionary = 0;
            preparer.want_samples(true);
        }
    }

    pub(super) fn add_dictionary(&mut self, bytes: Vec<u8>) -> Result<Arc<Dictionary>, StoreError> {
        self.conn.execute(
            "INSERT INTO dictionaries (last_chunk, data) VALUES (0, ?1)",
            params![bytes],
        )?;
        Ok(Arc::new(Dictionary::new(
            self.conn.last_insert_rowid(),
            bytes,
        )))
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

/// A prepared chunk again without the spans at `repeated` (positions in its order):
/// its bytes and indexed first and last start.
fn without(
    dictionary: Option<&Dictionary>,
    chunk: &PreparedChunk,
    repeated: &[usize],
    latest: u64,
) -> Result<(Vec<u8>, i64, i64), StoreError> {
    let (_, frame) = split_chunk(&chunk.data)?;
    let mut d = match dictionary {
        Some(d) => zstd::bulk::Decompressor::with_dictionary(&d.bytes),
        None => zstd::bulk::Decompressor::new(),
    }
    .map_err(StoreError::Compression)?;
    let stored = decode_chunk(&mut d, frame)?;
    let mut groups = Vec::new();
    let mut position = 0;
    for g in &stored.groups {
        let mut spans = Vec::new();
        for (i, raw) in g.spans.iter().enumerate() {
            if !repeated.contains(&position) {
                let span = prepare::read_span(raw)?;
                let (start, end) = if stored.lean {
                    stored.times(g, i)
                } else {
                    (span.start, span.end)
                };
                spans.push(prepare::LeanSpan {
                    raw,
                    kept: span.kept,
                    start,
                    end,
                });
            }
            position += 1;
        }
        if !spans.is_empty() {
            groups.push(prepare::SpanGroup {
                resource: g.resource,
                scope: g.scope,
                spans,
                keys: Vec::new(),
            });
        }
    }
    let mut raw = Vec::new();
    let (start, last) = prepare::encode_lean(&groups, latest, &mut raw)?;
    Ok((compress(dictionary, &raw)?, start, last))
}
