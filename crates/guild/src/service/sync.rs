//! Catching up: gossip is best-effort, so a member can miss a membership update or a key
//! delivery. Every heartbeat carries the sender's membership version and key epoch; a
//! member that sees the coordinator's ahead of its own asks the coordinator directly
//! (`guild_sync`, at most one request in flight per heartbeat interval) and gets the current
//! signed membership and the current key wrapped for it, as a joiner does. A member that
//! missed an update therefore converges within a heartbeat interval or two.

use std::time::{Duration, Instant};

use prost::Message as _;
use tracing::{Instrument, Span};
use zerostate_p2p::IncomingRequest;
use zerostate_telemetry::SpanExt;
use zerostate_telemetry::error_chain;
use zerostate_telemetry::names::span as names;

use super::handle::Command;
use super::joins::{admission_for, refusal};
use super::keys::{Offer, offered_epoch};
use super::stats::bump;
use super::succession::Verdict;
use super::{GuildError, Service, Status};
use crate::wire::{JoinReply, SyncRequest, types};

/// Whether a member that started a sync at `started` may start another at `now`.
pub(super) fn may_sync(started: Option<Instant>, now: Instant, interval: Duration) -> bool {
    started.is_none_or(|s| now.saturating_duration_since(s) >= interval)
}

impl Service {
    /// Asks the coordinator of `id` for its current membership and key (member only), unless
    /// a request is already in flight.
    pub(super) fn start_sync(&mut self, id: &str) {
        if let Some(coordinator) = self.guilds.get(id).map(|g| g.coordinator) {
            self.start_sync_from(id, coordinator);
        }
    }

    /// Asks `coordinator` (or any member that holds a newer membership than this node) for
    /// its current membership, and the key when it is the coordinator, unless a request is
    /// already in flight.
    pub(super) fn start_sync_from(&mut self, id: &str, coordinator: libp2p::PeerId) {
        self.sync_with(id, coordinator, None);
    }

    /// A coordinator that lost at least half of its members to silence asks one of them,
    /// on a fresh connection, for the membership it holds (see [`super::Guild::probe_target`]).
    pub(super) fn probe(&mut self, id: &str, peer: libp2p::PeerId) {
        let within = self.config.interval().max(super::joins::MIN_REJOIN_DIAL);
        self.sync_with(id, peer, Some(within));
    }

    /// A sync from `coordinator`; with `afresh`, on a new connection dialled within it.
    fn sync_with(&mut self, id: &str, coordinator: libp2p::PeerId, afresh: Option<Duration>) {
        let interval = Duration::from_millis(self.config.heartbeat_interval_ms);
        let now = Instant::now();
        let Some(g) = self.guilds.get_mut(id) else {
            return;
        };
        if !may_sync(g.sync_started, now, interval) {
            return;
        }
        g.sync_started = Some(now);
        let request = SyncRequest {
            guild_id: id.to_owned(),
        }
        .encode_to_vec();
        let network = self.network.clone();
        let loopback = self.loopback.clone();
        let guild = id.to_owned();
        let span = tracing::info_span!(
            names::GUILD_MEMBERSHIP_UPDATE,
            guild.id = id,
            peer.id = %coordinator,
            sync = true,
        );
        self.tasks.spawn(
            async move {
                let answer = async {
                    if let Some(within) = afresh {
                        super::joins::dial_afresh(&network, &guild, coordinator, vec![], within)
                            .await?;
                    }
                    Ok(network
                        .request(coordinator, vec![], types::SYNC, request)
                        .await?)
                }
                .await
                .and_then(|env| {
                    JoinReply::decode(&env.payload[..]).map_err(|e| GuildError::BadReply {
                        guild: guild.clone(),
                        reason: format!("malformed sync reply: {e}"),
                    })
                });
                if let Err(e) = &answer {
                    Span::current().record_error(e);
                }
                let _ = loopback
                    .send(Command::Synced {
                        guild,
                        from: coordinator,
                        answer,
                    })
                    .await;
            }
            .instrument(span),
        );
    }

    /// The coordinator's side: the current signed membership and the key wrapped for the
    /// asking member; the membership alone for anyone else (it travels on the topic in the
    /// clear anyway: a coordinator that was replaced learns of its successor so). A member
    /// answers with the signed membership it holds.
    pub(super) fn sync_request(&mut self, r: &IncomingRequest) -> Vec<u8> {
        let Ok(req) = SyncRequest::decode(&r.envelope.payload[..]) else {
            bump(&self.counters.rejected_malformed);
            return refusal("malformed sync request");
        };
        let (sign_key, exchange) = (self.key.clone(), self.exchange.clone());
        let Some(g) = self.guilds.get_mut(&req.guild_id) else {
            return refusal("no such guild here");
        };
        let membership_only = |membership: Option<crate::wire::Membership>| match membership {
            Some(m) => JoinReply {
                refusal: String::new(),
                membership: Some(m),
                key: None,
            }
            .encode_to_vec(),
            None => refusal("this node holds no membership of that guild"),
        };
        match g.status {
            Status::Coordinator => {}
            Status::Member => return membership_only(g.signed.clone()),
            _ => return refusal("this node is no longer in that guild"),
        }
        if g.members.get(&r.peer).and_then(|m| m.exchange).is_none() {
            return membership_only(Some(g.membership(&sign_key)));
        }
        // Same reply bytes as long as nothing changed: a member that asks in a loop costs
        // no key exchange and no signature.
        admission_for(g, r.peer, &sign_key, &exchange)
            .unwrap_or_else(|| refusal("no key yet, or the exchange key is a low-order point"))
    }

    /// The member's side: applies a newer signed membership (or a successor's) and a newer
    /// key.
    pub(super) fn finish_sync(
        &mut self,
        id: &str,
        from: libp2p::PeerId,
        answer: Result<JoinReply, GuildError>,
    ) {
        self.apply_sync(id, from, answer);
        // Whatever was held for this catch-up is opened now, or refused for good.
        self.release_held(id, None);
    }

    fn apply_sync(
        &mut self,
        id: &str,
        from: libp2p::PeerId,
        answer: Result<JoinReply, GuildError>,
    ) {
        let Some(g) = self.guilds.get_mut(id) else {
            return;
        };
        g.sync_started = None;
        if answer.is_ok() && g.status == Status::Coordinator {
            g.probe_answered(from);
        }
        let reply = match answer {
            Ok(reply) if reply.refusal.is_empty() => reply,
            Ok(reply) => {
                tracing::debug!(guild.id = id, peer.id = %from, "a sync was refused: {}", reply.refusal);
                return;
            }
            Err(e) => {
                tracing::debug!(
                    guild.id = id,
                    peer.id = %from,
                    "catching up: {}",
                    error_chain(&e)
                );
                return;
            }
        };
        if !g.status.is_active() {
            return;
        }
        if let Some(membership) = &reply.membership {
            match g.judge(membership) {
                Verdict::Stale => {}
                Verdict::Forged(why) => {
                    tracing::warn!(guild.id = id, peer.id = %from, "a synced membership: {why}");
                    bump(&self.counters.rejected_forged);
                    return;
                }
                verdict => {
                    bump(&self.counters.syncs);
                    let span = tracing::info_span!(
                        names::GUILD_MEMBERSHIP_UPDATE,
                        guild.id = id,
                        peer.id = %from,
                        version = membership.version,
                        sync = true,
                    );
                    self.accept(id, membership, verdict, &span);
                }
            }
        }
        let Some(update) = reply.key else {
            return;
        };
        let Some(g) = self.guilds.get(id) else {
            return;
        };
        // Only the coordinator hands out the key.
        if g.status != Status::Member
            || from != g.coordinator
            || update.guild_id != id
            || offered_epoch(g.epoch, update.key_epoch) != Offer::Newer
        {
            return;
        }
        match self.unwrap_key(id, &update) {
            Ok(key) => {
                bump(&self.counters.syncs);
                if let Some(g) = self.guilds.get_mut(id) {
                    g.install_key(update.key_epoch, key);
                }
                self.persist(id);
            }
            Err(e) => {
                tracing::warn!(guild.id = id, "a synced key did not open: {e}");
                bump(&self.counters.rejected_tampered);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sync_at_a_time_per_heartbeat_interval() {
        let start = Instant::now();
        let interval = Duration::from_millis(500);
        assert!(may_sync(None, start, interval));
        assert!(!may_sync(
            Some(start),
            start + Duration::from_millis(499),
            interval
        ));
        assert!(may_sync(Some(start), start + interval, interval));
    }
}
