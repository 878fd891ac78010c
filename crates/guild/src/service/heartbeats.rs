//! Heartbeats: each member publishes one per interval; one that stays silent past the
//! missed-heartbeat window is marked down, and then removed (by the coordinator) or, when
//! it is the coordinator, succeeded (see `succession`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use prost::Message as _;
use tracing::Instrument;
use zerostate_telemetry::SpanExt as _;
use zerostate_telemetry::names::span as names;

use super::state::Guild;
use super::stats::bump;
use super::{Service, Status};
use crate::wire::{Heartbeat, types};

impl Guild {
    /// Marks down every member but `me` that is up and was last heard from more than
    /// `down_after` ago; returns them.
    pub(super) fn mark_overdue(
        &mut self,
        me: PeerId,
        now: Instant,
        down_after: Duration,
    ) -> Vec<PeerId> {
        let mut down = Vec::new();
        for (peer, m) in self.members.iter_mut() {
            if *peer != me && m.up && now.saturating_duration_since(m.last_seen) > down_after {
                m.up = false;
                down.push(*peer);
            }
        }
        down
    }
}

impl Service {
    pub(super) async fn heartbeat_round(&mut self) {
        let now = Instant::now();
        let down_after = self.config.down_after();
        let interval = self.config.interval();
        let me = self.me;
        for id in self.active_ids() {
            let Some(guild) = self.guilds.get_mut(&id) else {
                continue;
            };
            guild.heartbeat_seq = guild.heartbeat_seq.wrapping_add(1);
            let beat = Heartbeat {
                guild_id: id.clone(),
                seq: guild.heartbeat_seq,
                version: guild.version,
                key_epoch: guild.epoch,
                term: guild.term,
            }
            .encode_to_vec();
            let topic = guild.topic();
            let down = guild.mark_overdue(me, now, down_after);
            let held_for = self.config.interval().saturating_mul(2);
            let coordinating = guild.status == Status::Coordinator;
            let coordinator = guild.coordinator;
            // A beat is background traffic: counted, not traced (its message type is quiet
            // in the network's settings), unless it fails.
            let span = tracing::debug_span!(names::GUILD_HEARTBEAT, guild.id = id.as_str());
            if let Err(e) = self
                .network
                .publish(&topic, types::HEARTBEAT, beat)
                .instrument(span)
                .await
            {
                bump(&self.counters.heartbeats_failed);
                // Traced at the 1st, 10th, 100th, ... failure (a lone coordinator's beats
                // reach nobody, every interval).
                let failed = self.counters.heartbeats_failed.load(Ordering::Relaxed);
                if zerostate_telemetry::is_power_of_ten(failed) {
                    let span = tracing::info_span!(names::GUILD_HEARTBEAT, guild.id = id.as_str());
                    span.record_error(&e);
                }
            }
            // What waited two intervals for a catch-up is opened or refused now.
            self.release_held(&id, Some(held_for));
            for peer in down {
                bump(&self.counters.members_marked_down);
                let span = tracing::info_span!(
                    names::GUILD_HEARTBEAT,
                    guild.id = id.as_str(),
                    peer.id = %peer,
                    status = "down",
                    missed = self.config.missed_heartbeats,
                );
                let _entered = span.enter();
                tracing::warn!(
                    guild.id = id.as_str(),
                    peer.id = %peer,
                    "a member missed {} heartbeats: marked down",
                    self.config.missed_heartbeats
                );
                if coordinating {
                    if let Some(g) = self.guilds.get_mut(&id) {
                        g.fell_silent(peer, now);
                    }
                    self.remove_member(&id, peer).await;
                } else if peer == coordinator {
                    // The coordinator fell silent: the handover starts (see succession).
                    tracing::warn!(
                        guild.id = id.as_str(),
                        peer.id = %peer,
                        "the coordinator fell silent: waiting for a successor to take over"
                    );
                }
            }
            if coordinating
                && let Some(peer) = self
                    .guilds
                    .get_mut(&id)
                    .and_then(|g| g.probe_target(now, interval))
            {
                self.probe(&id, peer);
            }
            let silent = !coordinating
                && self.guilds.get(&id).is_some_and(|g| {
                    g.status == Status::Member && !g.members.get(&coordinator).is_some_and(|m| m.up)
                });
            if silent {
                self.handover_round(&id, now).await;
            }
        }
    }

    /// A heartbeat: its member is alive; and when it names a newer membership or key than
    /// this node holds (whoever sent it: the sender may be a member this node has not heard
    /// of yet), this node asks the coordinator for them, at most once per interval.
    pub(super) fn heartbeat_seen(&mut self, id: &str, source: PeerId, payload: &[u8]) {
        let Ok(beat) = Heartbeat::decode(payload) else {
            bump(&self.counters.rejected_malformed);
            return;
        };
        let Some(g) = self.guilds.get_mut(id) else {
            return;
        };
        if let Some(member) = g.members.get_mut(&source) {
            member.last_seen = Instant::now();
            member.up = true;
            if source == g.coordinator {
                g.handover_since = None;
            }
        }
        if beat.guild_id != id || !g.status.is_active() {
            return;
        }
        if beat.term > g.term {
            // A succession this node has not heard of: the sender holds its membership.
            self.start_sync_from(id, source);
        } else if g.status == Status::Member
            && beat.term == g.term
            && (beat.version > g.version || beat.key_epoch > g.epoch)
        {
            self.start_sync(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Member;
    use crate::service::state::test_guild;

    #[test]
    fn a_silent_member_is_marked_down_once_and_never_this_node() {
        let (me, quiet, chatty) = (PeerId::random(), PeerId::random(), PeerId::random());
        let start = Instant::now();
        let mut g = test_guild(Status::Coordinator);
        for p in [me, quiet, chatty] {
            g.members.insert(p, Member::new(start, None));
        }
        let window = Duration::from_secs(6);
        let later = start + Duration::from_secs(7);
        g.members.get_mut(&chatty).expect("chatty").last_seen = later;
        assert_eq!(g.mark_overdue(me, later, window), vec![quiet]);
        assert!(g.mark_overdue(me, later, window).is_empty(), "only once");
        assert!(g.members[&me].up);
    }
}
