//! Paying for work over payment channels. Three roles, all in one node:
//!
//! - **ledger** (`--ledger`; the devnet's bootnode): runs the `SqliteLedger` in
//!   `<data dir>/ledger.db` and serves open, cooperative close and balance to the other
//!   nodes over direct requests, the caller being the libp2p peer that asks;
//! - **payer** (a requester, `<data dir>/payer.db`): opens a channel to an executor on first
//!   use (the deposit is `[payments] deposit`), then pays each verified receipt with one new
//!   signed state, the cumulative amount raised by fuel × price per million fuel units and
//!   the receipt's hash in the state;
//! - **payee** (an executor, `<data dir>/payee.db`): verifies and persists each state before
//!   acknowledging it.
//!
//! Every key is the node key: a peer id names the payment key of its node.

mod metrics;
mod misbehave;
mod onchain;
mod payer;
mod serve;
mod served;
mod settle;
mod transport;
mod views;
mod watch;
mod wire;

pub use metrics::Metrics;
pub use misbehave::Misbehaviour;
use onchain::{Aside, Backend, OnChain};
pub use transport::{P2p, Reply, Served, Transport};
pub use views::{ChannelHistory, ChannelView, PaymentRecord, PaymentView, Settle};
pub use watch::Watched;
pub use wire::check_ledger_proof;
use wire::*;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::Instrument;
use zerostate_p2p::PeerId;
use zerostate_payment::{
    Amount, ChannelId, ChannelParams, ChannelState, Keypair, LedgerId, OpenRequest, PayeeStore,
    PayerStore, PaymentError, PublicKey, Settlement, Signature, SignedAnswer, SignedState,
    SqliteLedger,
};
use zerostate_telemetry::SpanExt;
use zerostate_telemetry::names::span as names;

/// Message types of payment traffic.
pub mod types {
    /// Payer to payee: sign this channel.
    pub const CHANNEL_OPEN: &str = "channel_open";
    /// Payer to ledger: open the channel both signed.
    pub const LEDGER_OPEN: &str = "ledger_open";
    /// Payer to payee: a new signed state.
    pub const PAYMENT: &str = "payment";
    /// Payer to payee: sign the latest state for a cooperative close.
    pub const CHANNEL_CLOSE: &str = "channel_close";
    /// Payer to ledger: settle on the state both signed.
    pub const LEDGER_CLOSE: &str = "ledger_close";
    /// Anyone to the ledger: what the caller holds.
    pub const LEDGER_BALANCE: &str = "ledger_balance";
    /// Payer or payee to ledger: start a unilateral close on the caller's latest state.
    pub const LEDGER_START_CLOSE: &str = "ledger_start_close";
    /// The other party to ledger: a state of a higher amount, within the challenge window.
    pub const LEDGER_DISPUTE: &str = "ledger_dispute";
    /// Anyone to ledger: pay out a closing channel whose challenge window has ended.
    pub const LEDGER_FINALIZE: &str = "ledger_finalize";
    /// Anyone to ledger: whether a channel's deposit is locked, and on what terms.
    pub const LEDGER_CHANNEL: &str = "ledger_channel";
    /// Anyone to ledger: return the deposit of a channel nobody closed by its expiry plus
    /// its challenge period.
    pub const LEDGER_REFUND: &str = "ledger_refund";
    /// A positive answer to any of them.
    pub const OK: &str = "payment_ok";

    zerostate_p2p::request_types! {
        /// The direct requests of the payment protocol.
        pub enum Call {
            /// [`CHANNEL_OPEN`].
            ChannelOpen = CHANNEL_OPEN,
            /// [`LEDGER_OPEN`].
            LedgerOpen = LEDGER_OPEN,
            /// [`PAYMENT`].
            Payment = PAYMENT,
            /// [`CHANNEL_CLOSE`].
            ChannelClose = CHANNEL_CLOSE,
            /// [`LEDGER_CLOSE`].
            LedgerClose = LEDGER_CLOSE,
            /// [`LEDGER_BALANCE`].
            LedgerBalance = LEDGER_BALANCE,
            /// [`LEDGER_START_CLOSE`].
            LedgerStartClose = LEDGER_START_CLOSE,
            /// [`LEDGER_DISPUTE`].
            LedgerDispute = LEDGER_DISPUTE,
            /// [`LEDGER_FINALIZE`].
            LedgerFinalize = LEDGER_FINALIZE,
            /// [`LEDGER_CHANNEL`].
            LedgerChannel = LEDGER_CHANNEL,
            /// [`LEDGER_REFUND`].
            LedgerRefund = LEDGER_REFUND,
        }
    }
}

impl types::Call {
    /// Whether the ledger answers it (and signs its answer), rather than a payee.
    pub fn for_ledger(self) -> bool {
        !matches!(
            self,
            types::Call::ChannelOpen | types::Call::Payment | types::Call::ChannelClose
        )
    }
}

/// How this node pays and is paid (`[payments]`). Every field says its default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentSettings {
    /// The peer id of the node that runs the ledger; without one, nothing is paid. The
    /// `--ledger-peer` flag sets it. Default none.
    pub ledger: Option<String>,
    /// What a payer locks in each new channel, in base units. Default 1000000.
    pub deposit: Option<u64>,
    /// On the node that runs the ledger: how long the other party may dispute a
    /// unilateral close of a channel opened from now on (each channel keeps the period it
    /// was opened under), seconds (1 to 2592000). Default 3600.
    pub challenge_period_s: Option<u64>,
    /// How often this node's watchtower looks at the ledger for the channels it is paid
    /// through, seconds (1 to 3600): it must look more often than a challenge window
    /// lasts. Default 30.
    pub watch_interval_s: Option<u64>,
    /// Settle on an EVM chain instead of a ledger: its JSON-RPC URL (`http://…`). Needs
    /// `contract`; not with `ledger`. Default none.
    pub chain: Option<String>,
    /// With `chain`: the address of the ZeroState channel contract (`0x…`). Default none.
    pub contract: Option<String>,
    /// With `chain`: the blocks a transaction waits for before it counts (1 to 64).
    /// Default 1.
    pub confirmations: Option<u64>,
}

/// Where `[payments]` says to settle on a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainSettings {
    /// The JSON-RPC URL.
    pub url: String,
    /// The channel contract.
    pub contract: zerostate_chain::Address,
    /// Confirmations waited for.
    pub confirmations: u64,
}

impl PaymentSettings {
    fn deposit(&self) -> u64 {
        self.deposit.unwrap_or(1_000_000)
    }

    /// How often the watchtower looks at the ledger ([`Payments::watch`]).
    pub fn watch_interval(&self) -> Result<std::time::Duration, String> {
        let every = self.watch_interval_s.unwrap_or(30);
        if (1..=3600).contains(&every) {
            Ok(std::time::Duration::from_secs(every))
        } else {
            Err(format!(
                "[payments] watch_interval_s = {every} must be between 1 and 3600"
            ))
        }
    }

    /// The chain to settle on, when `[payments] chain` is set, checked.
    pub fn chain(&self) -> Result<Option<ChainSettings>, String> {
        let Some(url) = &self.chain else {
            if self.contract.is_some() {
                return Err("[payments] contract is set without [payments] chain".into());
            }
            return Ok(None);
        };
        if self.ledger.is_some() {
            return Err(
                "[payments] chain and [payments] ledger are both set: channels settle on one \
                 of them"
                    .into(),
            );
        }
        let contract = self.contract.as_deref().ok_or(
            "[payments] chain is set without [payments] contract (the channel contract's address)",
        )?;
        let contract = contract
            .parse()
            .map_err(|e| format!("[payments] contract = {contract:?} is not an address: {e}"))?;
        let confirmations = self.confirmations.unwrap_or(1);
        if !(1..=64).contains(&confirmations) {
            return Err(format!(
                "[payments] confirmations = {confirmations} must be between 1 and 64"
            ));
        }
        Ok(Some(ChainSettings {
            url: url.clone(),
            contract,
            confirmations,
        }))
    }

    fn challenge_period(&self) -> Result<u64, String> {
        let period = self.challenge_period_s.unwrap_or(3600);
        if (1..=30 * 24 * 3600).contains(&period) {
            Ok(period)
        } else {
            Err(format!(
                "[payments] challenge_period_s = {period} must be between 1 and 2592000"
            ))
        }
    }
}
/// How long a new channel lasts, seconds.
const CHANNEL_LIFETIME: u64 = 7 * 24 * 3600;

/// The payment key of the node whose peer id is `peer`.
pub fn key_of(peer: &PeerId) -> Option<PublicKey> {
    let mh = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let public = libp2p_identity_public(mh.digest())?;
    Some(PublicKey(public))
}

/// The peer id of the node whose payment key is `key`.
pub fn peer_of(key: &PublicKey) -> Option<PeerId> {
    let public = zerostate_p2p::identity::ed25519::PublicKey::try_from_bytes(&key.0).ok()?;
    Some(zerostate_p2p::identity::PublicKey::from(public).to_peer_id())
}

fn libp2p_identity_public(protobuf: &[u8]) -> Option<[u8; 32]> {
    zerostate_p2p::identity::PublicKey::try_decode_protobuf(protobuf)
        .ok()?
        .try_into_ed25519()
        .ok()
        .map(|k| k.to_bytes())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// This node's payment roles: a cheap, cloneable handle.
#[derive(Clone)]
pub struct Payments {
    inner: Arc<Inner>,
}

/// Payments reported `failed` whose states are signed but undelivered, by receipt.
type Undelivered = std::collections::HashMap<[u8; 32], (ChannelId, ChannelState)>;

/// What the payment protocol tells the rest of the node as it happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PaymentEvent {
    /// A payment [`Payments::pay`] reported `failed` was delivered after all, carried by
    /// a later delivery on its channel: the receipt (its hash) is paid.
    DeliveredLate {
        /// The hash of the receipt paid for.
        receipt: [u8; 32],
    },
}

/// Events held for a receiver that has not read them; past that, the oldest are lost to
/// it (it is told how many).
const EVENTS_KEPT: usize = 1024;

/// Channels one payer may hold open to this node at once (each is a synced row and a
/// locked deposit the payer chose); more are refused until it closes one.
const CHANNELS_PER_PAYER: usize = 16;

/// Undelivered payments remembered for their task records.
const UNDELIVERED_KEPT: usize = 4096;

struct Inner {
    /// How this node reaches the others.
    transport: Arc<dyn Transport>,
    key: Keypair,
    ledger_peer: Option<(PeerId, LedgerId)>,
    payer: PayerStore,
    payee: PayeeStore,
    ledger: Option<SqliteLedger>,
    /// The channel contract, when channels settle on a chain.
    chain: Option<OnChain>,
    /// The challenge period of channels this node opens on a chain, seconds.
    challenge_period: u64,
    /// How often the watchtower looks.
    watch_every: std::time::Duration,
    faucet: bool,
    deposit: u64,
    /// Channels to one payee are opened one at a time (payees apart do not wait on each
    /// other).
    opening: std::sync::Mutex<
        std::collections::HashMap<[u8; 32], std::sync::Arc<tokio::sync::Mutex<()>>>,
    >,
    /// As a payee: the work served against each payer's channels, not yet paid.
    served: std::sync::Mutex<served::Served>,
    /// Channels not being settled, as payer and as payee: counted, so that a metrics
    /// scrape reads no table.
    open_channels: [std::sync::atomic::AtomicI64; 2],
    /// What this node measures.
    metrics: crate::metrics::Metrics,
    /// The channel to each payee (by payment key) and its expiry, so that a payment does
    /// not read every channel from disk; filled from the store on first use.
    open_to: std::sync::Mutex<std::collections::HashMap<[u8; 32], (ChannelId, u64)>>,
    /// Payments reported `failed` whose state is signed but undelivered, by receipt.
    undelivered: std::sync::Mutex<Undelivered>,
    /// Where [`PaymentEvent`]s go.
    events: tokio::sync::broadcast::Sender<PaymentEvent>,
    /// One delivery at a time per channel: the payee takes states only in nonce order.
    delivering: std::sync::Mutex<
        std::collections::HashMap<ChannelId, std::sync::Arc<tokio::sync::Mutex<()>>>,
    >,
    /// As a payee: a wake-up whenever a payment clears work served.
    cleared: tokio::sync::Notify,
    /// What this node was told to do wrong (tests only).
    misbehave: crate::misbehave::Misbehaviour,
    /// Acknowledgements withheld so far (`withhold-payment-acks=N`).
    withheld: std::sync::atomic::AtomicU64,
    /// Channels the watchtower found settled on the ledger: not asked about again.
    watched_out: std::sync::Mutex<std::collections::HashSet<ChannelId>>,
}

impl Payments {
    /// Opens the stores in `dir` (and the ledger, when `run_ledger`); reaches the other
    /// nodes through `transport`; settles on `chain` when given (connected with this
    /// node's settlement key), else on the ledger the settings name.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        transport: Arc<dyn Transport>,
        seed: [u8; 32],
        dir: &std::path::Path,
        settings: &PaymentSettings,
        run_ledger: bool,
        faucet: bool,
        metrics: crate::metrics::Metrics,
        misbehave: crate::misbehave::Misbehaviour,
        chain: Option<zerostate_chain::Chain>,
    ) -> anyhow::Result<Payments> {
        use anyhow::Context as _;
        let key = Keypair::from_seed(seed);
        let ledger_peer = match &settings.ledger {
            Some(p) => {
                let peer: PeerId = p
                    .parse()
                    .with_context(|| format!("[payments] ledger = {p:?} is not a peer id"))?;
                let operator = key_of(&peer).context("the ledger's peer id has no ed25519 key")?;
                Some((peer, LedgerId::of_operator(&operator)))
            }
            None => None,
        };
        let challenge_period = settings.challenge_period().map_err(anyhow::Error::msg)?;
        let watch_every = settings.watch_interval().map_err(anyhow::Error::msg)?;
        let ledger_peer = if chain.is_some() { None } else { ledger_peer };
        let chain = chain
            .map(|chain| OnChain::open(chain, dir, &key))
            .transpose()
            .context("opening the book of channels on chain")?;
        let ledger = run_ledger
            .then(|| {
                SqliteLedger::open(
                    &dir.join("ledger.db"),
                    LedgerId::of_operator(&key.public()),
                    challenge_period,
                )
            })
            .transpose()
            .context("opening the ledger")?;
        let payer = PayerStore::open(&dir.join("payer.db"), Keypair::from_seed(seed))
            .context("opening the payer's store")?;
        let payee = PayeeStore::open(&dir.join("payee.db")).context("opening the payee's store")?;
        let open = |channels: Result<Vec<zerostate_payment::LocalChannel>, PaymentError>| {
            channels.map(|c| {
                c.iter()
                    .filter(|c| !c.closing && c.opening.is_none())
                    .count() as i64
            })
        };
        let open_channels = [
            std::sync::atomic::AtomicI64::new(open(payer.channels()).context("reading payer.db")?),
            std::sync::atomic::AtomicI64::new(open(payee.channels()).context("reading payee.db")?),
        ];
        Ok(Payments {
            inner: Arc::new(Inner {
                transport,
                payer,
                payee,
                key,
                ledger_peer,
                ledger,
                chain,
                challenge_period,
                watch_every,
                faucet,
                deposit: settings.deposit(),
                opening: std::sync::Mutex::default(),
                served: std::sync::Mutex::default(),
                open_channels,
                metrics,
                open_to: std::sync::Mutex::default(),
                delivering: std::sync::Mutex::default(),
                cleared: tokio::sync::Notify::new(),
                undelivered: std::sync::Mutex::default(),
                events: tokio::sync::broadcast::channel(EVENTS_KEPT).0,
                misbehave,
                withheld: std::sync::atomic::AtomicU64::new(0),
                watched_out: std::sync::Mutex::default(),
            }),
        })
    }

    /// The events from now on (see [`PaymentEvent`]).
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<PaymentEvent> {
        self.inner.events.subscribe()
    }

    /// Answers a request of type `call` from `from`: the payload of the positive answer,
    /// or why it is refused. Storage work (each write is synced to disk) runs off the
    /// async threads.
    pub async fn handle(
        &self,
        from: PeerId,
        call: types::Call,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        if call == types::Call::ChannelOpen && !self.inner.transport.is_member(from).await {
            return Err("only members of this node's guilds may open channels to it".to_owned());
        }
        if call == types::Call::ChannelClose
            && let Some(on) = &self.inner.chain
        {
            // Closed on chain: the answer waits for the transaction.
            let caller = key_of(&from).ok_or("the caller has no ed25519 key")?;
            return self.close_for_payer(on, &caller, &payload).await;
        }
        let this = self.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| this.answer(from, call, &payload)))
            .await
            .map_err(|e| format!("this node could not answer: {e}"))?
    }

    fn served(&self) -> std::sync::MutexGuard<'_, served::Served> {
        self.inner
            .served
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a channel opening (`delta` 1) or going into settlement (-1) on `side` (0
    /// payer, 1 payee).
    fn count_open(&self, side: usize, delta: i64) {
        self.inner.open_channels[side].fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
    }

    /// Channels not being settled, as payer and as payee, from counters.
    pub fn open_counts(&self) -> [u64; 2] {
        self.inner
            .open_channels
            .each_ref()
            .map(|c| u64::try_from(c.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(0))
    }
}
