//! The query API, compatible with Jaeger's api_v3 over HTTP (`{"result": <OTLP JSON>}`, 404
//! for nothing found), plus what it lacks: search without a service, trace summaries, and
//! the collector's own counters.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use std::time::Duration;
use tokio::sync::Semaphore;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::counters::Counters;
use crate::store::{
    MAX_SEARCH_LIMIT, MAX_TRACE_PAGE, MAX_TRACE_SPANS, Store, StoreError, TraceQuery,
};

/// Read-only handles on the store, one per query running at once: SQLite's WAL lets them
/// read side by side, so one heavy query does not stall the others.
pub(crate) struct Readers {
    idle: Mutex<Vec<Store>>,
    slots: Semaphore,
}

impl Readers {
    pub(crate) fn new(stores: Vec<Store>) -> Self {
        let n = stores.len();
        Self {
            idle: Mutex::new(stores),
            slots: Semaphore::new(n),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) readers: Arc<Readers>,
    pub(crate) counters: Arc<Counters>,
    /// The read token, when one is required.
    pub(crate) read_token: Option<Arc<str>>,
}

pub(crate) fn router(api: Api) -> Router {
    Router::new()
        .route("/", get(viewer))
        .route("/search", get(viewer))
        .route("/compare/{a}/{b}", get(viewer))
        .route("/task/{id}", get(viewer))
        .route("/trace/{trace_id}", get(viewer))
        .route("/map", get(viewer))
        .route("/operations", get(viewer))
        .route("/api/v3/services", get(services))
        .route("/api/v3/operations", get(operations))
        .route("/api/v3/traces", get(search))
        .route("/api/v3/traces/{trace_id}", get(trace))
        .route("/api/zerostate/traces", get(summaries))
        .route("/api/zerostate/stats", get(stats))
        .route("/api/zerostate/map", get(map))
        .route("/api/zerostate/operations", get(operation_stats))
        .route("/api/zerostate/accounts", get(accounts))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/login", get(login))
        .route("/readyz", get(ready))
        .with_state(api)
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = if self.0 == StatusCode::NOT_FOUND {
            5
        } else {
            3
        };
        (
            self.0,
            Json(serde_json::json!({ "error": { "code": code, "message": self.1 } })),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            zerostate_telemetry::error_chain(&e),
        )
    }
}

fn bad(what: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, what.to_string())
}

async fn with_store<T: Send + 'static>(
    api: &Api,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let readers = api.readers.clone();
    let _slot = readers
        .slots
        .acquire()
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let readers_for_task = readers.clone();
    tokio::task::spawn_blocking(move || {
        // A slot guarantees an idle handle.
        let store = readers_for_task
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .ok_or_else(|| StoreError::Busy)?;
        let result = f(&store);
        readers_for_task
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(store);
        result
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(ApiError::from)
}

/// The web viewer: one page, no external resources; it reads the API above.
const VIEWER: &str = include_str!("viewer.html");

async fn viewer() -> axum::response::Html<&'static str> {
    axum::response::Html(VIEWER)
}

async fn services(State(api): State<Api>) -> Result<Response, ApiError> {
    let services = with_store(&api, |s| s.services()).await?;
    Ok(Json(serde_json::json!({ "services": services })).into_response())
}

async fn operations(
    State(api): State<Api>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let service = params
        .get("service")
        .cloned()
        .ok_or_else(|| bad("the service parameter is required"))?;
    let ops = with_store(&api, move |s| s.operations(&service)).await?;
    let ops: Vec<_> = ops
        .into_iter()
        .map(|o| serde_json::json!({ "name": o.name, "spanKind": span_kind(o.kind) }))
        .collect();
    Ok(Json(serde_json::json!({ "operations": ops })).into_response())
}

/// Jaeger's lower-case span kind names.
fn span_kind(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

fn parse_trace_id(s: &str) -> Result<Vec<u8>, ApiError> {
    match hex::decode(s) {
        Ok(b) if b.len() == 16 => Ok(b),
        _ => Err(bad(format!("{s:?} is not a trace id (32 hex digits)"))),
    }
}

/// A trace, or one page of it: `?offset=` (spans to skip, earliest first) and `?limit=`
/// (default 10,000, at most 50,000). `nextOffset` says where the next page starts while
/// there is one; a viewer reads a huge trace page by page.
async fn trace(
    State(api): State<Api>,
    Path(trace_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = parse_trace_id(&trace_id)?;
    let number = |k: &str, default: u64| -> Result<u64, ApiError> {
        params
            .get(k)
            .filter(|v| !v.is_empty())
            .map_or(Ok(default), |v| {
                v.parse()
                    .map_err(|_| bad(format!("{k} {v:?} is not a number")))
            })
    };
    let offset = number("offset", 0)?;
    let limit = number("limit", MAX_TRACE_SPANS)?.clamp(1, MAX_TRACE_PAGE);
    // Long polling for a trace still arriving: with `?after=N`, answer once it holds more
    // than N spans, or after `wait_ms` (at most 30 s) with what it holds.
    if let Some(after) = params.get("after").filter(|v| !v.is_empty()) {
        let after: u64 = after
            .parse()
            .map_err(|_| bad(format!("after {after:?} is not a number")))?;
        let wait = Duration::from_millis(number("wait_ms", 10_000)?.min(30_000));
        let started = std::time::Instant::now();
        loop {
            let id = id.clone();
            if with_store(&api, move |s| s.trace_span_count(&id)).await? > after
                || started.elapsed() >= wait
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    match with_store(&api, move |s| s.trace_page(&id, offset, limit)).await? {
        Some((data, total)) => {
            let returned: u64 = data
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len() as u64)
                .sum();
            let next = offset.saturating_add(returned);
            Ok(Json(serde_json::json!({
                "result": data,
                "totalSpans": total,
                "truncated": next < total,
                "nextOffset": (next < total).then_some(next),
            }))
            .into_response())
        }
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("trace {trace_id} not found"),
        )),
    }
}

/// Reads a Jaeger api_v3 search from query parameters.
pub(crate) fn parse_query(params: &HashMap<String, String>) -> Result<TraceQuery, String> {
    let mut q = TraceQuery::default();
    let nonempty = |k: &str| params.get(k).filter(|v| !v.is_empty()).cloned();
    q.service = nonempty("query.serviceName");
    q.operation = nonempty("query.operationName");
    q.root_operation = nonempty("query.rootOperationName");
    q.errors_only = nonempty("query.errorsOnly").is_some_and(|v| v == "true" || v == "1");
    q.caller_service = nonempty("query.callerServiceName");
    if let Some(a) = nonempty("query.attributes") {
        let map: BTreeMap<String, serde_json::Value> = serde_json::from_str(&a)
            .map_err(|e| format!("query.attributes must be a JSON object: {e}"))?;
        for (k, v) in map {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            q.attributes.insert(k, v);
        }
    }
    for (k, v) in params {
        if let Some(key) = k
            .strip_prefix("query.attributes[")
            .and_then(|r| r.strip_suffix(']'))
        {
            q.attributes.insert(key.to_owned(), v.clone());
        }
    }
    if let Some(d) = nonempty("query.durationMin") {
        q.duration_min = Some(parse_duration(&d)?);
    }
    if let Some(d) = nonempty("query.durationMax") {
        q.duration_max = Some(parse_duration(&d)?);
    }
    if let Some(t) = nonempty("query.startTimeMin") {
        q.start_min_ns = Some(parse_time(&t)?);
    }
    if let Some(t) = nonempty("query.startTimeMax") {
        q.start_max_ns = Some(parse_time(&t)?);
    }
    if let Some(n) = nonempty("query.searchDepth").or_else(|| nonempty("query.numTraces")) {
        let limit: usize = n
            .parse()
            .map_err(|_| format!("query.searchDepth {n:?} is not a number"))?;
        // More traces than this are not returned in one answer.
        q.limit = limit.min(MAX_SEARCH_LIMIT);
    }
    Ok(q)
}

async fn search(
    State(api): State<Api>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let q = parse_query(&params).map_err(bad)?;
    let (data, total) = with_store(&api, move |s| {
        let ids = s.search(&q)?;
        s.traces(&ids)
    })
    .await?;
    if data.resource_spans.is_empty() {
        return Err(ApiError(StatusCode::NOT_FOUND, "no trace matches".into()));
    }
    Ok(Json(serde_json::json!({
        "result": data,
        "totalSpans": total,
        "truncated": total > MAX_TRACE_SPANS,
    }))
    .into_response())
}

async fn summaries(
    State(api): State<Api>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let q = parse_query(&params).map_err(bad)?;
    let list = with_store(&api, move |s| {
        let ids = s.search(&q)?;
        s.summaries(&ids)
    })
    .await?;
    let list: Vec<_> = list
        .into_iter()
        .map(|t| {
            serde_json::json!({
                "traceId": t.trace_id,
                "root": t.root,
                "service": t.service,
                "spans": t.spans,
                "durationNs": t.duration_ns,
                "startNs": t.start_ns,
                "errors": t.errors,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "traces": list })).into_response())
}

/// Every node's export accounts of intervals starting between `start` and `end` (RFC 3339
/// or unix nanoseconds; default the last hour), with its latest ones: `{"nodes": [{service,
/// instance, accounts: [{startNs, endNs, <attribute without "zerostate.account.">: value}]}]}`.
async fn accounts(
    State(api): State<Api>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let time = |key: &str| {
        params
            .get(key)
            .filter(|v| !v.is_empty())
            .map(|v| parse_time(v).map_err(bad))
            .transpose()
    };
    let now = crate::now_ns();
    let start = time("start")?.unwrap_or(now.saturating_sub(3_600_000_000_000));
    let end = time("end")?.unwrap_or(now);
    if start > end {
        return Err(bad("start is after end"));
    }
    let list = with_store(&api, move |s| s.accounts(start, end)).await?;
    let mut nodes: Vec<serde_json::Value> = Vec::new();
    let mut current: Option<(String, String, Vec<serde_json::Value>)> = None;
    let mut close = |node: Option<(String, String, Vec<serde_json::Value>)>| {
        if let Some((service, instance, accounts)) = node {
            nodes.push(serde_json::json!({
                "service": service,
                "instance": instance,
                "accounts": accounts,
            }));
        }
    };
    for a in list {
        if current
            .as_ref()
            .is_none_or(|(s, i, _)| *s != a.service || *i != a.instance)
        {
            close(current.take());
            current = Some((a.service.clone(), a.instance.clone(), Vec::new()));
        }
        let mut entry = serde_json::Map::new();
        entry.insert("startNs".into(), a.start_ns.into());
        entry.insert("endNs".into(), a.end_ns.into());
        for (k, v) in a.attributes {
            let key = k
                .strip_prefix("zerostate.account.")
                .unwrap_or(&k)
                .to_owned();
            entry.insert(key, v.into());
        }
        if let Some((_, _, accounts)) = current.as_mut() {
            accounts.push(entry.into());
        }
    }
    close(current.take());
    Ok(Json(serde_json::json!({ "nodes": nodes })).into_response())
}

/// The window a figure covers: `lookback` (a duration, default 1h) back from now.
fn window(params: &HashMap<String, String>) -> Result<(u64, u64), ApiError> {
    let lookback = match params.get("lookback").filter(|v| !v.is_empty()) {
        Some(l) => parse_duration(l).map_err(bad)?,
        None => Duration::from_secs(3600),
    };
    let now = crate::now_ns();
    Ok((
        now.saturating_sub(u64::try_from(lookback.as_nanos()).unwrap_or(u64::MAX)),
        now,
    ))
}

async fn map(
    State(api): State<Api>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (since, _) = window(&params)?;
    let by_node = params.get("by").is_some_and(|b| b == "node");
    let edges = with_store(&api, move |s| {
        if by_node {
            s.node_edges(since)
        } else {
            s.edges(since)
        }
    })
    .await?;
    let edges: Vec<_> = edges
        .into_iter()
        .map(|e| serde_json::json!({ "from": e.from, "to": e.to, "calls": e.calls, "errors": e.errors }))
        .collect();
    Ok(Json(serde_json::json!({ "edges": edges })).into_response())
}

async fn operation_stats(
    State(api): State<Api>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (since, until) = window(&params)?;
    let service = params.get("service").filter(|v| !v.is_empty()).cloned();
    let ops = with_store(&api, move |s| {
        s.operation_stats(service.as_deref(), since, until)
    })
    .await?;
    let ops: Vec<_> = ops
        .into_iter()
        .map(|o| {
            serde_json::json!({
                "service": o.service, "name": o.name, "count": o.count, "rate": o.rate,
                "errorRate": o.error_rate, "p50Ms": o.p50_ms, "p95Ms": o.p95_ms, "p99Ms": o.p99_ms,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "operations": ops })).into_response())
}

/// Gives a browser the read token as a cookie (`GET /login?token=...`), then the viewer.
async fn login(State(api): State<Api>, Query(params): Query<HashMap<String, String>>) -> Response {
    let Some(token) = api.read_token else {
        return axum::response::Redirect::to("/").into_response();
    };
    let given = params.get("token").map(String::as_str).unwrap_or_default();
    if !crate::tls::same(given.as_bytes(), token.as_bytes()) {
        api.counters.unauthorized.inc();
        return crate::tls::unauthorized("that is not the collector's read token");
    }
    let mut response = axum::response::Redirect::to("/").into_response();
    if let Ok(cookie) = axum::http::HeaderValue::from_str(&format!(
        "{}={token}; HttpOnly; SameSite=Strict; Path=/",
        crate::tls::READ_COOKIE
    )) {
        response
            .headers_mut()
            .insert(axum::http::header::SET_COOKIE, cookie);
    }
    response
}

/// The collector's counters and the size of its store, in the OpenMetrics text format.
async fn metrics(State(api): State<Api>) -> Response {
    use zerostate_telemetry::metrics::{self, Families};
    let mut families = Families::new();
    api.counters.snapshot().families(&mut families);
    if let Ok(bytes) = with_store(&api, |s| s.used_bytes()).await {
        families.gauge(
            "collector_stored_bytes",
            "Bytes the trace store takes on disk.",
            bytes,
        );
    }
    let mut registry = metrics::prometheus_client::registry::Registry::default();
    families.register(&mut registry);
    (
        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::encode(&registry),
    )
        .into_response()
}

/// Ready when the store answers a read.
async fn ready(State(api): State<Api>) -> Response {
    match with_store(&api, |s| s.used_bytes()).await {
        Ok(_) => Json(serde_json::json!({ "ready": true, "components": { "store": "ok" } }))
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "ready": false,
                "components": { "store": format!("not ready: {}", e.1) },
            })),
        )
            .into_response(),
    }
}

async fn stats(State(api): State<Api>) -> Response {
    Json(api.counters.snapshot()).into_response()
}

/// A Go-style duration: `250us`, `10ms`, `1.5s`, `2m`, `1h`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration {s:?} has no unit (ns, us, ms, s, m, h)"))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("duration {s:?} is not a number"))?;
    let ns = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return Err(format!("duration {s:?}: unknown unit {unit:?}")),
    };
    Ok(Duration::from_nanos((n * ns) as u64))
}

/// An RFC 3339 UTC time (`2026-11-25T13:00:00Z`, fractions allowed) or unix nanoseconds.
pub(crate) fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let err = || format!("time {s:?} is not RFC 3339 UTC (like 2026-11-25T13:00:00Z)");
    let s2 = s.strip_suffix('Z').ok_or_else(err)?;
    let (date, time) = s2.split_once('T').ok_or_else(err)?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = match (d.next(), d.next(), d.next()) {
        (Some(Ok(y)), Some(Ok(m)), Some(Ok(day))) => (y, m, day),
        _ => return Err(err()),
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (h, mi, sec) = match (t.next(), t.next(), t.next()) {
        (Some(Ok(h)), Some(Ok(mi)), Some(Ok(sec))) => (h, mi, sec),
        _ => return Err(err()),
    };
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(0..=23).contains(&h)
        || !(0..=59).contains(&mi)
        || !(0..=60).contains(&sec)
    {
        return Err(err());
    }
    let nanos: i64 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        let padded = format!("{digits:0<9}");
        padded.parse().map_err(|_| err())?
    };
    // Days since the epoch for a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    // Checked: times after 2262 do not fit in u64 nanoseconds, an error rather than an
    // overflow.
    days.checked_mul(86_400)
        .and_then(|d| d.checked_add(h * 3600 + mi * 60 + sec))
        .and_then(|s| s.checked_mul(1_000_000_000))
        .and_then(|ns| ns.checked_add(nanos))
        .and_then(|ns| u64::try_from(ns).ok())
        .ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times() {
        assert_eq!(parse_duration("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10parsecs").is_err());
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_time("2026-11-25T13:00:00.5Z"),
            Ok(1_795_611_600_500_000_000)
        );
        assert_eq!(parse_time("42"), Ok(42));
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("99999999999999-01-01T00:00:00Z").is_err());
        assert!(parse_time("2026-13-01T00:00:00Z").is_err());
        assert!(parse_time("1969-12-31T23:59:59Z").is_err());
    }
}
