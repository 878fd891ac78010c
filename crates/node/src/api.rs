//! The node's HTTP API (loopback by default): health, what the node is, and the network
//! operations a devnet, a script or a test drives. Requests honour `traceparent`, so a
//! caller's trace continues into the network.
//!
//! Who may call it: every route but `/healthz` and `/readyz` needs the node's token
//! (`Authorization: Bearer`, the token in `<data dir>/api.token`), answered 401 without
//! it. Every route refuses (403) a `Host` that is not the bound address, a loopback name or
//! a configured name, and an `Origin` other than those: a web page the operator visits
//! cannot reach the API through DNS rebinding or a cross-site form. Connections are bounded
//! as every listener is (see `zerostate_collector::serve`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Request;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tracing::Instrument;
use zerostate_guild::{GuildError, Guilds};
use zerostate_p2p::{Multiaddr, Network, NetworkError, PeerId};
use zerostate_telemetry::{SpanExt, propagation};

use crate::commands::node::{DEFAULT_TOPIC, NodeInfo};

#[derive(Clone)]
struct Api {
    network: Network,
    guilds: Guilds,
    info: NodeInfo,
}

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
const OPEN_ROUTES: &[&str] = &["/healthz", "/readyz"];

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
async fn guard(access: Access, request: Request, next: Next) -> Response {
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

/// Serves the API on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    network: Network,
    guilds: Guilds,
    info: NodeInfo,
    access: Access,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .route("/v1/node", get(node))
        .route("/v1/p2p/peers", get(peers))
        .route("/v1/p2p/stats", get(stats))
        .route("/v1/p2p/mesh/{topic}", get(mesh))
        .route("/v1/p2p/find/{peer}", get(find_peer))
        .route("/v1/p2p/publish", post(publish))
        .route("/v1/p2p/dial", post(dial))
        .route("/v1/p2p/request", post(request))
        .route("/v1/dht/{key}", get(get_record).put(put_record))
        .route("/v1/guilds", get(guild_list).post(guild_create))
        .route("/v1/guilds/stats", get(guild_stats))
        .route("/v1/guilds/{id}", get(guild_info))
        .route("/v1/guilds/{id}/join", post(guild_join))
        .route("/v1/guilds/{id}/leave", post(guild_leave))
        .route("/v1/guilds/{id}/dissolve", post(guild_dissolve))
        .route("/v1/guilds/{id}/watch", post(guild_watch))
        .route(
            "/v1/guilds/{id}/messages",
            get(guild_messages).post(guild_send),
        )
        .with_state(Api {
            network,
            guilds,
            info,
        })
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| guard(access.clone(), request, next),
        ));
    zerostate_collector::serve::serve(
        listener,
        app,
        zerostate_collector::serve::ServeLimits::default(),
        Arc::new(zerostate_collector::serve::ServeStats::default()),
        std::future::pending(),
    )
    .await;
}

/// An API error: a status and one line saying what was wrong.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<NetworkError> for ApiError {
    fn from(e: NetworkError) -> Self {
        let status = match e {
            NetworkError::BadType(_) | NetworkError::TooLarge { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError(status, e.to_string())
    }
}

impl From<GuildError> for ApiError {
    fn from(e: GuildError) -> Self {
        let status = match &e {
            GuildError::Unknown(_) => StatusCode::NOT_FOUND,
            GuildError::NotCoordinator(_)
            | GuildError::CoordinatorLeaving(_)
            | GuildError::NotMember(..) => StatusCode::CONFLICT,
            GuildError::Refused { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError(status, e.to_string())
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

fn bad_request(what: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, what.to_string())
}

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

/// The server span of an API call, continuing the caller's trace when it sent one.
fn server_span(name: &'static str, headers: &HeaderMap) -> tracing::Span {
    let span = tracing::info_span!("http.request", otel.name = name, otel.kind = "server");
    if let Some(cx) = propagation::extract(&Headers(headers)) {
        span.set_parent(&cx);
    }
    span
}

async fn node(State(api): State<Api>) -> Result<Json<NodeInfo>, ApiError> {
    let mut info = api.info.clone();
    info.listen = api
        .network
        .dialable_addresses()
        .await?
        .iter()
        .map(Multiaddr::to_string)
        .collect();
    Ok(Json(info))
}

async fn peers(State(api): State<Api>) -> Result<Response, ApiError> {
    Ok(Json(api.network.peers().await?).into_response())
}

async fn stats(State(api): State<Api>) -> Response {
    Json(api.network.stats()).into_response()
}

async fn mesh(State(api): State<Api>, Path(topic): Path<String>) -> Result<Response, ApiError> {
    let peers: Vec<String> = api
        .network
        .mesh_peers(&topic)
        .await?
        .iter()
        .map(PeerId::to_string)
        .collect();
    Ok(Json(peers).into_response())
}

async fn find_peer(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(peer): Path<String>,
) -> Result<Response, ApiError> {
    let peer: PeerId = peer
        .parse()
        .map_err(|e| bad_request(format!("peer id: {e}")))?;
    let span = server_span("GET /v1/p2p/find", &headers);
    let addrs = api.network.find_peer(peer).instrument(span).await?;
    let addrs: Vec<String> = addrs.iter().map(Multiaddr::to_string).collect();
    Ok(Json(addrs).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    /// Default: the node topic, `zerostate`.
    topic: Option<String>,
    #[serde(rename = "type")]
    message_type: String,
    /// Text payload.
    #[serde(default)]
    payload: String,
}

async fn publish(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(body): Json<PublishBody>,
) -> Result<Response, ApiError> {
    let topic = body.topic.unwrap_or_else(|| DEFAULT_TOPIC.to_owned());
    let span = server_span("POST /v1/p2p/publish", &headers);
    let id = api
        .network
        .publish(&topic, &body.message_type, body.payload.into_bytes())
        .instrument(span.clone())
        .await?;
    let trace_id = span.context().map(|cx| cx.trace_id.to_string());
    Ok(Json(serde_json::json!({ "message_id": id, "trace_id": trace_id })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DialBody {
    address: String,
}

async fn dial(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(body): Json<DialBody>,
) -> Result<Response, ApiError> {
    let addr: Multiaddr = body
        .address
        .parse()
        .map_err(|e| bad_request(format!("address {}: {e}", body.address)))?;
    let span = server_span("POST /v1/p2p/dial", &headers);
    let peer = api.network.dial(addr).instrument(span).await?;
    Ok(Json(serde_json::json!({ "peer_id": peer.to_string() })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestBody {
    peer: String,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(rename = "type")]
    message_type: String,
    #[serde(default)]
    payload: String,
}

async fn request(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(body): Json<RequestBody>,
) -> Result<Response, ApiError> {
    let peer: PeerId = body
        .peer
        .parse()
        .map_err(|e| bad_request(format!("peer id {}: {e}", body.peer)))?;
    let addresses = parse_addresses(&body.addresses)?;
    let span = server_span("POST /v1/p2p/request", &headers);
    let reply = api
        .network
        .request(
            peer,
            addresses,
            &body.message_type,
            body.payload.into_bytes(),
        )
        .instrument(span.clone())
        .await?;
    let trace_id = span.context().map(|cx| cx.trace_id.to_string());
    let mut out = HashMap::new();
    out.insert("type", reply.message_type);
    out.insert(
        "payload",
        String::from_utf8_lossy(&reply.payload).into_owned(),
    );
    if let Some(t) = trace_id {
        out.insert("trace_id", t);
    }
    Ok(Json(out).into_response())
}

async fn put_record(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let span = server_span("PUT /v1/dht", &headers);
    api.network
        .put_record(key.as_bytes(), body.to_vec())
        .instrument(span)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_record(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let span = server_span("GET /v1/dht", &headers);
    match api
        .network
        .get_record(key.as_bytes())
        .instrument(span)
        .await?
    {
        Some(value) => Ok(value.into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no node has a record under {key}"),
        )),
    }
}

async fn guild_list(State(api): State<Api>) -> Result<Response, ApiError> {
    Ok(Json(api.guilds.list().await?).into_response())
}

async fn guild_stats(State(api): State<Api>) -> Response {
    Json(api.guilds.stats()).into_response()
}

async fn guild_info(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(api.guilds.info(&id).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
}

async fn guild_create(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(body): Json<CreateBody>,
) -> Result<Response, ApiError> {
    let span = server_span("POST /v1/guilds", &headers);
    let info = api.guilds.create(&body.name).instrument(span).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    coordinator: String,
    #[serde(default)]
    addresses: Vec<String>,
}

async fn guild_join(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<JoinBody>,
) -> Result<Response, ApiError> {
    let coordinator: PeerId = body
        .coordinator
        .parse()
        .map_err(|e| bad_request(format!("coordinator {}: {e}", body.coordinator)))?;
    let addresses = parse_addresses(&body.addresses)?;
    let span = server_span("POST /v1/guilds/join", &headers);
    let info = api
        .guilds
        .join(&id, coordinator, addresses)
        .instrument(span)
        .await?;
    Ok(Json(info).into_response())
}

async fn guild_leave(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let span = server_span("POST /v1/guilds/leave", &headers);
    api.guilds.leave(&id).instrument(span).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn guild_dissolve(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let span = server_span("POST /v1/guilds/dissolve", &headers);
    api.guilds.dissolve(&id).instrument(span).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn guild_watch(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    api.guilds.watch(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn guild_messages(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(api.guilds.messages(&id).await?).into_response())
}

async fn guild_send(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<PublishBody>,
) -> Result<Response, ApiError> {
    if body.topic.is_some() {
        return Err(bad_request(
            "a guild message has no topic: the guild is its topic",
        ));
    }
    let span = server_span("POST /v1/guilds/messages", &headers);
    api.guilds
        .send(&id, &body.message_type, body.payload.into_bytes())
        .instrument(span.clone())
        .await?;
    let trace_id = span.context().map(|cx| cx.trace_id.to_string());
    Ok(Json(serde_json::json!({ "trace_id": trace_id })).into_response())
}
