//! Nodes of the payment protocol wired to each other in memory: each asks another by
//! calling its [`Payments::handle`], as the router does for a request off the network.
//! Faults are set per message type and destination: a request that never arrives, or an
//! answer lost after the request was handled.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use zerostate_p2p::PeerId;
use zerostate_p2p::identity::Keypair;
use zerostate_payment_protocol::types::Call;
use zerostate_payment_protocol::{
    Metrics, Misbehaviour, PaymentSettings, Payments, Reply, Transport,
};

/// What goes wrong with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The request never reaches its destination.
    Lost,
    /// The destination handles the request, and its answer is lost.
    AnswerLost,
}

/// The nodes, who is a member of the guild, and the faults to come.
#[derive(Default)]
pub(crate) struct Net {
    nodes: Mutex<HashMap<PeerId, Payments>>,
    members: Mutex<HashSet<PeerId>>,
    /// (destination, type, fault, how many more times).
    faults: Mutex<Vec<(PeerId, Call, Fault, usize)>>,
}

/// One node: its peer id and payment roles, and the directory its stores live in.
pub(crate) struct Node {
    pub(crate) peer: PeerId,
    pub(crate) payments: Payments,
    _dir: tempfile::TempDir,
}

impl Net {
    pub(crate) fn new() -> Arc<Net> {
        Arc::default()
    }

    /// A node whose key is made from `seed`; with `ledger`, it pays and is paid on that
    /// node's ledger; `runs_ledger`: it runs a ledger (with a faucet); `member`: it is in
    /// the guild.
    pub(crate) fn node(
        self: &Arc<Self>,
        seed: u8,
        ledger: Option<PeerId>,
        runs_ledger: bool,
        member: bool,
        misbehave: Misbehaviour,
    ) -> Node {
        let seed = [seed; 32];
        let peer = Keypair::ed25519_from_bytes(seed)
            .expect("32 bytes make an ed25519 key")
            .public()
            .to_peer_id();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let settings = PaymentSettings {
            ledger: ledger.map(|l| l.to_string()),
            deposit: Some(DEPOSIT),
            challenge_period_s: None,
        };
        let payments = Payments::open(
            Arc::new(Wire {
                net: self.clone(),
                me: peer,
            }),
            seed,
            dir.path(),
            &settings,
            runs_ledger,
            runs_ledger,
            Metrics::default(),
            misbehave,
        )
        .expect("the stores open");
        self.nodes
            .lock()
            .expect("no test thread panicked holding the lock")
            .insert(peer, payments.clone());
        if member {
            self.members
                .lock()
                .expect("no test thread panicked holding the lock")
                .insert(peer);
        }
        Node {
            peer,
            payments,
            _dir: dir,
        }
    }

    /// The next `times` messages of type `call` to `to` meet `fault`.
    pub(crate) fn fail(&self, to: PeerId, call: Call, fault: Fault, times: usize) {
        self.faults
            .lock()
            .expect("no test thread panicked holding the lock")
            .push((to, call, fault, times));
    }

    /// The fault the next message of type `call` to `to` meets, if any (and one fewer left).
    fn fault(&self, to: PeerId, call: Call) -> Option<Fault> {
        let mut faults = self
            .faults
            .lock()
            .expect("no test thread panicked holding the lock");
        let f = faults
            .iter_mut()
            .find(|(peer, c, _, left)| *peer == to && *c == call && *left > 0)?;
        f.3 -= 1;
        Some(f.2)
    }
}

/// What each new channel locks in these tests.
pub(crate) const DEPOSIT: u64 = 1_000;

/// A payer, a payee and a ledger with money for the payer: the usual cast.
pub(crate) struct Cast {
    pub(crate) net: Arc<Net>,
    /// Kept for its store: the ledger the others ask.
    _ledger: Node,
    pub(crate) payer: Node,
    pub(crate) payee: Node,
}

impl Cast {
    pub(crate) fn new() -> Cast {
        Self::with(Misbehaviour::default(), Misbehaviour::default(), true)
    }

    /// The cast with the payer and the payee told to misbehave so, and the payer a member
    /// of the payee's guild or not.
    pub(crate) fn with(payer: Misbehaviour, payee: Misbehaviour, payer_is_member: bool) -> Cast {
        let net = Net::new();
        let ledger = net.node(1, None, true, true, Misbehaviour::default());
        let payer = net.node(2, Some(ledger.peer), false, payer_is_member, payer);
        let payee = net.node(3, Some(ledger.peer), false, true, payee);
        ledger
            .payments
            .faucet(&payer.peer, 100 * DEPOSIT)
            .expect("the ledger's faucet funds the payer");
        Cast {
            net,
            _ledger: ledger,
            payer,
            payee,
        }
    }

    /// The payer's channel to the payee, locked on the ledger with room for `bill` (hex).
    pub(crate) async fn locked(&self, bill: u64) -> String {
        self.payer
            .payments
            .lock_for(self.payee.peer, bill)
            .await
            .expect("the payee signed and the ledger locked the channel")
            .expect("a ledger is configured")
    }

    /// The payee's one channel from the payer: (nonce, cumulative).
    pub(crate) fn payee_holds(&self) -> (u64, u64) {
        let channels = self
            .payee
            .payments
            .channels()
            .expect("the payee's channels");
        assert_eq!(channels.len(), 1, "one channel: {channels:?}");
        (channels[0].nonce, channels[0].cumulative)
    }
}

/// A receipt's hash for the `n`th task.
pub(crate) fn receipt(n: u8) -> [u8; 32] {
    [n; 32]
}

struct Wire {
    net: Arc<Net>,
    me: PeerId,
}

impl Transport for Wire {
    fn local_peer(&self) -> PeerId {
        self.me
    }

    fn ask(&self, peer: PeerId, call: Call, body: Vec<u8>) -> Reply<'_, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let fault = self.net.fault(peer, call);
            if fault == Some(Fault::Lost) {
                return Err(format!("{peer} did not answer {} (lost)", call.as_str()));
            }
            let target = self
                .net
                .nodes
                .lock()
                .expect("no test thread panicked holding the lock")
                .get(&peer)
                .cloned();
            let target = target.ok_or_else(|| format!("{peer} is not connected"))?;
            let answer = target.handle(self.me, call, body).await;
            if fault == Some(Fault::AnswerLost) {
                return Err(format!("the answer to {} was lost", call.as_str()));
            }
            answer.map_err(|why| format!("{peer} refused {}: {why}", call.as_str()))
        })
    }

    fn is_member(&self, peer: PeerId) -> Reply<'_, bool> {
        let member = self
            .net
            .members
            .lock()
            .expect("no test thread panicked holding the lock")
            .contains(&peer);
        Box::pin(async move { member })
    }
}
