//! Keeping the store within its bounds: its size, and deleting chunks by age and by bytes.

use super::*;

impl Store {
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
            // Dictionaries no chunk uses any more; the newest stays, for what comes next.
            self.conn.execute(
                "DELETE FROM dictionaries WHERE id < (SELECT MAX(id) FROM dictionaries) \
                 AND last_chunk < COALESCE((SELECT MIN(id) FROM chunks), 9223372036854775807)",
                [],
            )?;
            let gone = self.conn.execute(
                "DELETE FROM terms WHERE NOT EXISTS \
                 (SELECT 1 FROM runs p WHERE p.term_id = terms.id)",
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

    /// Deletes the chunks `select` (id, spans, terms; one parameter) names, and the runs
    /// left without a chunk, in one transaction. Returns their spans.
    pub(super) fn delete_chunks(&mut self, select: &str, arg: i64) -> Result<u64, StoreError> {
        let tx = self.conn.transaction()?;
        let doomed: Vec<(i64, i64, Vec<u8>)> = tx
            .prepare(select)?
            .query_map(params![arg], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let mut spans = 0u64;
        {
            let mut chunk = tx.prepare_cached("DELETE FROM chunks WHERE id = ?1")?;
            for (id, n, _) in &doomed {
                chunk.execute(params![id])?;
                spans += (*n).max(0) as u64;
            }
            // The run of each term of each chunk deleted (runs of a term never overlap: the
            // first ending at or after the chunk), when no chunk of it is left.
            let mut run = tx.prepare_cached(
                "DELETE FROM runs WHERE term_id = ?1 AND last_chunk = \
                 (SELECT MIN(last_chunk) FROM runs WHERE term_id = ?1 AND last_chunk >= ?2) \
                 AND first_chunk <= ?2 AND NOT EXISTS \
                 (SELECT 1 FROM chunks c WHERE c.id BETWEEN runs.first_chunk AND runs.last_chunk)",
            )?;
            for (id, _, terms) in &doomed {
                for t in unpack_terms(terms) {
                    run.execute(params![t, id])?;
                }
            }
        }
        tx.commit()?;
        Ok(spans)
    }
}
