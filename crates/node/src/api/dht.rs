//! Records in the DHT, under a key of the caller's choosing, signed by the node that
//! publishes them.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{Api, ApiError};

pub(super) fn routes() -> Router<Api> {
    Router::new().route("/v1/dht/{key}", get(get_record).put(put_record))
}

async fn put_record(
    State(api): State<Api>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    api.network
        .put_record(key.as_bytes(), body.to_vec())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The value as the body; the peer that signed it in `x-zerostate-publisher`.
async fn get_record(State(api): State<Api>, Path(key): Path<String>) -> Result<Response, ApiError> {
    match api.network.get_record(key.as_bytes()).await? {
        Some(record) => Ok((
            [("x-zerostate-publisher", record.publisher.to_string())],
            record.value,
        )
            .into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no node has a record under {key}"),
        )),
    }
}
