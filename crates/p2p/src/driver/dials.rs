//! Dials a caller waits for: to an address, or afresh to a peer whose connections may have
//! stalled.

use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};

use super::*;

impl Driver {
    /// Starts a dial whose outcome `tx` waits for; `what` names it in an error.
    pub(super) fn dial_waited(
        &mut self,
        opts: DialOpts,
        what: String,
        tx: oneshot::Sender<Result<PeerId, NetworkError>>,
    ) {
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.insert(id, (what, tx));
            }
            Err(e) => {
                let _ = tx.send(Err(NetworkError::Dial {
                    address: what,
                    source: Box::new(e),
                }));
            }
        }
    }

    /// Closes every connection to `peer`, abandons the dials to it in progress and dials it
    /// on a new connection. A connection that stalled (a cut link, a sleeping laptop) stays
    /// open until TCP gives up, minutes later, and every request to the peer would ride it;
    /// a dial still in progress may be stuck behind a lost SYN. Both go.
    pub(super) fn dial_afresh(
        &mut self,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        tx: oneshot::Sender<Result<PeerId, NetworkError>>,
    ) {
        let _ = self.swarm.disconnect_peer_id(peer);
        let opts = DialOpts::peer_id(peer)
            .addresses(addresses)
            .extend_addresses_through_behaviour()
            .condition(PeerCondition::Always)
            .build();
        self.dial_waited(opts, format!("/p2p/{peer}"), tx);
    }
}
