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
    /// The destination handles the request, and a digit of its answer is changed on the
    /// way (a signed answer's words, not its signature).
    Tampered,
}

/// The nodes, who is a member of the guild, and the faults to come.
#[derive(Default)]
pub(crate) struct Net {
    nodes: Mutex<HashMap<PeerId, Payments>>,
    members: Mutex<HashSet<PeerId>>,
    /// (destination, type, fault, how many more times).
    faults: Mutex<Vec<(PeerId, Call, Fault, usize)>>,
    /// The ledger's challenge period, seconds (the default when `None`).
    challenge_period_s: Mutex<Option<u64>>,
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
        let settings = PaymentSettings {
            ledger: ledger.map(|l| l.to_string()),
            deposit: Some(DEPOSIT),
            challenge_period_s: *self
                .challenge_period_s
                .lock()
                .expect("no test thread panicked holding the lock"),
            ..PaymentSettings::default()
        };
        self.node_with(seed, &settings, runs_ledger, member, misbehave, None)
    }

    /// A node whose key is made from `seed`, on `settings`, settling on `chain` when given.
    pub(crate) fn node_with(
        self: &Arc<Self>,
        seed: u8,
        settings: &PaymentSettings,
        runs_ledger: bool,
        member: bool,
        misbehave: Misbehaviour,
        chain: Option<zerostate_chain::Chain>,
    ) -> Node {
        let seed = [seed; 32];
        let peer = Keypair::ed25519_from_bytes(seed)
            .expect("32 bytes make an ed25519 key")
            .public()
            .to_peer_id();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let payments = Payments::open(
            Arc::new(Wire {
                net: self.clone(),
                me: peer,
            }),
            seed,
            dir.path(),
            settings,
            runs_ledger,
            runs_ledger,
            Metrics::default(),
            misbehave,
            chain,
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

    /// Takes `peer` off the network: nothing reaches it from now on.
    pub(crate) fn vanish(&self, peer: PeerId) {
        self.nodes
            .lock()
            .expect("no test thread panicked holding the lock")
            .remove(&peer);
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
    /// The node that runs the ledger the others ask.
    pub(crate) ledger: Node,
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
        Self::made(Net::new(), payer, payee, payer_is_member)
    }

    /// The usual cast, on a ledger whose challenge period is `seconds`.
    pub(crate) fn with_challenge_period(seconds: u64) -> Cast {
        let net = Net::new();
        *net.challenge_period_s
            .lock()
            .expect("no test thread panicked holding the lock") = Some(seconds);
        Self::made(net, Misbehaviour::default(), Misbehaviour::default(), true)
    }

    /// A ledger, a payer it funds with `funds` and a payee, channels locking `deposit`.
    #[allow(dead_code, reason = "benches/settlement.rs uses it")]
    pub(crate) fn with_deposit(deposit: u64, funds: u64) -> Cast {
        let net = Net::new();
        let ledger = net.node(1, None, true, true, Misbehaviour::default());
        let settings = PaymentSettings {
            ledger: Some(ledger.peer.to_string()),
            deposit: Some(deposit),
            ..PaymentSettings::default()
        };
        let payer = net.node_with(2, &settings, false, true, Misbehaviour::default(), None);
        let payee = net.node_with(3, &settings, false, true, Misbehaviour::default(), None);
        ledger
            .payments
            .faucet(&payer.peer, funds)
            .expect("the ledger's faucet funds the payer");
        Cast {
            net,
            ledger,
            payer,
            payee,
        }
    }

    fn made(
        net: Arc<Net>,
        payer: Misbehaviour,
        payee: Misbehaviour,
        payer_is_member: bool,
    ) -> Cast {
        let ledger = net.node(1, None, true, true, Misbehaviour::default());
        let payer = net.node(2, Some(ledger.peer), false, payer_is_member, payer);
        let payee = net.node(3, Some(ledger.peer), false, true, payee);
        ledger
            .payments
            .faucet(&payer.peer, 100 * DEPOSIT)
            .expect("the ledger's faucet funds the payer");
        Cast {
            net,
            ledger,
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

    /// The payer pays the payee `amount` for receipt `n`.
    pub(crate) async fn pay(
        &self,
        amount: u64,
        n: u8,
    ) -> zerostate_payment_protocol::PaymentRecord {
        self.payer
            .payments
            .pay(self.payee.peer, amount, receipt(n))
            .await
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
            let answer =
                answer.map_err(|why| format!("{peer} refused {}: {why}", call.as_str()))?;
            if fault == Some(Fault::Tampered) {
                let mut signed: serde_json::Value =
                    serde_json::from_slice(&answer).expect("a signed answer");
                let words = signed["answer"].as_str().expect("its words").to_owned();
                let at = words.find(|c: char| c.is_ascii_digit()).expect("a digit");
                let digit = if &words[at..=at] == "9" { "8" } else { "9" };
                signed["answer"] = format!("{}{digit}{}", &words[..at], &words[at + 1..]).into();
                return Ok(signed.to_string().into_bytes());
            }
            Ok(answer)
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

/// A chain (a real anvil) with the channel contract, and a payer and a payee that settle on
/// it, each with a funded settlement key of its own.
pub(crate) struct ChainCast {
    pub(crate) anvil: zerostate_chain::Anvil,
    /// The faucet's connection: reads the chain for the test.
    pub(crate) faucet: zerostate_chain::Chain,
    pub(crate) net: Arc<Net>,
    pub(crate) payer: Node,
    pub(crate) payee: Node,
}

impl ChainCast {
    /// The cast, the payer misbehaving so, opening channels of `deposit` with a challenge
    /// period of `period` seconds; `None` when anvil is not on `PATH` (under `CI=true`
    /// that fails).
    pub(crate) async fn start(payer: Misbehaviour, period: u64, deposit: u64) -> Option<Self> {
        use zerostate_chain::{Anvil, Chain};
        if !zerostate_chain::anvil_for_tests() {
            return None;
        }
        let anvil = Anvil::start(31337, None).await.expect("anvil starts");
        let (contract, _) = Chain::deploy(anvil.url(), &anvil.dev_key())
            .await
            .expect("the contract deploys");
        let faucet = Chain::connect(anvil.url(), contract, anvil.dev_key(), 1)
            .await
            .expect("the faucet connects");
        let net = Net::new();
        let settings = PaymentSettings {
            chain: Some(anvil.url().to_owned()),
            contract: Some(contract.to_string()),
            deposit: Some(deposit),
            challenge_period_s: Some(period),
            ..PaymentSettings::default()
        };
        let mut nodes = Vec::new();
        for (seed, misbehave) in [(2, payer), (3, Misbehaviour::default())] {
            let key = anvil.funded_key(&faucet, 10).await.expect("funded");
            let chain = Chain::connect(anvil.url(), contract, key, 1)
                .await
                .expect("a node connects");
            nodes.push(net.node_with(seed, &settings, false, true, misbehave, Some(chain)));
        }
        let payee = nodes.pop().expect("two nodes");
        let payer = nodes.pop().expect("two nodes");
        Some(ChainCast {
            anvil,
            faucet,
            net,
            payer,
            payee,
        })
    }
}
