//! Staying connected to the bootstrap nodes: when the last connection to one closes (it
//! restarted, or a partition cut it), the driver dials it again, after 1 s and then backing
//! off to 10 s, until it is back. A node restarted on its old address is found again within
//! a second, without waiting for anyone's DHT.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

use super::*;

/// First wait before a bootstrap node is dialled again.
const FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two dials of a bootstrap node that stays away.
const LONGEST: Duration = Duration::from_secs(10);

/// When each bootstrap node is dialled next, and how long the wait after that is.
#[derive(Debug, Default)]
pub(super) struct Redial {
    due: HashMap<PeerId, (Multiaddr, Instant, Duration)>,
}

impl Redial {
    /// Schedules `peer` at `address` to be dialled again after [`FIRST`], unless it already is.
    pub(super) fn lost(&mut self, peer: PeerId, address: Multiaddr, now: Instant) {
        self.due
            .entry(peer)
            .or_insert((address, now + FIRST, FIRST));
    }

    /// Whether any bootstrap node waits to be dialled again (the driver's redial timer
    /// runs only then: an idle node does not wake for it).
    pub(super) fn waiting(&self) -> bool {
        !self.due.is_empty()
    }

    /// `peer` is connected again: no more dials.
    pub(super) fn back(&mut self, peer: &PeerId) {
        self.due.remove(peer);
    }

    /// The addresses to dial now; each is scheduled again with a doubled wait.
    pub(super) fn due(&mut self, now: Instant) -> Vec<Multiaddr> {
        let mut dial = Vec::new();
        for (address, next, wait) in self.due.values_mut() {
            if now >= *next {
                dial.push(address.clone());
                *wait = (*wait * 2).min(LONGEST);
                *next = now + *wait;
            }
        }
        dial
    }
}

impl Driver {
    /// A connection to `peer` closed: if it was the last one to a bootstrap node, that
    /// node is dialled again until it is back.
    pub(super) fn maybe_redial(&mut self, peer: PeerId) {
        if !self.bootstrap_peers.contains(&peer) || self.swarm.is_connected(&peer) {
            return;
        }
        let address = self
            .config
            .bootstrap
            .iter()
            .find(|a| crate::peer_of(a) == Some(peer))
            .cloned();
        if let Some(address) = address {
            self.redial.lost(peer, address, Instant::now());
        }
    }

    /// Dials the bootstrap nodes whose time has come.
    pub(super) fn redial_due(&mut self) {
        for address in self.redial.due(Instant::now()) {
            tracing::debug!(%address, "dialling a bootstrap node again");
            if let Err(e) = self.swarm.dial(address.clone()) {
                tracing::debug!(%address, "dialling a bootstrap node again: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_bootstrap_node_is_dialled_after_a_second_then_less_often_until_back() {
        let mut r = Redial::default();
        let peer = PeerId::random();
        let address: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().expect("address");
        let t = Instant::now();
        assert!(!r.waiting());
        r.lost(peer, address.clone(), t);
        assert!(r.waiting());
        assert!(r.due(t).is_empty());
        assert_eq!(r.due(t + FIRST), vec![address.clone()]);
        assert!(r.due(t + FIRST).is_empty(), "then after 2 s");
        assert_eq!(r.due(t + FIRST * 3).len(), 1);
        for i in 4..20 {
            r.due(t + FIRST * 10 * i);
        }
        let (_, next, wait) = r.due.values().next().expect("still due").clone();
        assert_eq!(wait, LONGEST);
        assert!(next > t);
        r.back(&peer);
        assert!(!r.waiting());
        assert!(r.due(t + FIRST * 1000).is_empty());
    }
}
