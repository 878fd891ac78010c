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

mod served;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::Instrument;
use zerostate_p2p::{IncomingRequest, Network, PeerId};
use zerostate_payment::{
    Amount, ChannelId, ChannelParams, ChannelState, Keypair, LedgerId, OpenRequest, PayeeStore,
    PayerStore, PaymentError, PublicKey, Settlement, Signature, SignedState, SqliteLedger,
};
use zerostate_telemetry::names::span as names;
use zerostate_telemetry::{SpanExt, error_chain};

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
    /// A positive answer to any of them.
    pub const OK: &str = "payment_ok";
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
    /// unilateral close, seconds (1 to 2592000). Default 3600.
    pub challenge_period_s: Option<u64>,
}

impl PaymentSettings {
    fn deposit(&self) -> u64 {
        self.deposit.unwrap_or(1_000_000)
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

/// A channel's parameters on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamsJson {
    ledger: String,
    payer: String,
    payee: String,
    deposit: u64,
    expiry: u64,
    nonce: u64,
}

impl From<&ChannelParams> for ParamsJson {
    fn from(p: &ChannelParams) -> Self {
        Self {
            ledger: hex::encode(p.ledger.0),
            payer: hex::encode(p.payer.0),
            payee: hex::encode(p.payee.0),
            deposit: p.deposit.base_units(),
            expiry: p.expiry,
            nonce: p.nonce,
        }
    }
}

fn bytes32(hexed: &str, what: &str) -> Result<[u8; 32], String> {
    hex::decode(hexed)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{what} is not 32 hex-encoded bytes"))
}

fn signature(hexed: &str, what: &str) -> Result<Signature, String> {
    hex::decode(hexed)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(Signature)
        .ok_or_else(|| format!("{what} is not 64 hex-encoded bytes"))
}

impl TryFrom<&ParamsJson> for ChannelParams {
    type Error = String;
    fn try_from(p: &ParamsJson) -> Result<Self, String> {
        Ok(ChannelParams {
            ledger: LedgerId(bytes32(&p.ledger, "ledger")?),
            payer: PublicKey(bytes32(&p.payer, "payer")?),
            payee: PublicKey(bytes32(&p.payee, "payee")?),
            deposit: Amount::from_base_units(p.deposit),
            expiry: p.expiry,
            nonce: p.nonce,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenBody {
    params: ParamsJson,
    payer_signature: String,
    #[serde(default)]
    payee_signature: Option<String>,
}

/// A unilateral close, a dispute or a finalization, to the ledger.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleBody {
    /// The channel, hex.
    channel: String,
    /// The caller's best signed state, hex of its wire form (none: settle on nothing paid).
    #[serde(default)]
    state: Option<String>,
}

fn signed_state(hexed: &str) -> Result<SignedState, String> {
    let bytes = hex::decode(hexed).map_err(|e| format!("the state is not hex: {e}"))?;
    SignedState::from_bytes(&bytes).map_err(|e| e.to_string())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    /// The signed state, hex of its wire form.
    state: String,
    payee_signature: String,
}

/// What a payment did, for a task record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PaymentRecord {
    /// `paid`, `unpaid` (nothing owed, or no ledger configured) or `failed`.
    pub status: String,
    /// The channel, hex.
    pub channel: Option<String>,
    /// What this payment added, base units.
    pub amount: u64,
    /// The channel's cumulative amount after it.
    pub cumulative: Option<u64>,
    /// The state's nonce.
    pub nonce: Option<u64>,
    /// SHA-256 of the receipt paid for (of its signed bytes), hex: the `receipt` the
    /// channel's history (`GET /v1/channels/{id}`) lists for this payment.
    pub receipt: Option<String>,
    /// Why it was not paid, when it was not.
    pub reason: Option<String>,
}

impl PaymentRecord {
    fn unpaid(amount: u64, reason: impl Into<String>, status: &str) -> Self {
        Self {
            status: status.to_owned(),
            channel: None,
            amount,
            cumulative: None,
            nonce: None,
            receipt: None,
            reason: Some(reason.into()),
        }
    }
}

/// One channel as `GET /v1/channels` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChannelView {
    /// Its id, hex.
    pub id: String,
    /// `payer` or `payee`: this node's side.
    pub side: String,
    /// The other party's payment key, hex.
    pub counterparty: String,
    /// Locked by the payer, base units.
    pub deposit: u64,
    /// Paid so far, base units.
    pub cumulative: u64,
    /// Payments so far.
    pub nonce: u64,
    /// Hash of the receipt the latest payment was for, hex.
    pub last_receipt: String,
    /// Whether this node has agreed to or started its settlement (no more payments).
    pub closing: bool,
}

impl ChannelView {
    /// `c` as this node's `side` (`payer` or `payee`) sees it.
    fn of(side: &str, c: &zerostate_payment::LocalChannel) -> Self {
        let other = if side == "payer" {
            c.params.payee
        } else {
            c.params.payer
        };
        Self {
            id: hex::encode(c.params.id().0),
            side: side.to_owned(),
            counterparty: hex::encode(other.0),
            deposit: c.params.deposit.base_units(),
            cumulative: c.state.cumulative.base_units(),
            nonce: c.state.nonce,
            last_receipt: hex::encode(c.state.receipt),
            closing: c.closing,
        }
    }
}

/// A channel with its payments, as `GET /v1/channels/{id}` answers.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelHistory {
    /// The channel.
    #[serde(flatten)]
    pub channel: ChannelView,
    /// Its newest payments, newest first.
    pub payments: Vec<PaymentView>,
}

/// One payment on a channel.
#[derive(Clone, Debug, Serialize)]
pub struct PaymentView {
    /// The signed state's nonce.
    pub nonce: u64,
    /// What it added, base units.
    pub amount: u64,
    /// The cumulative amount after it, base units.
    pub cumulative: u64,
    /// SHA-256 of the receipt it paid for, hex (a task's `payment.receipt`).
    pub receipt: String,
}

/// A step of a unilateral settlement (see [`Payments::settle`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// Start a close on this node's best state; the other party may dispute until the
    /// challenge window ends.
    Start,
    /// Replace the closing state with this node's, when its amount is higher.
    Dispute,
    /// Pay out once the challenge window has ended.
    Finalize,
}

/// This node's payment roles: a cheap, cloneable handle.
#[derive(Clone)]
pub struct Payments {
    inner: Arc<Inner>,
}

/// Undelivered payments by receipt, and receipts delivered late not yet reported.
type Late = (
    std::collections::HashMap<[u8; 32], (ChannelId, ChannelState)>,
    Vec<[u8; 32]>,
);

/// Channels one payer may hold open to this node at once (each is a synced row and a
/// locked deposit the payer chose); more are refused until it closes one.
const CHANNELS_PER_PAYER: usize = 16;

/// Undelivered payments remembered for their task records.
const UNDELIVERED_KEPT: usize = 4096;

struct Inner {
    network: Network,
    key: Keypair,
    ledger_peer: Option<(PeerId, LedgerId)>,
    payer: PayerStore,
    payee: PayeeStore,
    ledger: Option<SqliteLedger>,
    faucet: bool,
    deposit: u64,
    /// Channels to one payee are opened one at a time (payees apart do not wait on each
    /// other).
    opening: std::sync::Mutex<
        std::collections::HashMap<[u8; 32], std::sync::Arc<tokio::sync::Mutex<()>>>,
    >,
    /// As a payee: the work served against each payer's channels, not yet paid.
    served: std::sync::Mutex<served::Served>,
    /// The guilds this node is in: only their members may open channels to it.
    guilds: zerostate_guild::Guilds,
    /// Channels not being settled, as payer and as payee: counted, so that a metrics
    /// scrape reads no table.
    open_channels: [std::sync::atomic::AtomicI64; 2],
    /// What this node measures.
    metrics: crate::metrics::NodeMetrics,
    /// The channel to each payee (by payment key) and its expiry, so that a payment does
    /// not read every channel from disk; filled from the store on first use.
    open_to: std::sync::Mutex<std::collections::HashMap<[u8; 32], (ChannelId, u64)>>,
    /// Payments reported `failed` whose state is signed but undelivered, by receipt; and
    /// those a later delivery carried, not yet reported.
    late: std::sync::Mutex<Late>,
    /// One delivery at a time per channel: the payee takes states only in nonce order.
    delivering: std::sync::Mutex<
        std::collections::HashMap<ChannelId, std::sync::Arc<tokio::sync::Mutex<()>>>,
    >,
    /// What this node was told to do wrong (tests only).
    misbehave: crate::misbehave::Misbehaviour,
    /// Acknowledgements withheld so far (`withhold-payment-acks=N`).
    withheld: std::sync::atomic::AtomicU64,
}

impl Payments {
    /// Opens the stores in `dir` (and the ledger, when `run_ledger`).
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        network: Network,
        guilds: zerostate_guild::Guilds,
        seed: [u8; 32],
        dir: &std::path::Path,
        settings: &PaymentSettings,
        run_ledger: bool,
        faucet: bool,
        metrics: crate::metrics::NodeMetrics,
        misbehave: crate::misbehave::Misbehaviour,
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
            channels.map(|c| c.iter().filter(|c| !c.closing).count() as i64)
        };
        let open_channels = [
            std::sync::atomic::AtomicI64::new(open(payer.channels()).context("reading payer.db")?),
            std::sync::atomic::AtomicI64::new(open(payee.channels()).context("reading payee.db")?),
        ];
        Ok(Payments {
            inner: Arc::new(Inner {
                network,
                payer,
                payee,
                key,
                ledger_peer,
                ledger,
                faucet,
                deposit: settings.deposit(),
                opening: std::sync::Mutex::default(),
                served: std::sync::Mutex::default(),
                guilds,
                open_channels,
                metrics,
                open_to: std::sync::Mutex::default(),
                delivering: std::sync::Mutex::default(),
                late: std::sync::Mutex::default(),
                misbehave,
                withheld: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// Whether a direct request is payment traffic (hand it to [`Payments::request`]).
    pub fn wants(request: &IncomingRequest) -> bool {
        use types::*;
        matches!(
            request.envelope.message_type.as_str(),
            CHANNEL_OPEN
                | LEDGER_OPEN
                | PAYMENT
                | CHANNEL_CLOSE
                | LEDGER_CLOSE
                | LEDGER_BALANCE
                | LEDGER_START_CLOSE
                | LEDGER_DISPUTE
                | LEDGER_FINALIZE
                | LEDGER_CHANNEL
        )
    }

    /// Answers a direct request of payment traffic, refusing with a reason what it cannot do.
    pub async fn request(&self, request: IncomingRequest) {
        let span = request.span.clone();
        let (request, answer) = if request.envelope.message_type == types::CHANNEL_OPEN
            && !crate::tasks::member_of_a_guild(&self.inner.guilds, request.peer).await
        {
            let why = "only members of this node's guilds may open channels to it".to_owned();
            (request, Err(why))
        } else {
            // Storage work (each write is synced to disk) off the async threads.
            let this = self.clone();
            let in_span = span.clone();
            match tokio::task::spawn_blocking(move || {
                let answer = in_span.in_scope(|| this.answer(&request));
                (request, answer)
            })
            .await
            {
                Ok(done) => done,
                Err(e) => {
                    tracing::warn!("a payment request's thread ended: {e}");
                    return;
                }
            }
        };
        let (kind, body) = match answer {
            Ok(body) => (types::OK, body),
            Err(why) => {
                span.record_error(&zerostate_p2p::Reason(why.clone()));
                ("error", why.into_bytes())
            }
        };
        if let Err(e) = self.inner.network.respond(request, kind, body).await {
            tracing::debug!("answering a payment request: {}", error_chain(&e));
        }
    }

    fn answer(&self, r: &IncomingRequest) -> Result<Vec<u8>, String> {
        let caller = key_of(&r.peer).ok_or("the caller has no ed25519 key")?;
        let payload = &r.envelope.payload;
        let json = |v: serde_json::Value| Ok(v.to_string().into_bytes());
        let e = |e: PaymentError| e.to_string();
        match r.envelope.message_type.as_str() {
            types::CHANNEL_OPEN => {
                let body: OpenBody = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
                let params = ChannelParams::try_from(&body.params)?;
                let me = self.inner.key.public();
                if params.payee != me || params.payer != caller {
                    return Err("the channel is not from the caller to this node".into());
                }
                let Some((_, ledger)) = self.inner.ledger_peer else {
                    return Err("this node has no ledger configured: it cannot be paid".into());
                };
                if params.ledger != ledger {
                    return Err("the channel is on another ledger than this node's".into());
                }
                params.validate(now()).map_err(e)?;
                let payer_signature = signature(&body.payer_signature, "payer_signature")?;
                zerostate_payment::verify(&params.payer, &params.open_bytes(), &payer_signature)
                    .map_err(e)?;
                let open = self
                    .inner
                    .payee
                    .channels()
                    .map_err(e)?
                    .iter()
                    .filter(|c| c.params.payer == caller && !c.closing)
                    .count();
                if open >= CHANNELS_PER_PAYER {
                    return Err(format!(
                        "you have {open} channels open to this node already (at most \
                         {CHANNELS_PER_PAYER}): close one first"
                    ));
                }
                let known = self.inner.payee.channel(&params.id()).is_ok();
                self.inner.payee.add_channel(&params).map_err(e)?;
                if !known {
                    self.count_open(1, 1);
                }
                let sig = self.inner.key.sign(&params.open_bytes());
                json(serde_json::json!({ "payee_signature": hex::encode(sig.0) }))
            }
            types::PAYMENT => {
                let state = SignedState::from_bytes(payload).map_err(e)?;
                let local = self.inner.payee.channel(&state.state.channel).map_err(e)?;
                if local.params.payer != caller {
                    return Err("the caller is not this channel's payer".into());
                }
                let ack = match self.inner.payee.accept(&state, now()) {
                    Ok(ack) => ack,
                    // Delivered again (its acknowledgement was lost): signed by the payer,
                    // and this side holds it or a later state. Acknowledged as held, paid
                    // once.
                    Err(PaymentError::StaleNonce { got, expected }) if got < expected => {
                        return json(serde_json::json!({
                            "nonce": got,
                            "cumulative": local.state.cumulative.base_units(),
                            "paid": 0,
                            "held": true,
                        }));
                    }
                    Err(other) => return Err(e(other)),
                };
                self.served().paid(&state.state.receipt);
                self.inner.metrics.payment("in", ack.paid.base_units());
                if self.withhold_ack() {
                    return Err(
                        "acknowledgement withheld (misbehaviour withhold-payment-acks)".into(),
                    );
                }
                json(serde_json::json!({
                    "nonce": ack.nonce,
                    "cumulative": ack.cumulative.base_units(),
                    "paid": ack.paid.base_units(),
                }))
            }
            types::CHANNEL_CLOSE => {
                let id = ChannelId(bytes32(
                    std::str::from_utf8(payload).map_err(|e| e.to_string())?,
                    "channel",
                )?);
                let local = self.inner.payee.channel(&id).map_err(e)?;
                if local.params.payer != caller {
                    return Err("the caller is not this channel's payer".into());
                }
                // From the close on, a later state could not be settled on: take none.
                let was_open = !local.closing;
                let local = self.inner.payee.close(&id).map_err(e)?;
                if was_open {
                    self.count_open(1, -1);
                }
                let signed = local.signed().ok_or("nothing was paid on this channel")?;
                let sig = self.inner.key.sign(&signed.state.close_bytes());
                json(serde_json::json!({
                    "state": hex::encode(signed.to_bytes()),
                    "payee_signature": hex::encode(sig.0),
                }))
            }
            kind => self.ledger_answer(&caller, kind, payload),
        }
    }

    /// The ledger's side of a request from `caller`.
    fn ledger_answer(
        &self,
        caller: &PublicKey,
        kind: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        let json = |v: serde_json::Value| Ok(v.to_string().into_bytes());
        let e = |e: PaymentError| e.to_string();
        let ledger = self
            .inner
            .ledger
            .as_ref()
            .ok_or("this node does not run a ledger")?;
        match kind {
            types::LEDGER_OPEN => {
                let body: OpenBody = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
                let request = OpenRequest {
                    params: ChannelParams::try_from(&body.params)?,
                    payer_signature: signature(&body.payer_signature, "payer_signature")?,
                    payee_signature: signature(
                        body.payee_signature.as_deref().unwrap_or_default(),
                        "payee_signature",
                    )?,
                };
                let id = ledger.open(caller, &request, now()).map_err(e)?;
                json(serde_json::json!({ "channel": hex::encode(id.0) }))
            }
            types::LEDGER_CLOSE => {
                let body: CloseBody = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
                let state = signed_state(&body.state)?;
                let sig = signature(&body.payee_signature, "payee_signature")?;
                let settled = ledger
                    .close_cooperative(caller, &state, &sig, now())
                    .map_err(e)?;
                json(serde_json::json!({
                    "to_payee": settled.to_payee.base_units(),
                    "to_payer": settled.to_payer.base_units(),
                }))
            }
            types::LEDGER_BALANCE => {
                let balance = ledger.balance(caller).map_err(e)?;
                json(serde_json::json!({ "balance": balance.base_units() }))
            }
            types::LEDGER_START_CLOSE => {
                let body: SettleBody =
                    serde_json::from_slice(payload).map_err(|e| e.to_string())?;
                let id = ChannelId(bytes32(&body.channel, "channel")?);
                let state = body.state.as_deref().map(signed_state).transpose()?;
                let ends = ledger
                    .start_close(caller, &id, state.as_ref(), now())
                    .map_err(e)?;
                json(serde_json::json!({ "challenge_ends": ends }))
            }
            types::LEDGER_DISPUTE => {
                let body: SettleBody =
                    serde_json::from_slice(payload).map_err(|e| e.to_string())?;
                let state = signed_state(body.state.as_deref().ok_or("a dispute needs a state")?)?;
                ledger.dispute(caller, &state, now()).map_err(e)?;
                json(serde_json::json!({ "disputed": body.channel }))
            }
            types::LEDGER_CHANNEL => {
                let id = ChannelId(bytes32(
                    std::str::from_utf8(payload).map_err(|e| e.to_string())?,
                    "channel",
                )?);
                let record = ledger.channel(&id).map_err(e)?;
                let status = match record.status {
                    zerostate_payment::ChannelStatus::Open => "open",
                    zerostate_payment::ChannelStatus::Closing { .. } => "closing",
                    zerostate_payment::ChannelStatus::Settled(_) => "settled",
                };
                json(serde_json::json!({
                    "status": status,
                    "params": ParamsJson::from(&record.params),
                }))
            }
            types::LEDGER_FINALIZE => {
                let body: SettleBody =
                    serde_json::from_slice(payload).map_err(|e| e.to_string())?;
                let id = ChannelId(bytes32(&body.channel, "channel")?);
                let settled = ledger.finalize(caller, &id, now()).map_err(e)?;
                json(serde_json::json!({
                    "to_payee": settled.to_payee.base_units(),
                    "to_payer": settled.to_payer.base_units(),
                }))
            }
            other => Err(format!("no payment handler for {other}")),
        }
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

    /// As a payer: makes sure a channel to `executor` holds at least `max_bill`, opening
    /// one if needed, before the executor is handed a task; its id (hex), or `None` when
    /// no ledger is configured (nothing is paid).
    pub async fn lock_for(
        &self,
        executor: PeerId,
        max_bill: u64,
    ) -> Result<Option<String>, String> {
        let Some((ledger_peer, ledger)) = self.inner.ledger_peer else {
            return Ok(None);
        };
        let amount = Amount::from_base_units(max_bill);
        let mut channel = self
            .channel_to(executor, ledger_peer, ledger, amount)
            .await?;
        let room = self
            .inner
            .payer
            .channel(&channel)
            .map_err(|e| e.to_string())
            .map(|c| c.params.deposit.checked_sub(c.state.cumulative))?;
        if room.is_none_or(|room| room < amount) {
            // Used up since it was remembered: a new one.
            self.forget(&channel);
            channel = self
                .channel_to(executor, ledger_peer, ledger, amount)
                .await?;
        }
        Ok(Some(hex::encode(channel.0)))
    }

    /// As a payee: reserves a task's most expensive bill (`max_bill`) on `channel`, the
    /// payer's channel to this node, once the ledger confirms its deposit locked, unless
    /// the payer owes for `credit` delivered tasks or more. `Ok(None)` when this node
    /// has no ledger (it cannot be paid and serves at its own risk); else the reservation,
    /// to be marked [`Payments::delivered`] or [`Payments::release`]d.
    pub async fn reserve(
        &self,
        payer: PeerId,
        channel: Option<&str>,
        max_bill: u64,
        credit: u32,
    ) -> Result<Option<u64>, String> {
        let Some((ledger_peer, ledger)) = self.inner.ledger_peer else {
            return Ok(None);
        };
        let payer_key = key_of(&payer).ok_or("the requester has no ed25519 key")?;
        let owed = self.served().owed_tasks(&payer_key);
        if owed >= credit as usize {
            return Err(format!(
                "you have not paid for {owed} delivered task(s), and this node's credit is \
                 {credit}"
            ));
        }
        let channel = channel.ok_or("this node runs tasks only against a channel to it")?;
        let id = ChannelId(bytes32(channel, "channel")?);
        let local = self.inner.payee.channel(&id).map_err(|e| match e {
            PaymentError::UnknownChannel(_) => {
                format!("this node holds no channel {channel} from you: open one first")
            }
            e => e.to_string(),
        })?;
        if local.params.payer != payer_key || local.params.ledger != ledger {
            return Err("the channel is not yours to this node on its ledger".into());
        }
        if local.closing {
            return Err("the channel is being settled".into());
        }
        if !self.served().is_confirmed(&id) {
            let answer = self
                .ask(
                    ledger_peer,
                    types::LEDGER_CHANNEL,
                    channel.as_bytes().to_vec(),
                )
                .await
                .map_err(|why| format!("the ledger did not confirm the channel: {why}"))?;
            let params: ParamsJson = serde_json::from_value(answer["params"].clone())
                .map_err(|e| format!("the ledger's answer: {e}"))?;
            let params = ChannelParams::try_from(&params)?;
            if answer["status"] != "open" || params != local.params {
                return Err(format!(
                    "the ledger does not hold this channel open on its terms ({})",
                    answer["status"]
                ));
            }
            self.served().confirm(id);
        }
        let unsigned = local
            .params
            .deposit
            .checked_sub(local.state.cumulative)
            .map_or(0, |a| a.base_units());
        self.served()
            .reserve(payer_key, id, unsigned, max_bill, credit)
            .map(Some)
    }

    /// The task under `reservation` was delivered with the receipt hashed `receipt`,
    /// billed `bill`: held against its payer until the payment for it arrives.
    pub fn delivered(&self, reservation: u64, receipt: [u8; 32], bill: u64) {
        self.served().delivered(reservation, receipt, bill);
    }

    /// The task under `reservation` ended without a delivery.
    pub fn release(&self, reservation: u64) {
        self.served().release(reservation);
    }

    /// Delivered tasks `payer` has not paid this node for.
    pub fn owes(&self, payer: PeerId) -> usize {
        key_of(&payer).map_or(0, |k| self.served().owed_tasks(&k))
    }

    /// What each new channel locks, base units: the most one bill may be.
    pub fn deposit(&self) -> u64 {
        self.inner.deposit
    }

    /// Whether `withhold-payment-acks=N` withholds this acknowledgement (the first N).
    fn withhold_ack(&self) -> bool {
        let n = self.inner.misbehave.withhold_payment_acks;
        n > 0
            && self
                .inner
                .withheld
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                < n
    }

    /// A request to `peer` that must be answered [`types::OK`]; its JSON answer.
    async fn ask(
        &self,
        peer: PeerId,
        kind: &str,
        body: Vec<u8>,
    ) -> Result<serde_json::Value, String> {
        if peer == self.inner.network.peer_id() {
            // This node runs the ledger itself.
            let answer = self.ledger_answer(&self.inner.key.public(), kind, &body)?;
            return serde_json::from_slice(&answer).map_err(|e| format!("{kind} answer: {e}"));
        }
        let answer = self
            .inner
            .network
            .request(peer, vec![], kind, body)
            .await
            .map_err(|e| error_chain(&e))?;
        if answer.message_type != types::OK {
            return Err(format!(
                "{peer} refused {kind}: {}",
                String::from_utf8_lossy(&answer.payload)
            ));
        }
        serde_json::from_slice(&answer.payload).map_err(|e| format!("{kind} answer: {e}"))
    }

    /// Pays `executor` for a receipt: `amount` base units, the receipt's hash in the state.
    /// Opens a channel on first use. Records `payment.flow`.
    pub async fn pay(&self, executor: PeerId, amount: u64, receipt: [u8; 32]) -> PaymentRecord {
        let Some((ledger_peer, ledger)) = self.inner.ledger_peer else {
            return PaymentRecord::unpaid(
                amount,
                "no ledger configured ([payments] ledger)",
                "unpaid",
            );
        };
        if amount == 0 {
            return PaymentRecord::unpaid(0, "nothing owed", "unpaid");
        }
        if self.inner.misbehave.never_pay {
            return PaymentRecord::unpaid(amount, "misbehaviour never-pay", "unpaid");
        }
        let span = tracing::info_span!(
            names::PAYMENT_FLOW,
            peer.id = %executor,
            amount = amount,
            channel.id = tracing::field::Empty,
            receipt.sha256 = hex::encode(receipt).as_str(),
        );
        let result = async {
            let value = Amount::from_base_units(amount);
            let mut channel = self
                .channel_to(executor, ledger_peer, ledger, value)
                .await?;
            let mut paid = self.inner.payer.pay(&channel, value, receipt, now());
            if let Err(PaymentError::Overdraft { .. } | PaymentError::WrongStatus { .. }) = paid {
                // Used up or being settled since it was remembered: a new channel.
                self.forget(&channel);
                channel = self
                    .channel_to(executor, ledger_peer, ledger, value)
                    .await?;
                paid = self.inner.payer.pay(&channel, value, receipt, now());
            }
            tracing::Span::current().record("channel.id", hex::encode(channel.0).as_str());
            let state = paid.map_err(|e| e.to_string())?;
            self.deliver(executor, &channel, state.state.nonce).await?;
            self.inner.metrics.payment("out", amount);
            Ok::<_, String>(PaymentRecord {
                status: "paid".into(),
                channel: Some(hex::encode(channel.0)),
                amount,
                cumulative: Some(state.state.cumulative.base_units()),
                nonce: Some(state.state.nonce),
                receipt: Some(hex::encode(receipt)),
                reason: None,
            })
        }
        .instrument(span.clone())
        .await;
        result.unwrap_or_else(|why| {
            span.record_error(&zerostate_p2p::Reason(why.clone()));
            let mut record = PaymentRecord::unpaid(amount, why, "failed");
            // A signed state not yet delivered: the record names it, so that it can say
            // `paid` once a later delivery carries it.
            if let Some((channel, state)) = self.pending(&receipt) {
                record.channel = Some(hex::encode(channel.0));
                record.cumulative = Some(state.cumulative.base_units());
                record.nonce = Some(state.nonce);
                record.receipt = Some(hex::encode(receipt));
            }
            record
        })
    }

    /// Remembers a payment whose state was signed but not delivered (at most
    /// [`UNDELIVERED_KEPT`]; past that, its record keeps saying `failed`).
    fn undelivered(&self, channel: &ChannelId, state: &ChannelState) {
        let mut pending = self.late();
        if pending.0.len() < UNDELIVERED_KEPT {
            pending.0.insert(state.receipt, (*channel, *state));
        }
    }

    /// The undelivered payment for this receipt, if one is remembered.
    fn pending(&self, receipt: &[u8; 32]) -> Option<(ChannelId, ChannelState)> {
        self.late().0.get(receipt).copied()
    }

    fn late(&self) -> std::sync::MutexGuard<'_, Late> {
        self.inner
            .late
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Receipts (their hashes) of payments reported `failed` whose states a later delivery
    /// carried to the payee since the last call: those payments were made after all.
    pub fn delivered_late(&self) -> Vec<[u8; 32]> {
        std::mem::take(&mut self.late().1)
    }

    /// Delivers to `payee`, in nonce order, every state signed on `channel` it has not
    /// acknowledged, until the one with nonce `upto` is acknowledged. The payee takes only
    /// the next nonce, so states signed at once by concurrent payments, or left behind by a
    /// delivery that failed (the payee was down, the answer lost), go in order, one
    /// delivery at a time per channel; a state the payee already holds is acknowledged as
    /// held, so nothing is paid twice.
    async fn deliver(&self, payee: PeerId, channel: &ChannelId, upto: u64) -> Result<(), String> {
        let lock = self
            .inner
            .delivering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(*channel)
            .or_default()
            .clone();
        let _one_at_a_time = lock.lock().await;
        let pending = self
            .inner
            .payer
            .unacknowledged(channel)
            .map_err(|e| e.to_string())?;
        for state in pending.iter().take_while(|s| s.state.nonce <= upto) {
            if let Err(why) = self
                .ask(payee, types::PAYMENT, state.to_bytes().to_vec())
                .await
            {
                // The state with nonce `upto` is signed and kept: it goes with the next
                // delivery on this channel. Remembered before the channel is free, so that
                // the delivery that carries it finds it.
                if let Some(mine) = pending.iter().find(|s| s.state.nonce == upto) {
                    self.undelivered(channel, &mine.state);
                }
                return Err(why);
            }
            self.inner.payer.acknowledged(channel, state.state.nonce);
            let mut late = self.late();
            if late.0.remove(&state.state.receipt).is_some() {
                late.1.push(state.state.receipt);
            }
        }
        Ok(())
    }

    /// Forgets `channel` as the one to its payee (used up, or being settled).
    fn forget(&self, channel: &ChannelId) {
        self.inner
            .open_to
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, (id, _)| id != channel);
    }

    /// The open channel from this node to `payee` with room for `amount`, opened now when
    /// there is none.
    async fn channel_to(
        &self,
        payee: PeerId,
        ledger_peer: PeerId,
        ledger: LedgerId,
        amount: Amount,
    ) -> Result<ChannelId, String> {
        let payee_key = key_of(&payee).ok_or("the executor has no ed25519 key")?;
        let usable = |expiry: u64| expiry > now() + 3600;
        let cached = |inner: &Inner| {
            inner
                .open_to
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&payee_key.0)
                .filter(|(_, expiry)| usable(*expiry))
                .map(|(id, _)| *id)
        };
        if let Some(id) = cached(&self.inner) {
            return Ok(id);
        }
        let lock = self
            .inner
            .opening
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(payee_key.0)
            .or_default()
            .clone();
        let _one_at_a_time = lock.lock().await;
        if let Some(id) = cached(&self.inner) {
            return Ok(id);
        }
        let remember = |id: ChannelId, expiry: u64| {
            self.inner
                .open_to
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(payee_key.0, (id, expiry));
            id
        };
        // After a restart: a channel opened before, still usable.
        let existing = self
            .inner
            .payer
            .channels()
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|c| {
                c.params.payee == payee_key
                    && c.params.ledger == ledger
                    && usable(c.params.expiry)
                    && !c.closing
                    && c.params
                        .deposit
                        .checked_sub(c.state.cumulative)
                        .is_some_and(|room| room >= amount)
            });
        if let Some(c) = existing {
            return Ok(remember(c.params.id(), c.params.expiry));
        }
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
        let params = ChannelParams {
            ledger,
            payer: self.inner.key.public(),
            payee: payee_key,
            deposit: Amount::from_base_units(self.inner.deposit),
            expiry: now() + CHANNEL_LIFETIME,
            nonce: u64::from_be_bytes(nonce),
        };
        let payer_signature = hex::encode(self.inner.key.sign(&params.open_bytes()).0);
        let mut body = OpenBody {
            params: ParamsJson::from(&params),
            payer_signature,
            payee_signature: None,
        };
        let signed = self
            .ask(
                payee,
                types::CHANNEL_OPEN,
                serde_json::to_vec(&body).map_err(|e| e.to_string())?,
            )
            .await?;
        body.payee_signature = signed["payee_signature"].as_str().map(str::to_owned);
        // Misbehaviour `skip-ledger-open`: a channel nobody locked money for.
        if !self.inner.misbehave.skip_ledger_open {
            self.ask(
                ledger_peer,
                types::LEDGER_OPEN,
                serde_json::to_vec(&body).map_err(|e| e.to_string())?,
            )
            .await?;
        }
        let id = self
            .inner
            .payer
            .add_channel(&params)
            .map_err(|e| e.to_string())?;
        self.count_open(0, 1);
        Ok(remember(id, params.expiry))
    }

    /// Every channel this node pays or is paid through.
    pub fn channels(&self) -> Result<Vec<ChannelView>, String> {
        let mut all: Vec<ChannelView> = Vec::new();
        for c in self.inner.payer.channels().map_err(|e| e.to_string())? {
            all.push(ChannelView::of("payer", &c));
        }
        for c in self.inner.payee.channels().map_err(|e| e.to_string())? {
            all.push(ChannelView::of("payee", &c));
        }
        Ok(all)
    }

    /// One channel of this node with its newest `limit` payments, newest first, each with
    /// the hash of the receipt it paid for; `None` when this node knows no such channel.
    pub fn history(&self, channel: &str, limit: usize) -> Result<Option<ChannelHistory>, String> {
        let id = ChannelId(bytes32(channel, "channel")?);
        let known = |found: Result<zerostate_payment::LocalChannel, PaymentError>| match found {
            Ok(c) => Ok(Some(c)),
            Err(PaymentError::UnknownChannel(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        };
        let (channel, payments) = if let Some(c) = known(self.inner.payer.channel(&id))? {
            (
                ChannelView::of("payer", &c),
                self.inner.payer.history(&id, limit),
            )
        } else if let Some(c) = known(self.inner.payee.channel(&id))? {
            (
                ChannelView::of("payee", &c),
                self.inner.payee.history(&id, limit),
            )
        } else {
            return Ok(None);
        };
        let payments = payments.map_err(|e| e.to_string())?;
        Ok(Some(ChannelHistory {
            channel,
            payments: payments
                .into_iter()
                .map(|p| PaymentView {
                    nonce: p.nonce,
                    amount: p.amount.base_units(),
                    cumulative: p.cumulative.base_units(),
                    receipt: hex::encode(p.receipt),
                })
                .collect(),
        }))
    }

    /// Closes a channel this node pays through, cooperatively: the payee signs the latest
    /// state and the ledger settles on it. Returns what each side got.
    pub async fn close(&self, channel: &str) -> Result<serde_json::Value, String> {
        let Some((ledger_peer, _)) = self.inner.ledger_peer else {
            return Err("no ledger configured ([payments] ledger)".into());
        };
        let id = ChannelId(bytes32(channel, "channel")?);
        let was_open = !self
            .inner
            .payer
            .channel(&id)
            .map_err(|e| e.to_string())?
            .closing;
        // No payment on it from now on; the next one to this payee opens a new channel.
        let local = self.inner.payer.close(&id).map_err(|e| e.to_string())?;
        if was_open {
            self.count_open(0, -1);
        }
        self.forget(&id);
        let payee = self
            .inner
            .network
            .peers()
            .await
            .map_err(|e| error_chain(&e))?
            .into_iter()
            .filter_map(|p| p.peer_id.parse::<PeerId>().ok())
            .find(|p| key_of(p) == Some(local.params.payee))
            .ok_or("the payee is not connected")?;
        let signed = self
            .ask(payee, types::CHANNEL_CLOSE, channel.as_bytes().to_vec())
            .await?;
        let body = CloseBody {
            state: signed["state"].as_str().unwrap_or_default().to_owned(),
            payee_signature: signed["payee_signature"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        };
        let settled = self
            .ask(
                ledger_peer,
                types::LEDGER_CLOSE,
                serde_json::to_vec(&body).map_err(|e| e.to_string())?,
            )
            .await?;
        self.inner.metrics.settlement("cooperative");
        Ok(settled)
    }

    /// One step of a unilateral settlement of `channel`, on either side, through the
    /// ledger: start a close on this node's best signed state, dispute the closing state
    /// with it, or pay out once the challenge window has ended.
    pub async fn settle(&self, channel: &str, step: Settle) -> Result<serde_json::Value, String> {
        let Some((ledger_peer, _)) = self.inner.ledger_peer else {
            return Err("no ledger configured ([payments] ledger)".into());
        };
        let id = ChannelId(bytes32(channel, "channel")?);
        let local = match self.inner.payer.channel(&id) {
            Ok(c) => {
                self.forget(&id);
                if !c.closing {
                    self.count_open(0, -1);
                }
                self.inner.payer.close(&id)
            }
            Err(PaymentError::UnknownChannel(_)) => {
                if self.inner.payee.channel(&id).is_ok_and(|c| !c.closing) {
                    self.count_open(1, -1);
                }
                self.inner.payee.close(&id)
            }
            Err(e) => Err(e),
        }
        .map_err(|e| match e {
            PaymentError::UnknownChannel(_) => {
                format!("this node pays or is paid through no channel {channel}")
            }
            e => e.to_string(),
        })?;
        let state = local.signed().map(|s| hex::encode(s.to_bytes()));
        let (kind, state) = match step {
            Settle::Start => (types::LEDGER_START_CLOSE, state),
            Settle::Dispute => (
                types::LEDGER_DISPUTE,
                Some(state.ok_or("nothing was paid on this channel: no state to dispute with")?),
            ),
            Settle::Finalize => (types::LEDGER_FINALIZE, None),
        };
        let body = SettleBody {
            channel: channel.to_owned(),
            state,
        };
        let answer = self
            .ask(
                ledger_peer,
                kind,
                serde_json::to_vec(&body).map_err(|e| e.to_string())?,
            )
            .await?;
        self.inner.metrics.settlement(match step {
            Settle::Start => "unilateral",
            Settle::Dispute => "dispute",
            Settle::Finalize => "finalize",
        });
        Ok(answer)
    }

    /// What this node holds on the ledger.
    pub async fn balance(&self) -> Result<u64, String> {
        let Some((ledger_peer, _)) = self.inner.ledger_peer else {
            return Err("no ledger configured ([payments] ledger)".into());
        };
        let answer = self
            .ask(ledger_peer, types::LEDGER_BALANCE, b"{}".to_vec())
            .await?;
        answer["balance"]
            .as_u64()
            .ok_or_else(|| "no balance in the answer".into())
    }

    /// The devnet faucet: credits `amount` to `peer`'s account on the ledger this node
    /// runs. Refused unless the node was started with `--ledger-faucet`.
    pub fn faucet(&self, peer: &PeerId, amount: u64) -> Result<(), String> {
        if !self.inner.faucet {
            return Err("this node has no faucet (devnet only: --ledger-faucet)".into());
        }
        let ledger = self
            .inner
            .ledger
            .as_ref()
            .ok_or("this node runs no ledger")?;
        let account = key_of(peer).ok_or("the peer id has no ed25519 key")?;
        ledger
            .fund(&account, Amount::from_base_units(amount))
            .map_err(|e| e.to_string())
    }
}
