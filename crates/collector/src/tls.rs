//! TLS and tokens for the collector's listeners, for nodes on other machines: a
//! certificate and key from PEM files (rustls, no OpenSSL), optionally client certificates
//! signed by a given authority, a bearer token for OTLP intake and another for reading
//! (query API and viewer). Plain HTTP without tokens stays the loopback default.

use std::path::Path;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rustls::pki_types::CertificateDer;

/// Why TLS or a token could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

impl From<String> for TlsError {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl From<&str> for TlsError {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

fn certificates(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    zerostate_telemetry::tls::certificates(what, path).map_err(TlsError)
}

/// The server side of TLS: `cert` (PEM chain) and `key` (PEM), and, when `client_ca` is
/// given, client certificates signed by it, or one of its certificates itself, are
/// required.
pub fn acceptor(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let chain = certificates("the certificate", cert)?;
    let key = zerostate_telemetry::tls::private_key("the key", key).map_err(TlsError)?;
    let provider = zerostate_telemetry::tls::provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS versions: {e}")))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            // Authorities a client's certificate chains to, or clients' own certificates
            // (self-signed ones).
            let trusted = certificates("the client CA", ca)?;
            let verifier = zerostate_telemetry::tls::TrustedClients::new(trusted)
                .map_err(|e| TlsError(format!("the client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(Arc::new(verifier))
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError(format!("{} and its key: {e}", cert.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A bearer token read from a file (its first line, at least 16 characters).
pub fn token(path: &Path) -> Result<Arc<str>, TlsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TlsError(format!("reading the token {}: {e}", path.display())))?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.len() < 16 {
        return Err(TlsError(format!(
            "the token in {} is shorter than 16 characters",
            path.display()
        )));
    }
    Ok(token.into())
}

/// The cookie the viewer keeps the read token in, set by `GET /login?token=...`.
pub const READ_COOKIE: &str = "zerostate_read";

/// Equal, in time that does not depend on where they differ.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `request` presents `token`: `Authorization: Bearer`, or the viewer's cookie
/// when `cookie` is allowed.
pub fn presents(request: &Request, token: &str, cookie: bool) -> bool {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same(t.trim().as_bytes(), token.as_bytes()));
    let cookie = cookie
        && request
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(k, v)| k == READ_COOKIE && same(v.as_bytes(), token.as_bytes()));
    bearer || cookie
}

/// A 401 that says what to send.
pub fn unauthorized(what: &str) -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        format!("{what}: send `Authorization: Bearer <token>`\n"),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"zerostate-collector\""),
    );
    response
}

/// Routes anyone may call on a listener with a token: probes.
const OPEN: &[&str] = &["/healthz", "/readyz", "/login"];

/// Middleware of the query listener: the read token, as a header or the viewer's cookie.
pub async fn require_read(token: Arc<str>, request: Request, next: Next) -> Response {
    if OPEN.contains(&request.uri().path()) || presents(&request, &token, true) {
        next.run(request).await
    } else {
        unauthorized("reading traces needs the collector's read token (or GET /login?token=...)")
    }
}
