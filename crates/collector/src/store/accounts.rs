//! Export accounts: the `telemetry.export_account` spans nodes send every interval, saying
//! what became of the spans they made. Each is alone in its trace; searches leave them out
//! unless they ask for that operation, and the viewer reads them here to say why a span's
//! parent is missing.

use super::*;

/// The span name of an export account.
pub const ACCOUNT: &str = zerostate_telemetry::names::span::TELEMETRY_EXPORT_ACCOUNT;

/// How many of a node's latest accounts are read besides those in the window (the newest
/// written is not always the newest made: a spool sends old ones late).
const LATEST: usize = 20;

/// One account, as sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Account {
    /// The node's `service.name`.
    pub service: String,
    /// Its `service.instance.id` (a node's peer id), or empty.
    pub instance: String,
    /// The interval it accounts for, unix nanoseconds.
    pub start_ns: u64,
    /// See `start_ns`.
    pub end_ns: u64,
    /// Its attributes as text (`zerostate.account.*`).
    pub attributes: Vec<(String, String)>,
}

impl Store {
    /// Every node's accounts of intervals starting between `start_min_ns` and
    /// `start_max_ns` (at most [`MAX_SEARCH_LIMIT`] a node), and its latest ones whenever
    /// made; each once, by node, then oldest first.
    pub fn accounts(
        &self,
        start_min_ns: u64,
        start_max_ns: u64,
    ) -> Result<Vec<Account>, StoreError> {
        let mut ids = Vec::new();
        for service in self.services()? {
            let query = |window: bool, limit: usize| TraceQuery {
                service: Some(service.clone()),
                operation: Some(ACCOUNT.to_owned()),
                start_min_ns: window.then_some(start_min_ns),
                start_max_ns: window.then_some(start_max_ns),
                limit,
                ..TraceQuery::default()
            };
            ids.extend(self.search(&query(true, MAX_SEARCH_LIMIT))?);
            ids.extend(self.search(&query(false, LATEST))?);
        }
        ids.sort();
        ids.dedup();
        let mut out = Vec::new();
        for id in ids {
            for s in self.trace_spans(&id)? {
                if s.span.name != ACCOUNT {
                    continue;
                }
                let (service, resource) = self.resource(s.resource)?;
                let instance = resource
                    .attributes
                    .iter()
                    .find(|kv| kv.key == "service.instance.id")
                    .and_then(|kv| kv.value.as_ref())
                    .map(value_string)
                    .unwrap_or_default();
                out.push(Account {
                    service,
                    instance,
                    start_ns: s.span.start_time_unix_nano,
                    end_ns: s.span.end_time_unix_nano,
                    attributes: s
                        .span
                        .attributes
                        .iter()
                        .map(|kv| {
                            let v = kv.value.as_ref().map(value_string).unwrap_or_default();
                            (kv.key.clone(), v)
                        })
                        .collect(),
                });
            }
        }
        out.sort_by(|a, b| {
            (&a.service, &a.instance, a.start_ns).cmp(&(&b.service, &b.instance, b.start_ns))
        });
        Ok(out)
    }
}
