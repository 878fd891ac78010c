//! What this node knows of each guild: its members, version, keys, replay windows and the
//! messages it opened, and the forms the API shows them in.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::identity::Keypair;
use serde::{Deserialize, Serialize};

use super::TOPIC_PREFIX;
use super::joins::JoinBucket;
use super::messages::{CLOCK_SKEW, Held, ReplayWindow, unix_micros};
use crate::crypto::GuildKey;
use crate::wire::{Claim, Membership};

/// A member as this node sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Its peer id.
    pub peer_id: String,
    /// Whether it was heard from within the missed-heartbeat window: by its own heartbeat
    /// or message, or, on a member, by the coordinator's heartbeat (the coordinator's word
    /// for every member it has not removed).
    pub up: bool,
    /// Milliseconds since this node last heard from it, or (on a member) last had the
    /// coordinator's word for it; 0 for this node itself.
    pub last_heard_ms: u64,
}

/// A guild as this node sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GuildInfo {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `coordinator`, `member`, `left`, `removed`, `dissolved` or `watching`.
    pub status: Status,
    /// Why it ended, when it did.
    pub reason: Option<String>,
    /// The coordinator's peer id.
    pub coordinator: String,
    /// The members (empty for a node that only watches).
    pub members: Vec<MemberInfo>,
    /// Membership version.
    pub version: u64,
    /// Key epoch this node holds.
    pub key_epoch: u32,
    /// Its gossip topic.
    pub topic: String,
    /// Sealed messages seen on the topic.
    pub ciphertexts_seen: u64,
    /// Of those, how many this node could not open (not a member, or a key it lacks).
    pub undecryptable: u64,
    /// The coordinator's term: 0 for the creator, one more at every succession.
    pub term: u64,
    /// Who takes over, in order, should the coordinator fall silent.
    pub successors: Vec<String>,
    /// Whether the coordinator has fallen silent and this member waits for a successor to
    /// take over (or is about to take over itself).
    pub handover: bool,
}

/// A guild message this node opened, as applications receive it
/// ([`super::Guilds::subscribe`]).
#[derive(Clone, Debug)]
pub struct GuildMessage {
    /// The guild.
    pub guild: String,
    /// Who sent it.
    pub from: PeerId,
    /// The application's message type.
    pub message_type: String,
    /// The application's bytes.
    pub body: Vec<u8>,
    /// The context of this node's `guild.receive_message` span (a child of the sender's
    /// span): work done for the message continues the sender's trace from it.
    pub context: Option<zerostate_telemetry::TraceContext>,
}

/// A decrypted guild message.
#[derive(Clone, Debug, Serialize)]
pub struct ReceivedMessage {
    /// Who sent it.
    pub from: String,
    /// The application's message type.
    pub message_type: String,
    /// The body, as text (lossy).
    pub body: String,
    /// The trace it belongs to.
    pub trace_id: Option<String>,
}

/// Where this node stands in a guild, as [`GuildInfo::status`] says it (and the API writes
/// it: `coordinator`, `member`, `left`, `removed`, `dissolved`, `watching`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It coordinates the guild.
    Coordinator,
    /// It is a member.
    Member,
    /// It left.
    Left,
    /// The coordinator removed it.
    Removed,
    /// The guild ended: dissolved by its coordinator, or its coordinator fell silent and no
    /// successor took over ([`SILENT_COORDINATOR`]).
    Dissolved,
    /// It follows the guild without being in it.
    Watching,
}

/// The reason of a guild that ended because its coordinator fell silent and no successor
/// took over: a member may ask to join again ([`GuildInfo::may_rejoin`]).
pub const SILENT_COORDINATOR: &str =
    "coordinator lost (missed heartbeats) and no successor took over";

impl PartialEq<&str> for Status {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl GuildInfo {
    /// Whether this node, out of the guild, may ask to join it again: the coordinator
    /// removed it (for silence, it takes it back once), or the guild ended because its
    /// coordinator fell silent. Not after it left or the guild was dissolved on purpose.
    pub fn may_rejoin(&self) -> bool {
        match self.status {
            Status::Removed => true,
            Status::Dissolved => self.reason.as_deref() == Some(SILENT_COORDINATOR),
            _ => false,
        }
    }
}

impl Status {
    /// Its name, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Coordinator => "coordinator",
            Status::Member => "member",
            Status::Left => "left",
            Status::Removed => "removed",
            Status::Dissolved => "dissolved",
            Status::Watching => "watching",
        }
    }

    /// Whether this node is in the guild: its coordinator or a member.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Coordinator | Status::Member)
    }
}

pub(super) struct Member {
    pub(super) last_seen: Instant,
    pub(super) up: bool,
    /// Its X25519 public key (known to the coordinator only).
    pub(super) exchange: Option<[u8; 32]>,
    /// Its seniority: members admitted earlier have smaller numbers; successors are the
    /// longest-standing members.
    pub(super) since: u64,
    /// The last admission reply sent to it (coordinator only): a repeated join or sync at
    /// the same version, epoch and exchange key gets these bytes again, with no new key
    /// exchange or signature.
    pub(super) admitted: Option<Admitted>,
}

impl Member {
    /// A member just heard of.
    pub(super) fn new(now: Instant, exchange: Option<[u8; 32]>) -> Self {
        Self {
            last_seen: now,
            up: true,
            exchange,
            since: 0,
            admitted: None,
        }
    }
}

/// An admission reply and what it was made for.
pub(super) struct Admitted {
    pub(super) version: u64,
    pub(super) epoch: u32,
    pub(super) exchange: [u8; 32],
    pub(super) reply: Vec<u8>,
}

pub(super) struct Guild {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) status: Status,
    pub(super) reason: Option<String>,
    pub(super) coordinator: PeerId,
    pub(super) members: BTreeMap<PeerId, Member>,
    /// The coordinator's term, and how strong its hold is (see [`Claim`]).
    pub(super) term: u64,
    pub(super) claim: Claim,
    /// For a term after the first: the membership of the term before that named this
    /// term's coordinator a successor; every membership of the term carries it.
    pub(super) proof: Option<Box<Membership>>,
    /// Who takes over, in order, should the coordinator fall silent.
    pub(super) successors: Vec<PeerId>,
    /// The last signed membership this member applied (the coordinator signs its own on
    /// demand): what it shows a node that asks, and the proof it takes over with.
    pub(super) signed: Option<Membership>,
    /// Since when the coordinator has been silent past the window, while a successor is
    /// awaited (member only).
    pub(super) handover_since: Option<Instant>,
    pub(super) version: u64,
    pub(super) epoch: u32,
    pub(super) key: Option<GuildKey>,
    /// The key of the epoch before, still accepted from current members: a message sealed
    /// just before a rotation reached its sender is not lost.
    pub(super) previous: Option<(u32, GuildKey)>,
    /// Per sender: the counters seen within the window.
    pub(super) replay: HashMap<PeerId, ReplayWindow>,
    /// Counters at or below this are refused from every sender: messages sent before this
    /// node came to the guild (less the clock skew allowed).
    pub(super) replay_floor: u64,
    /// Messages waiting for a catch-up, and their payload bytes.
    pub(super) held: VecDeque<Held>,
    pub(super) held_bytes: usize,
    pub(super) received: VecDeque<ReceivedMessage>,
    /// Body bytes of `received`.
    pub(super) received_bytes: usize,
    pub(super) ciphertexts_seen: u64,
    pub(super) undecryptable: u64,
    /// Join requests this guild may still take (coordinator only).
    pub(super) joins: JoinBucket,
    /// When this member last asked the coordinator to catch up, if it is waiting.
    pub(super) sync_started: Option<Instant>,
    /// Invitations used (coordinator only): id to the peer that used it and when it
    /// expires; forgotten once expired (an expired one is refused anyway).
    pub(super) used_invitations: HashMap<Vec<u8>, (PeerId, u64)>,
    /// The deliveries of the current key (coordinator only); a new rotation aborts them,
    /// so rotation traffic stays bounded however fast members come and go.
    pub(super) deliveries: Vec<tokio::task::AbortHandle>,
    pub(super) heartbeat_seq: u64,
    /// Whether this member's last heartbeat to its coordinator is still unanswered.
    pub(super) beat_in_flight: bool,
    /// When a member's beat last came on the topic rather than straight to this node.
    pub(super) topic_beat_heard: Option<Instant>,
    /// Members removed because they fell silent (coordinator only), and when: each was
    /// admitted once and removed by no one's decision, so it may come back without a new
    /// invitation within [`RETURN_WINDOW`]. At most [`RETURNING_KEPT`], the oldest go first.
    pub(super) returning: VecDeque<(PeerId, Instant)>,
    /// Coordinator: its looks for members removed for silence (see [`Guild::probe_target`]).
    pub(super) probes: Probes,
    /// Coordinator: members removed by its decision and why, with the version that removed
    /// them (stated in that version's membership); such a member is not admitted again.
    pub(super) removals: VecDeque<(u64, PeerId, String)>,
}

/// How many successors a membership names.
pub(super) const SUCCESSORS: usize = 3;

/// How long a member removed for silence may come back without a new invitation.
pub(super) const RETURN_WINDOW: Duration = Duration::from_secs(3600);
/// Members removed for silence remembered per guild.
pub(super) const RETURNING_KEPT: usize = 256;

/// A coordinator's looks for the members it removed for silence.
#[derive(Debug, Default)]
pub(super) struct Probes {
    /// When it last looked.
    last: Option<Instant>,
    /// Which one it asks next.
    turn: usize,
    /// Those that answered since they were removed: they are reachable, and asked once.
    answered: std::collections::HashSet<PeerId>,
}

impl Guild {
    /// A member removed for silence that the coordinator should ask, on a fresh connection,
    /// for the membership it holds, at most once per `every`; `None` when none is due.
    ///
    /// A successor takes over only while it hears at least half of the members other than
    /// the coordinator. So a coordinator that still has more than half of them cannot have
    /// been replaced; one that lost at least half to silence may have been, on the other
    /// side of a partition, and after the heal nothing tells it so until a stalled
    /// connection recovers (TCP backs off for tens of seconds). It asks those members in
    /// turn, for as long as they could come back ([`RETURN_WINDOW`]), until each answers;
    /// a membership of a later term makes it step back (see succession).
    pub(super) fn probe_target(&mut self, now: Instant, every: Duration) -> Option<PeerId> {
        let gone: Vec<PeerId> = self
            .returning
            .iter()
            .rev()
            .filter(|(p, since)| {
                now.saturating_duration_since(*since) <= RETURN_WINDOW
                    && !self.members.contains_key(p)
            })
            .map(|(p, _)| *p)
            .collect();
        let others = self.members.len().saturating_sub(1);
        if gone.is_empty() || gone.len() < others {
            return None;
        }
        if self
            .probes
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < every)
        {
            return None;
        }
        let waiting: Vec<PeerId> = gone
            .into_iter()
            .filter(|p| !self.probes.answered.contains(p))
            .collect();
        if waiting.is_empty() {
            return None;
        }
        self.probes.last = Some(now);
        self.probes.turn = self.probes.turn.wrapping_add(1);
        waiting.get(self.probes.turn % waiting.len()).copied()
    }

    /// `peer`, asked by [`Guild::probe_target`], answered.
    pub(super) fn probe_answered(&mut self, peer: PeerId) {
        if self.returning.iter().any(|(p, _)| *p == peer) {
            self.probes.answered.insert(peer);
        }
    }

    /// Remembers that `peer` was removed for silence at `now` (coordinator only).
    pub(super) fn fell_silent(&mut self, peer: PeerId, now: Instant) {
        self.returning.retain(|(p, _)| *p != peer);
        self.returning.push_back((peer, now));
        // Silent again: asked again; and only those still remembered are kept as answered.
        self.probes.answered.remove(&peer);
        while self.returning.len() > RETURNING_KEPT {
            if let Some((gone, _)) = self.returning.pop_front() {
                self.probes.answered.remove(&gone);
            }
        }
    }

    /// Whether `peer` was removed for silence within [`RETURN_WINDOW`] of `now` (without
    /// using up its way back).
    pub(super) fn is_returning(&self, peer: &PeerId, now: Instant) -> bool {
        self.returning
            .iter()
            .any(|(p, since)| p == peer && now.saturating_duration_since(*since) <= RETURN_WINDOW)
    }

    /// Whether `peer` was removed for silence within [`RETURN_WINDOW`] of `now`; it is
    /// forgotten either way (it comes back once).
    pub(super) fn take_returning(&mut self, peer: &PeerId, now: Instant) -> bool {
        let Some(at) = self.returning.iter().position(|(p, _)| p == peer) else {
            return false;
        };
        let (_, since) = self.returning.remove(at).unwrap_or((*peer, now));
        now.saturating_duration_since(since) <= RETURN_WINDOW
    }

    /// A guild this node has just come to know, with nothing in it yet.
    pub(super) fn new(
        id: String,
        name: String,
        coordinator: PeerId,
        status: Status,
        joins_per_second: u32,
    ) -> Self {
        Guild {
            id,
            name,
            status,
            reason: None,
            claim: Claim {
                term: 0,
                rank: 0,
                proof_version: 0,
                coordinator: coordinator.to_bytes(),
            },
            coordinator,
            members: BTreeMap::new(),
            term: 0,
            proof: None,
            successors: Vec::new(),
            signed: None,
            handover_since: None,
            version: 0,
            epoch: 0,
            key: None,
            previous: None,
            replay: HashMap::new(),
            replay_floor: unix_micros()
                .saturating_sub(u64::try_from(CLOCK_SKEW.as_micros()).unwrap_or(u64::MAX)),
            held: VecDeque::new(),
            held_bytes: 0,
            received: VecDeque::new(),
            received_bytes: 0,
            ciphertexts_seen: 0,
            undecryptable: 0,
            joins: JoinBucket::full(joins_per_second, Instant::now()),
            sync_started: None,
            used_invitations: HashMap::new(),
            deliveries: Vec::new(),
            returning: VecDeque::new(),
            probes: Probes::default(),
            removals: VecDeque::new(),
            heartbeat_seq: 0,
            beat_in_flight: false,
            topic_beat_heard: None,
        }
    }

    pub(super) fn topic(&self) -> String {
        format!("{TOPIC_PREFIX}{}", self.id)
    }

    pub(super) fn info(&self, me: &PeerId) -> GuildInfo {
        let now = Instant::now();
        GuildInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            status: self.status,
            reason: self.reason.clone(),
            coordinator: self.coordinator.to_string(),
            members: self
                .members
                .iter()
                .map(|(p, m)| MemberInfo {
                    peer_id: p.to_string(),
                    up: m.up,
                    last_heard_ms: if p == me {
                        0
                    } else {
                        u64::try_from(now.saturating_duration_since(m.last_seen).as_millis())
                            .unwrap_or(u64::MAX)
                    },
                })
                .collect(),
            version: self.version,
            key_epoch: self.epoch,
            topic: self.topic(),
            ciphertexts_seen: self.ciphertexts_seen,
            undecryptable: self.undecryptable,
            term: self.term,
            successors: self.successors.iter().map(PeerId::to_string).collect(),
            handover: self.handover_since.is_some(),
        }
    }

    /// The members, longest-standing first.
    pub(super) fn by_seniority(&self) -> Vec<PeerId> {
        let mut order: Vec<(u64, PeerId)> =
            self.members.iter().map(|(p, m)| (m.since, *p)).collect();
        order.sort();
        order.into_iter().map(|(_, p)| p).collect()
    }

    /// The seniority number of a member admitted now.
    pub(super) fn next_since(&self) -> u64 {
        self.members
            .values()
            .map(|m| m.since)
            .max()
            .map_or(0, |s| s.saturating_add(1))
    }

    /// Chooses the successors (coordinator only): the longest-standing members that are up,
    /// at most [`SUCCESSORS`].
    pub(super) fn choose_successors(&mut self) {
        let coordinator = self.coordinator;
        self.successors = self
            .by_seniority()
            .into_iter()
            .filter(|p| *p != coordinator && self.members.get(p).is_some_and(|m| m.up))
            .take(SUCCESSORS)
            .collect();
    }

    pub(super) fn membership(&self, key: &Keypair) -> Membership {
        let order = self.by_seniority();
        Membership {
            guild_id: self.id.clone(),
            name: self.name.clone(),
            version: self.version,
            coordinator: self.coordinator.to_bytes(),
            members: order.iter().map(|p| p.to_bytes()).collect(),
            exchange_keys: order
                .iter()
                .map(|p| {
                    self.members
                        .get(p)
                        .and_then(|m| m.exchange)
                        .map(|k| k.to_vec())
                        .unwrap_or_default()
                })
                .collect(),
            key_epoch: self.epoch,
            signature: Vec::new(),
            term: self.term,
            successors: self.successors.iter().map(|p| p.to_bytes()).collect(),
            previous: self.proof.clone(),
            removed: self
                .removals
                .iter()
                .filter(|(version, ..)| *version == self.version)
                .map(|(_, peer, reason)| crate::wire::Removal {
                    peer: peer.to_bytes(),
                    reason: reason.clone(),
                })
                .collect(),
        }
        .sign(key)
    }

    pub(super) fn install_key(&mut self, epoch: u32, key: GuildKey) {
        if let Some(old) = self.key.take() {
            self.previous = Some((self.epoch, old));
        }
        self.epoch = epoch;
        self.key = Some(key);
    }

    /// The key a message of `epoch` opens with, if this node holds it.
    pub(super) fn key_for(&self, epoch: u32) -> Option<&GuildKey> {
        if epoch == self.epoch {
            self.key.as_ref()
        } else {
            self.previous
                .as_ref()
                .filter(|(e, _)| *e == epoch)
                .map(|(_, k)| k)
        }
    }

    pub(super) fn end(&mut self, status: Status, reason: &str) {
        self.status = status;
        self.reason = Some(reason.to_owned());
        self.members.clear();
        self.replay.clear();
        self.handover_since = None;
        for d in self.deliveries.drain(..) {
            d.abort();
        }
    }
}

/// A guild for unit tests: id `g1`, a random coordinator, nothing in it.
#[cfg(test)]
pub(super) fn test_guild(status: Status) -> Guild {
    Guild::new("g1".into(), "test".into(), PeerId::random(), status, 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_key_still_opens_its_epoch_after_a_rotation() {
        let mut g = test_guild(Status::Member);
        let (first, second) = (GuildKey::generate(), GuildKey::generate());
        g.install_key(1, first.clone());
        g.install_key(2, second.clone());
        assert_eq!(g.epoch, 2);
        assert!(g.key_for(2).is_some() && g.key_for(1).is_some());
        assert!(g.key_for(0).is_none() && g.key_for(3).is_none());
        g.install_key(3, GuildKey::generate());
        assert!(g.key_for(1).is_none(), "only one previous epoch is kept");
    }

    #[test]
    fn an_ended_guild_keeps_why_and_drops_its_members() {
        let mut g = test_guild(Status::Member);
        g.members
            .insert(PeerId::random(), Member::new(Instant::now(), None));
        g.end(Status::Removed, "removed by the coordinator");
        let info = g.info(&PeerId::random());
        assert_eq!(info.status, "removed");
        assert_eq!(info.reason.as_deref(), Some("removed by the coordinator"));
        assert!(info.members.is_empty());
        assert!(!g.status.is_active());
        assert_eq!(info.topic, "zerostate/guild/g1");
    }

    #[test]
    fn a_member_removed_for_silence_comes_back_once_within_the_window() {
        let mut g = test_guild(Status::Coordinator);
        let (quiet, stranger) = (PeerId::random(), PeerId::random());
        let now = Instant::now();
        g.fell_silent(quiet, now);
        assert!(!g.take_returning(&stranger, now), "never a member");
        assert!(g.is_returning(&quiet, now + Duration::from_secs(5)));
        assert!(g.is_returning(&quiet, now), "asking does not use it up");
        assert!(g.take_returning(&quiet, now + Duration::from_secs(5)));
        assert!(!g.take_returning(&quiet, now), "once");
        g.fell_silent(quiet, now);
        assert!(
            !g.take_returning(&quiet, now + RETURN_WINDOW + Duration::from_secs(1)),
            "not after the window"
        );
        for _ in 0..RETURNING_KEPT + 10 {
            g.fell_silent(PeerId::random(), now);
        }
        assert_eq!(g.returning.len(), RETURNING_KEPT);
    }

    #[test]
    fn a_coordinator_looks_for_silent_members_only_once_it_lost_half_and_until_each_answers() {
        let now = Instant::now();
        let every = Duration::from_millis(500);
        let mut g = test_guild(Status::Coordinator);
        let me = g.coordinator;
        let others: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        for p in std::iter::once(&me).chain(&others) {
            g.members.insert(*p, crate::service::Member::new(now, None));
        }
        // One of four gone: the rest hear this coordinator, no successor can have acted.
        g.members.remove(&others[0]);
        g.fell_silent(others[0], now);
        assert_eq!(g.probe_target(now, every), None);
        // Two of four gone: the other side may hold a successor.
        g.members.remove(&others[1]);
        g.fell_silent(others[1], now);
        let first = g.probe_target(now, every).expect("due");
        assert!(others[..2].contains(&first));
        assert_eq!(
            g.probe_target(now + every / 2, every),
            None,
            "once per interval"
        );
        let second = g.probe_target(now + every, every).expect("due again");
        assert_ne!(first, second, "in turn");
        // Each asked until it answers; a stranger's answer changes nothing.
        g.probe_answered(PeerId::random());
        g.probe_answered(first);
        assert_eq!(g.probe_target(now + every * 2, every), Some(second));
        g.probe_answered(second);
        assert_eq!(g.probe_target(now + every * 3, every), None);
        // Past the window in which they could come back, none is looked for.
        g.fell_silent(others[2], now);
        g.members.remove(&others[2]);
        assert_eq!(g.probe_target(now + RETURN_WINDOW * 2, every), None);
    }
}
