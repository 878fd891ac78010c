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
/// reconnect. Beyond this, the disconnected peers with the fewest offences are forgotten
/// first: a burst of new identities cannot wipe what this node knows of offenders.
pub(super) const REMEMBERED_PEERS: usize = 4096;
/// What this node knows of a peer.
pub(super) struct PeerState {
    pub(super) connections: HashMap<ConnectionId, Multiaddr>,
    pub(super) rtt: Option<Duration>,
    pub(super) offences: u64,
    /// This node's own score of the peer (zero or below), as of `scored`; it decays toward
    /// zero with the configured half-life.
    pub(super) app_score: f64,
    pub(super) scored: Instant,
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
            scored: Instant::now(),
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

    /// Takes one token from the bucket of `peer` (a message's signed author, or the peer
    /// that sent a request); false when it is sending too fast.
    pub(super) fn admit(&mut self, peer: PeerId) -> bool {
        let rate = f64::from(self.config.peer_messages_per_second);
        let burst = f64::from(self.config.peer_message_burst);
        if !self.peers.contains_key(&peer) && self.peers.len() >= REMEMBERED_PEERS {
            self.forget_least_offending();
        }
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

    /// Lowers a peer's score for something it sent (or authored) that this node dropped.
    pub(super) fn penalize(&mut self, peer: PeerId, reason: &str) {
        let penalty = self.config.penalty_per_offence;
        let half_life = self.config.penalty_half_life();
        let now = Instant::now();
        let state = self.peer(peer);
        state.offences += 1;
        state.app_score =
            decayed(state.app_score, now.duration_since(state.scored), half_life) - penalty;
        state.scored = now;
        let (offences, score) = (state.offences, state.app_score);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, score);
        // One line for the first offence, then one per power of ten: a flood cannot flood
        // the log.
        if zerostate_telemetry::is_power_of_ten(offences) {
            tracing::warn!(
                peer.id = %peer,
                offences,
                "dropped a message from a peer: {reason} (its score is lowered; this is \
                 logged at 1, 10, 100, ... offences)"
            );
        }
    }
}

impl Driver {
    /// Lets every penalty decay toward zero and tells gossipsub the new scores.
    pub(super) fn decay_scores(&mut self) {
        let half_life = self.config.penalty_half_life();
        let now = Instant::now();
        let mut changed = Vec::new();
        for (peer, state) in &mut self.peers {
            if state.app_score >= 0.0 {
                continue;
            }
            let mut score = decayed(state.app_score, now.duration_since(state.scored), half_life);
            if score > -0.5 {
                score = 0.0;
            }
            state.app_score = score;
            state.scored = now;
            changed.push((*peer, score));
        }
        let gossip = &mut self.swarm.behaviour_mut().gossipsub;
        for (peer, score) in changed {
            gossip.set_application_score(&peer, score);
        }
    }

    /// Forgets disconnected peers, those with the fewest offences first, until a tenth of
    /// the room is free again.
    pub(super) fn forget_least_offending(&mut self) {
        for peer in least_offending(&self.peers, REMEMBERED_PEERS * 9 / 10) {
            self.peers.remove(&peer);
        }
    }
}

/// `score` after `elapsed` of decay with `half_life`.
pub(super) fn decayed(score: f64, elapsed: Duration, half_life: Duration) -> f64 {
    score * 0.5f64.powf(elapsed.as_secs_f64() / half_life.as_secs_f64().max(0.001))
}

/// The disconnected peers to forget so that at most `keep` remain: the fewest offences
/// first.
pub(super) fn least_offending(peers: &HashMap<PeerId, PeerState>, keep: usize) -> Vec<PeerId> {
    let excess = peers.len().saturating_sub(keep);
    let mut idle: Vec<(u64, PeerId)> = peers
        .iter()
        .filter(|(_, s)| s.connections.is_empty())
        .map(|(p, s)| (s.offences, *p))
        .collect();
    idle.sort_unstable_by_key(|(offences, _)| *offences);
    idle.into_iter().take(excess).map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_new_identities_does_not_wipe_the_offenders() {
        let mut peers = HashMap::new();
        let offenders: Vec<PeerId> = (0..10).map(|_| PeerId::random()).collect();
        for p in &offenders {
            let mut s = PeerState::new(10);
            s.offences = 3;
            peers.insert(*p, s);
        }
        for _ in 0..REMEMBERED_PEERS {
            peers.insert(PeerId::random(), PeerState::new(10));
        }
        let forget = least_offending(&peers, REMEMBERED_PEERS * 9 / 10);
        assert_eq!(forget.len(), peers.len() - REMEMBERED_PEERS * 9 / 10);
        assert!(offenders.iter().all(|o| !forget.contains(o)));
    }

    #[test]
    fn a_penalty_halves_every_half_life() {
        let h = Duration::from_secs(60);
        assert!((decayed(-80.0, h, h) + 40.0).abs() < 1e-9);
        assert!((decayed(-80.0, 2 * h, h) + 20.0).abs() < 1e-9);
        assert_eq!(decayed(-80.0, Duration::ZERO, h), -80.0);
    }
}
