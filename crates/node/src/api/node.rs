//! The node itself: what it is, and whether it is up (readiness is on the operations
//! listener, `/readyz`, where it says what each part lacks).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use zerostate_p2p::Multiaddr;

use super::{Api, ApiError};
use crate::runtime::NodeInfo;

pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/node", get(node))
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
