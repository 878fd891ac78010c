//! OTLP/HTTP traces in, as the specification says: protobuf or JSON, gzip or not, 400 with
//! a status for what does not decode, 413 above the size bound (after decompression too),
//! 503 with `Retry-After` when the store is behind, partial success for spans with unusable
//! ids, and an empty request accepted.

use std::io::Read;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use crate::counters::Counters;
use crate::store::valid_ids;

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

#[derive(Clone)]
pub(crate) struct Receiver {
    pub(crate) queue: SyncSender<ExportTraceServiceRequest>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) max_body_bytes: usize,
}

pub(crate) fn router(receiver: Receiver) -> Router {
    let limit = receiver.max_body_bytes;
    Router::new()
        .route("/v1/traces", post(traces))
        // The raw body may not exceed the bound either; axum answers 413 itself.
        .layer(DefaultBodyLimit::max(limit))
        .with_state(receiver)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
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

async fn traces(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
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
                r.counters.too_large.inc();
                return error(
                    format,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    RESOURCE_EXHAUSTED,
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
    let decoded = match format {
        Format::Protobuf => {
            ExportTraceServiceRequest::decode(&bytes[..]).map_err(|e| e.to_string())
        }
        Format::Json => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
    };
    let mut request = match decoded {
        Ok(req) => req,
        Err(e) => {
            return bad_request(
                &r,
                format,
                format!("the body is not an OTLP ExportTraceServiceRequest: {e}"),
            );
        }
    };
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
    r.counters.spans_received.add(received);
    r.counters.spans_rejected.add(rejected);
    if received > rejected {
        match r.queue.try_send(request) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                r.counters.overloaded.inc();
                let mut resp = error(
                    format,
                    StatusCode::SERVICE_UNAVAILABLE,
                    UNAVAILABLE,
                    "the collector is storing as fast as it can: retry after a second".into(),
                );
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return resp;
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
