//! What the guild service counted: one counter per outcome, read as a snapshot.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// What the guild service counted. Every `rejected_*` counter is input dropped for being
/// hostile or wrong.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GuildStats {
    /// Guild messages this node sealed and published.
    pub messages_sent: u64,
    /// Guild messages this node opened.
    pub messages_received: u64,
    /// Membership updates or dissolutions not signed by the coordinator.
    pub rejected_forged: u64,
    /// Membership updates not newer than the one held.
    pub rejected_stale: u64,
    /// Sealed messages that did not open (tampered, or a wrong key).
    pub rejected_tampered: u64,
    /// Sealed messages whose counter was seen before.
    pub rejected_replayed: u64,
    /// Messages from a peer that is not a member, or whose sender field is not the peer
    /// that published it.
    pub rejected_not_member: u64,
    /// Bytes that were not a guild message.
    pub rejected_malformed: u64,
    /// Sealed messages under a key epoch this node did not hold, even after catching up.
    pub rejected_undecryptable: u64,
    /// Messages held until this node caught up with the coordinator (a sender or key epoch
    /// it did not know yet).
    pub messages_held: u64,
    /// Times this node caught up with the coordinator's membership or key.
    pub syncs: u64,
    /// Join requests refused (rate, capacity, admission policy).
    pub joins_refused: u64,
    /// Of those, refused by the admission policy (no or a bad invitation, not allowed).
    pub joins_refused_policy: u64,
    /// Join requests admitted.
    pub joins_admitted: u64,
    /// Members marked down for missing heartbeats.
    pub members_marked_down: u64,
    /// Heartbeats this node failed to publish (no peer on the guild's topic, ...).
    pub heartbeats_failed: u64,
    /// Successions: this node took over a guild whose coordinator fell silent, or followed
    /// a successor that did.
    pub handovers: u64,
    /// Times this node, coordinating, met a stronger signed claim to its guild (a successor
    /// that took over while it was silent or cut off, or a rival successor ranked before
    /// it) and stepped back to member.
    pub deferrals: u64,
    /// Writes of a guild to the data directory that failed.
    pub persist_failed: u64,
}

impl GuildStats {
    /// The counters as metric families (`guild_*`).
    pub fn families(&self, f: &mut zerostate_telemetry::metrics::Families) {
        const MESSAGES: &str = "guild_messages";
        const MESSAGES_HELP: &str = "Guild messages sealed and published (out) or opened (in).";
        f.counter_with(
            MESSAGES,
            MESSAGES_HELP,
            &[("direction", "out")],
            self.messages_sent,
        )
        .counter_with(
            MESSAGES,
            MESSAGES_HELP,
            &[("direction", "in")],
            self.messages_received,
        );
        const REJECTED: &str = "guild_messages_rejected";
        const REJECTED_HELP: &str = "Guild input refused, by reason.";
        for (reason, n) in [
            ("forged", self.rejected_forged),
            ("stale", self.rejected_stale),
            ("tampered", self.rejected_tampered),
            ("replayed", self.rejected_replayed),
            ("not_member", self.rejected_not_member),
            ("malformed", self.rejected_malformed),
            ("undecryptable", self.rejected_undecryptable),
        ] {
            f.counter_with(REJECTED, REJECTED_HELP, &[("reason", reason)], n);
        }
        const JOINS: &str = "guild_joins";
        const JOINS_HELP: &str = "Join requests answered, by result.";
        f.counter(
            "guild_messages_held",
            "Messages held until this node caught up with the coordinator.",
            self.messages_held,
        )
        .counter(
            "guild_syncs",
            "Times this node caught up with the coordinator's membership or key.",
            self.syncs,
        )
        .counter_with(
            JOINS,
            JOINS_HELP,
            &[("result", "admitted")],
            self.joins_admitted,
        )
        .counter_with(
            JOINS,
            JOINS_HELP,
            &[("result", "refused_policy")],
            self.joins_refused_policy,
        )
        .counter_with(
            JOINS,
            JOINS_HELP,
            &[("result", "refused_other")],
            self.joins_refused.saturating_sub(self.joins_refused_policy),
        )
        .counter(
            "guild_members_marked_down",
            "Members marked down for missing heartbeats.",
            self.members_marked_down,
        )
        .counter(
            "guild_heartbeats_failed",
            "Heartbeats this node failed to publish.",
            self.heartbeats_failed,
        )
        .counter(
            "guild_handovers",
            "Successions this node took part in: took over a silent coordinator's guild, or followed a successor that did.",
            self.handovers,
        )
        .counter(
            "guild_deferrals",
            "Times this node stepped back from coordinator to member before a stronger signed claim to its guild.",
            self.deferrals,
        )
        .counter(
            "guild_persist_failed",
            "Writes of a guild to the data directory that failed.",
            self.persist_failed,
        );
    }
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) messages_sent: AtomicU64,
    pub(super) messages_received: AtomicU64,
    pub(super) rejected_forged: AtomicU64,
    pub(super) rejected_stale: AtomicU64,
    pub(super) rejected_tampered: AtomicU64,
    pub(super) rejected_replayed: AtomicU64,
    pub(super) rejected_not_member: AtomicU64,
    pub(super) rejected_malformed: AtomicU64,
    pub(super) rejected_undecryptable: AtomicU64,
    pub(super) messages_held: AtomicU64,
    pub(super) syncs: AtomicU64,
    pub(super) joins_refused: AtomicU64,
    pub(super) joins_refused_policy: AtomicU64,
    pub(super) joins_admitted: AtomicU64,
    pub(super) members_marked_down: AtomicU64,
    pub(super) heartbeats_failed: AtomicU64,
    pub(super) handovers: AtomicU64,
    pub(super) deferrals: AtomicU64,
    pub(super) persist_failed: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> GuildStats {
        GuildStats {
            messages_sent: self.messages_sent.load(Relaxed),
            messages_received: self.messages_received.load(Relaxed),
            rejected_forged: self.rejected_forged.load(Relaxed),
            rejected_stale: self.rejected_stale.load(Relaxed),
            rejected_tampered: self.rejected_tampered.load(Relaxed),
            rejected_replayed: self.rejected_replayed.load(Relaxed),
            rejected_not_member: self.rejected_not_member.load(Relaxed),
            rejected_malformed: self.rejected_malformed.load(Relaxed),
            rejected_undecryptable: self.rejected_undecryptable.load(Relaxed),
            messages_held: self.messages_held.load(Relaxed),
            syncs: self.syncs.load(Relaxed),
            joins_refused: self.joins_refused.load(Relaxed),
            joins_refused_policy: self.joins_refused_policy.load(Relaxed),
            joins_admitted: self.joins_admitted.load(Relaxed),
            members_marked_down: self.members_marked_down.load(Relaxed),
            heartbeats_failed: self.heartbeats_failed.load(Relaxed),
            handovers: self.handovers.load(Relaxed),
            deferrals: self.deferrals.load(Relaxed),
            persist_failed: self.persist_failed.load(Relaxed),
        }
    }
}

pub(super) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_every_counter() {
        let c = Counters::default();
        bump(&c.rejected_replayed);
        bump(&c.rejected_replayed);
        bump(&c.joins_admitted);
        let s = c.snapshot();
        assert_eq!(s.rejected_replayed, 2);
        assert_eq!(s.joins_admitted, 1);
        assert_eq!(s.messages_sent, 0);
    }
}
