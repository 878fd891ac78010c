//! Relay traffic: spans for reservations and circuits this node serves (as a relay) or
//! uses (behind one), and telling relayed addresses apart.

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, relay};
use tracing::Span;
use zerostate_telemetry::SpanExt;
use zerostate_telemetry::names::p2p_relay;

fn relay_span(operation: &str, peer: PeerId, other: Option<PeerId>) -> Span {
    tracing::info_span!(
        parent: None,
        "p2p.relay",
        otel.name = p2p_relay(operation),
        peer.id = %peer,
        relay.destination = other.map(|p| p.to_string()),
    )
}

#[allow(deprecated)]
pub(super) fn relay_server_event(event: relay::Event) {
    match event {
        relay::Event::ReservationReqAccepted { src_peer_id, .. } => {
            drop(relay_span("reservation", src_peer_id, None));
        }
        relay::Event::ReservationReqDenied { src_peer_id, .. } => {
            let span = relay_span("reservation", src_peer_id, None);
            span.record_error(&RelayRefused("reservation denied (limits reached)"));
        }
        relay::Event::CircuitReqAccepted {
            src_peer_id,
            dst_peer_id,
        } => {
            drop(relay_span("circuit", src_peer_id, Some(dst_peer_id)));
        }
        relay::Event::CircuitReqDenied {
            src_peer_id,
            dst_peer_id,
            ..
        } => {
            let span = relay_span("circuit", src_peer_id, Some(dst_peer_id));
            span.record_error(&RelayRefused(
                "circuit denied (destination has no reservation, or limits reached)",
            ));
        }
        relay::Event::CircuitClosed {
            src_peer_id,
            dst_peer_id,
            error,
        } => {
            let span = relay_span("circuit_close", src_peer_id, Some(dst_peer_id));
            if let Some(e) = error {
                span.record_error(&e);
            }
        }
        _ => {}
    }
}

pub(super) fn relay_client_event(event: relay::client::Event) {
    match event {
        relay::client::Event::ReservationReqAccepted {
            relay_peer_id,
            renewal,
            ..
        } => {
            if !renewal {
                tracing::info!(relay = %relay_peer_id, "reachable through a relay");
            }
            drop(relay_span("reservation", relay_peer_id, None));
        }
        relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
            drop(relay_span("circuit", relay_peer_id, None));
        }
        relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
            drop(relay_span("circuit", src_peer_id, None));
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RelayRefused(&'static str);

/// Whether an address goes through a relay circuit.
pub(super) fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_circuit_address_is_relayed_and_a_direct_one_is_not() {
        let direct: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().expect("address");
        let circuit: Multiaddr =
            "/ip4/127.0.0.1/tcp/4002/p2p/12D3KooWEYKcH4EjVKVvohdHZGqfCnFjxmP6bSZNWgCwwXEpSc8t/p2p-circuit"
                .parse()
                .expect("address");
        assert!(!is_relayed(&direct));
        assert!(is_relayed(&circuit));
    }
}
