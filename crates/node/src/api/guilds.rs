//! Guilds: creating, joining, leaving, dissolving, watching, and their sealed messages.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use zerostate_guild::Invitation;

use super::p2p::PublishBody;
use super::{
    Api, ApiError, Body, Params, bad_request, current_trace_id, parse_addresses, parse_peer,
};

pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route("/v1/guilds", get(guild_list).post(guild_create))
        .route("/v1/guilds/stats", get(guild_stats))
        .route("/v1/guilds/{id}", get(guild_info))
        .route("/v1/guilds/{id}/join", post(guild_join))
        .route("/v1/guilds/{id}/invitations", post(guild_invite))
        .route("/v1/guilds/{id}/announce", post(guild_announce))
        .route("/v1/guilds/{id}/leave", post(guild_leave))
        .route("/v1/guilds/{id}/dissolve", post(guild_dissolve))
        .route("/v1/guilds/{id}/watch", post(guild_watch))
        .route(
            "/v1/guilds/{id}/members/{peer}",
            axum::routing::delete(guild_remove),
        )
        .route(
            "/v1/guilds/{id}/messages",
            get(guild_messages).post(guild_send),
        )
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

/// The body of `POST /v1/guilds`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
}

async fn guild_create(
    State(api): State<Api>,
    Body(body): Body<CreateBody>,
) -> Result<Response, ApiError> {
    let info = api.guilds.create(&body.name).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// The body of `POST /v1/guilds/{id}/join`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    coordinator: String,
    #[serde(default)]
    addresses: Vec<String>,
    /// The coordinator's invitation (`zsinv1...`), for a guild that admits by invitation.
    #[serde(default)]
    invitation: Option<String>,
}

async fn guild_join(
    State(api): State<Api>,
    Path(id): Path<String>,
    Body(body): Body<JoinBody>,
) -> Result<Response, ApiError> {
    let coordinator = parse_peer("coordinator", &body.coordinator)?;
    let addresses = parse_addresses(&body.addresses)?;
    let invitation = body
        .invitation
        .as_deref()
        .map(Invitation::from_token)
        .transpose()
        .map_err(|e| bad_request(format!("invitation: {e}")))?;
    let info = api
        .guilds
        .join(&id, coordinator, addresses, invitation)
        .await?;
    Ok(Json(info).into_response())
}

/// The body of `POST /v1/guilds/{id}/invitations`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    /// Only this peer may use it; absent: whoever presents it first.
    #[serde(default, rename = "for")]
    invitee: Option<String>,
    /// Seconds it is valid. Default 86400.
    #[serde(default = "default_ttl_s")]
    ttl_s: u64,
}

fn default_ttl_s() -> u64 {
    86_400
}

/// `POST /v1/guilds/{id}/invitations`: a single-use invitation signed by this node, which
/// must coordinate the guild.
async fn guild_invite(
    State(api): State<Api>,
    Path(id): Path<String>,
    Body(body): Body<InviteBody>,
) -> Result<Response, ApiError> {
    let invitee = body
        .invitee
        .as_deref()
        .map(|p| parse_peer("for", p))
        .transpose()?;
    let invitation = api
        .guilds
        .invite(&id, invitee, std::time::Duration::from_secs(body.ttl_s))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(super::answers::Invitation {
            invitation: invitation.to_token(),
            guild_id: id,
            invitee: body.invitee,
            expires_unix_ms: invitation.expires_unix_ms,
        }),
    )
        .into_response())
}

/// `POST /v1/guilds/{id}/announce`: the coordinator tells the whole network (plain gossip
/// `guild_invitation` on the network-wide topic) that the guild exists and where to ask to
/// join it. Every receiver's span is a child of the publish: one trace across the network.
async fn guild_announce(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let info = api.guilds.info(&id).await?;
    if info.status != "coordinator" {
        return Err(ApiError::from(zerostate_guild::GuildError::NotCoordinator(
            id,
        )));
    }
    let addresses: Vec<String> = api
        .network
        .dialable_addresses()
        .await?
        .iter()
        .map(ToString::to_string)
        .collect();
    let payload = serde_json::json!({
        "guild": info.id,
        "name": info.name,
        "coordinator": info.coordinator,
        "addresses": addresses,
    });
    let message_id = api
        .network
        .publish(
            crate::node_file::DEFAULT_TOPIC,
            "guild_invitation",
            payload.to_string().into_bytes(),
        )
        .await?;
    Ok(Json(super::answers::Published {
        message_id: Some(message_id),
        trace_id: current_trace_id(),
    })
    .into_response())
}

async fn guild_leave(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    api.guilds.leave(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn guild_dissolve(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    api.guilds.dissolve(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The query of `DELETE /v1/guilds/{id}/members/{peer}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoveQuery {
    /// Why, stated in the signed membership (at most 256 characters).
    #[serde(default)]
    reason: Option<String>,
}

/// `DELETE /v1/guilds/{id}/members/{peer}`: the coordinator removes a member by hand: a new
/// membership stating the reason, a new key; the peer is not admitted again. Answers the
/// guild as it is now.
async fn guild_remove(
    State(api): State<Api>,
    Path((id, peer)): Path<(String, String)>,
    Params(query): Params<RemoveQuery>,
) -> Result<Response, ApiError> {
    let peer = parse_peer("peer", &peer)?;
    let reason = query
        .reason
        .unwrap_or_else(|| "removed by the coordinator's operator".to_owned());
    if reason.chars().count() > 256 {
        return Err(bad_request("reason: at most 256 characters"));
    }
    api.guilds.remove(&id, peer, &reason).await?;
    Ok(Json(api.guilds.info(&id).await?).into_response())
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
    Path(id): Path<String>,
    Body(body): Body<PublishBody>,
) -> Result<Response, ApiError> {
    if body.topic.is_some() {
        return Err(bad_request(
            "a guild message has no topic: the guild is its topic",
        ));
    }
    api.guilds
        .send(&id, &body.message_type, body.payload.into_bytes())
        .await?;
    Ok(Json(super::answers::Published {
        message_id: None,
        trace_id: current_trace_id(),
    })
    .into_response())
}
