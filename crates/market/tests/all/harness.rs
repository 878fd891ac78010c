//! Market nodes wired to each other in memory, with their payments: a request is a call of
//! the other node's [`Tasks::handle`] (or `Payments::handle`), as the router makes it for a
//! request off the network; a guild message is put on every other member's feed. Faults are
//! set per destination and message type: an answer lost after the request was handled,
//! which the asker sees as a closed connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use zerostate_execution::{Engine, EngineOptions, ExecutorKey, Limits};
use zerostate_guild::{GuildInfo, GuildMessage, GuildStatus, MemberInfo};
use zerostate_market::requester::Submission;
use zerostate_market::wire::{Call, ModuleSource};
use zerostate_market::{
    Answer, Incoming, Metrics, Misbehaviour, Reply, TaskRecord, TaskSettings, Tasks, Transport,
};
use zerostate_p2p::identity::Keypair;
use zerostate_p2p::{Multiaddr, PeerId};
use zerostate_payment_protocol::types::Call as PaymentCall;
use zerostate_payment_protocol::{PaymentSettings, Payments};

/// The guild every node is in.
pub(crate) const GUILD: &str = "g1";

/// What the ledger's faucet gives a requester.
const FUNDS: u64 = 1_000_000_000;

/// One node of the network.
struct Wired {
    tasks: Option<Tasks>,
    payments: Payments,
    feed: broadcast::Sender<GuildMessage>,
}

/// The nodes, the guild's members (the coordinator first), and the faults to come.
#[derive(Default)]
pub(crate) struct Net {
    nodes: Mutex<HashMap<PeerId, Wired>>,
    members: Mutex<Vec<PeerId>>,
    /// (destination, message type, answers still to lose).
    lost_answers: Mutex<Vec<(PeerId, &'static str, usize)>>,
    /// Requests of each type each node was asked, by (destination, type).
    asked: Mutex<HashMap<(PeerId, String), usize>>,
    _dirs: Mutex<Vec<tempfile::TempDir>>,
}

/// A node: its peer id and its market.
pub(crate) struct Node {
    pub(crate) peer: PeerId,
    pub(crate) tasks: Tasks,
    pub(crate) payments: Payments,
}

impl Net {
    /// A network with a ledger node (the guild's coordinator, running no tasks); the
    /// ledger's peer id.
    pub(crate) fn new() -> (Arc<Net>, PeerId) {
        let net = Arc::new(Net::default());
        let ledger = peer_of(0);
        net.add(
            0,
            ledger,
            true,
            TaskSettings {
                execute: false,
                ..TaskSettings::default()
            },
            Misbehaviour::default(),
        );
        (net, ledger)
    }

    /// Node `seed` in the guild, paying and paid through `ledger`, with `settings` and
    /// `misbehave`; funded when it runs no tasks (a requester).
    pub(crate) fn node(
        self: &Arc<Self>,
        seed: u8,
        ledger: PeerId,
        settings: TaskSettings,
        misbehave: Misbehaviour,
    ) -> Node {
        let requester = !settings.execute;
        let node = self.add(seed, ledger, false, settings, misbehave);
        if requester {
            let ledger = self.payments(ledger);
            ledger.faucet(&node.peer, FUNDS).expect("the faucet pays");
        }
        node
    }

    fn add(
        self: &Arc<Self>,
        seed: u8,
        ledger: PeerId,
        runs_ledger: bool,
        settings: TaskSettings,
        misbehave: Misbehaviour,
    ) -> Node {
        let key = [seed + 1; 32];
        let peer = peer_of(seed);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let wire = Arc::new(Wire {
            net: self.clone(),
            me: peer,
        });
        let payments = Payments::open(
            wire.clone(),
            key,
            dir.path(),
            &PaymentSettings {
                ledger: Some(ledger.to_string()),
                deposit: Some(10_000),
                ..PaymentSettings::default()
            },
            runs_ledger,
            runs_ledger,
            zerostate_payment_protocol::Metrics::default(),
            zerostate_payment_protocol::Misbehaviour::default(),
            None,
        )
        .expect("payments open");
        let (feed, _) = broadcast::channel(256);
        self.members.lock().expect("members").push(peer);
        self.nodes.lock().expect("nodes").insert(
            peer,
            Wired {
                tasks: None,
                payments: payments.clone(),
                feed,
            },
        );
        let engine =
            Engine::new(EngineOptions::default(), ExecutorKey::from_seed(key)).expect("an engine");
        let tasks = Tasks::start(
            &format!("node-{}", key[0]),
            wire,
            Arc::new(engine),
            payments.clone(),
            settings,
            Metrics::default(),
            misbehave,
        );
        if let Some(w) = self.nodes.lock().expect("nodes").get_mut(&peer) {
            w.tasks = Some(tasks.clone());
        }
        self._dirs.lock().expect("dirs").push(dir);
        Node {
            peer,
            tasks,
            payments,
        }
    }

    fn payments(&self, peer: PeerId) -> Payments {
        self.nodes.lock().expect("nodes")[&peer].payments.clone()
    }

    /// The next `count` answers of `peer` to requests of type `kind` are lost.
    pub(crate) fn lose_answers(&self, peer: PeerId, kind: &'static str, count: usize) {
        self.lost_answers
            .lock()
            .expect("faults")
            .push((peer, kind, count));
    }

    /// How many requests of type `kind` `peer` was asked.
    pub(crate) fn asked(&self, peer: PeerId, kind: &str) -> usize {
        let asked = self.asked.lock().expect("asked");
        asked.get(&(peer, kind.to_owned())).copied().unwrap_or(0)
    }

    fn answer_lost(&self, peer: PeerId, kind: &str) -> bool {
        let mut faults = self.lost_answers.lock().expect("faults");
        match faults
            .iter_mut()
            .find(|(p, k, left)| *p == peer && *k == kind && *left > 0)
        {
            Some(fault) => {
                fault.2 -= 1;
                true
            }
            None => false,
        }
    }

    fn guild_as_seen_by(&self, me: PeerId) -> GuildInfo {
        let members = self.members.lock().expect("members").clone();
        let coordinator = members.first().map(ToString::to_string).unwrap_or_default();
        GuildInfo {
            id: GUILD.to_owned(),
            name: GUILD.to_owned(),
            status: if coordinator == me.to_string() {
                GuildStatus::Coordinator
            } else {
                GuildStatus::Member
            },
            reason: None,
            coordinator,
            members: members
                .iter()
                .map(|p| MemberInfo {
                    peer_id: p.to_string(),
                    up: true,
                    last_heard_ms: 0,
                })
                .collect(),
            version: 1,
            key_epoch: 0,
            topic: format!("zerostate/guild/{GUILD}"),
            ciphertexts_seen: 0,
            undecryptable: 0,
            term: 0,
            successors: Vec::new(),
            handover: false,
        }
    }
}

/// The peer id of node `seed`.
fn peer_of(seed: u8) -> PeerId {
    Keypair::ed25519_from_bytes([seed + 1; 32])
        .expect("32 bytes make an ed25519 key")
        .public()
        .to_peer_id()
}

/// A node's end of the network.
struct Wire {
    net: Arc<Net>,
    me: PeerId,
}

impl Transport for Wire {
    fn local_peer(&self) -> PeerId {
        self.me
    }

    fn ask(
        &self,
        peer: PeerId,
        _addresses: Vec<Multiaddr>,
        kind: &'static str,
        body: Vec<u8>,
    ) -> Reply<'_, Result<Answer, String>> {
        Box::pin(async move {
            *self
                .net
                .asked
                .lock()
                .expect("asked")
                .entry((peer, kind.to_owned()))
                .or_default() += 1;
            let tasks = self.net.nodes.lock().expect("nodes")[&peer]
                .tasks
                .clone()
                .ok_or("the node is not running its market")?;
            let call = Call::of(kind).ok_or("not a market request")?;
            let request = Incoming {
                peer: self.me,
                payload: body,
                span: tracing::Span::none(),
            };
            let answer = tasks.handle(call, request).await;
            match answer {
                Some(_) if self.net.answer_lost(peer, kind) => {
                    Err("the connection was closed before the answer came".to_owned())
                }
                Some((kind, payload)) => Ok(Answer {
                    kind: kind.to_owned(),
                    payload,
                }),
                None => Err("the connection was closed".to_owned()),
            }
        })
    }

    fn announce(
        &self,
        guild: &str,
        kind: &'static str,
        body: Vec<u8>,
    ) -> Reply<'_, Result<(), String>> {
        let guild = guild.to_owned();
        Box::pin(async move {
            let nodes = self.net.nodes.lock().expect("nodes");
            for (_, node) in nodes.iter().filter(|(p, _)| **p != self.me) {
                let _ = node.feed.send(GuildMessage {
                    guild: guild.clone(),
                    from: self.me,
                    message_type: kind.to_owned(),
                    body: body.clone(),
                    context: None,
                });
            }
            Ok(())
        })
    }

    fn guild(&self, guild: &str) -> Reply<'_, Result<GuildInfo, String>> {
        let known = guild == GUILD;
        Box::pin(async move {
            known
                .then(|| self.net.guild_as_seen_by(self.me))
                .ok_or_else(|| "no such guild".to_owned())
        })
    }

    fn guilds(&self) -> Reply<'_, Vec<GuildInfo>> {
        Box::pin(async move { vec![self.net.guild_as_seen_by(self.me)] })
    }

    fn is_member(&self, peer: PeerId) -> Reply<'_, bool> {
        Box::pin(async move { self.net.members.lock().expect("members").contains(&peer) })
    }

    fn remove(&self, _guild: &str, peer: PeerId, _why: &str) -> Reply<'_, Result<(), String>> {
        Box::pin(async move {
            self.net
                .members
                .lock()
                .expect("members")
                .retain(|p| *p != peer);
            Ok(())
        })
    }

    fn messages(&self) -> broadcast::Receiver<GuildMessage> {
        self.net.nodes.lock().expect("nodes")[&self.me]
            .feed
            .subscribe()
    }

    fn addresses(&self) -> Reply<'_, Vec<String>> {
        Box::pin(async { Vec::new() })
    }

    fn redial(&self, _peer: PeerId) -> Reply<'_, ()> {
        Box::pin(async {})
    }

    fn max_message_bytes(&self) -> usize {
        1 << 20
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}

impl zerostate_payment_protocol::Transport for Wire {
    fn local_peer(&self) -> PeerId {
        self.me
    }

    fn ask(
        &self,
        peer: PeerId,
        call: PaymentCall,
        body: Vec<u8>,
    ) -> zerostate_payment_protocol::Reply<'_, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let payments = self.net.payments(peer);
            *self
                .net
                .asked
                .lock()
                .expect("asked")
                .entry((peer, call.as_str().to_owned()))
                .or_default() += 1;
            let answer = payments.handle(self.me, call, body).await;
            answer.map_err(|why| format!("{peer} refused {}: {why}", call.as_str()))
        })
    }

    fn is_member(&self, peer: PeerId) -> zerostate_payment_protocol::Reply<'_, bool> {
        Box::pin(async move { self.net.members.lock().expect("members").contains(&peer) })
    }
}

/// `builtin:crc32` on `input`, paying at most `max_price`.
pub(crate) fn crc32(input: &str, max_price: u64) -> Submission {
    Submission {
        guild: GUILD.to_owned(),
        module: ModuleSource::Builtin("crc32".to_owned()),
        input: input.as_bytes().to_vec(),
        // A small fuel limit, so that the most a bill may be fits a channel's deposit.
        limits: Limits {
            fuel: 10_000_000,
            ..Limits::default()
        },
        args: Vec::new(),
        entry: None,
        env: Vec::new(),
        files: Default::default(),
        output_files: false,
        max_price,
    }
}

/// Submits `task` on `node` and waits for its record to be final and its payment settled
/// (paid, or failed with a reason).
pub(crate) async fn run(node: &Node, task: Submission) -> TaskRecord {
    let id = node.tasks.submit(task).expect("accepted").id;
    settled(node, &id, Duration::from_secs(6)).await
}

/// Waits up to `within` for task `id`'s record on `node` to be final and its payment
/// settled (paid, or failed with a reason).
pub(crate) async fn settled(node: &Node, id: &str, within: Duration) -> TaskRecord {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        let record = node.tasks.get(id).expect("the record is kept");
        let settled = record.payment.is_some() || record.receipt.is_none();
        if record.state.is_final() && settled {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("task {id} did not end: {:?}", node.tasks.get(id));
}

/// `builtin:primes` below `below`, paying at most `max_price`: tens of milliseconds for a
/// few million, about half a second for 30 million (within its fuel, whose bill fits a deposit).
pub(crate) fn primes(below: u64, max_price: u64) -> Submission {
    Submission {
        module: ModuleSource::Builtin("primes".to_owned()),
        input: below.to_string().into_bytes(),
        limits: Limits {
            fuel: 2_500_000_000,
            ..Limits::default()
        },
        ..crc32("", max_price)
    }
}

/// A requester's settings: it runs no tasks. Collecting offers ends as soon as every member
/// has offered, so the window is only reached when one does not; it is wide enough for an
/// executor on a loaded machine to answer.
pub(crate) fn requester() -> TaskSettings {
    TaskSettings {
        execute: false,
        offer_window_ms: 5_000,
        verify_share: 0.0,
        ..TaskSettings::default()
    }
}

/// An executor's settings at `price`.
pub(crate) fn executor(price: u64) -> TaskSettings {
    TaskSettings {
        price,
        ..TaskSettings::default()
    }
}
