//! What this node knows of each peer: its connections, round-trip time, offences and
//! score, and the token bucket that bounds how fast it may send.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

use super::Driver;
use super::relays::is_relayed;
use crate::network::PeerInfo;

/// Peers remembered after they disconnect, so that an offender's score survives a
/// reconnect. Beyond this, disconnected peers are forgotten.
pub(super) const REMEMBERED_PEERS: usize = 4096;
/// What this node knows of a peer.
pub(super) struct PeerState {
    pub(super) connections: HashMap<ConnectionId, Multiaddr>,
    pub(super) rtt: Option<Duration>,
    pub(super) offences: u64,
    pub(super) app_score: f64,
    pub(super) tokens: f64,
    pub(super) refilled: Instant,
    pub(super) agent: Option<String>,
}

impl PeerState {
    pub(super) fn new(burst: u32) -> Self {
        Self {
            connections: HashMap::new(),
            rtt: None,
            offences: 0,
            app_score: 0.0,
            tokens: f64::from(burst),
            refilled: Instant::now(),
            agent: None,
        }
    }
}

impl Driver {
    pub(super) fn peer_infos(&self) -> Vec<PeerInfo> {
        let gossip = &self.swarm.behaviour().gossipsub;
        self.peers
            .iter()
            .filter(|(_, s)| !s.connections.is_empty())
            .map(|(peer, s)| PeerInfo {
                peer_id: peer.to_string(),
                addresses: s.connections.values().map(|a| a.to_string()).collect(),
                relayed: s.connections.values().all(is_relayed),
                rtt_ms: s.rtt.map(|d| d.as_secs_f64() * 1000.0),
                score: gossip.peer_score(peer),
                offences: s.offences,
                agent: s.agent.clone(),
            })
            .collect()
    }

    pub(super) fn peer(&mut self, peer: PeerId) -> &mut PeerState {
        let burst = self.config.peer_message_burst;
        self.peers
            .entry(peer)
            .or_insert_with(|| PeerState::new(burst))
    }

    /// Takes one token from the peer's bucket; false when it is sending too fast.
    pub(super) fn admit(&mut self, peer: PeerId) -> bool {
        let rate = f64::from(self.config.peer_messages_per_second);
        let burst = f64::from(self.config.peer_message_burst);
        let state = self.peer(peer);
        let now = Instant::now();
        let elapsed = now.duration_since(state.refilled).as_secs_f64();
        state.refilled = now;
        state.tokens = (state.tokens + elapsed * rate).min(burst);
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Lowers a peer's score for something it sent that this node dropped.
    pub(super) fn penalize(&mut self, peer: PeerId, reason: &str) {
        let penalty = self.config.penalty_per_offence;
        let state = self.peer(peer);
        state.offences += 1;
        state.app_score -= penalty;
        let (offences, score) = (state.offences, state.app_score);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, score);
        // One line for the first offence, then one per power of ten: a flood cannot flood
        // the log.
        if is_power_of_ten(offences) {
            tracing::warn!(
                peer.id = %peer,
                offences,
                "dropped a message from a peer: {reason} (its score is lowered; this is \
                 logged at 1, 10, 100, ... offences)"
            );
        }
    }
}

/// Whether `n` is 1, 10, 100, ...: when an offence is logged.
pub(super) fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offences_are_logged_at_powers_of_ten() {
        let logged: Vec<u64> = (1..=1000).filter(|&n| is_power_of_ten(n)).collect();
        assert_eq!(logged, [1, 10, 100, 1000]);
        assert!(!is_power_of_ten(0));
    }
}
