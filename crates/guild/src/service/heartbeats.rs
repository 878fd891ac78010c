//! Heartbeats. Each member sends its beat straight to the coordinator (a `guild_heartbeat`
//! request), which answers with its own. A member therefore handles one beat an interval
//! whatever the guild's size, and takes the coordinator's as word that the members it lists
//! are alive (the coordinator removes those that fall silent). A member whose coordinator
//! went silent publishes its beats on the topic instead, as do the others, so that each
//! hears for itself who is left before a successor takes over (see `succession`); so does a
//! member whose direct beat failed. The coordinator publishes its beat on the topic once a
//! missed-heartbeat window, so that a node that missed a succession learns the later term,
//! and every interval while some member's beats come on the topic. One silent past the
//! missed-heartbeat window is marked down, and then removed (by the coordinator) or, when it
//! is the coordinator, succeeded.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use prost::Message as _;
use tracing::Instrument;
use zerostate_p2p::IncomingRequest;
use zerostate_telemetry::SpanExt as _;
use zerostate_telemetry::error_chain;
use zerostate_telemetry::names::span as names;

use super::handle::Command;
use super::state::Guild;
use super::stats::bump;
use super::{GuildError, Service, Status};
use crate::wire::{Heartbeat, types};

/// What became of a member's heartbeat to its coordinator.
#[derive(Debug)]
pub(super) enum Beat {
    /// The coordinator answered with its own beat (its payload).
    Answered(Vec<u8>),
    /// The coordinator could not be asked, for this reason; the beat went on the topic.
    OnTopic(GuildError),
    /// The coordinator could not be asked, and publishing the beat failed as well.
    Failed(GuildError),
}

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

    /// This node's heartbeat, as of now.
    fn beat(&self) -> Heartbeat {
        Heartbeat {
            guild_id: self.id.clone(),
            seq: self.heartbeat_seq,
            version: self.version,
            key_epoch: self.epoch,
            term: self.term,
        }
    }

    /// `source`'s beat reached this node at `now`. A member takes its coordinator's as word
    /// for every member of the membership it holds (the coordinator removes the ones that
    /// fall silent), since members no longer hear each other's beats while the coordinator
    /// is up.
    pub(super) fn heard(&mut self, source: PeerId, now: Instant) {
        let vouched = self.status == Status::Member && source == self.coordinator;
        for (peer, member) in &mut self.members {
            if vouched || *peer == source {
                member.last_seen = now;
                member.up = true;
            }
        }
        if source == self.coordinator {
            self.handover_since = None;
        }
    }

    /// Whether this node's beat goes straight to the coordinator this round: it is a member,
    /// its coordinator is up, and its last direct beat was answered.
    fn beats_directly(&self) -> bool {
        self.status == Status::Member
            && !self.beat_in_flight
            && self.members.get(&self.coordinator).is_some_and(|m| m.up)
    }

    /// Whether the coordinator publishes its beat on the topic this round (round `seq`): once
    /// every `every` rounds, and every round while a member's beats came on the topic within
    /// `down_after` (that member may not reach the coordinator directly, and hears it only
    /// there).
    fn beats_on_topic(&self, seq: u64, every: u32, now: Instant, down_after: Duration) -> bool {
        seq.is_multiple_of(u64::from(every.max(1)))
            || self
                .topic_beat_heard
                .is_some_and(|at| now.saturating_duration_since(at) <= down_after)
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
            let beat = guild.beat().encode_to_vec();
            let topic = guild.topic();
            let down = guild.mark_overdue(me, now, down_after);
            let held_for = self.config.interval().saturating_mul(2);
            let coordinating = guild.status == Status::Coordinator;
            let coordinator = guild.coordinator;
            if guild.beats_directly() {
                guild.beat_in_flight = true;
                self.beat_to(&id, coordinator, topic, beat);
            } else if coordinating
                && !guild.beats_on_topic(
                    guild.heartbeat_seq,
                    self.config.missed_heartbeats,
                    now,
                    down_after,
                )
            {
                // The members have this beat in the answers to theirs.
            } else {
                // A beat is background traffic: counted, not traced (its message type is
                // quiet in the network's settings), unless it fails.
                let span = tracing::debug_span!(names::GUILD_HEARTBEAT, guild.id = id.as_str());
                if let Err(e) = self
                    .network
                    .publish(&topic, types::HEARTBEAT, beat)
                    .instrument(span)
                    .await
                {
                    self.beat_failed(&id, &e.into());
                }
            }
            // What waited two intervals for a catch-up is opened or refused now.
            self.release_held(&id, Some(held_for));
            for peer in down {
                if !coordinating && peer != coordinator {
                    // A member knows the others through the coordinator's beats: they fall
                    // due with it, and are heard again on the topic during the handover.
                    tracing::debug!(guild.id = id.as_str(), peer.id = %peer, "not heard from lately");
                    continue;
                }
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
                } else {
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

    /// Sends this member's `beat` to `coordinator` in a helper task; when the coordinator
    /// cannot be asked, the beat goes on `topic` as before. The outcome comes back as
    /// [`Command::Beaten`].
    fn beat_to(&mut self, id: &str, coordinator: PeerId, topic: String, beat: Vec<u8>) {
        let network = self.network.clone();
        let loopback = self.loopback.clone();
        let guild = id.to_owned();
        self.tasks.spawn(async move {
            let asked = match network
                .request(coordinator, vec![], types::HEARTBEAT, beat.clone())
                .await
            {
                Ok(answer) if answer.message_type == types::HEARTBEAT => Ok(answer.payload),
                Ok(refused) => Err(GuildError::BeatRefused {
                    guild: guild.clone(),
                    reason: String::from_utf8_lossy(&refused.payload).into_owned(),
                }),
                Err(e) => Err(e.into()),
            };
            let outcome = match asked {
                Ok(payload) => Beat::Answered(payload),
                Err(why) => match network.publish(&topic, types::HEARTBEAT, beat).await {
                    Ok(_) => Beat::OnTopic(why),
                    Err(e) => Beat::Failed(e.into()),
                },
            };
            let _ = loopback
                .send(Command::Beaten {
                    guild,
                    coordinator,
                    beat: outcome,
                })
                .await;
        });
    }

    /// What became of this member's beat to `coordinator`.
    pub(super) fn heartbeat_answered(&mut self, id: &str, coordinator: PeerId, beat: Beat) {
        if let Some(g) = self.guilds.get_mut(id) {
            g.beat_in_flight = false;
        }
        match beat {
            Beat::Answered(payload) => match Heartbeat::decode(&payload[..]) {
                Ok(theirs) => self.beat_seen(id, coordinator, &theirs),
                Err(_) => bump(&self.counters.rejected_malformed),
            },
            Beat::OnTopic(why) => tracing::debug!(
                guild.id = id,
                peer.id = %coordinator,
                "the heartbeat went on the topic: the coordinator could not be asked: {}",
                error_chain(&why)
            ),
            Beat::Failed(e) => self.beat_failed(id, &e),
        }
    }

    /// A beat that reached no one: counted, and traced at the 1st, 10th, 100th, ... failure
    /// (a lone coordinator's beats reach nobody, every interval).
    fn beat_failed(&self, id: &str, e: &GuildError) {
        bump(&self.counters.heartbeats_failed);
        let failed = self.counters.heartbeats_failed.load(Ordering::Relaxed);
        if zerostate_telemetry::is_power_of_ten(failed) {
            let span = tracing::info_span!(names::GUILD_HEARTBEAT, guild.id = id);
            span.record_error(e);
        }
    }

    /// A member's beat sent straight to this node: taken as on the topic, and answered with
    /// this node's own beat (which carries its term, version and key epoch, so that a member
    /// behind catches up). A node that is not in the guild refuses it.
    pub(super) fn heartbeat_request(&mut self, r: &IncomingRequest) -> (&'static str, Vec<u8>) {
        let refused = |why: &str| (types::REFUSED, why.as_bytes().to_vec());
        let Ok(beat) = Heartbeat::decode(&r.envelope.payload[..]) else {
            bump(&self.counters.rejected_malformed);
            return refused("malformed heartbeat");
        };
        let Some(answer) = self
            .guilds
            .get(&beat.guild_id)
            .filter(|g| g.status.is_active())
            .map(|g| g.beat().encode_to_vec())
        else {
            return refused("this node is not in that guild");
        };
        self.beat_seen(&beat.guild_id, r.peer, &beat);
        (types::HEARTBEAT, answer)
    }

    /// A heartbeat on the topic.
    pub(super) fn heartbeat_seen(&mut self, id: &str, source: PeerId, payload: &[u8]) {
        let Ok(beat) = Heartbeat::decode(payload) else {
            bump(&self.counters.rejected_malformed);
            return;
        };
        if let Some(g) = self.guilds.get_mut(id)
            && source != g.coordinator
            && g.members.contains_key(&source)
        {
            g.topic_beat_heard = Some(Instant::now());
        }
        self.beat_seen(id, source, &beat);
    }

    /// A heartbeat: its member is alive; and when it names a newer membership or key than
    /// this node holds (whoever sent it: the sender may be a member this node has not heard
    /// of yet), this node asks the coordinator for them, at most once per interval.
    fn beat_seen(&mut self, id: &str, source: PeerId, beat: &Heartbeat) {
        let Some(g) = self.guilds.get_mut(id) else {
            return;
        };
        g.heard(source, Instant::now());
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

    #[test]
    fn a_member_takes_its_coordinators_beat_as_word_for_the_others_and_nobody_elses() {
        let (me, other, stranger) = (PeerId::random(), PeerId::random(), PeerId::random());
        let start = Instant::now();
        let mut g = test_guild(Status::Member);
        let coordinator = g.coordinator;
        for p in [coordinator, me, other] {
            g.members.insert(p, Member::new(start, None));
        }
        let window = Duration::from_secs(6);
        let later = start + Duration::from_secs(7);
        // Silent past the window: the coordinator and the member it would vouch for.
        assert_eq!(g.mark_overdue(me, later, window).len(), 2);
        assert!(!g.beats_directly(), "not to a coordinator that is down");
        // Another member's beat on the topic (during a handover) is word for itself only.
        g.heard(other, later);
        assert!(g.members[&other].up && !g.members[&coordinator].up);
        g.members.get_mut(&other).expect("other").up = false;
        g.heard(stranger, later);
        assert!(!g.members.contains_key(&stranger));
        // The coordinator's beat is word for every member, and ends a handover.
        g.handover_since = Some(later);
        g.heard(coordinator, later);
        assert!(g.members.values().all(|m| m.up && m.last_seen == later));
        assert_eq!(g.handover_since, None);
        assert!(g.beats_directly());
        g.beat_in_flight = true;
        assert!(!g.beats_directly(), "one direct beat at a time");

        // A coordinator takes a beat as word for its sender only.
        let mut c = test_guild(Status::Coordinator);
        c.coordinator = me;
        for p in [me, other, stranger] {
            c.members.insert(p, Member::new(start, None));
        }
        c.mark_overdue(me, later, window);
        c.heard(other, later);
        assert!(c.members[&other].up && !c.members[&stranger].up);
    }

    #[test]
    fn the_coordinator_beats_on_the_topic_once_a_window_unless_a_member_beats_there() {
        let mut c = test_guild(Status::Coordinator);
        let now = Instant::now();
        let window = Duration::from_secs(6);
        let rounds: Vec<bool> = (1..=6)
            .map(|seq| c.beats_on_topic(seq, 3, now, window))
            .collect();
        assert_eq!(rounds, [false, false, true, false, false, true]);
        // A member's beat on the topic: every round, until a window passed without one.
        c.topic_beat_heard = Some(now);
        assert!(c.beats_on_topic(1, 3, now + window, window));
        assert!(!c.beats_on_topic(1, 3, now + window + Duration::from_millis(1), window));
        assert!(
            c.beats_on_topic(7, 1, now, window),
            "every round when one beat is missed"
        );
    }
}
