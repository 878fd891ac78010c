//! Succession: a guild outlives its coordinator. Every signed membership names, in order,
//! the members that take over should the coordinator fall silent (the longest-standing
//! ones that are up). When the coordinator has missed its heartbeats, successor *i* waits
//! *i* heartbeat intervals (its slot), then signs the next membership with itself as
//! coordinator of the next term, carrying the membership that named it as proof, rotates
//! the key and keeps the guild id. Members accept it because the coordinator they knew
//! signed the proof. Of two claims, the later term wins, and within a term the successor
//! named first ([`crate::wire::Claim`]): two successors that act at once, an old
//! coordinator that comes back, and the two sides of a healed partition all converge on
//! one coordinator and one membership.

use std::time::Instant;

use libp2p::PeerId;
use tracing::Span;
use zerostate_telemetry::names::span as names;

use super::joins::JoinBucket;
use super::membership::Applied;
use super::state::{Guild, SUCCESSORS};
use super::{Member, Service, Status};
use crate::wire::Membership;

/// What a signed membership is to the one a node holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The same coordinator and term, a later version.
    Newer,
    /// A new coordinator whose claim beats the held one, with a valid proof.
    Takeover,
    /// Older than the one held (a reordered or replayed notice): not an error.
    Stale,
    /// Not valid, and why.
    Forged(&'static str),
}

impl Guild {
    /// Judges a membership for this guild against the one held.
    pub(super) fn judge(&self, update: &Membership) -> Verdict {
        if update.guild_id != self.id {
            return Verdict::Forged("a membership of another guild");
        }
        let Some(coordinator) = update.coordinator_id() else {
            return Verdict::Forged("the coordinator is not a peer id");
        };
        if coordinator == self.coordinator && update.term == self.term {
            if !update.verify(&coordinator) {
                return Verdict::Forged("not signed by the coordinator");
            }
            return if update.version > self.version {
                Verdict::Newer
            } else {
                Verdict::Stale
            };
        }
        if update.term < self.term || !update.claim().beats(&self.claim) {
            return Verdict::Stale;
        }
        // The coordinator of the term before the update's, as this node knows it.
        let trusted = if update.term == self.term.saturating_add(1) {
            Some(self.coordinator)
        } else if update.term == self.term {
            self.proof.as_deref().and_then(Membership::coordinator_id)
        } else {
            None
        };
        let Some(trusted) = trusted else {
            return Verdict::Forged(
                "a coordinator more than one succession ahead of the one this node knows",
            );
        };
        match update.takeover_by(&trusted) {
            Ok(()) => Verdict::Takeover,
            Err(why) => Verdict::Forged(why),
        }
    }

    /// Applies a membership judged [`Verdict::Newer`] or [`Verdict::Takeover`] as member
    /// `me`: coordinator, term, version, members (in seniority order, with their exchange
    /// keys) and successors become the membership's.
    pub(super) fn adopt(&mut self, me: PeerId, update: &Membership, now: Instant) -> Applied {
        if let Some(coordinator) = update.coordinator_id()
            && coordinator != self.coordinator
        {
            self.coordinator = coordinator;
            // A key of this epoch or later came from a rival coordinator (a successor that
            // lost, or the old coordinator after it was replaced): not this one's. Keep only
            // what is older, so that the new coordinator's delivery counts as newer.
            if self.epoch >= update.key_epoch {
                match self.previous.take().filter(|(e, _)| *e < update.key_epoch) {
                    Some((epoch, key)) => {
                        self.epoch = epoch;
                        self.key = Some(key);
                    }
                    None => {
                        self.epoch = update.key_epoch.saturating_sub(1);
                        self.key = None;
                    }
                }
            }
        }
        self.term = update.term;
        self.claim = update.claim();
        self.proof = update.previous.clone();
        self.successors = update.successor_ids();
        self.handover_since = None;
        let mut signed = update.clone();
        if let Some(proof) = signed.previous.as_deref_mut() {
            proof.previous = None;
        }
        self.signed = Some(signed);
        let applied = self.apply_membership_saying(
            me,
            update.version,
            update.member_ids(),
            now,
            update.removal_reason(&me),
        );
        if applied == Applied::Updated {
            for (since, peer) in update.member_ids().into_iter().enumerate() {
                let exchange = update.exchange_key_of(&peer);
                if let Some(m) = self.members.get_mut(&peer) {
                    m.since = u64::try_from(since).unwrap_or(u64::MAX);
                    if exchange.is_some() {
                        m.exchange = exchange;
                    }
                }
            }
        }
        applied
    }

    /// Where this member stands in the handover, `waited` after the coordinator was found
    /// silent, with heartbeat interval `interval`; with no successor heard from after
    /// every slot and `patience` more, it gives up.
    pub(super) fn handover_step(
        &self,
        me: &PeerId,
        waited: std::time::Duration,
        interval: std::time::Duration,
        patience: std::time::Duration,
    ) -> Step {
        let slot = |n: usize| interval.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
        match self.successors.iter().position(|p| p == me) {
            Some(rank) if waited >= slot(rank) && self.signed.is_some() && self.hears_most() => {
                Step::TakeOver
            }
            // Every slot, then a whole down window more for the takeover to reach this
            // member (its mesh may have run through the coordinator).
            _ if waited
                >= slot(self.successors.len().saturating_add(1)).saturating_add(patience) =>
            {
                Step::GiveUp
            }
            _ => Step::Wait,
        }
    }
}

impl Guild {
    /// Whether this node hears (counts as up) at least half of the members other than the
    /// coordinator, itself included. A successor takes over only then: one cut off on its
    /// own, or on the smaller side of a partition, does not, so that it cannot take the
    /// guild from the larger side when the partition heals. (At least half, not more: in a
    /// guild of two members that reached each other only through the coordinator, the
    /// first successor still takes over.)
    pub(super) fn hears_most(&self) -> bool {
        let others: Vec<&Member> = self
            .members
            .iter()
            .filter(|(p, _)| **p != self.coordinator)
            .map(|(_, m)| m)
            .collect();
        let up = others.iter().filter(|m| m.up).count();
        up.saturating_mul(2) >= others.len()
    }
}

/// What a member does while its coordinator is silent.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Its slot has come: it takes over.
    TakeOver,
    /// Every successor's slot has passed and none took over: the guild ends for it.
    GiveUp,
    /// A successor before it may still act.
    Wait,
}

impl Service {
    /// One heartbeat round of a member whose coordinator is silent: take over in its slot,
    /// wait, or, when no successor acted, end the guild.
    pub(super) async fn handover_round(&mut self, id: &str, now: Instant) {
        let me = self.me;
        let interval = self.config.interval();
        let Some(g) = self.guilds.get_mut(id) else {
            return;
        };
        let since = *g.handover_since.get_or_insert(now);
        let mut waited = now.saturating_duration_since(since);
        if self.config.take_over_without_waiting && g.successors.contains(&me) {
            // Every slot before this successor's counts as passed; a member that is no
            // successor waits as usual, so it does not give up sooner.
            waited =
                waited.max(interval.saturating_mul(u32::try_from(SUCCESSORS).unwrap_or(u32::MAX)));
        }
        match g.handover_step(&me, waited, interval, self.config.down_after()) {
            Step::Wait => {}
            Step::TakeOver => self.take_over(id, now),
            Step::GiveUp => {
                let span = tracing::info_span!(
                    names::GUILD_DISSOLVE,
                    guild.id = id,
                    reason = "coordinator lost",
                );
                let _in = span.enter();
                tracing::warn!(
                    guild.id = id,
                    "the coordinator fell silent and no successor took over: the guild ends here"
                );
                g.end(Status::Dissolved, super::state::SILENT_COORDINATOR);
                let topic = g.topic();
                let _ = self.network.unsubscribe(&topic).await;
                self.persist(id);
            }
        }
    }

    /// This member takes over the guild: the next term with itself as coordinator, the
    /// membership that named it as proof, the silent coordinator out (it may come back once
    /// without an invitation), a new key delivered to every member, announced.
    fn take_over(&mut self, id: &str, now: Instant) {
        let (me, public) = (self.me, self.exchange.public());
        let joins_per_second = self.config.joins_per_second;
        let Some(g) = self.guilds.get_mut(id) else {
            return;
        };
        let Some(mut proof) = g.signed.clone() else {
            return;
        };
        proof.previous = None;
        let old = g.coordinator;
        let span = tracing::info_span!(
            names::GUILD_HANDOVER,
            guild.id = id,
            peer.id = %old,
            term = g.term.saturating_add(1),
        );
        let _in = span.enter();
        g.term = g.term.saturating_add(1);
        g.coordinator = me;
        g.claim = Membership {
            term: g.term,
            coordinator: me.to_bytes(),
            previous: Some(Box::new(proof.clone())),
            ..Membership::default()
        }
        .claim();
        g.proof = Some(Box::new(proof));
        g.status = Status::Coordinator;
        g.handover_since = None;
        g.signed = None;
        g.members.remove(&old);
        g.fell_silent(old, now);
        g.members
            .entry(me)
            .or_insert_with(|| Member::new(now, None))
            .exchange = Some(public);
        g.joins = JoinBucket::full(joins_per_second, now);
        g.version = g.version.saturating_add(1);
        g.choose_successors();
        super::stats::bump(&self.counters.handovers);
        tracing::warn!(
            guild.id = id,
            term = g.term,
            "the coordinator {old} fell silent: this node takes over the guild"
        );
        self.rotate_key(id);
        self.announce(id);
        self.persist(id);
    }

    /// Test switch (`take_over_without_waiting`): a named successor that meets another's
    /// takeover of the next term before it acted takes over first, as if its own slot had
    /// come before that claim reached it, and judges the claim again as a rival coordinator:
    /// two successors acting at once, on demand. `None` when its own claim is the stronger.
    fn act_first(&mut self, id: &str, update: &Membership) -> Option<Verdict> {
        let g = self.guilds.get(id)?;
        let rival = g.status == Status::Member
            && g.successors.contains(&self.me)
            && update.term == g.term.saturating_add(1);
        if !rival {
            return Some(Verdict::Takeover);
        }
        self.take_over(id, Instant::now());
        match self.guilds.get(id)?.judge(update) {
            Verdict::Stale => None,
            verdict => Some(verdict),
        }
    }

    /// Applies a membership judged [`Verdict::Newer`] or [`Verdict::Takeover`] (from the
    /// topic or a sync), within `span`. A coordinator that meets a stronger claim defers to
    /// it: it becomes a member, and asks to be let back in when the new membership left it
    /// out.
    pub(super) fn accept(&mut self, id: &str, update: &Membership, verdict: Verdict, span: &Span) {
        let me = self.me;
        let verdict = if verdict == Verdict::Takeover && self.config.take_over_without_waiting {
            match self.act_first(id, update) {
                Some(verdict) => verdict,
                None => return,
            }
        } else {
            verdict
        };
        let counters = self.counters.clone();
        let Some(g) = self.guilds.get_mut(id) else {
            return;
        };
        let deferring = g.status == Status::Coordinator;
        let _in = span.enter();
        if verdict == Verdict::Takeover {
            super::stats::bump(&counters.handovers);
            let handover = tracing::info_span!(
                names::GUILD_HANDOVER,
                guild.id = id,
                peer.id = tracing::field::display(
                    update
                        .coordinator_id()
                        .map(|p| p.to_string())
                        .unwrap_or_default()
                ),
                term = update.term,
            );
            let _h = handover.enter();
            tracing::info!(
                guild.id = id,
                term = update.term,
                "a new coordinator took over the guild"
            );
        }
        if deferring {
            super::stats::bump(&counters.deferrals);
            tracing::warn!(
                guild.id = id,
                term = update.term,
                "a stronger claim to the guild than this node's: it steps back to member"
            );
            for d in g.deliveries.drain(..) {
                d.abort();
            }
            g.status = Status::Member;
        }
        let applied = g.adopt(me, update, Instant::now());
        let coordinator = g.coordinator;
        if applied == Applied::Removed && (deferring || verdict == Verdict::Takeover) {
            if deferring {
                g.reason = Some(format!(
                    "replaced as coordinator by {coordinator} (term {})",
                    update.term
                ));
            }
            self.persist(id);
            // Left out by a successor (it fell silent, or was the coordinator replaced),
            // which takes it back once without an invitation.
            self.rejoin(id, coordinator);
            return;
        }
        self.persist(id);
        // Messages held for a sender this update may have brought.
        self.release_held(id, None);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use libp2p::identity::Keypair;

    use super::*;
    use crate::service::state::test_guild;

    /// A guild as its creator `key` holds it, with `members` (the creator first).
    fn coordinated(key: &Keypair, members: &[PeerId]) -> Guild {
        let mut g = test_guild(Status::Coordinator);
        g.coordinator = key.public().to_peer_id();
        g.claim.coordinator = g.coordinator.to_bytes();
        let now = Instant::now();
        for (since, p) in members.iter().enumerate() {
            let mut m = Member::new(now, Some([u8::try_from(since).expect("small"); 32]));
            m.since = u64::try_from(since).expect("small");
            g.members.insert(*p, m);
        }
        g.version = 5;
        g.choose_successors();
        g
    }

    #[test]
    fn a_member_follows_a_successor_named_by_the_coordinator_it_knows_and_no_one_else() {
        let (old, first, second) = (
            Keypair::generate_ed25519(),
            Keypair::generate_ed25519(),
            Keypair::generate_ed25519(),
        );
        let ids = [old.clone(), first.clone(), second.clone()].map(|k| k.public().to_peer_id());
        let member = PeerId::random();
        let creator = coordinated(&old, &[ids[0], ids[1], ids[2], member]);
        assert_eq!(creator.successors, vec![ids[1], ids[2], member]);
        let held = creator.membership(&old);
        let member_of = || {
            let mut g = test_guild(Status::Member);
            g.coordinator = ids[0];
            g.claim.coordinator = ids[0].to_bytes();
            g
        };
        let (mut mine, mut other) = (member_of(), member_of());
        assert_eq!(mine.judge(&held), Verdict::Newer);
        assert_eq!(mine.adopt(member, &held, Instant::now()), Applied::Updated);
        other.adopt(member, &held, Instant::now());
        assert_eq!(mine.judge(&held), Verdict::Stale, "the same version again");
        assert_eq!(mine.members[&ids[2]].exchange, Some([2; 32]));

        // The second successor acts first, then the first: the first wins, in either order.
        let takeover = |key: &Keypair| {
            let mut g = coordinated(key, &[ids[1], ids[2], member]);
            g.term = 1;
            g.proof = Some(Box::new(held.clone()));
            g.version = 6;
            g.membership(key)
        };
        let (by_first, by_second) = (takeover(&first), takeover(&second));
        assert_eq!(mine.judge(&by_second), Verdict::Takeover);
        mine.adopt(member, &by_second, Instant::now());
        assert_eq!(mine.coordinator, ids[2]);
        assert_eq!(mine.judge(&by_first), Verdict::Takeover, "named first");
        mine.adopt(member, &by_first, Instant::now());
        assert_eq!(mine.judge(&by_second), Verdict::Stale);
        assert_eq!(other.judge(&by_first), Verdict::Takeover);
        other.adopt(member, &by_first, Instant::now());
        assert_eq!(other.judge(&by_second), Verdict::Stale);
        assert_eq!(
            (mine.coordinator, mine.term, mine.version),
            (other.coordinator, other.term, other.version),
            "one coordinator whatever the order"
        );

        // The old coordinator's later versions of term 0 are stale now.
        let mut late = creator;
        late.version = 9;
        assert_eq!(mine.judge(&late.membership(&old)), Verdict::Stale);
        // A stranger's takeover with a proof it signed itself is refused.
        let stranger = Keypair::generate_ed25519();
        let mut forged = coordinated(&stranger, &[stranger.public().to_peer_id(), member]);
        forged.term = 2;
        forged.proof = Some(Box::new(by_second.clone()));
        assert!(matches!(
            mine.judge(&forged.membership(&stranger)),
            Verdict::Forged(_)
        ));
    }

    #[test]
    fn successors_act_in_their_slots_when_they_hear_most_of_the_guild() {
        let me = PeerId::random();
        let interval = Duration::from_secs(1);
        let mut g = test_guild(Status::Member);
        g.successors = vec![PeerId::random(), me];
        g.signed = Some(Membership::default());
        let now = Instant::now();
        g.members.insert(me, Member::new(now, None));
        g.members.insert(g.successors[0], Member::new(now, None));
        assert_eq!(
            g.handover_step(&me, Duration::ZERO, interval, interval),
            Step::Wait
        );
        assert_eq!(
            g.handover_step(&me, interval, interval, interval),
            Step::TakeOver
        );
        // Cut off from most of the guild, it does not take over.
        for _ in 0..4 {
            let mut silent = Member::new(now, None);
            silent.up = false;
            g.members.insert(PeerId::random(), silent);
        }
        assert!(!g.hears_most());
        assert_eq!(
            g.handover_step(&me, interval, interval, interval),
            Step::Wait
        );
        g.members.retain(|_, m| m.up);
        assert!(g.hears_most());
        let bystander = PeerId::random();
        assert_eq!(
            g.handover_step(&bystander, interval * 3, interval, interval),
            Step::Wait
        );
        assert_eq!(
            g.handover_step(&bystander, interval * 4, interval, interval),
            Step::GiveUp
        );
    }
}
