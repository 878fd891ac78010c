//! An OTLP/HTTP traces receiver for tests (feature `testing`): it listens on an ephemeral
//! loopback port, decodes every export (gzip or not) and keeps it for assertions. Tests of
//! this crate and multi-process tests of the node use it; it is not a collector.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
pub use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
pub use opentelemetry_proto::tonic::trace::v1::Span as ProtoSpan;
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;

/// One request the receiver got.
#[derive(Debug)]
pub struct Received {
    /// Its HTTP headers.
    pub headers: HeaderMap,
    /// Its decoded body.
    pub request: ExportTraceServiceRequest,
}

/// A span as received, with the `service.name` of the resource it came with.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// `service.name` of the exporting process.
    pub service: String,
    /// The span.
    pub span: ProtoSpan,
}

impl ReceivedSpan {
    /// A string attribute of the span (other kinds are formatted).
    pub fn attribute(&self, key: &str) -> Option<String> {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        let value = self
            .span
            .attributes
            .iter()
            .find(|kv| kv.key == key)?
            .value
            .as_ref()?
            .value
            .as_ref()?;
        Some(match value {
            Value::StringValue(s) => s.clone(),
            Value::BoolValue(b) => b.to_string(),
            Value::IntValue(i) => i.to_string(),
            Value::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
    }
}

/// An OTLP/HTTP traces receiver on its own runtime.
pub struct OtlpReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it received, in order.
    pub received: Arc<Mutex<Vec<Received>>>,
    _runtime: tokio::runtime::Runtime,
}

impl OtlpReceiver {
    /// Starts it on `127.0.0.1:0`.
    ///
    /// # Panics
    ///
    /// When no runtime or loopback port can be had: it is for tests.
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("an address"))
            .expect("a loopback port for the receiver")
    }

    /// Starts it on `addr` (a port a test chose, to come up where a node already exports).
    ///
    /// # Panics
    ///
    /// When no runtime can be had: it is for tests.
    pub fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the receiver");
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let store = received.clone();
        let app = Router::new().route(
            "/v1/traces",
            post(move |headers: HeaderMap, body: Bytes| {
                let store = store.clone();
                async move {
                    let mut bytes = body.to_vec();
                    if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
                        let mut out = Vec::new();
                        if flate2::read::GzDecoder::new(&bytes[..])
                            .read_to_end(&mut out)
                            .is_err()
                        {
                            return StatusCode::BAD_REQUEST;
                        }
                        bytes = out;
                    }
                    match ExportTraceServiceRequest::decode(&bytes[..]) {
                        Ok(request) => {
                            store
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(Received { headers, request });
                            StatusCode::OK
                        }
                        Err(_) => StatusCode::BAD_REQUEST,
                    }
                }
            }),
        );
        let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
        let addr = listener.local_addr()?;
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            received,
            _runtime: runtime,
        })
    }

    /// Its base URL, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, with the service that sent it.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        let received = self.received.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for r in received.iter() {
            for rs in &r.request.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|res| res.attributes.iter().find(|kv| kv.key == "service.name"))
                    .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                    .map(|v| match v {
                        Value::StringValue(s) => s.clone(),
                        other => format!("{other:?}"),
                    })
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        out.push(ReceivedSpan {
                            service: service.clone(),
                            span: span.clone(),
                        });
                    }
                }
            }
        }
        out
    }
}
