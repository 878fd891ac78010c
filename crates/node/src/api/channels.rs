//! Payment channels and the ledger: listing and closing channels, a balance, the devnet
//! faucet.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::{Api, ApiError, Body, Params, current_trace_id, parse_peer};
use zerostate_payment_protocol::Settle;

pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route("/v1/channels", get(channel_list))
        .route("/v1/channels/{id}", get(channel_history))
        .route("/v1/channels/{id}/close", post(channel_close))
        .route("/v1/channels/{id}/dispute", post(channel_dispute))
        .route("/v1/channels/{id}/finalize", post(channel_finalize))
        .route("/v1/channels/{id}/refund", post(channel_refund))
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

/// The most payments one answer lists.
const MAX_HISTORY: usize = 1000;

/// The query of `GET /v1/channels/{id}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    limit: Option<usize>,
}

/// One channel with its newest payments (`?limit=`, default 100, at most 1000), each
/// naming the receipt it paid for.
async fn channel_history(
    State(api): State<Api>,
    Path(id): Path<String>,
    Params(query): Params<HistoryQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_HISTORY).contains(&limit) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_HISTORY}"),
        ));
    }
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "a channel id is 64 hex digits".into(),
        ));
    }
    match api
        .payments
        .history(&id, limit)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?
    {
        Some(history) => Ok(Json(history).into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("this node pays or is paid through no channel {id}"),
        )),
    }
}

/// The body of `POST /v1/channels/{id}/close`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseBody {
    /// Start a unilateral close on this node's best state instead of asking the payee.
    #[serde(default)]
    unilateral: bool,
}

/// Closes a channel: cooperatively (the payer asks the payee to sign, the ledger settles
/// at once), or with `{"unilateral": true}` on either side (the ledger opens a challenge
/// window; `finalize` pays out after it).
async fn channel_close(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Option<Body<CloseBody>>,
) -> Result<Response, ApiError> {
    let body = body.map(|Body(b)| b).unwrap_or_default();
    let answer = if body.unilateral {
        api.payments.settle(&id, Settle::Start).await
    } else {
        api.payments.close(&id).await
    };
    let mut answer = answer.map_err(failed)?;
    // The settlement's trace, to find its spans (on a chain: the transactions).
    if let (Some(fields), Some(trace)) = (answer.as_object_mut(), current_trace_id()) {
        fields.insert("trace_id".into(), trace.into());
    }
    Ok(Json(answer).into_response())
}

/// Disputes a unilateral close with this node's best state (a higher amount wins).
async fn channel_dispute(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(
        api.payments
            .settle(&id, Settle::Dispute)
            .await
            .map_err(failed)?,
    )
    .into_response())
}

/// Pays out a unilaterally closed channel once its challenge window has ended.
async fn channel_finalize(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(
        api.payments
            .settle(&id, Settle::Finalize)
            .await
            .map_err(failed)?,
    )
    .into_response())
}

/// Takes back the deposit of a channel this node pays through that nobody closed by its
/// expiry plus its challenge period.
async fn channel_refund(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(
        api.payments
            .settle(&id, Settle::Refund)
            .await
            .map_err(failed)?,
    )
    .into_response())
}

async fn balance(State(api): State<Api>) -> Result<Response, ApiError> {
    let balance = api.payments.balance().await.map_err(failed)?;
    Ok(Json(serde_json::json!({ "balance": balance })).into_response())
}

/// The body of `POST /v1/ledger/faucet`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaucetBody {
    peer_id: String,
    amount: u64,
}

/// Devnet only: credits an account on this node's ledger.
async fn faucet(
    State(api): State<Api>,
    Body(body): Body<FaucetBody>,
) -> Result<Response, ApiError> {
    let peer = parse_peer("peer_id", &body.peer_id)?;
    api.payments
        .faucet(&peer, body.amount)
        .map_err(|e| ApiError(StatusCode::FORBIDDEN, e))?;
    Ok(Json(super::answers::Funded {
        peer_id: body.peer_id,
        funded: body.amount,
    })
    .into_response())
}
