//! Modules too large to travel with their task (more than [`INLINE_MODULE_BYTES`]): the
//! requester sends the module's hash, size and the hash of each [`CHUNK_BYTES`] chunk
//! ([`Chunked`]), and the executor asks it for the chunks one at a time
//! ([`wire::MODULE_CHUNK`]). Each chunk is checked against its hash as it arrives, and the
//! whole against the module's hash before anything runs; a chunk that does not match is
//! refused with the reason. A request that fails (a dropped connection) is asked again,
//! from the chunk it failed at: the chunks already held are kept. A chunk the requester
//! does not give, or gives wrong, is asked of the other members of the guilds this node
//! shares with it (any that holds the module by its hash serves it), one request each.
//! An executor that holds a module by its hash is sent only the hash, as for any module.
//!
//! Why a chunk list and not a verified-streaming tree (BLAKE3/bao): the list of 64 hashes
//! for the largest module (16 MiB in 256 KiB chunks) is 4 KiB of the task's message, every
//! chunk is checked on arrival against a hash the requester committed to in the task
//! itself, and the module's SHA-256, its id everywhere else (offers, receipts, the module
//! stores), stays the one hash; a tree only pays off for proofs of ranges of much larger
//! objects.

use tracing::Instrument;
use zerostate_p2p::PeerId;

use crate::transport::{Incoming, Response};
use zerostate_telemetry::SpanExt;
use zerostate_telemetry::names::span as names;

use super::Tasks;
use super::wire::{self, CHUNK_BYTES, ChunkRequest, Chunked};

/// Times one chunk is asked for before the transfer fails.
const CHUNK_ATTEMPTS: u32 = 5;
/// Other members a chunk is asked of, at most, when the requester does not give it.
const OTHER_SOURCES: usize = 8;
/// Pause before a chunk is asked for again.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

impl Tasks {
    /// Fetches what `list` describes (`what`: the module, the input, an input file) from
    /// `from`, chunk by chunk, checks it, and keeps it by its hash, at most `max` bytes;
    /// why not, when it cannot.
    pub(super) async fn fetch(
        &self,
        from: PeerId,
        what: &str,
        list: &Chunked,
        max: u64,
    ) -> Result<(), String> {
        if let Some(why) = list.problem(max) {
            return Err(format!("{what}: {why}"));
        }
        if self.modules().get(&list.sha256).is_some() {
            return Ok(());
        }
        let short = &list.sha256[..list.sha256.len().min(12)];
        let what = format!("{what} {short}");
        let span = tracing::info_span!(
            names::TASK_MODULE_FETCH,
            peer.id = %from,
            size.bytes = list.size,
            chunks = list.chunks.len() as u64,
        );
        let fetched = async {
            let mut bytes = Vec::with_capacity(list.size as usize);
            // Other members that may hold it, asked when the requester fails a chunk.
            let mut others: Option<Vec<PeerId>> = None;
            for index in 0..list.chunks.len() {
                let from_requester = self.fetch_chunk(from, list, index, CHUNK_ATTEMPTS).await;
                let why = match from_requester.and_then(|c| self.check(list, index, c, &what)) {
                    Ok(chunk) => {
                        bytes.extend_from_slice(&chunk);
                        continue;
                    }
                    Err(why) => why,
                };
                if others.is_none() {
                    others = Some(self.members_beside(from).await);
                }
                let mut elsewhere = None;
                for peer in others.iter().flatten() {
                    let answer = self.fetch_chunk(*peer, list, index, 1).await;
                    if let Ok(chunk) = answer.and_then(|c| self.check(list, index, c, &what)) {
                        elsewhere = Some(chunk);
                        break;
                    }
                }
                match elsewhere {
                    Some(chunk) => {
                        tracing::info!("chunk {index} of {what} from another member: {why}");
                        self.inner.metrics.chunk("elsewhere");
                        bytes.extend_from_slice(&chunk);
                    }
                    None => return Err(format!("{why}; no other member held it")),
                }
            }
            if hex::encode(zerostate_execution::sha256(&bytes)) != list.sha256 {
                return Err(format!(
                    "the chunks of {what} do not make what was announced: refused"
                ));
            }
            self.keep(bytes);
            Ok(())
        }
        .instrument(span.clone())
        .await;
        if let Err(why) = &fetched {
            span.record_error(&zerostate_p2p::Reason(why.clone()));
        }
        fetched
    }

    /// `chunk`, when it is chunk `index` of `list` (its size and hash); counted.
    fn check(
        &self,
        list: &Chunked,
        index: usize,
        chunk: Vec<u8>,
        what: &str,
    ) -> Result<Vec<u8>, String> {
        let expected = list.chunk_size(index);
        if chunk.len() as u64 != expected
            || Some(&hex::encode(zerostate_execution::sha256(&chunk))) != list.chunks.get(index)
        {
            self.inner.metrics.chunk("refused");
            return Err(format!(
                "chunk {index} of {what} does not match the hash the requester announced \
                 for it ({} bytes came, {expected} expected): refused",
                chunk.len()
            ));
        }
        self.inner.metrics.chunk("fetched");
        Ok(chunk)
    }

    /// The members of the guilds this node shares with `requester`, but for it and this
    /// node (at most [`OTHER_SOURCES`]): where a chunk the requester did not give is
    /// asked for next.
    async fn members_beside(&self, requester: PeerId) -> Vec<PeerId> {
        let (me, requester) = (
            self.inner.transport.local_peer().to_string(),
            requester.to_string(),
        );
        let mut peers: Vec<PeerId> = Vec::new();
        for guild in self.inner.transport.guilds().await {
            let active = matches!(guild.status.as_str(), "member" | "coordinator");
            if !active || !guild.members.iter().any(|m| m.peer_id == requester) {
                continue;
            }
            for m in &guild.members {
                if m.peer_id != me
                    && m.peer_id != requester
                    && let Ok(peer) = m.peer_id.parse()
                    && !peers.contains(&peer)
                {
                    peers.push(peer);
                }
            }
        }
        peers.truncate(OTHER_SOURCES);
        peers
    }

    /// Chunk `index` of `list` from `from`, asked up to `attempts` times when a request
    /// fails (from this chunk on: those before are held).
    async fn fetch_chunk(
        &self,
        from: PeerId,
        list: &Chunked,
        index: usize,
        attempts: u32,
    ) -> Result<Vec<u8>, String> {
        let ask = serde_json::to_vec(&ChunkRequest {
            sha256: list.sha256.clone(),
            index: index as u32,
        })
        .unwrap_or_default();
        let mut attempt = 1;
        loop {
            let answer = self
                .inner
                .transport
                .ask(from, vec![], wire::MODULE_CHUNK, ask.clone())
                .await;
            match answer {
                Ok(a) if a.kind == wire::MODULE_CHUNK_DATA => return Ok(a.payload),
                Ok(a) => {
                    return Err(format!(
                        "asked for chunk {index} of the module, the requester answered {}: {}",
                        a.kind,
                        String::from_utf8_lossy(&a.payload)
                    ));
                }
                Err(e) if attempt < attempts => {
                    tracing::info!(
                        peer.id = %from,
                        "chunk {index} of module {} not fetched ({}), asking again",
                        list.sha256,
                        e
                    );
                    self.inner.metrics.chunk("resumed");
                    attempt += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => {
                    return Err(format!("fetching chunk {index} ({attempts} attempts): {e}"));
                }
            }
        }
    }
}

/// Serves a chunk of a module this node holds to a member of one of its guilds.
pub(super) async fn serve(tasks: &Tasks, request: Incoming) -> Response {
    let misbehave = &tasks.inner.misbehave;
    match chunk(tasks, &request).await {
        // Under test: the connection goes, the question is never answered.
        Ok((index, _)) if misbehave.drop_chunk_connection == Some(index) && tasks.drop_once() => {
            None
        }
        Ok((_, mut bytes)) => {
            if misbehave.tamper_chunks
                && let Some(b) = bytes.first_mut()
            {
                *b ^= 0xff;
            }
            Some((wire::MODULE_CHUNK_DATA, bytes))
        }
        Err(why) => Some((wire::ERROR, why.into_bytes())),
    }
}

/// The chunk asked for (its index and bytes), or why it is not given.
async fn chunk(tasks: &Tasks, request: &Incoming) -> Result<(u32, Vec<u8>), String> {
    let ask: ChunkRequest = serde_json::from_slice(&request.payload)
        .map_err(|e| format!("not a chunk request: {e}"))?;
    if !tasks.inner.transport.is_member(request.peer).await {
        return Err("modules are served to members of this node's guilds only".into());
    }
    let module = tasks
        .modules()
        .get(&ask.sha256)
        .ok_or_else(|| format!("this node does not hold module {}", ask.sha256))?;
    let start = (ask.index as usize)
        .checked_mul(CHUNK_BYTES)
        .filter(|s| *s < module.len())
        .ok_or_else(|| format!("module {} has no chunk {}", ask.sha256, ask.index))?;
    let end = start.saturating_add(CHUNK_BYTES).min(module.len());
    Ok((ask.index, module[start..end].to_vec()))
}
