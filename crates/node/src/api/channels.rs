//! Payment channels and the ledger: listing and closing channels, a balance, the devnet
//! faucet.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::{Api, ApiError, parse_peer};

pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route("/v1/channels", get(channel_list))
        .route("/v1/channels/{id}/close", post(channel_close))
        .route("/v1/ledger/balance", get(balance))
        .route("/v1/ledger/faucet", post(faucet))
}

fn failed(why: String) -> ApiError {
    ApiError(StatusCode::BAD_GATEWAY, why)
}

async fn channel_list(State(api): State<Api>) -> Result<Response, ApiError> {
    let channels = api
        .payments
        .channels()
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Json(channels).into_response())
}

/// Closes a channel this node pays through, cooperatively; the ledger settles it.
async fn channel_close(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(api.payments.close(&id).await.map_err(failed)?).into_response())
}

async fn balance(State(api): State<Api>) -> Result<Response, ApiError> {
    let balance = api.payments.balance().await.map_err(failed)?;
    Ok(Json(serde_json::json!({ "balance": balance })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaucetBody {
    peer_id: String,
    amount: u64,
}

/// Devnet only: credits an account on this node's ledger.
async fn faucet(
    State(api): State<Api>,
    Json(body): Json<FaucetBody>,
) -> Result<Response, ApiError> {
    let peer = parse_peer("peer_id", &body.peer_id)?;
    api.payments
        .faucet(&peer, body.amount)
        .map_err(|e| ApiError(StatusCode::FORBIDDEN, e))?;
    Ok(Json(serde_json::json!({ "peer_id": body.peer_id, "funded": body.amount })).into_response())
}
