//! Channels as the API lists them, and their settlement: cooperative close, unilateral close, dispute, finalization; the ledger's balance and faucet.

use super::*;

impl Payments {
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
        let Some(backend) = self.backend() else {
            return Err("no ledger configured ([payments] ledger)".into());
        };
        let id = ChannelId(bytes32(channel, "channel")?);
        let before = self.inner.payer.channel(&id).map_err(|e| e.to_string())?;
        let was_open = !before.closing && before.opening.is_none();
        // No payment on it from now on; the next one to this payee opens a new channel.
        let local = self.inner.payer.close(&id).map_err(|e| e.to_string())?;
        if was_open {
            self.count_open(0, -1);
        }
        self.forget(&id);
        let ledger_peer = match backend {
            Backend::Ledger { peer, .. } => peer,
            Backend::Chain(on) => return self.close_on_chain(on, &local).await,
        };
        let payee = peer_of(&local.params.payee).ok_or("the payee's key is not an ed25519 key")?;
        let signed = self
            .ask(
                payee,
                types::Call::ChannelClose,
                channel.as_bytes().to_vec(),
            )
            .await?;
        let body = CloseBody {
            state: signed["state"].as_str().unwrap_or_default().to_owned(),
            payee_signature: signed["payee_signature"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        };
        let settled = self
            .ask_signed(
                ledger_peer,
                types::Call::LedgerClose,
                serde_json::to_vec(&body).map_err(|e| e.to_string())?,
            )
            .await?;
        self.inner.metrics.settlement("cooperative");
        Ok(with_proof(settled))
    }

    /// One step of a unilateral settlement of `channel`, on either side, through the
    /// ledger: start a close on this node's best signed state, dispute the closing state
    /// with it, pay out once the challenge window has ended, or take back the deposit of a
    /// channel nobody closed by its expiry plus its challenge period.
    pub async fn settle(&self, channel: &str, step: Settle) -> Result<serde_json::Value, String> {
        let Some(backend) = self.backend() else {
            return Err("no ledger configured ([payments] ledger)".into());
        };
        if let (Backend::Chain(_), Settle::Refund) = (backend, step) {
            // Refused before anything changes here: the channel stays usable.
            return Err(onchain::NO_REFUND.into());
        }
        let id = ChannelId(bytes32(channel, "channel")?);
        let local = match self.inner.payer.channel(&id) {
            Ok(c) => {
                self.forget(&id);
                if !c.closing && c.opening.is_none() {
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
        let counted = match step {
            Settle::Start => "unilateral",
            Settle::Dispute => "dispute",
            Settle::Finalize => "finalize",
            Settle::Refund => "refund",
        };
        let ledger_peer = match backend {
            Backend::Ledger { peer, .. } => peer,
            Backend::Chain(on) => {
                let answer = self.settle_on_chain(on, &local, step).await?;
                self.inner.metrics.settlement(counted);
                return Ok(answer);
            }
        };
        let state = local.signed().map(|s| hex::encode(s.to_bytes()));
        // Misbehaviour `close-on-nothing`: the payer's close names none of what it paid.
        let cheat = self.inner.misbehave.close_on_nothing
            && step == Settle::Start
            && local.params.payer == self.inner.key.public();
        let state = if cheat { None } else { state };
        let (kind, state) = match step {
            Settle::Start => (types::Call::LedgerStartClose, state),
            Settle::Dispute => (
                types::Call::LedgerDispute,
                Some(state.ok_or("nothing was paid on this channel: no state to dispute with")?),
            ),
            Settle::Finalize => (types::Call::LedgerFinalize, None),
            Settle::Refund => (types::Call::LedgerRefund, None),
        };
        let body = SettleBody {
            channel: channel.to_owned(),
            state,
        };
        let answer = self
            .ask_signed(
                ledger_peer,
                kind,
                serde_json::to_vec(&body).map_err(|e| e.to_string())?,
            )
            .await?;
        self.inner.metrics.settlement(counted);
        Ok(with_proof(answer))
    }

    /// What this node holds on the ledger.
    pub async fn balance(&self) -> Result<u64, String> {
        let ledger_peer = match self.backend() {
            None => return Err("no ledger configured ([payments] ledger)".into()),
            Some(Backend::Chain(on)) => return self.chain_balance(on).await,
            Some(Backend::Ledger { peer, .. }) => peer,
        };
        let answer = self
            .ask(ledger_peer, types::Call::LedgerBalance, b"{}".to_vec())
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

/// The ledger's answer with, as `ledger_proof`, the answer as it signed it.
fn with_proof(
    (mut answer, signed): (serde_json::Value, Option<SignedAnswer>),
) -> serde_json::Value {
    if let (Some(fields), Some(signed)) = (answer.as_object_mut(), signed) {
        fields.insert("ledger_proof".to_owned(), proof(&signed));
    }
    answer
}
