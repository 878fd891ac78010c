//! Membership: creating a guild, watching one, the coordinator announcing its signed
//! membership and removing members, a member leaving, dissolution, and a member applying a
//! newer signed membership.

use std::time::Instant;

use libp2p::PeerId;
use prost::Message as _;
use sha2::{Digest, Sha256};
use tracing::{Instrument, Span};
use zerostate_p2p::GossipMessage;
use zerostate_telemetry::error_chain;
use zerostate_telemetry::names::span as names;

use super::refusal::Refusal;
use super::state::Guild;
use super::succession::Verdict;
use super::{GuildError, GuildInfo, Member, Service, Status};
use crate::crypto::GuildKey;
use crate::wire::{Dissolve, LeaveRequest, Membership, types};

/// Members removed by the coordinator's decision a guild remembers (and keeps out).
const REMOVALS_KEPT: usize = 1024;

/// What applying a newer membership did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Applied {
    /// This node is no longer in it: the guild ended for it.
    Removed,
    /// The members are now the membership's.
    Updated,
}

impl Guild {
    /// Applies a newer signed membership (already checked) as member `me`: the version and
    /// the member list become the membership's; members already known keep their state.
    #[cfg(test)]
    pub(super) fn apply_membership(
        &mut self,
        me: PeerId,
        version: u64,
        members: Vec<PeerId>,
        now: Instant,
    ) -> Applied {
        self.apply_membership_saying(me, version, members, now, None)
    }

    /// [`Guild::apply_membership`], with the reason the membership gives for removing
    /// `me`, if it does.
    pub(super) fn apply_membership_saying(
        &mut self,
        me: PeerId,
        version: u64,
        members: Vec<PeerId>,
        now: Instant,
        why: Option<String>,
    ) -> Applied {
        self.version = version;
        if !members.contains(&me) {
            let reason = match why {
                Some(why) => format!("removed by the coordinator: {why}"),
                None => "removed by the coordinator".to_owned(),
            };
            self.end(Status::Removed, &reason);
            return Applied::Removed;
        }
        self.members.retain(|p, _| members.contains(p));
        for p in members {
            self.members
                .entry(p)
                .or_insert_with(|| Member::new(now, None));
        }
        self.prune_replay();
        Applied::Updated
    }
}

impl Service {
    pub(super) async fn create(
        &mut self,
        name: String,
        span: &Span,
    ) -> Result<GuildInfo, GuildError> {
        let mut h = Sha256::new();
        h.update(self.me.to_bytes());
        h.update(name.as_bytes());
        h.update(crate::crypto::random::<16>());
        let id = hex::encode(&h.finalize()[..8]);
        span.record("guild.id", id.as_str());
        let mut guild = Guild::new(
            id.clone(),
            name,
            self.me,
            Status::Coordinator,
            self.config.joins_per_second,
        );
        guild.version = 1;
        guild.epoch = 1;
        guild.key = Some(GuildKey::generate());
        guild.members.insert(
            self.me,
            Member::new(Instant::now(), Some(self.exchange.public())),
        );
        self.network.subscribe(&guild.topic()).await?;
        let info = guild.info(&self.me);
        self.guilds.insert(id.clone(), guild);
        self.persist(&id);
        Ok(info)
    }

    pub(super) async fn watch(&mut self, id: String) -> Result<(), GuildError> {
        if !self.guilds.contains_key(&id) {
            let guild = Guild::new(
                id.clone(),
                String::new(),
                self.me,
                Status::Watching,
                self.config.joins_per_second,
            );
            self.network.subscribe(&guild.topic()).await?;
            self.guilds.insert(id, guild);
        }
        Ok(())
    }

    /// Publishes the current membership (coordinator only), from a helper task: the service
    /// goes on answering joins meanwhile. Receivers apply only a newer version, so two
    /// announcements that overtake each other do no harm, and heartbeats repair a lost one.
    pub(super) fn announce(&mut self, id: &str) {
        let key = self.key.clone();
        let Some(guild) = self.guilds.get(id) else {
            return;
        };
        let span = tracing::info_span!(
            names::GUILD_MEMBERSHIP_UPDATE,
            guild.id = id,
            count = guild.members.len(),
            version = guild.version,
        );
        let bytes = guild.membership(&key).encode_to_vec();
        let topic = guild.topic();
        let network = self.network.clone();
        let id = id.to_owned();
        self.tasks.spawn(
            async move {
                if let Err(e) = network.publish(&topic, types::MEMBERSHIP, bytes).await {
                    // No other member connected yet is normal right after creation.
                    tracing::debug!(
                        guild.id = id,
                        "announcing the membership: {}",
                        error_chain(&e)
                    );
                }
            }
            .instrument(span),
        );
    }

    /// Removes a member by the coordinator's decision (`reason`, stated in the signed
    /// membership): new version, new key, announced; it is not admitted again.
    pub(super) async fn remove_for(
        &mut self,
        id: &str,
        peer: PeerId,
        reason: String,
    ) -> Result<(), GuildError> {
        let me = self.me;
        let guild = self.guild(id)?;
        if guild.status != Status::Coordinator {
            return Err(GuildError::NotCoordinator(id.to_owned()));
        }
        if peer == me {
            return Err(GuildError::CoordinatorLeaving(id.to_owned()));
        }
        if !guild.members.contains_key(&peer) {
            return Err(GuildError::NoSuchMember(id.to_owned(), peer.to_string()));
        }
        let next = guild.version.saturating_add(1);
        if guild.removals.len() >= REMOVALS_KEPT {
            guild.removals.pop_front();
        }
        guild.removals.push_back((next, peer, reason));
        self.remove_member(id, peer).await;
        Ok(())
    }

    /// Removes a member (coordinator only): new version, new key, announced.
    pub(super) async fn remove_member(&mut self, id: &str, peer: PeerId) {
        let Some(guild) = self.guilds.get_mut(id) else {
            return;
        };
        if guild.members.remove(&peer).is_none() {
            return;
        }
        guild.prune_replay();
        guild.version = guild.version.saturating_add(1);
        guild.choose_successors();
        self.rotate_key(id);
        self.announce(id);
        self.persist(id);
    }

    pub(super) async fn leave(&mut self, id: &str) -> Result<(), GuildError> {
        let guild = self.guild(id)?;
        match guild.status {
            Status::Coordinator => return Err(GuildError::CoordinatorLeaving(id.to_owned())),
            Status::Member => {}
            other => {
                return Err(GuildError::NotMember(
                    id.to_owned(),
                    other.as_str().to_owned(),
                ));
            }
        }
        let coordinator = guild.coordinator;
        guild.end(Status::Left, "left");
        self.persist(id);
        let network = self.network.clone();
        let request = LeaveRequest {
            guild_id: id.to_owned(),
        }
        .encode_to_vec();
        // Best effort: if the coordinator does not hear it, heartbeats remove this node.
        self.tasks.spawn(
            async move {
                if let Err(e) = network
                    .request(coordinator, vec![], types::LEAVE, request)
                    .await
                {
                    tracing::warn!(
                        "telling the coordinator this node left: {}",
                        error_chain(&e)
                    );
                }
            }
            .instrument(Span::current()),
        );
        Ok(())
    }

    pub(super) async fn dissolve(&mut self, id: &str) -> Result<(), GuildError> {
        let key = self.key.clone();
        let guild = self.guild(id)?;
        if guild.status != Status::Coordinator {
            return Err(GuildError::NotCoordinator(id.to_owned()));
        }
        let topic = guild.topic();
        let version = guild.version;
        guild.end(Status::Dissolved, "dissolved by the coordinator");
        self.persist(id);
        let notice = Dissolve::signed(id, version, &key).encode_to_vec();
        if let Err(e) = self.network.publish(&topic, types::DISSOLVE, notice).await {
            tracing::warn!(
                guild.id = id,
                "announcing the dissolution: {}",
                error_chain(&e)
            );
        }
        Ok(())
    }

    pub(super) async fn membership_update(&mut self, id: &str, source: PeerId, m: GossipMessage) {
        let Ok(update) = Membership::decode(&m.envelope.payload[..]) else {
            return self.refuse(&m.span, id, Refusal::Malformed);
        };
        let Some(g) = self.guilds.get_mut(id) else {
            return;
        };
        if !g.status.is_active() {
            return;
        }
        if self.config.withhold_membership_updates && g.status == Status::Member {
            // Test switch: this member only learns of changes by catching up.
            return;
        }
        // Whoever publishes a membership is the coordinator that signed it.
        let verdict = if update.coordinator_id() == Some(source) {
            g.judge(&update)
        } else {
            Verdict::Forged("not published by the coordinator it names")
        };
        match verdict {
            Verdict::Stale => self.refuse(&m.span, id, Refusal::Stale),
            Verdict::Forged(why) => {
                tracing::warn!(guild.id = id, peer.id = %source, "rejected a membership update: {why}");
                self.refuse(&m.span, id, Refusal::Forged)
            }
            verdict => {
                let span = tracing::info_span!(
                    parent: &m.span,
                    names::GUILD_MEMBERSHIP_UPDATE,
                    guild.id = id,
                    version = update.version,
                    count = update.members.len(),
                );
                self.accept(id, &update, verdict, &span);
            }
        }
    }

    /// A coordinator's signed notice that the guild is dissolved.
    pub(super) fn dissolve_notice(&mut self, id: &str, m: GossipMessage) {
        let Ok(notice) = Dissolve::decode(&m.envelope.payload[..]) else {
            return self.refuse(&m.span, id, Refusal::Malformed);
        };
        let Some(g) = self.guilds.get_mut(id) else {
            return;
        };
        if !g.status.is_active() && g.status != Status::Watching {
            return;
        }
        if notice.guild_id != id || !notice.verify(&g.coordinator) {
            return self.refuse(&m.span, id, Refusal::Forged);
        }
        if notice.version < g.version {
            // A notice signed for an older membership: replayed, not this guild's end.
            return self.refuse(&m.span, id, Refusal::Stale);
        }
        let _in = m.span.enter();
        let span = tracing::info_span!(names::GUILD_DISSOLVE, guild.id = id);
        let _entered = span.enter();
        g.end(Status::Dissolved, "dissolved by the coordinator");
        self.persist(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::state::test_guild;

    #[test]
    fn a_newer_membership_replaces_the_members_and_one_without_me_removes_me() {
        let (me, a, b) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut g = test_guild(Status::Member);
        let now = Instant::now();
        assert_eq!(
            g.apply_membership(me, 2, vec![me, a], now),
            Applied::Updated
        );
        g.members.get_mut(&a).expect("a").up = false;
        assert_eq!(
            g.apply_membership(me, 3, vec![me, a, b], now),
            Applied::Updated
        );
        assert_eq!(g.version, 3);
        assert_eq!(g.members.len(), 3);
        assert!(!g.members[&a].up, "a known member keeps its state");
        assert_eq!(g.apply_membership(me, 4, vec![a, b], now), Applied::Removed);
        let mut h = test_guild(Status::Member);
        let why = Some("cheated: fuel 100 claimed, 1 on rerun".to_owned());
        assert_eq!(
            h.apply_membership_saying(me, 4, vec![a], now, why),
            Applied::Removed
        );
        assert!(
            h.reason.as_deref().is_some_and(|r| r.contains("cheated")),
            "{:?}",
            h.reason
        );
        assert_eq!(g.status, Status::Removed);
        assert!(g.members.is_empty());
    }
}
