//! How the payment protocol reaches other nodes. [`Payments`](crate::Payments) does no
//! network I/O of its own: it asks through a [`Transport`] and answers what
//! [`Payments::handle`](crate::Payments::handle) is given. A node wires it to its p2p
//! network and guilds ([`P2p`]); the unit tests wire nodes to each other in memory, and
//! lose or refuse messages on purpose.

use std::future::Future;
use std::pin::Pin;

use tracing::Instrument;
use zerostate_p2p::{IncomingRequest, Network, PeerId};
use zerostate_telemetry::{SpanExt, error_chain};

use crate::Payments;
use crate::types::{self, Call};

/// A future a [`Transport`] returns.
pub type Reply<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the payment protocol needs of the network.
pub trait Transport: Send + Sync + 'static {
    /// This node's peer id.
    fn local_peer(&self) -> PeerId;

    /// Sends `peer` a request of type `call`: the payload of its positive answer
    /// ([`types::OK`]), or why there was none (its refusal, or what the network said).
    fn ask(&self, peer: PeerId, call: Call, body: Vec<u8>) -> Reply<'_, Result<Vec<u8>, String>>;

    /// Whether `peer` is a member of a guild this node is in: only they may open channels
    /// to it.
    fn is_member(&self, peer: PeerId) -> Reply<'_, bool>;
}

/// The transport of a node: direct requests over its p2p network, membership from its
/// guilds.
pub struct P2p {
    network: Network,
    guilds: zerostate_guild::Guilds,
}

impl P2p {
    /// Asks over `network`; members are those of `guilds`.
    pub fn new(network: Network, guilds: zerostate_guild::Guilds) -> Self {
        Self { network, guilds }
    }
}

impl Transport for P2p {
    fn local_peer(&self) -> PeerId {
        self.network.peer_id()
    }

    fn ask(&self, peer: PeerId, call: Call, body: Vec<u8>) -> Reply<'_, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let answer = self
                .network
                .request(peer, vec![], call.as_str(), body)
                .await
                .map_err(|e| error_chain(&e))?;
            if answer.message_type != types::OK {
                return Err(format!(
                    "{peer} refused {}: {}",
                    call.as_str(),
                    String::from_utf8_lossy(&answer.payload)
                ));
            }
            Ok(answer.payload)
        })
    }

    fn is_member(&self, peer: PeerId) -> Reply<'_, bool> {
        Box::pin(self.guilds.shares_a_guild_with(peer))
    }
}

/// The payment protocol as a node's router serves it: each request answered by
/// [`Payments::handle`] and the answer sent back over `network`.
#[derive(Clone)]
pub struct Served {
    payments: Payments,
    network: Network,
}

impl Payments {
    /// This node's payment protocol, answering over `network`.
    pub fn served_on(&self, network: Network) -> Served {
        Served {
            payments: self.clone(),
            network,
        }
    }
}

impl zerostate_p2p::ProtocolHandler for Served {
    const NAME: &'static str = "payments";
    const REQUESTS: &'static [&'static str] = Call::TYPES;

    async fn request(&self, request: IncomingRequest) {
        let span = request.span.clone();
        let answer = match Call::of(&request.envelope.message_type) {
            Some(call) => {
                let payload = request.envelope.payload.clone();
                self.payments
                    .handle(request.peer, call, payload)
                    .instrument(span.clone())
                    .await
            }
            None => Err("not a request of the payment protocol".to_owned()),
        };
        let (kind, body) = match answer {
            Ok(body) => (types::OK, body),
            Err(why) => {
                span.record_error(&zerostate_p2p::Reason(why.clone()));
                (zerostate_p2p::REFUSAL, why.into_bytes())
            }
        };
        if let Err(e) = self.network.respond(request, kind, body).await {
            tracing::debug!("answering a payment request: {}", error_chain(&e));
        }
    }
}
