//! A client of a node's HTTP API on this machine: it finds the node's token in the file the
//! node names (`api_token_file` in its ready line, `<data dir>/api.token`) and sends it with
//! every request, so that the user does nothing.

use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;
use zerostate_guild::GuildInfo;
use zerostate_market::TaskRecord;
use zerostate_payment_protocol::ChannelView;

use crate::api::answers::{Accepted, Funded, Invitation, Published};

/// A node's API and the token that opens it.
#[derive(Clone, Debug)]
pub struct NodeClient {
    base: String,
    token: String,
    token_file: std::path::PathBuf,
    http: reqwest::Client,
}

impl NodeClient {
    /// A client of the API at `base` (`http://127.0.0.1:8700`) with the token in
    /// `token_file`.
    pub fn new(base: &str, token_file: &Path) -> anyhow::Result<Self> {
        let token = std::fs::read_to_string(token_file)
            .with_context(|| format!("reading the node's API token {}", token_file.display()))?
            .trim()
            .to_owned();
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            token_file: token_file.to_owned(),
            http: reqwest::Client::new(),
        })
    }

    /// A client of the node whose ready line (`{"event": "ready", "node": {...}}`) is
    /// `ready`.
    pub fn from_ready(ready: &serde_json::Value) -> anyhow::Result<Self> {
        let node = crate::console::Ready::parse(ready)?
            .node
            .context("not a node's ready line")?;
        Self::new(&node.api, Path::new(&node.api_token_file))
    }

    /// `GET path`: the JSON answer, `None` for 404.
    pub async fn get(&self, path: &str) -> anyhow::Result<Option<serde_json::Value>> {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request, path).await
    }

    /// Submits a task (`POST /v1/tasks` with `body`).
    pub async fn submit(&self, body: &serde_json::Value) -> anyhow::Result<Accepted> {
        self.post_as("/v1/tasks", body).await
    }

    /// A task's record (`GET /v1/tasks/{id}`), `None` when the node has none.
    pub async fn task(&self, id: &str) -> anyhow::Result<Option<TaskRecord>> {
        self.get_as(&format!("/v1/tasks/{id}")).await
    }

    /// Submits a task (`POST /v1/tasks` with `body`) and waits for its final record, for
    /// at most `within`: the node answers each ask once the task is final
    /// (`GET /v1/tasks/{id}?wait_ms=`), or after 10 s, when it is asked again.
    pub async fn run_task(
        &self,
        body: &serde_json::Value,
        within: std::time::Duration,
    ) -> anyhow::Result<TaskRecord> {
        let id = self.submit(body).await?.task_id;
        let start = std::time::Instant::now();
        loop {
            let left = within.saturating_sub(start.elapsed());
            let wait_ms = left.as_millis().clamp(1, 10_000);
            let record = self
                .get_as::<TaskRecord>(&format!("/v1/tasks/{id}?wait_ms={wait_ms}"))
                .await?
                .with_context(|| format!("the node forgot task {id}"))?;
            if record.state.is_final() {
                return Ok(record);
            }
            if start.elapsed() >= within {
                anyhow::bail!("task {id} did not end within {} s", within.as_secs());
            }
        }
    }

    /// A single-use invitation to `guild`, valid `ttl_s` seconds, signed by this node (its
    /// coordinator).
    pub async fn invite(&self, guild: &str, ttl_s: u64) -> anyhow::Result<Invitation> {
        let body = serde_json::json!({ "ttl_s": ttl_s });
        self.post_as(&format!("/v1/guilds/{guild}/invitations"), &body)
            .await
    }

    /// `guild` as this node sees it, `None` when it is in no such guild.
    pub async fn guild(&self, guild: &str) -> anyhow::Result<Option<GuildInfo>> {
        self.get_as(&format!("/v1/guilds/{guild}")).await
    }

    /// Sends a message of `kind` to `guild`'s members.
    pub async fn send_to_guild(
        &self,
        guild: &str,
        kind: &str,
        payload: &str,
    ) -> anyhow::Result<Published> {
        let body = serde_json::json!({ "type": kind, "payload": payload });
        self.post_as(&format!("/v1/guilds/{guild}/messages"), &body)
            .await
    }

    /// Announces `guild` to the whole network (this node must coordinate it).
    pub async fn announce(&self, guild: &str) -> anyhow::Result<Published> {
        self.post_as(
            &format!("/v1/guilds/{guild}/announce"),
            &serde_json::json!({}),
        )
        .await
    }

    /// This node's payment channels, as payer and as payee.
    pub async fn channels(&self) -> anyhow::Result<Vec<ChannelView>> {
        Ok(self.get_as("/v1/channels").await?.unwrap_or_default())
    }

    /// Credits `peer`'s account with `amount` on this node's ledger (its devnet faucet).
    pub async fn fund(&self, peer: &str, amount: u64) -> anyhow::Result<Funded> {
        let body = serde_json::json!({ "peer_id": peer, "amount": amount });
        self.post_as("/v1/ledger/faucet", &body).await
    }

    /// `GET path`, read as `T`; `None` for 404.
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Option<T>> {
        self.get(path)
            .await?
            .map(|v| read_answer(path, v))
            .transpose()
    }

    /// `POST path` with a JSON body, the answer read as `T`.
    pub async fn post_as<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<T> {
        read_answer(path, self.post(path, body).await?)
    }

    /// `POST path` with a JSON body: the JSON answer.
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let request = self.http.post(format!("{}{path}", self.base)).json(body);
        self.send(request, path)
            .await?
            .with_context(|| format!("{path} was not found on the node"))
    }

    /// `POST path` with `bytes` as the body: the JSON answer.
    pub async fn post_bytes(
        &self,
        path: &str,
        bytes: Vec<u8>,
    ) -> anyhow::Result<serde_json::Value> {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/octet-stream")
            .body(bytes);
        self.send(request, path)
            .await?
            .with_context(|| format!("{path} was not found on the node"))
    }

    /// `DELETE path` with `query`: the JSON answer.
    pub async fn delete(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> anyhow::Result<serde_json::Value> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), query)
            .with_context(|| format!("{}{path} is not a URL", self.base))?;
        let request = self.http.delete(url);
        self.send(request, path)
            .await?
            .with_context(|| format!("{path} was not found on the node"))
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        path: &str,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("asking the node at {}{path}", self.base))?;
        let status = response.status();
        if status == 404 {
            return Ok(None);
        }
        let body: serde_json::Value = response
            .json()
            .await
            .with_context(|| format!("reading the node's answer to {path}"))?;
        let reason = body["error"].as_str().unwrap_or("no reason given");
        if status == reqwest::StatusCode::UNAUTHORIZED {
            anyhow::bail!(
                "the node at {} refused the API token read from {} ({reason}): is that \
                 file in this node's data directory? (--data-dir)",
                self.base,
                self.token_file.display()
            );
        }
        if !status.is_success() {
            anyhow::bail!("the node said {status} to {path}: {reason}");
        }
        Ok(Some(body))
    }
}

/// The node's answer to `path` as the type the API gives it.
fn read_answer<T: DeserializeOwned>(path: &str, answer: serde_json::Value) -> anyhow::Result<T> {
    serde_json::from_value(answer)
        .with_context(|| format!("the node's answer to {path} is not what the API gives"))
}
