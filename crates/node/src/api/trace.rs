//! One server span per request, for every route: it continues the caller's `traceparent`
//! and is named as OpenTelemetry's HTTP conventions say, `{method} {route template}`, with
//! `http.request.method`, `http.route` and `http.response.status_code`. Handlers run inside
//! it and name no span of their own. Health probes are not traced.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use zerostate_telemetry::names::{attr, field, span};
use zerostate_telemetry::{SpanExt, propagation};

use super::access::OPEN_ROUTES;

struct Headers<'a>(&'a HeaderMap);

impl propagation::Extractor for Headers<'_> {
    fn get_all(&self, name: &str) -> Vec<&str> {
        self.0
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }
}

pub(super) async fn layer(request: Request, next: Next) -> Response {
    let Some(route) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
    else {
        return next.run(request).await;
    };
    if OPEN_ROUTES.contains(&route.as_str()) {
        return next.run(request).await;
    }
    let method = request.method().as_str().to_owned();
    let span = tracing::info_span!(
        span::HTTP_SERVER_REQUEST,
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(cx) = propagation::extract(&Headers(request.headers())) {
        span.set_parent(&cx);
    }
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record(attr::HTTP_RESPONSE_STATUS_CODE, status.as_u16());
    if status.is_server_error() {
        span.record(field::OTEL_STATUS_CODE, "error");
    }
    response
}
