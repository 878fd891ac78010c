//! The exporter's HTTP client: TLS by rustls (the system's roots, or the certificate
//! authorities the configuration names), an optional client certificate for mutual TLS,
//! the export timeout, and errors that keep their whole cause chain ("connection refused",
//! "invalid peer certificate: UnknownIssuer"), so that the one warning a failing export
//! logs says why.

use std::path::Path;
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

/// A blocking reqwest client whose errors carry their causes as text.
#[derive(Debug)]
pub(crate) struct ExportClient {
    client: reqwest::blocking::Client,
    last: LastError,
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
            .map(|client| Self { client, last })
            .map_err(|e| {
                format!(
                    "building the exporter's HTTP client: {}",
                    crate::error_chain(&e)
                )
            })
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        self.client.send_bytes(request).await.map_err(|e| {
            let chain = crate::error_chain(&*e);
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(chain.clone());
            Box::new(Failed(chain)) as HttpError
        })
    }
}
