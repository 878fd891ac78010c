//! Converting a store of an earlier layout in place, on first open: one row per span
//! (before 2026-12-01), and one posting per chunk and term (before 2026-12-07).

use super::*;

impl Store {
    /// Moves the spans of an earlier version's `spans` table (one row per span) into
    /// chunks, in one transaction, and drops that table.
    pub(super) fn convert_span_rows(&mut self) -> Result<(), StoreError> {
        if !self.has_table("spans")? {
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

    /// Turns each posting of the earlier `postings` table (one per chunk and term) into a
    /// run of one chunk, in one transaction, and drops that table.
    pub(super) fn convert_postings(&mut self) -> Result<(), StoreError> {
        if !self.has_table("postings")? {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let moved = tx.execute(
            "INSERT OR IGNORE INTO runs (term_id, last_chunk, first_chunk) \
             SELECT term_id, chunk_id, chunk_id FROM postings",
            [],
        )?;
        tx.execute_batch("DROP TABLE postings")?;
        tx.commit()?;
        tracing::info!(runs = moved, "converted the trace store's postings to runs");
        Ok(())
    }

    /// Whether the database has a table of this name.
    fn has_table(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            params![name],
            |r| r.get::<_, i64>(0),
        )? > 0)
    }
}
