//! Why this node refused a piece of guild traffic. Every refusal is counted and ends the
//! message's receive span — which sits in the sender's trace — with an error naming the
//! reason, so the trace of a message shows who refused it and why.

use tracing::Span;
use zerostate_telemetry::SpanExt;

use super::Service;
use super::stats::bump;

/// Why a message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum Refusal {
    /// The sender is not in this node's membership, even after catching up with the
    /// coordinator.
    #[error("refused: the sender is not a member of the guild")]
    NotMember,
    /// The sender field names another peer than the one that published the message.
    #[error("refused: the message claims another sender than its publisher")]
    WrongSender,
    /// More messages held for a catch-up than the bound.
    #[error("refused: too many messages already wait for this node to catch up")]
    HoldFull,
    /// Sealed under a key epoch this node does not hold, even after catching up.
    #[error("refused: sealed under key epoch {0}, which this node does not hold")]
    UnknownEpoch(u32),
    /// A counter seen before, or below the sender's window.
    #[error("refused: a replay (the sender's counter was seen before or is too old)")]
    Replayed,
    /// Did not open under the guild key.
    #[error("refused: the message does not open under the guild key (tampered)")]
    Tampered,
    /// Not a guild message.
    #[error("refused: malformed")]
    Malformed,
    /// A membership update or dissolution the coordinator did not sign.
    #[error("refused: not signed by the coordinator")]
    Forged,
    /// A membership update or dissolution older than the membership held.
    #[error("refused: older than the membership this node holds")]
    Stale,
}

impl Service {
    /// Counts `why` and ends `span` (the message's receive span) with it as an error.
    pub(super) fn refuse(&self, span: &Span, guild: &str, why: Refusal) {
        let c = &self.counters;
        bump(match why {
            Refusal::NotMember | Refusal::WrongSender | Refusal::HoldFull => &c.rejected_not_member,
            Refusal::UnknownEpoch(_) => &c.rejected_undecryptable,
            Refusal::Replayed => &c.rejected_replayed,
            Refusal::Tampered => &c.rejected_tampered,
            Refusal::Malformed => &c.rejected_malformed,
            Refusal::Forged => &c.rejected_forged,
            Refusal::Stale => &c.rejected_stale,
        });
        let _in = span.enter();
        if why == Refusal::Stale {
            // Gossip reorders: a notice older than the one held is ordinary on a healthy
            // network. Counted, and an event on the span, not an error.
            tracing::info!(guild.id = guild, "{why}");
        } else {
            span.record_error(&why);
            tracing::debug!(guild.id = guild, "{why}");
        }
    }
}
