//! Who may call the API: the token, and the names it answers to (see the module above).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Who may use the API: the token, and the names it answers to.
#[derive(Clone, Debug)]
pub struct Access {
    token: Arc<str>,
    bound: SocketAddr,
    names: Arc<Vec<String>>,
}

impl Access {
    /// Access with `token`, for an API bound to `bound` that also answers to `names`.
    pub fn new(token: String, bound: SocketAddr, names: Vec<String>) -> Self {
        Self {
            token: token.into(),
            bound,
            names: Arc::new(names.into_iter().map(|n| n.to_ascii_lowercase()).collect()),
        }
    }

    /// Whether `authority` (`host[:port]`, as in `Host` or an origin) names this API.
    fn is_own(&self, authority: &str, default_port: u16) -> bool {
        let authority = authority.to_ascii_lowercase();
        let (host, port) = match authority.rsplit_once(':') {
            // `[::1]` alone has colons inside the brackets.
            Some((h, p)) if !p.contains(']') => match p.parse::<u16>() {
                Ok(p) => (h.to_owned(), p),
                Err(_) => return false,
            },
            _ => (authority.clone(), default_port),
        };
        if port != self.bound.port() {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        loopback
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip == self.bound.ip())
            || self.names.iter().any(|n| n == host)
    }

    fn token_matches(&self, presented: &str) -> bool {
        let (a, b) = (presented.as_bytes(), self.token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Routes anyone who reaches the API may call: they reveal and change nothing.
pub(super) const OPEN_ROUTES: &[&str] = &["/healthz"];

fn refuse(status: StatusCode, why: &str) -> Response {
    let mut response = ApiError(status, why.to_owned()).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"zerostate\""),
        );
    }
    response
}

/// Checks `Host`, `Origin` and the token before any handler runs.
pub(super) async fn guard(access: Access, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match host {
        Some(h) if access.is_own(h, 80) => {}
        Some(h) => {
            return refuse(
                StatusCode::FORBIDDEN,
                &format!(
                    "Host {h:?} is not this node's API; use its address or a configured --api-host"
                ),
            );
        }
        None => return refuse(StatusCode::FORBIDDEN, "the request names no Host"),
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let own = origin
            .strip_prefix("http://")
            .is_some_and(|a| access.is_own(a, 80))
            || origin
                .strip_prefix("https://")
                .is_some_and(|a| access.is_own(a, 443));
        if !own {
            return refuse(
                StatusCode::FORBIDDEN,
                &format!("requests from the web origin {origin:?} are refused"),
            );
        }
    }
    if !OPEN_ROUTES.contains(&request.uri().path()) {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(t) if access.token_matches(t.trim()) => {}
            Some(_) => {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "the API token is wrong; it is in <data dir>/api.token",
                );
            }
            None => {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "this route needs the node's API token: send `Authorization: Bearer <token>` \
                     with the token from <data dir>/api.token",
                );
            }
        }
    }
    next.run(request).await
}
