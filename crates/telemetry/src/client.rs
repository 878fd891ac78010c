//! The exporter's HTTP client: TLS by rustls (the system's roots, or the certificate
//! authorities the configuration names), an optional client certificate for mutual TLS,
//! the export timeout, and errors that keep their whole cause chain ("connection refused",
//! "invalid peer certificate: UnknownIssuer"), so that the one warning a failing export
//! logs says why.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};

use crate::TelemetryConfig;

/// Why the latest request failed, whole: the OTLP exporter reports a failed request only
/// as "network error", so the client keeps the cause for the warning.
pub(crate) type LastError = Arc<Mutex<Option<String>>>;

/// Takes the recorded cause, if any.
pub(crate) fn take(slot: &LastError) -> Option<String> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// What the exporter sent last, kept for the spool, and whether to send at all.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// While set nothing is sent: new requests wait in the spool behind older ones.
    held: AtomicBool,
    last: Mutex<Option<Sent>>,
}

/// One request the exporter made.
#[derive(Debug)]
pub(crate) struct Sent {
    /// The body as sent (protobuf, gzipped when `gzip`).
    pub(crate) body: Bytes,
    pub(crate) gzip: bool,
    /// The answer's status; `None` when there was none (refused, cut off, held back).
    pub(crate) status: Option<u16>,
}

/// Whether a request answered with `status` (`None`: no answer) may succeed later: no
/// answer, or one OTLP/HTTP says to retry (429, 502, 503, 504). Any other answer would
/// refuse it again.
fn may_succeed_later(status: Option<u16>) -> bool {
    matches!(status, None | Some(429 | 502 | 503 | 504))
}

impl Sent {
    /// Whether the same request may succeed later (see [`may_succeed_later`]).
    pub(crate) fn may_succeed_later(&self) -> bool {
        may_succeed_later(self.status)
    }
}

impl Outbox {
    /// Holds new requests back (`true`) or lets them go.
    pub(crate) fn hold(&self, held: bool) {
        self.held.store(held, Ordering::Relaxed);
    }

    pub(crate) fn is_held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// The request the exporter made last, once.
    pub(crate) fn take(&self) -> Option<Sent> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn put(&self, sent: Sent) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(sent);
    }

    fn answered(&self, status: u16) {
        if let Some(sent) = self.last.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            sent.status = Some(status);
        }
    }
}

/// A blocking reqwest client whose errors carry their causes as text.
#[derive(Debug)]
pub(crate) struct ExportClient {
    client: reqwest::blocking::Client,
    last: LastError,
    /// For the spool, when there is one.
    outbox: Option<Arc<Outbox>>,
}

/// Why a spooled request was not taken.
#[derive(Debug)]
pub(crate) enum Resent {
    /// No answer, or one saying to retry: kept for later.
    Later(String),
    /// An answer refusing it: it would be refused again.
    Refused(String),
}

/// An export error: its whole cause chain, once.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

fn read(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading {what} {}: {e}", path.display()))
}

impl ExportClient {
    /// The client `config` asks for; reads its certificate files now, so that a wrong path
    /// or a bad PEM fails at start with the file named.
    pub(crate) fn new(
        config: &TelemetryConfig,
        timeout: Duration,
        last: LastError,
    ) -> Result<Self, String> {
        let mut builder = reqwest::blocking::Client::builder().timeout(timeout);
        let identity = match (&config.client_certificate, &config.client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => {
                return Err(
                    "a client certificate needs its key and the key its certificate \
                            (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and \
                            OTEL_EXPORTER_OTLP_CLIENT_KEY)"
                        .into(),
                );
            }
        };
        if let Some(path) = &config.certificate {
            // The certificates given: authorities, or the server's own (self-signed).
            let trusted = crate::tls::certificates("the OTLP endpoint's certificate", path)?;
            let identity = match identity {
                Some((cert, key)) => Some((
                    crate::tls::certificates("the client certificate", cert)?,
                    crate::tls::private_key("the client key", key)?,
                )),
                None => None,
            };
            let tls = crate::tls::client_config(trusted, identity)?;
            builder = builder.tls_backend_preconfigured(tls);
        } else if let Some((cert, key)) = identity {
            // The system's authorities, with the client certificate.
            let cert_pem = read("the client certificate", cert)?;
            let key_pem = read("the client key", key)?;
            // One PEM buffer holds both: the key, then the certificate chain.
            let mut both = key_pem;
            both.push(b'\n');
            both.extend_from_slice(&cert_pem);
            let identity = reqwest::Identity::from_pem(&both).map_err(|e| {
                format!(
                    "{} and {} are not a PEM certificate and its key: {}",
                    cert.display(),
                    key.display(),
                    crate::error_chain(&e)
                )
            })?;
            builder = builder.identity(identity);
        }
        builder
            .build()
            .map(|client| Self {
                client,
                last,
                outbox: None,
            })
            .map_err(|e| {
                format!(
                    "building the exporter's HTTP client: {}",
                    crate::error_chain(&e)
                )
            })
    }
}

impl ExportClient {
    /// Keeps each request in `outbox` and sends none while it is held.
    pub(crate) fn with_outbox(mut self, outbox: Arc<Outbox>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Sends a spooled request `body` to `url` with `headers` (and `Content-Encoding:
    /// gzip` when `gzip`).
    pub(crate) fn resend(
        &self,
        url: &str,
        headers: &std::collections::BTreeMap<String, String>,
        body: Vec<u8>,
        gzip: bool,
    ) -> Result<(), Resent> {
        let mut request = self
            .client
            .post(url)
            .header("content-type", "application/x-protobuf");
        if gzip {
            request = request.header("content-encoding", "gzip");
        }
        for (k, v) in headers {
            request = request.header(k, v);
        }
        let response = request
            .body(body)
            .send()
            .map_err(|e| Resent::Later(crate::error_chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let why = format!("the backend answered {status}");
        if may_succeed_later(Some(status.as_u16())) {
            Err(Resent::Later(why))
        } else {
            Err(Resent::Refused(why))
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let fail = |chain: String| {
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(chain.clone());
            Box::new(Failed(chain)) as HttpError
        };
        if let Some(outbox) = &self.outbox {
            let gzip = request
                .headers()
                .get("content-encoding")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
            outbox.put(Sent {
                body: request.body().clone(),
                gzip,
                status: None,
            });
            if outbox.held.load(Ordering::Relaxed) {
                return Err(fail(
                    "held back behind the spooled spans, which go first".into(),
                ));
            }
        }
        let response = self
            .client
            .send_bytes(request)
            .await
            .map_err(|e| fail(crate::error_chain(&*e)))?;
        if let Some(outbox) = &self.outbox {
            outbox.answered(response.status().as_u16());
        }
        Ok(response)
    }
}
