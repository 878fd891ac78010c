//! What the viewer draws over a window: services and their operations, the service map's
//! edges (by service and by node), and each operation's figures.

use super::*;

impl Store {
    /// Services that sent spans, sorted.
    pub fn services(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT service FROM terms t WHERE name = '' \
             AND EXISTS (SELECT 1 FROM runs p WHERE p.term_id = t.id) ORDER BY service",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A service's operations (span names and kinds), sorted.
    pub fn operations(&self, service: &str) -> Result<Vec<Operation>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.name, o.kind FROM operations o JOIN terms t \
             ON t.service = o.service AND t.name = o.name WHERE o.service = ?1 \
             AND EXISTS (SELECT 1 FROM runs p WHERE p.term_id = t.id) ORDER BY o.name, o.kind",
        )?;
        let rows = stmt.query_map(params![service], |r| {
            Ok(Operation {
                name: r.get(0)?,
                kind: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The spans of chunks holding a span that started at or after `since_ns`, the newest
    /// chunks first, at most [`MAX_WINDOW_SPANS`].
    pub(super) fn window(
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
            let chunk = self.chunk(&chunk)?;
            for g in &chunk.groups {
                for i in 0..g.spans.len() {
                    each(&trace_id, g.resource, chunk.span(g, i, &trace_id)?)?;
                }
            }
        }
        Ok(())
    }

    /// Calls between resources: (parent resource, child resource, calls, errors) for spans
    /// starting at or after `since_ns` whose parent ran in another resource.
    pub(super) fn resource_edges(
        &self,
        since_ns: u64,
    ) -> Result<Vec<(i64, i64, u64, u64)>, StoreError> {
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
    pub(super) fn merge_edges(
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
}
