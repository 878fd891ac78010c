//! Connection spans: `p2p.connection.establish` from the first sign of a connection
//! (dialling, or an incoming one) until it is established or fails, and
//! `p2p.connection.close` when it ends. At most [`OPEN_CONNECTION_SPANS`] are open at once;
//! beyond that, connections are not traced.

use std::collections::HashMap;
use std::time::Duration;

use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
use tracing::Span;
use zerostate_telemetry::SpanExt;
use zerostate_telemetry::names::span as names;

use super::relays::is_relayed;

/// Connection spans open at once; beyond this, connections are not traced.
pub(super) const OPEN_CONNECTION_SPANS: usize = 1024;

/// The establish spans of connections not yet established.
#[derive(Default)]
pub(super) struct ConnectionSpans {
    open: HashMap<ConnectionId, Span>,
}

impl ConnectionSpans {
    fn has_room(&self) -> bool {
        self.open.len() < OPEN_CONNECTION_SPANS
    }

    /// This node dials, to `peer` when known.
    pub(super) fn dialing(&mut self, id: ConnectionId, peer: Option<PeerId>) {
        if !self.has_room() {
            return;
        }
        let span = tracing::info_span!(
            parent: None,
            names::P2P_CONNECTION_ESTABLISH,
            direction = "outbound",
            peer.id = tracing::field::Empty,
            network.peer.address = tracing::field::Empty,
            relayed = tracing::field::Empty,
        );
        if let Some(p) = peer {
            span.record("peer.id", p.to_string());
        }
        self.open.insert(id, span);
    }

    /// Another node connects from `from`.
    pub(super) fn incoming(&mut self, id: ConnectionId, from: &Multiaddr) {
        if !self.has_room() {
            return;
        }
        let span = tracing::info_span!(
            parent: None,
            names::P2P_CONNECTION_ESTABLISH,
            direction = "inbound",
            peer.id = tracing::field::Empty,
            network.peer.address = %from,
            relayed = tracing::field::Empty,
        );
        self.open.insert(id, span);
    }

    /// The connection is up, with `peer` at `address`, after `took`.
    pub(super) fn established(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        address: &Multiaddr,
        took: Duration,
    ) {
        if let Some(span) = self.open.remove(&id) {
            span.record("peer.id", peer.to_string());
            span.record("network.peer.address", address.to_string());
            span.record("relayed", is_relayed(address));
            span.record_success(took);
        }
    }

    /// The connection failed before it was established.
    pub(super) fn failed(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        error: &(dyn std::error::Error + 'static),
    ) {
        if let Some(span) = self.open.remove(&id) {
            if let Some(p) = peer {
                span.record("peer.id", p.to_string());
            }
            span.record_error(error);
        }
    }

    /// An established connection ended; `cause` is `None` when this node closed it.
    pub(super) fn closed(peer: PeerId, address: &Multiaddr, cause: Option<String>) {
        let span = tracing::info_span!(
            parent: None,
            names::P2P_CONNECTION_CLOSE,
            peer.id = %peer,
            network.peer.address = %address,
            cause = tracing::field::Empty,
        );
        span.record("cause", cause.as_deref().unwrap_or("closed by this node"));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_spans_are_bounded_and_end_with_their_connection() {
        let mut spans = ConnectionSpans::default();
        let ids: Vec<ConnectionId> = (0..OPEN_CONNECTION_SPANS + 10)
            .map(|_| ConnectionId::new_unchecked(fastrand_id()))
            .collect();
        for id in &ids {
            spans.dialing(*id, None);
        }
        assert_eq!(spans.len(), OPEN_CONNECTION_SPANS);
        let address: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().expect("address");
        spans.established(ids[0], PeerId::random(), &address, Duration::from_millis(1));
        assert_eq!(spans.len(), OPEN_CONNECTION_SPANS - 1);
    }

    fn fastrand_id() -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
}
