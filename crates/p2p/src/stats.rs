//! What the network counted.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::envelope::EnvelopeError;

/// How long gossip took from its author to this node, seconds (by the envelope's
/// timestamp, so clock skew between machines shows in it).
#[derive(Clone, Debug)]
pub struct DeliveryLatency(pub prometheus_client::metrics::histogram::Histogram);

impl Default for DeliveryLatency {
    fn default() -> Self {
        Self(prometheus_client::metrics::histogram::Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 14),
        ))
    }
}

/// Message types counted apart; past them, a type is counted as `other` (a peer chooses
/// the type, so the set of label values must stay bounded).
pub const MAX_COUNTED_TYPES: usize = 64;

/// Valid messages by type: `[in, out]` per type, at most [`MAX_COUNTED_TYPES`] types.
#[derive(Debug, Default)]
pub(crate) struct ByType(std::sync::Mutex<std::collections::BTreeMap<String, [u64; 2]>>);

impl ByType {
    /// Counts one message of `message_type`, received (`inbound`) or sent.
    pub(crate) fn count(&self, message_type: &str, inbound: bool) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = if map.contains_key(message_type) || map.len() < MAX_COUNTED_TYPES {
            message_type
        } else {
            "other"
        };
        // A type seen before is counted without allocating.
        match map.get_mut(key) {
            Some(slot) => slot[usize::from(!inbound)] += 1,
            None => {
                let mut slot = [0; 2];
                slot[usize::from(!inbound)] = 1;
                map.insert(key.to_owned(), slot);
            }
        }
    }

    /// `(type, in, out)` for every type counted.
    pub(crate) fn snapshot(&self) -> Vec<(String, u64, u64)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(t, [i, o])| (t.clone(), *i, *o)).collect()
    }
}

/// Counters of one node's network, shared with its handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) delivery: DeliveryLatency,
    pub(crate) by_type: ByType,
    gossip_published: AtomicU64,
    gossip_received: AtomicU64,
    requests_sent: AtomicU64,
    requests_received: AtomicU64,
    requests_failed: AtomicU64,
    dropped_oversized: AtomicU64,
    dropped_malformed: AtomicU64,
    dropped_unknown_version: AtomicU64,
    dropped_bad_type: AtomicU64,
    dropped_flood: AtomicU64,
    dropped_app_busy: AtomicU64,
    connections_established: AtomicU64,
    connections_closed: AtomicU64,
    connections_failed: AtomicU64,
    connections_denied: AtomicU64,
    dht_records_refused: AtomicU64,
}

/// A snapshot of the network's counters. Every "dropped" counter counts messages that
/// were thrown away and lowered the sending peer's score, except `dropped_app_busy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct NetworkStats {
    /// Gossip messages this node published.
    pub gossip_published: u64,
    /// Valid gossip messages delivered to this node's application.
    pub gossip_received: u64,
    /// Requests this node sent.
    pub requests_sent: u64,
    /// Valid requests this node received.
    pub requests_received: u64,
    /// Requests of this node that got no valid response (timeout, refusal, closed
    /// connection, malformed response).
    pub requests_failed: u64,
    /// Messages larger than `max_message_bytes`.
    pub dropped_oversized: u64,
    /// Bytes that were not an envelope.
    pub dropped_malformed: u64,
    /// Envelopes of a version this node does not speak.
    pub dropped_unknown_version: u64,
    /// Envelopes whose message type is not `[a-z0-9_]{1,64}`.
    pub dropped_bad_type: u64,
    /// Messages above a peer's rate limit.
    pub dropped_flood: u64,
    /// Valid messages dropped because the application's queue was full (the peer is not
    /// blamed).
    pub dropped_app_busy: u64,
    /// Connections opened.
    pub connections_established: u64,
    /// Connections closed.
    pub connections_closed: u64,
    /// Dials and incoming connections that failed.
    pub connections_failed: u64,
    /// Of those, connections refused because a connection limit was reached.
    pub connections_denied: u64,
    /// DHT records refused: not signed by their publisher, or for a key bound to another.
    pub dht_records_refused: u64,
}

impl NetworkStats {
    /// The counters as metric families (`p2p_*`).
    pub fn families(&self, f: &mut zerostate_telemetry::metrics::Families) {
        const MESSAGES: &str = "p2p_messages";
        const MESSAGES_HELP: &str = "Valid messages, by kind (gossip, request) and direction.";
        f.counter_with(
            MESSAGES,
            MESSAGES_HELP,
            &[("kind", "gossip"), ("direction", "out")],
            self.gossip_published,
        )
        .counter_with(
            MESSAGES,
            MESSAGES_HELP,
            &[("kind", "gossip"), ("direction", "in")],
            self.gossip_received,
        )
        .counter_with(
            MESSAGES,
            MESSAGES_HELP,
            &[("kind", "request"), ("direction", "out")],
            self.requests_sent,
        )
        .counter_with(
            MESSAGES,
            MESSAGES_HELP,
            &[("kind", "request"), ("direction", "in")],
            self.requests_received,
        )
        .counter(
            "p2p_requests_failed",
            "Requests of this node that got no valid response.",
            self.requests_failed,
        );
        const DROPPED: &str = "p2p_messages_dropped";
        const DROPPED_HELP: &str = "Messages thrown away, by reason.";
        for (reason, n) in [
            ("oversized", self.dropped_oversized),
            ("malformed", self.dropped_malformed),
            ("unknown_version", self.dropped_unknown_version),
            ("bad_type", self.dropped_bad_type),
            ("flood", self.dropped_flood),
            ("app_busy", self.dropped_app_busy),
        ] {
            f.counter_with(DROPPED, DROPPED_HELP, &[("reason", reason)], n);
        }
        const CONNECTIONS: &str = "p2p_connections";
        const CONNECTIONS_HELP: &str =
            "Connections, by event (established, closed, failed, denied by a limit).";
        for (event, n) in [
            ("established", self.connections_established),
            ("closed", self.connections_closed),
            ("failed", self.connections_failed),
            ("denied", self.connections_denied),
        ] {
            f.counter_with(CONNECTIONS, CONNECTIONS_HELP, &[("event", event)], n);
        }
        f.counter(
            "p2p_dht_records_refused",
            "DHT records refused (unsigned, or for a key bound to another publisher).",
            self.dht_records_refused,
        );
    }

    /// Messages dropped for the sender's fault.
    pub fn dropped_hostile(&self) -> u64 {
        self.dropped_oversized
            + self.dropped_malformed
            + self.dropped_unknown_version
            + self.dropped_bad_type
            + self.dropped_flood
    }
}

macro_rules! bump {
    ($($name:ident),* $(,)?) => {
        $(
            pub(crate) fn $name(&self) {
                self.$name.fetch_add(1, Relaxed);
            }
        )*
    };
}

impl Counters {
    bump!(
        gossip_published,
        gossip_received,
        requests_sent,
        requests_received,
        requests_failed,
        dropped_flood,
        dropped_app_busy,
        connections_established,
        connections_closed,
        connections_failed,
        connections_denied,
        dht_records_refused,
    );

    pub(crate) fn dropped(&self, error: &EnvelopeError) {
        match error {
            EnvelopeError::Oversized { .. } => &self.dropped_oversized,
            EnvelopeError::UnknownVersion(_) => &self.dropped_unknown_version,
            EnvelopeError::BadType(_) => &self.dropped_bad_type,
            _ => &self.dropped_malformed,
        }
        .fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> NetworkStats {
        NetworkStats {
            gossip_published: self.gossip_published.load(Relaxed),
            gossip_received: self.gossip_received.load(Relaxed),
            requests_sent: self.requests_sent.load(Relaxed),
            requests_received: self.requests_received.load(Relaxed),
            requests_failed: self.requests_failed.load(Relaxed),
            dropped_oversized: self.dropped_oversized.load(Relaxed),
            dropped_malformed: self.dropped_malformed.load(Relaxed),
            dropped_unknown_version: self.dropped_unknown_version.load(Relaxed),
            dropped_bad_type: self.dropped_bad_type.load(Relaxed),
            dropped_flood: self.dropped_flood.load(Relaxed),
            dropped_app_busy: self.dropped_app_busy.load(Relaxed),
            connections_established: self.connections_established.load(Relaxed),
            connections_closed: self.connections_closed.load(Relaxed),
            connections_failed: self.connections_failed.load(Relaxed),
            connections_denied: self.connections_denied.load(Relaxed),
            dht_records_refused: self.dht_records_refused.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_are_counted_apart_up_to_a_bound() {
        let by_type = ByType::default();
        by_type.count("task_run", true);
        by_type.count("task_run", false);
        by_type.count("task_run", false);
        for i in 0..MAX_COUNTED_TYPES + 10 {
            by_type.count(&format!("junk_{i}"), true);
        }
        let seen = by_type.snapshot();
        assert_eq!(seen.len(), MAX_COUNTED_TYPES + 1, "the bound, plus `other`");
        assert!(seen.contains(&("task_run".to_owned(), 1, 2)));
        let other = seen.iter().find(|(t, ..)| t == "other").expect("other");
        assert_eq!(other.1, 11, "the types past the bound");
    }
}
