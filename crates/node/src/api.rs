//! The node's HTTP API (loopback by default): health, what the node is, and the network
//! operations a devnet, a script or a test drives. Requests honour `traceparent`, so a
//! caller's trace continues into the network.
//!
//! Who may call it: every route but `/healthz` needs the node's token
//! (`Authorization: Bearer`, the token in `<data dir>/api.token`), answered 401 without
//! it. Every route refuses (403) a `Host` that is not the bound address, a loopback name or
//! a configured name, and an `Origin` other than those: a web page the operator visits
//! cannot reach the API through DNS rebinding or a cross-site form. Connections are bounded
//! as every listener is (see `zerostate_http`).

mod access;
pub mod answers;
mod channels;
mod dht;
mod guilds;
mod node;
mod p2p;
mod tasks;
mod trace;

/// The JSON bodies and query strings the API reads, each as its handler decodes it (for
/// fuzzing and tests).
pub mod bodies {
    pub use super::channels::{CloseBody, FaucetBody, HistoryQuery};
    pub use super::guilds::{CreateBody, InviteBody, JoinBody};
    pub use super::p2p::{DialBody, PublishBody, RequestBody};
    pub use super::tasks::{ListQuery, ModuleBody, SubmitBody};
}

use std::sync::Arc;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use zerostate_guild::{GuildError, Guilds};
use zerostate_p2p::{Multiaddr, Network, NetworkError};
use zerostate_telemetry::SpanExt;

pub use access::Access;

use crate::runtime::NodeInfo;

/// What every handler reaches.
#[derive(Clone)]
pub(crate) struct Api {
    network: Network,
    guilds: Guilds,
    tasks: zerostate_market::Tasks,
    payments: zerostate_payment_protocol::Payments,
    info: NodeInfo,
}

/// Serves the API on `listener`; stops taking connections when `stop` resolves.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: tokio::net::TcpListener,
    network: Network,
    guilds: Guilds,
    tasks: zerostate_market::Tasks,
    payments: zerostate_payment_protocol::Payments,
    info: NodeInfo,
    access: Access,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .merge(node::routes())
        .merge(p2p::routes())
        .merge(dht::routes())
        .merge(guilds::routes())
        .merge(tasks::routes())
        .merge(channels::routes())
        .with_state(Api {
            network,
            guilds,
            tasks,
            payments,
            info,
        })
        // Layers run outside in: access first, then the span, then the handler.
        .layer(axum::middleware::from_fn(trace::layer))
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| access::guard(access.clone(), request, next),
        ));
    serve_bounded(listener, app, stop).await;
}

/// Serves `app` on `listener` with the bounds every listener has (connections, header and
/// idle timeouts, request time: `zerostate_http`) until `stop` resolves.
pub(crate) async fn serve_bounded(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: impl Future<Output = ()>,
) {
    zerostate_http::serve(
        listener,
        app,
        zerostate_http::ServeLimits::default(),
        Arc::new(zerostate_http::ServeStats::default()),
        stop,
    )
    .await;
}

/// An API error: a status and one line saying what was wrong.
pub(crate) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// A JSON request body. One that cannot be read (not JSON, a missing field, the wrong
/// content type) is refused as every other error is, `{"error": "..."}`, with axum's status
/// (400, 415 or 422) and its words.
pub(crate) struct Body<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(body)) => Ok(Body(body)),
            Err(refused) => Err(ApiError(refused.status(), refused.body_text())),
        }
    }
}

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::OptionalFromRequest<S>
    for Body<T>
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        match <Json<T> as axum::extract::OptionalFromRequest<S>>::from_request(request, state).await
        {
            Ok(body) => Ok(body.map(|Json(body)| Body(body))),
            Err(refused) => Err(ApiError(refused.status(), refused.body_text())),
        }
    }
}

/// A request's query string, refused as `{"error": "..."}` when it cannot be read.
pub(crate) struct Params<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for Params<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(query)) => Ok(Params(query)),
            Err(refused) => Err(ApiError(refused.status(), refused.body_text())),
        }
    }
}

impl From<NetworkError> for ApiError {
    fn from(e: NetworkError) -> Self {
        let status = match e {
            NetworkError::BadType(_) | NetworkError::TooLarge { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError(status, zerostate_telemetry::error_chain(&e))
    }
}

impl From<GuildError> for ApiError {
    fn from(e: GuildError) -> Self {
        let status = match &e {
            GuildError::Unknown(_) | GuildError::NoSuchMember(..) => StatusCode::NOT_FOUND,
            GuildError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GuildError::NotCoordinator(_)
            | GuildError::CoordinatorLeaving(_)
            | GuildError::NotMember(..) => StatusCode::CONFLICT,
            GuildError::Refused { .. } => StatusCode::FORBIDDEN,
            GuildError::InvalidInvitation(_) | GuildError::InvalidConfig(_) => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError(status, zerostate_telemetry::error_chain(&e))
    }
}

fn parse_addresses(addresses: &[String]) -> Result<Vec<Multiaddr>, ApiError> {
    addresses
        .iter()
        .map(|a| {
            a.parse::<Multiaddr>()
                .map_err(|e| bad_request(format!("address {a}: {e}")))
        })
        .collect()
}

/// A peer id from a request, `what` naming it in the error.
fn parse_peer(what: &str, text: &str) -> Result<zerostate_p2p::PeerId, ApiError> {
    text.parse()
        .map_err(|e| bad_request(format!("{what} {text}: {e}")))
}

fn bad_request(what: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, what.to_string())
}

/// The trace id of the request being served, for answers that name it.
fn current_trace_id() -> Option<String> {
    tracing::Span::current()
        .context()
        .map(|cx| cx.trace_id.to_string())
}
