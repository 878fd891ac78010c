//! The node's place in the network: peers, counters, the gossip mesh, publishing, dialling
//! and direct requests.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use zerostate_p2p::{Multiaddr, PeerId};

use super::{Api, ApiError, Body, bad_request, current_trace_id, parse_addresses, parse_peer};
use crate::node_file::DEFAULT_TOPIC;

pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route("/v1/p2p/peers", get(peers))
        .route("/v1/p2p/stats", get(stats))
        .route("/v1/p2p/mesh/{topic}", get(mesh))
        .route("/v1/p2p/find/{peer}", get(find_peer))
        .route("/v1/p2p/publish", post(publish))
        .route("/v1/p2p/dial", post(dial))
        .route("/v1/p2p/request", post(request))
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

async fn find_peer(State(api): State<Api>, Path(peer): Path<String>) -> Result<Response, ApiError> {
    let peer = parse_peer("peer id", &peer)?;
    let addrs = api.network.find_peer(peer).await?;
    let addrs: Vec<String> = addrs.iter().map(Multiaddr::to_string).collect();
    Ok(Json(addrs).into_response())
}

/// The body of `POST /v1/p2p/publish`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    /// Default: the node topic, `zerostate`.
    pub(super) topic: Option<String>,
    #[serde(rename = "type")]
    pub(super) message_type: String,
    /// Text payload.
    #[serde(default)]
    pub(super) payload: String,
}

async fn publish(
    State(api): State<Api>,
    Body(body): Body<PublishBody>,
) -> Result<Response, ApiError> {
    let topic = body.topic.unwrap_or_else(|| DEFAULT_TOPIC.to_owned());
    let id = api
        .network
        .publish(&topic, &body.message_type, body.payload.into_bytes())
        .await?;
    Ok(Json(super::answers::Published {
        message_id: Some(id),
        trace_id: current_trace_id(),
    })
    .into_response())
}

/// The body of `POST /v1/p2p/dial`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialBody {
    address: String,
}

async fn dial(State(api): State<Api>, Body(body): Body<DialBody>) -> Result<Response, ApiError> {
    let addr: Multiaddr = body
        .address
        .parse()
        .map_err(|e| bad_request(format!("address {}: {e}", body.address)))?;
    let peer = api.network.dial(addr).await?;
    Ok(Json(serde_json::json!({ "peer_id": peer.to_string() })).into_response())
}

/// The body of `POST /v1/p2p/request`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
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
    Body(body): Body<RequestBody>,
) -> Result<Response, ApiError> {
    let peer = parse_peer("peer id", &body.peer)?;
    let addresses = parse_addresses(&body.addresses)?;
    let reply = api
        .network
        .request(
            peer,
            addresses,
            &body.message_type,
            body.payload.into_bytes(),
        )
        .await?;
    let trace_id = current_trace_id();
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
