//! Tasks: submitting one to a guild, and what became of it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use zerostate_execution::Limits;

use super::{Api, ApiError, Body, Params, bad_request};
use zerostate_market::requester::Submission;
use zerostate_market::wire::ModuleSource;

pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route(
            "/v1/tasks",
            get(task_list)
                .post(task_submit)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_TASK_BODY_BYTES)),
        )
        .route("/v1/tasks/{id}", get(task_get))
        .route(
            "/v1/modules",
            axum::routing::post(module_upload)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_MODULE_BYTES)),
        )
}

/// A task's module: `"builtin:NAME"`, `{"base64": "..."}` (WebAssembly, binary or text),
/// or `{"sha256": "..."}` (uploaded before with `POST /v1/modules`).
#[derive(Deserialize)]
#[serde(untagged)]
pub enum ModuleBody {
    /// `"builtin:NAME"`.
    Named(String),
    /// The module's bytes.
    Bytes {
        /// Base64 of the module.
        base64: String,
    },
    /// A module uploaded before.
    Hash {
        /// Its SHA-256, hex.
        sha256: String,
    },
}

/// The body of `POST /v1/tasks`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    module: ModuleBody,
    /// The guild to run it in; default: the one guild this node is in.
    #[serde(default)]
    guild: Option<String>,
    /// The input as text.
    #[serde(default)]
    input: Option<String>,
    /// The input as base64 bytes.
    #[serde(default)]
    input_base64: Option<String>,
    /// Fuel the task may use (a shortcut for `limits.fuel`).
    #[serde(default)]
    fuel: Option<u64>,
    #[serde(default)]
    limits: Option<Limits>,
    /// The program's arguments (after its name).
    #[serde(default)]
    args: Vec<String>,
    /// The function to call, for a module that is not a built-in. Default `_start`.
    #[serde(default)]
    entry: Option<String>,
    /// The program's environment, each `KEY=VALUE`.
    #[serde(default)]
    env: Vec<String>,
    /// Input files, readable under `/input`: name (a relative path) to base64.
    #[serde(default)]
    files: std::collections::BTreeMap<String, String>,
    /// Whether the task gets a writable `/output` whose files come back in the record's
    /// `output_files`.
    #[serde(default)]
    output_files: bool,
    /// The most to pay per million fuel units. Default 1000.
    #[serde(default = "default_max_price")]
    max_price: u64,
}

fn default_max_price() -> u64 {
    1000
}

/// `POST /v1/tasks`: accepted at once (202) with the task's id and trace id; the task is
/// announced, scheduled and run in the background (`GET /v1/tasks/{id}`).
async fn task_submit(
    State(api): State<Api>,
    Body(body): Body<SubmitBody>,
) -> Result<Response, ApiError> {
    let module = match body.module {
        ModuleBody::Named(name) => match name.strip_prefix("builtin:") {
            Some(n) => ModuleSource::Builtin(n.to_owned()),
            None => {
                return Err(bad_request(format!(
                    "module {name:?}: give \"builtin:NAME\" or {{\"base64\": ...}}"
                )));
            }
        },
        ModuleBody::Bytes { base64 } => ModuleSource::Base64(base64),
        ModuleBody::Hash { sha256 } => ModuleSource::Sha256(sha256.to_ascii_lowercase()),
    };
    let input = match (body.input, body.input_base64) {
        (Some(_), Some(_)) => return Err(bad_request("give input or input_base64, not both")),
        (Some(text), None) => text.into_bytes(),
        (None, Some(b)) => B64
            .decode(b)
            .map_err(|e| bad_request(format!("input_base64: {e}")))?,
        (None, None) => Vec::new(),
    };
    let guild = match body.guild {
        Some(g) => g,
        None => {
            let active: Vec<String> = api
                .guilds
                .list()
                .await?
                .into_iter()
                .filter(|g| g.status == "member" || g.status == "coordinator")
                .map(|g| g.id)
                .collect();
            match &active[..] {
                [one] => one.clone(),
                [] => return Err(bad_request("this node is in no guild to run the task in")),
                _ => {
                    return Err(bad_request(format!(
                        "this node is in {} guilds: say which (\"guild\")",
                        active.len()
                    )));
                }
            }
        }
    };
    let files = zerostate_market::wire::decode_files(&body.files, "files").map_err(bad_request)?;
    let mut limits = body.limits.unwrap_or_default();
    if let Some(fuel) = body.fuel {
        limits.fuel = fuel;
    }
    let record = api
        .tasks
        .submit(Submission {
            guild,
            module,
            input,
            limits,
            args: body.args,
            entry: body.entry,
            env: body.env,
            files,
            output_files: body.output_files,
            max_price: body.max_price,
        })
        .map_err(bad_request)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(super::answers::Accepted {
            task_id: record.id,
            trace_id: record.trace_id,
            state: record.state,
        }),
    )
        .into_response())
}

/// Largest task submitted: a module and 16 MiB of input and input files, base64.
const MAX_TASK_BODY_BYTES: usize = 48 << 20;

/// Largest module uploaded: the engine's default bound on a module (one larger than one
/// network message travels to its executor by chunks).
const MAX_MODULE_BYTES: usize = 16 << 20;

/// `POST /v1/modules`: the body is a module (binary or text WebAssembly); answers
/// `201 {"sha256"}`, which `POST /v1/tasks` accepts as `{"module": {"sha256": ...}}`, or
/// 400 with why when it is not a module this node's engine would compile.
async fn module_upload(
    State(api): State<Api>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    if body.is_empty() {
        return Err(bad_request("the body is the module: it is empty"));
    }
    let sha256 = api.tasks.upload(body.to_vec()).map_err(bad_request)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "sha256": sha256 })),
    )
        .into_response())
}

/// The query of `GET /v1/tasks`.
#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    50
}

async fn task_list(State(api): State<Api>, Params(q): Params<ListQuery>) -> Response {
    Json(api.tasks.list(q.limit.min(1000))).into_response()
}

/// The query of `GET /v1/tasks/{id}`.
#[derive(Deserialize)]
struct GetQuery {
    /// Wait up to this long for the task to be final before answering, milliseconds.
    #[serde(default)]
    wait_ms: u64,
}

/// The longest `GET /v1/tasks/{id}?wait_ms=` waits: well within the request time every
/// listener allows.
const MAX_WAIT_MS: u64 = 30_000;

async fn task_get(
    State(api): State<Api>,
    Path(id): Path<String>,
    Params(q): Params<GetQuery>,
) -> Result<Response, ApiError> {
    if q.wait_ms > MAX_WAIT_MS {
        return Err(bad_request(format!(
            "wait_ms = {} is more than a request waits ({MAX_WAIT_MS} at most)",
            q.wait_ms
        )));
    }
    let record = if q.wait_ms == 0 {
        api.tasks.get(&id)
    } else {
        let within = std::time::Duration::from_millis(q.wait_ms);
        api.tasks.wait_final(&id, within).await
    };
    record
        .map(|r| Json(r).into_response())
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no task {id} on this node")))
}
