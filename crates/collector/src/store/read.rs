//! Reading traces back: a trace whole or by page, several at once, searches and their
//! summaries.

use super::*;

impl Store {
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
    pub(super) fn spans_of(
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

    /// Trace ids matching a query, the trace written last first.
    ///
    /// With a service (and an operation) only the chunks holding such spans are read,
    /// through `runs`; otherwise every chunk, newest first. At most
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
            // Runs of one term never overlap, so the newest run's chunks come first.
            Some(_) => self.conn.prepare_cached(
                "SELECT c.trace_id, c.start_ns, c.last_ns, c.spans, c.data, c.terms FROM runs r \
                 JOIN chunks c ON c.id BETWEEN r.first_chunk AND r.last_chunk \
                 WHERE r.term_id = ?1 ORDER BY r.last_chunk DESC, c.id DESC",
            )?,
            None => self.conn.prepare_cached(
                "SELECT trace_id, start_ns, last_ns, spans, data, terms FROM chunks \
                 WHERE ?1 IS NULL ORDER BY id DESC",
            )?,
        };
        let mut rows = stmt.query(params![term])?;
        // Each searcher built once, not once per span.
        let needles: Vec<Vec<memchr::memmem::Finder<'static>>> = q
            .attributes
            .values()
            .filter_map(|v| needles(v))
            .map(|alternatives| {
                alternatives
                    .iter()
                    .map(|n| memchr::memmem::Finder::new(n).into_owned())
                    .collect()
            })
            .collect();
        let start_min = q.start_min_ns.map(to_i64);
        let start_max = q.start_max_ns.map(to_i64);
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut out = Vec::new();
        let mut scanned = 0usize;
        while let Some(row) = rows.next()? {
            // A chunk of the run without the term.
            if let Some(t) = term
                && !unpack_terms(blob(row, 5)?).contains(&t)
            {
                continue;
            }
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
                for (i, bytes) in g.spans.iter().enumerate() {
                    if !needles
                        .iter()
                        .all(|alternatives| alternatives.iter().any(|n| n.find(bytes).is_some()))
                    {
                        continue;
                    }
                    let span = chunk.span(g, i, &trace_id)?;
                    // Export accounts are found only by their name.
                    if span.name == ACCOUNT && q.operation.as_deref() != Some(ACCOUNT) {
                        continue;
                    }
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
    pub(super) fn span_matches(&self, span: &Span, q: &TraceQuery) -> Result<bool, StoreError> {
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
    pub(super) fn called_from(
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
}
