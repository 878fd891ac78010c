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
        let interval = Duration::from_millis(self.config.heartbeat_interval_ms);
        let now = Instant::now();
        let Some(g) = self.guilds.get_mut(id) else {
            return;
        };
        if !may_sync(g.sync_started, now, interval) {
            return;
        }
        g.sync_started = Some(now);
        let coordinator = g.coordinator;
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
                let answer = network
                    .request(coordinator, vec![], types::SYNC, request)
                    .await
                    .map_err(GuildError::from)
                    .and_then(|env| {
                        JoinReply::decode(&env.payload[..]).map_err(|e| GuildError::BadReply {
                            guild: guild.clone(),
                            reason: format!("malformed sync reply: {e}"),
                        })
                    });
                if let Err(e) = &answer {
                    Span::current().record_error(e);
                }
                let _ = loopback.send(Command::Synced { guild, answer }).await;
            }
            .instrument(span),
        );
    }

    /// The coordinator's side: the current signed membership and the key wrapped for the
    /// asking member, or a refusal for anyone else.
    pub(super) fn sync_request(&mut self, r: &IncomingRequest) -> Vec<u8> {
        let Ok(req) = SyncRequest::decode(&r.envelope.payload[..]) else {
            bump(&self.counters.rejected_malformed);
            return refusal("malformed sync request");
        };
        let (sign_key, exchange) = (self.key.clone(), self.exchange.clone());
        let Some(g) = self.guilds.get_mut(&req.guild_id) else {
            return refusal("no such guild here");
        };
        if g.status != Status::Coordinator {
            return refusal("this node does not coordinate that guild");
        }
        if g.members.get(&r.peer).and_then(|m| m.exchange).is_none() {
            bump(&self.counters.rejected_not_member);
            return refusal("not a member");
        }
        // Same reply bytes as long as nothing changed: a member that asks in a loop costs
        // no key exchange and no signature.
        admission_for(g, r.peer, &sign_key, &exchange)
            .unwrap_or_else(|| refusal("no key yet, or the exchange key is a low-order point"))
    }

    /// The member's side: applies a newer signed membership and a newer key.
    pub(super) fn finish_sync(&mut self, id: &str, answer: Result<JoinReply, GuildError>) {
        self.apply_sync(id, answer);
        // Whatever was held for this catch-up is opened now, or refused for good.
        self.release_held(id, None);
    }

    fn apply_sync(&mut self, id: &str, answer: Result<JoinReply, GuildError>) {
        let me = self.me;
        let Some(g) = self.guilds.get_mut(id) else {
            return;
        };
        g.sync_started = None;
        let reply = match answer {
            Ok(reply) if reply.refusal.is_empty() => reply,
            Ok(reply) => {
                tracing::debug!(
                    guild.id = id,
                    "the coordinator refused a sync: {}",
                    reply.refusal
                );
                return;
            }
            Err(e) => {
                tracing::debug!(
                    guild.id = id,
                    "catching up with the coordinator: {}",
                    error_chain(&e)
                );
                return;
            }
        };
        if g.status != Status::Member {
            return;
        }
        let coordinator = g.coordinator;
        if let Some(membership) = &reply.membership {
            if membership.guild_id != id || !membership.verify(&coordinator) {
                bump(&self.counters.rejected_forged);
                return;
            }
            if membership.version > g.version {
                bump(&self.counters.syncs);
                let why = membership.removal_reason(&me);
                g.apply_membership_saying(
                    me,
                    membership.version,
                    membership.member_ids(),
                    Instant::now(),
                    why,
                );
            }
        }
        let Some(update) = reply.key else {
            return;
        };
        if update.guild_id != id || offered_epoch(g.epoch, update.key_epoch) != Offer::Newer {
            return;
        }
        if g.status != Status::Member {
            return;
        }
        match self.unwrap_key(id, &update) {
            Ok(key) => {
                bump(&self.counters.syncs);
                if let Some(g) = self.guilds.get_mut(id) {
                    g.install_key(update.key_epoch, key);
                }
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
