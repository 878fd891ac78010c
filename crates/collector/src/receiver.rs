//! OTLP/HTTP traces in, as the specification says: protobuf or JSON, gzip or not, 400 with
//! a status for what does not decode, 413 above the size bound (after decompression too,
//! and for what would take too much memory once decoded), 503 with `Retry-After` when the
//! store is behind or the decode budget is spent, partial success for spans with unusable
//! ids, and an empty request accepted.
//!
//! **What a 200 means**: every span of the request that it does not reject is committed to
//! the store (SQLite, WAL): it survives the collector's crash or kill; a power loss may
//! lose the last commits (`synchronous = NORMAL`). Any other answer means nothing was
//! promised, and resending is safe: a span is shown once per (trace id, span id).
//!
//! **Memory**: at most `max_concurrent_decodes` requests are read, decompressed and decoded
//! at once; before decoding, a request reserves what it will take in memory (see
//! `estimate`) from a budget of `max_decoded_bytes` shared by everything decoded and not
//! yet stored. A request that alone exceeds the budget is answered 413; one that does not
//! fit now, 503 with `Retry-After`.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::sync::Semaphore;

use crate::counters::Counters;
use crate::estimate;
use crate::store::{Ingested, Prepared, Preparer, StoreError, valid_ids};

/// `google.rpc.Status`, the body of an OTLP error response.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// gRPC code INVALID_ARGUMENT.
const INVALID_ARGUMENT: i32 = 3;
/// gRPC code RESOURCE_EXHAUSTED.
const RESOURCE_EXHAUSTED: i32 = 8;
/// gRPC code UNAVAILABLE.
const UNAVAILABLE: i32 = 14;

/// Bytes decoded and not yet stored, against a fixed budget.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: u64,
    used: AtomicU64,
}

impl Budget {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
        }
    }

    /// Reserves `bytes`, or `None` when they do not fit now.
    fn reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let next = used.checked_add(bytes).filter(|&n| n <= self.limit)?;
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Some(Reservation {
                        budget: self.clone(),
                        bytes,
                    });
                }
                Err(now) => used = now,
            }
        }
    }
}

/// Part of the budget, given back when dropped (after the request is stored or refused).
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A decoded request on its way to the store; `done` hears how storing went.
pub(crate) struct Job {
    pub(crate) prepared: Prepared,
    pub(crate) done: tokio::sync::oneshot::Sender<Result<Ingested, String>>,
    pub(crate) _reservation: Reservation,
}

#[derive(Clone)]
pub(crate) struct Receiver {
    pub(crate) queue: SyncSender<Job>,
    /// Groups and compresses a request's spans here, before the store's writer.
    pub(crate) preparer: Arc<Preparer>,
    /// Where stored batches are also sent, if anywhere.
    pub(crate) forward: Option<crate::forward::Forwarder>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) max_body_bytes: usize,
    pub(crate) decodes: Arc<Semaphore>,
    pub(crate) budget: Arc<Budget>,
    /// How long a request waits for its spans to be stored before answering 503.
    pub(crate) store_timeout: Duration,
}

pub(crate) fn router(receiver: Receiver) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        .with_state(receiver)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

/// Says that a body is not an export request, and why.
pub(crate) fn not_otlp(e: impl std::fmt::Display) -> String {
    format!("the body is not an OTLP ExportTraceServiceRequest: {e}")
}

/// Decodes an uncompressed export body into structs.
pub(crate) fn decode(body: &[u8], json: bool) -> Result<ExportTraceServiceRequest, String> {
    if json {
        serde_json::from_slice(body).map_err(not_otlp)
    } else {
        ExportTraceServiceRequest::decode(body).map_err(not_otlp)
    }
}

/// What is forwarded of a stored request: as received, or without the spans with unusable
/// ids when it had some.
fn forwardable(bytes: &[u8], rejected: u64) -> Vec<u8> {
    if rejected == 0 {
        return bytes.to_vec();
    }
    match decode(bytes, false) {
        Ok(mut request) => {
            drop_invalid(&mut request);
            request.encode_to_vec()
        }
        // Not reached: the bytes passed the check the decoder agrees with.
        Err(_) => bytes.to_vec(),
    }
}

/// Drops the spans whose ids are unusable; returns (spans received, spans dropped).
pub(crate) fn drop_invalid(request: &mut ExportTraceServiceRequest) -> (u64, u64) {
    let mut received = 0u64;
    let mut rejected = 0u64;
    for rs in &mut request.resource_spans {
        for ss in &mut rs.scope_spans {
            received += ss.spans.len() as u64;
            ss.spans.retain(|s| {
                let ok = valid_ids(s);
                rejected += u64::from(!ok);
                ok
            });
        }
    }
    (received, rejected)
}

fn reply<M: Message + serde::Serialize>(format: Format, status: StatusCode, body: &M) -> Response {
    let (bytes, ctype) = match format {
        Format::Protobuf => (body.encode_to_vec(), "application/x-protobuf"),
        Format::Json => (
            serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec()),
            "application/json",
        ),
    };
    (status, [(header::CONTENT_TYPE, ctype)], bytes).into_response()
}

/// A 400 for a body that is not an export request, counted.
fn bad_request(r: &Receiver, format: Format, message: String) -> Response {
    r.counters.bad_requests.inc();
    error(format, StatusCode::BAD_REQUEST, INVALID_ARGUMENT, message)
}

fn error(format: Format, status: StatusCode, code: i32, message: String) -> Response {
    reply(format, status, &Status { code, message })
}

/// A 503 that tells the exporter to come back in a second.
fn retry_later(r: &Receiver, format: Format, message: String) -> Response {
    r.counters.overloaded.inc();
    let mut resp = error(
        format,
        StatusCode::SERVICE_UNAVAILABLE,
        UNAVAILABLE,
        message,
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

fn too_large(r: &Receiver, format: Format, message: String) -> Response {
    r.counters.too_large.inc();
    error(
        format,
        StatusCode::PAYLOAD_TOO_LARGE,
        RESOURCE_EXHAUSTED,
        message,
    )
}

async fn traces(State(r): State<Receiver>, headers: HeaderMap, body: Body) -> Response {
    r.counters.requests.inc();
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let format = if ctype.starts_with("application/x-protobuf") {
        Format::Protobuf
    } else if ctype.starts_with("application/json") {
        Format::Json
    } else {
        r.counters.bad_requests.inc();
        return error(
            Format::Json,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            INVALID_ARGUMENT,
            format!(
                "content type {ctype:?} is not supported: send application/x-protobuf or \
                 application/json"
            ),
        );
    };
    // Reading, decompressing and decoding take memory: only so many at once. The others
    // wait here (their number is bounded by the listener's connection cap).
    let Ok(slot) = r.decodes.clone().acquire_owned().await else {
        return retry_later(&r, format, "the collector is shutting down".into());
    };
    let body = match axum::body::to_bytes(body, r.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            let limit = r.max_body_bytes;
            // Over the limit, or the client stopped sending.
            return if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                too_large(
                    &r,
                    format,
                    format!("the request body is larger than {limit} bytes"),
                )
            } else {
                bad_request(
                    &r,
                    format,
                    format!("the request body could not be read: {e}"),
                )
            };
        }
    };
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let bytes = if gzip {
        let mut out = Vec::new();
        let limit = r.max_body_bytes as u64;
        match flate2::read::GzDecoder::new(&body[..])
            .take(limit + 1)
            .read_to_end(&mut out)
        {
            Ok(_) if out.len() as u64 > limit => {
                return too_large(
                    &r,
                    format,
                    format!("the request decompresses to more than {limit} bytes"),
                );
            }
            Ok(_) => Bytes::from(out),
            Err(e) => {
                return bad_request(&r, format, format!("the body is not valid gzip: {e}"));
            }
        }
    } else {
        body
    };
    let json = format == Format::Json;
    // Protobuf is checked along the schema and then read in place; JSON is decoded into
    // structs and encoded as protobuf, to take the same path from there.
    let checked = if json {
        None
    } else {
        match estimate::protobuf(&bytes) {
            Ok(c) => Some(c),
            Err(e) => return bad_request(&r, format, not_otlp(e)),
        }
    };
    let needed = checked.map_or_else(|| estimate::json(&bytes), |c| c.decoded);
    if needed > r.budget.limit {
        return too_large(
            &r,
            format,
            format!(
                "the request would take {} MiB of memory once decoded, more than the \
                 collector's limit of {} MiB: send smaller batches",
                needed >> 20,
                r.budget.limit >> 20
            ),
        );
    }
    let Some(reservation) = r.budget.reserve(needed) else {
        return retry_later(
            &r,
            format,
            "the collector is decoding as much as it can hold: retry after a second".into(),
        );
    };
    let encoded;
    let checked = match checked {
        Some(c) => c,
        None => {
            encoded = match decode(&bytes, true) {
                Ok(request) => request.encode_to_vec(),
                Err(e) => return bad_request(&r, format, e),
            };
            match estimate::protobuf(&encoded) {
                Ok(c) => c,
                Err(e) => return bad_request(&r, format, not_otlp(e)),
            }
        }
    };
    let prepared = match r.preparer.prepare(checked) {
        Ok(p) => p,
        Err(StoreError::Malformed(e)) => return bad_request(&r, format, not_otlp(e)),
        Err(e) => {
            return retry_later(
                &r,
                format,
                format!("the spans could not be stored: {}", crate::error_chain(&e)),
            );
        }
    };
    let (received, rejected) = prepared.counts();
    r.counters.spans_received.add(received);
    r.counters.spans_rejected.add(rejected);
    if !prepared.is_empty() {
        let forwarded = r
            .forward
            .as_ref()
            .map(|_| forwardable(checked.bytes, rejected));
        drop(slot);
        let (done, stored) = tokio::sync::oneshot::channel();
        let job = Job {
            prepared,
            done,
            _reservation: reservation,
        };
        match r.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return retry_later(
                    &r,
                    format,
                    "the collector is storing as fast as it can: retry after a second".into(),
                );
            }
            Err(TrySendError::Disconnected(_)) => {
                return error(
                    format,
                    StatusCode::SERVICE_UNAVAILABLE,
                    UNAVAILABLE,
                    "the collector is shutting down".into(),
                );
            }
        }
        // Acknowledge only what is stored; forward only what is stored.
        match tokio::time::timeout(r.store_timeout, stored).await {
            Ok(Ok(Ok(_))) => {
                if let (Some(f), Some(batch)) = (&r.forward, forwarded) {
                    f.offer(batch);
                }
            }
            Ok(Ok(Err(e))) => {
                return retry_later(&r, format, format!("the spans could not be stored: {e}"));
            }
            Ok(Err(_)) => {
                return error(
                    format,
                    StatusCode::SERVICE_UNAVAILABLE,
                    UNAVAILABLE,
                    "the collector is shutting down".into(),
                );
            }
            Err(_) => {
                return retry_later(
                    &r,
                    format,
                    format!(
                        "the store did not confirm within {} s; resending is safe",
                        r.store_timeout.as_secs()
                    ),
                );
            }
        }
    }
    let response = ExportTraceServiceResponse {
        partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: rejected as i64,
            error_message: format!(
                "{rejected} spans rejected: a trace id must be 16 bytes and a span id 8 bytes, \
                 neither all zero"
            ),
        }),
    };
    reply(format, StatusCode::OK, &response)
}
