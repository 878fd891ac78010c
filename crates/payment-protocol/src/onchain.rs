//! Settlement on a chain (`[payments] chain`): channels locked in the ZeroState channel
//! contract instead of the embedded ledger. Payments stay off chain and go as they go
//! with the ledger, each state now carrying the payer's EIP-712 voucher for its cumulative
//! amount, signed with the payer's settlement key; the payee checks and keeps the best
//! voucher, and settles with it: a cooperative close is the payee's close on chain, a
//! payer's exit is its `startClose`, which the payee's watchtower tops with its best
//! voucher inside the challenge period.

use super::*;
use zerostate_chain::{
    Address, B256, BookedChannel, Chain, ChainBook, KeyBinding, OnChainStatus, Tx,
};
use zerostate_payment::HeldVoucher;

/// This node's side of the channel contract.
pub(crate) struct OnChain {
    /// Its connection, signing with its settlement key.
    pub(crate) chain: Chain,
    /// Its channels on chain (`<data dir>/chain.db`); the vouchers it holds are in its payee store.
    pub(crate) book: ChainBook,
    /// The contract as the ledger its channels name.
    pub(crate) ledger: LedgerId,
    /// Its settlement account, bound to its node key.
    pub(crate) binding: KeyBinding,
    /// The book's channels read so far: a payment reads no table for them.
    booked: std::sync::Mutex<std::collections::HashMap<ChannelId, BookedChannel>>,
    /// The watchtower's place in the contract's events: the last block it followed them
    /// to (0 before its first look), and its looks so far.
    followed: std::sync::atomic::AtomicU64,
    looks: std::sync::atomic::AtomicU64,
}

/// Work begun on the runtime's blocking threads, so that it goes on while the thread that
/// began it does its own: a voucher's signature or its check while the state it goes with
/// is written to disk. Without a runtime the work is done when begun.
pub(crate) struct Aside<T>(Begun<T>);

enum Begun<T> {
    Running(std::sync::mpsc::Receiver<Result<T, String>>),
    Done(Result<T, String>),
}

impl<T: Send + 'static> Aside<T> {
    pub(crate) fn begin(work: impl FnOnce() -> Result<T, String> + Send + 'static) -> Self {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let (answer, answered) = std::sync::mpsc::sync_channel(1);
                runtime.spawn_blocking(move || {
                    // Nobody waiting any more is no error.
                    let _ = answer.send(work());
                });
                Self(Begun::Running(answered))
            }
            Err(_) => Self(Begun::Done(work())),
        }
    }

    /// Waits for the work's answer.
    pub(crate) fn wait(self) -> Result<T, String> {
        match self.0 {
            Begun::Running(answered) => answered
                .recv()
                .unwrap_or_else(|_| Err("the work begun aside ended without an answer".into())),
            Begun::Done(answer) => answer,
        }
    }
}

/// Every this many looks the watchtower reads every channel from the contract, not only
/// those the contract logged something about (a channel nearing its expiry logs nothing).
const SWEEP_EVERY: u64 = 60;

/// What the watchtower reads from the contract on one look.
pub(crate) struct Focus {
    /// The channels to read: all of them (`None`) or those the contract logged something
    /// about since the last look.
    pub(crate) channels: Option<std::collections::HashSet<ChannelId>>,
    /// The block the events were followed to: the next look follows them from there,
    /// once this one has done everything it found to do.
    pub(crate) to: u64,
}

impl OnChain {
    /// Connects `chain` with the book in `dir`; `node` is the node key its account is
    /// bound to.
    pub(crate) fn open(
        chain: Chain,
        dir: &std::path::Path,
        node: &Keypair,
    ) -> anyhow::Result<Self> {
        let book = ChainBook::open(&dir.join("chain.db"))?;
        let domain = chain.domain();
        Ok(Self {
            ledger: LedgerId::of_chain(domain.chain_id, &domain.contract.into_array()),
            binding: chain.key().bind(node),
            booked: std::sync::Mutex::default(),
            followed: std::sync::atomic::AtomicU64::new(0),
            looks: std::sync::atomic::AtomicU64::new(0),
            book,
            chain,
        })
    }

    /// How `id` is booked: what it is on chain.
    pub(crate) fn booked(&self, id: &ChannelId) -> Result<BookedChannel, String> {
        let cache = || {
            self.booked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(found) = cache().get(id).copied() {
            return Ok(found);
        }
        let found = self
            .book
            .get(&id.0)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("channel {id} is not booked on the chain"))?;
        cache().insert(*id, found);
        Ok(found)
    }

    /// Books `id` as `booked` (see [`ChainBook::add`]).
    pub(crate) fn book(&self, id: &ChannelId, booked: &BookedChannel) -> Result<(), String> {
        self.book.add(&id.0, booked).map_err(|e| e.to_string())
    }

    /// This node's voucher for `amount` in all on `id` (it pays through it).
    pub(crate) fn voucher(&self, id: &ChannelId, amount: Amount) -> Result<[u8; 65], String> {
        let booked = self.booked(id)?;
        self.chain
            .domain()
            .sign(self.chain.key(), booked.onchain, amount)
            .map_err(|e| e.to_string())
    }

    /// Checks the payer's `voucher` for `amount` on `id`, a channel of deposit `deposit`
    /// this node is paid through: signed by the channel's payer account, for no more than
    /// the deposit.
    pub(crate) fn check_voucher(
        &self,
        id: &ChannelId,
        amount: Amount,
        deposit: Amount,
        voucher: &[u8],
    ) -> Result<(), String> {
        let booked = self.booked(id)?;
        let signer = self
            .chain
            .domain()
            .signer_of(booked.onchain, amount, voucher)
            .map_err(|e| e.to_string())?;
        if signer != booked.payer {
            return Err(format!(
                "the voucher is signed by {signer}, not by the channel's payer {}",
                booked.payer
            ));
        }
        if amount > deposit {
            return Err(format!(
                "the voucher pays {amount}, over the deposit {deposit}"
            ));
        }
        Ok(())
    }

    /// Where the channel of `params` stands on chain, checked against the terms both
    /// parties signed (an `unknown` answer when the chain holds no such channel).
    pub(crate) async fn status(&self, params: &ChannelParams) -> Result<ChannelAnswer, String> {
        let id = params.id();
        let unknown = ChannelAnswer {
            status: "unknown".into(),
            params: None,
            challenge_period_s: None,
            closing: None,
        };
        let Some(booked) = self.book.get(&id.0).map_err(|e| e.to_string())? else {
            return Ok(unknown);
        };
        let held = self
            .chain
            .channel(booked.onchain)
            .await
            .map_err(|e| e.to_string())?;
        if held.status == OnChainStatus::None {
            return Ok(unknown);
        }
        if held.payer != booked.payer
            || held.payee != booked.payee
            || held.deposit != params.deposit
        {
            return Err(format!(
                "the chain holds channel {id} on other terms than both signed (deposit {}, \
                 payer {}, payee {})",
                held.deposit, held.payer, held.payee
            ));
        }
        let status = match held.status {
            OnChainStatus::Open => "open",
            OnChainStatus::Closing => "closing",
            _ => "settled",
        };
        Ok(ChannelAnswer {
            status: status.into(),
            params: Some(ParamsJson::from(params)),
            challenge_period_s: Some(held.challenge_period),
            closing: (held.status == OnChainStatus::Closing).then(|| ClosingJson {
                cumulative: held.closing_amount.base_units(),
                nonce: 0,
                challenge_ends: held.closes_at,
                // Only the payer starts a close on chain.
                closer: hex::encode(params.payer.0),
            }),
        })
    }

    /// Which channels the watchtower reads on this look: every one on its first look after
    /// the node starts and every [`SWEEP_EVERY`] looks, otherwise those the contract logged
    /// an open, a close or a settlement of since the last look that did all it had to.
    pub(crate) async fn focus(&self) -> Result<Focus, String> {
        use std::sync::atomic::Ordering;
        let latest = self.chain.block_number().await.map_err(|e| e.to_string())?;
        let from = self.followed.load(Ordering::Relaxed);
        let look = self.looks.fetch_add(1, Ordering::Relaxed);
        if from == 0 || look.is_multiple_of(SWEEP_EVERY) {
            return Ok(Focus {
                channels: None,
                to: latest,
            });
        }
        let mut channels = std::collections::HashSet::new();
        if latest > from {
            let events = self
                .chain
                .events(from + 1, latest)
                .await
                .map_err(|e| e.to_string())?;
            for event in events {
                let onchain = match event {
                    zerostate_chain::ChannelEvent::Opened { id, .. }
                    | zerostate_chain::ChannelEvent::CloseStarted { id, .. }
                    | zerostate_chain::ChannelEvent::Settled { id, .. } => id,
                };
                if let Some(channel) = self.book.by_onchain(&onchain).map_err(|e| e.to_string())? {
                    channels.insert(ChannelId(channel));
                }
            }
        }
        Ok(Focus {
            channels: Some(channels),
            to: latest,
        })
    }

    /// The watchtower did everything a look found to do: the next follows the events on
    /// from `to`.
    pub(crate) fn followed(&self, to: u64) {
        self.followed
            .fetch_max(to, std::sync::atomic::Ordering::Relaxed);
    }

    /// Takes what settled to this node's account; nothing to take is no error.
    pub(crate) async fn withdraw(&self) -> Result<Option<Tx>, String> {
        let owed = self
            .chain
            .settled_balance(self.chain.address())
            .await
            .map_err(|e| e.to_string())?;
        if owed.is_zero() {
            return Ok(None);
        }
        self.chain
            .withdraw()
            .await
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// Why a refund is refused on a chain.
pub(crate) const NO_REFUND: &str = "on a chain a payer takes its deposit back by closing \
     (channel close --unilateral) and, once the challenge period is over, finalizing \
     (channel finalize)";

/// Where this node's channels settle.
#[derive(Clone, Copy)]
pub(crate) enum Backend<'a> {
    /// The embedded ledger another node (or this one) runs, asked over the network.
    Ledger {
        /// The node that runs it.
        peer: PeerId,
        /// Its id.
        id: LedgerId,
    },
    /// The channel contract on a chain.
    Chain(&'a OnChain),
}

impl Backend<'_> {
    /// What it is called in messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Ledger { .. } => "the ledger",
            Backend::Chain(_) => "the chain",
        }
    }

    /// The ledger the channels name.
    pub(crate) fn ledger(&self) -> LedgerId {
        match self {
            Backend::Ledger { id, .. } => *id,
            Backend::Chain(on) => on.ledger,
        }
    }
}

/// A mined transaction as answers show it.
pub(crate) fn tx_json(tx: &Tx) -> serde_json::Value {
    serde_json::json!({
        "hash": tx.hash.to_string(),
        "block": tx.block,
        "gas_used": tx.gas_used,
    })
}

/// Records `tx` on the current span (`tx.hash`, `tx.block`).
fn record_tx(tx: &Tx) {
    let span = tracing::Span::current();
    span.record("tx.hash", tx.hash.to_string().as_str());
    span.record("tx.block", tx.block);
}

/// A settlement span for `channel`: `payment.dispute` for a payee topping a payer's
/// close, else `payment.settlement`, each with the transaction's hash and block once mined.
fn settlement_span(dispute: bool, channel: &ChannelId, kind: &'static str) -> tracing::Span {
    if dispute {
        tracing::info_span!(
            names::PAYMENT_DISPUTE,
            channel.id = %channel,
            settlement.kind = kind,
            tx.hash = tracing::field::Empty,
            tx.block = tracing::field::Empty,
        )
    } else {
        tracing::info_span!(
            names::PAYMENT_SETTLEMENT,
            channel.id = %channel,
            settlement.kind = kind,
            tx.hash = tracing::field::Empty,
            tx.block = tracing::field::Empty,
        )
    }
}

impl Payments {
    /// Begins `work` on this node's side of the chain aside ([`Aside`]).
    pub(crate) fn on_chain_aside<T: Send + 'static>(
        &self,
        work: impl FnOnce(&OnChain) -> Result<T, String> + Send + 'static,
    ) -> Aside<T> {
        let this = self.clone();
        Aside::begin(move || match &this.inner.chain {
            Some(on) => work(on),
            None => Err("this node settles on no chain".into()),
        })
    }

    /// Where this node's channels settle: the chain when `[payments] chain` is set, else
    /// the ledger `[payments] ledger` names; none when neither is (nothing is paid).
    pub(crate) fn backend(&self) -> Option<Backend<'_>> {
        if let Some(on) = &self.inner.chain {
            return Some(Backend::Chain(on));
        }
        self.inner
            .ledger_peer
            .map(|(peer, id)| Backend::Ledger { peer, id })
    }

    /// Where the channel of `params` stands where it settles, checked against its terms.
    pub(crate) async fn where_settled(
        &self,
        backend: Backend<'_>,
        params: &ChannelParams,
    ) -> Result<ChannelAnswer, String> {
        match backend {
            Backend::Ledger { peer, .. } => {
                let id = params.id();
                let (answer, held) = self.ledger_channel(peer, &id).await?;
                if held.is_some_and(|held| held != *params) {
                    return Err(format!(
                        "the ledger holds channel {id} on other terms than both signed"
                    ));
                }
                Ok(answer)
            }
            Backend::Chain(on) => on.status(params).await,
        }
    }

    /// The clock settlement runs on: the newest block's time on a chain (which a devnet
    /// may move on), else this machine's.
    pub(crate) async fn settlement_now(&self, backend: Backend<'_>) -> Result<u64, String> {
        match backend {
            Backend::Ledger { .. } => Ok(now()),
            Backend::Chain(on) => on.chain.block_time().await.map_err(|e| e.to_string()),
        }
    }

    /// Locks the deposit of `params` on chain for `payee` (its account), as the payer.
    pub(crate) async fn lock_on_chain(
        &self,
        on: &OnChain,
        params: &ChannelParams,
        payee: Address,
    ) -> Result<(), String> {
        let id = params.id();
        let span = tracing::info_span!(
            names::PAYMENT_TRANSACTION,
            channel.id = %id,
            operation = "open",
            tx.hash = tracing::field::Empty,
            tx.block = tracing::field::Empty,
        );
        async {
            tracing::info!(channel.id = %id, deposit = %params.deposit, "locking the deposit on chain");
            let opened = on
                .chain
                .open(
                    payee,
                    B256::from(id.0),
                    self.inner.challenge_period,
                    params.deposit,
                )
                .await
                .map_err(|e| e.to_string())?;
            record_tx(&opened.tx);
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// As a payee: the payer's cooperative close of a channel on chain, `payload` a
    /// [`ChainCloseBody`]: its voucher for everything it paid is checked and kept, and the
    /// channel is closed on chain with the best voucher this node holds.
    pub(crate) async fn close_for_payer(
        &self,
        on: &OnChain,
        caller: &PublicKey,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        let body: ChainCloseBody = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        let id = ChannelId(bytes32(&body.channel, "channel")?);
        let local = self.inner.payee.channel(&id).map_err(|e| e.to_string())?;
        if local.params.payer != *caller {
            return Err("the caller is not this channel's payer".into());
        }
        let voucher = hex::decode(&body.voucher).map_err(|e| format!("voucher: {e}"))?;
        let amount = Amount::from_base_units(body.amount);
        on.check_voucher(&id, amount, local.params.deposit, &voucher)?;
        self.inner
            .payee
            .hold_voucher(
                &id,
                &HeldVoucher {
                    amount,
                    signature: voucher,
                },
            )
            .map_err(|e| e.to_string())?;
        if !local.closing {
            self.count_open(1, -1);
        }
        self.inner.payee.close(&id).map_err(|e| e.to_string())?;
        let answer = self.payee_close(on, &id, &local.params, false).await?;
        Ok(answer.to_string().into_bytes())
    }

    /// As a payee: closes `id` on chain with the best voucher held (topping a payer's
    /// close when `dispute`), then takes the money.
    async fn payee_close(
        &self,
        on: &OnChain,
        id: &ChannelId,
        params: &ChannelParams,
        dispute: bool,
    ) -> Result<serde_json::Value, String> {
        let booked = on.booked(id)?;
        let best = self
            .inner
            .payee
            .best_voucher(id)
            .map_err(|e| e.to_string())?
            .ok_or("nothing was paid on this channel: this node holds no voucher to close with")?;
        let kind = if dispute { "dispute" } else { "payee-close" };
        async {
            let tx = on
                .chain
                .close(booked.onchain, best.amount, &best.signature)
                .await
                .map_err(|e| e.to_string())?;
            record_tx(&tx);
            let withdrawn = on.withdraw().await?;
            let to_payer = params
                .deposit
                .checked_sub(best.amount)
                .unwrap_or(Amount::ZERO);
            Ok(serde_json::json!({
                "to_payee": best.amount.base_units(),
                "to_payer": to_payer.base_units(),
                "tx": tx_json(&tx),
                "withdrawn": withdrawn.as_ref().map(tx_json),
            }))
        }
        .instrument(settlement_span(dispute, id, kind))
        .await
    }

    /// The payer's cooperative close on chain: it sends the payee its voucher for
    /// everything paid, the payee closes with it, and the rest comes back to this node.
    pub(crate) async fn close_on_chain(
        &self,
        on: &OnChain,
        local: &zerostate_payment::LocalChannel,
    ) -> Result<serde_json::Value, String> {
        let id = local.params.id();
        let payee = peer_of(&local.params.payee).ok_or("the payee's key is not an ed25519 key")?;
        let amount = local.state.cumulative;
        let body = ChainCloseBody {
            channel: hex::encode(id.0),
            amount: amount.base_units(),
            voucher: hex::encode(on.voucher(&id, amount)?),
        };
        let mut answer = self
            .ask(
                payee,
                types::Call::ChannelClose,
                serde_json::to_vec(&body).map_err(|e| e.to_string())?,
            )
            .await?;
        self.inner.metrics.settlement("cooperative");
        let withdrawn = on.withdraw().await?;
        if let Some(fields) = answer.as_object_mut() {
            fields.insert(
                "payer_withdrawn".into(),
                withdrawn.as_ref().map_or(serde_json::Value::Null, tx_json),
            );
        }
        Ok(answer)
    }

    /// One step of a unilateral settlement on chain of `local`, this node's side of it.
    pub(crate) async fn settle_on_chain(
        &self,
        on: &OnChain,
        local: &zerostate_payment::LocalChannel,
        step: Settle,
    ) -> Result<serde_json::Value, String> {
        let params = &local.params;
        let id = params.id();
        let booked = on.booked(&id)?;
        let payer = params.payer == self.inner.key.public();
        match (step, payer) {
            (Settle::Start, true) => {
                // Misbehaviour `close-on-nothing`: the payer's close names none of what it
                // paid.
                let amount = if self.inner.misbehave.close_on_nothing {
                    Amount::ZERO
                } else {
                    local.state.cumulative
                };
                async {
                    let tx = on
                        .chain
                        .start_close(booked.onchain, amount)
                        .await
                        .map_err(|e| e.to_string())?;
                    record_tx(&tx);
                    let held = on
                        .chain
                        .channel(booked.onchain)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(serde_json::json!({
                        "challenge_ends": held.closes_at,
                        "amount": amount.base_units(),
                        "tx": tx_json(&tx),
                    }))
                }
                .instrument(settlement_span(false, &id, "payer-close"))
                .await
            }
            (Settle::Start, false) => self.payee_close(on, &id, params, false).await,
            (Settle::Dispute, false) => self.payee_close(on, &id, params, true).await,
            (Settle::Dispute, true) => Err(
                "on a chain only the payee answers a close: the payer's close names what it \
                 owes"
                    .into(),
            ),
            (Settle::Finalize, _) => {
                async {
                    let held = on
                        .chain
                        .channel(booked.onchain)
                        .await
                        .map_err(|e| e.to_string())?;
                    let tx = on
                        .chain
                        .finalize(booked.onchain)
                        .await
                        .map_err(|e| e.to_string())?;
                    record_tx(&tx);
                    let withdrawn = on.withdraw().await?;
                    let to_payer = held
                        .deposit
                        .checked_sub(held.closing_amount)
                        .unwrap_or(Amount::ZERO);
                    Ok(serde_json::json!({
                        "to_payee": held.closing_amount.base_units(),
                        "to_payer": to_payer.base_units(),
                        "tx": tx_json(&tx),
                        "withdrawn": withdrawn.as_ref().map(tx_json),
                    }))
                }
                .instrument(settlement_span(false, &id, "finalize"))
                .await
            }
            (Settle::Refund, _) => Err(NO_REFUND.into()),
        }
    }

    /// This node's coins on chain, in base units (whole gwei; what settled to it is
    /// withdrawn as it settles).
    pub(crate) async fn chain_balance(&self, on: &OnChain) -> Result<u64, String> {
        let wei = on
            .chain
            .coin_balance(on.chain.address())
            .await
            .map_err(|e| e.to_string())?;
        let units = wei / zerostate_chain::U256::from(zerostate_chain::WEI_PER_UNIT);
        Ok(u64::try_from(units).unwrap_or(u64::MAX))
    }
}
