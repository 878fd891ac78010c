//! The payer's side, and the payee's bookkeeping of work served: money locked before work, payments for receipts, their delivery in nonce order.

use super::*;

/// How long a payee holds a task from a payer that owes its credit, for a payment on its
/// way (see [`Payments::within_credit`]).
const PAYMENT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl Payments {
    /// Whether `payer` owes for fewer than `credit` delivered tasks, waiting up to
    /// [`PAYMENT_GRACE`] for payments to clear what it owes; else what it owes. A payer
    /// with several tasks under way hands over the next while the last one's payment is
    /// still on its way (the result reached it, its bill is being checked, the payment is
    /// in the network): refusing at once would refuse a debt about to be paid. Nothing is
    /// served meanwhile; a payer that does not pay is refused after the grace.
    async fn within_credit(&self, payer: &PublicKey, credit: u32) -> Result<(), usize> {
        let cleared = async {
            loop {
                let next = self.inner.cleared.notified();
                tokio::pin!(next);
                next.as_mut().enable();
                if self.served().owed_tasks(payer) < credit as usize {
                    return;
                }
                next.await;
            }
        };
        match tokio::time::timeout(PAYMENT_GRACE, cleared).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.served().owed_tasks(payer)),
        }
    }

    /// As a payer: makes sure a channel to `executor` holds at least `max_bill`, opening
    /// one if needed, before the executor is handed a task; its id (hex), or `None` when
    /// no ledger is configured (nothing is paid).
    pub async fn lock_for(
        &self,
        executor: PeerId,
        max_bill: u64,
    ) -> Result<Option<String>, String> {
        let Some(backend) = self.backend() else {
            return Ok(None);
        };
        let amount = Amount::from_base_units(max_bill);
        let mut channel = self.channel_to(executor, backend, amount).await?;
        let room = self
            .inner
            .payer
            .channel(&channel)
            .map_err(|e| e.to_string())
            .map(|c| c.params.deposit.checked_sub(c.state.cumulative))?;
        if room.is_none_or(|room| room < amount) {
            // Used up since it was remembered: a new one.
            self.forget(&channel);
            channel = self.channel_to(executor, backend, amount).await?;
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
        let Some(backend) = self.backend() else {
            return Ok(None);
        };
        let payer_key = key_of(&payer).ok_or("the requester has no ed25519 key")?;
        if let Err(owed) = self.within_credit(&payer_key, credit).await {
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
        if local.params.payer != payer_key || local.params.ledger != backend.ledger() {
            return Err("the channel is not yours to this node on its ledger".into());
        }
        if local.closing {
            return Err("the channel is being settled".into());
        }
        if !self.served().is_confirmed(&id) {
            let place = backend.name();
            let status = self
                .where_settled(backend, &local.params)
                .await
                .map_err(|why| format!("{place} did not confirm the channel: {why}"))?;
            if status.status != "open" {
                let why = match status.status.as_str() {
                    "unknown" => "it holds no such channel",
                    "closing" => "the channel is being settled",
                    _ => "the channel is settled",
                };
                return Err(format!("{place} did not confirm the channel: {why}"));
            }
            // On a chain the payer chooses the challenge period: one shorter than two
            // looks of this node's watchtower could let a close on less go unanswered.
            let period = status.challenge_period_s.unwrap_or(0);
            let watched = self.inner.watch_every.as_secs().saturating_mul(2);
            if matches!(backend, Backend::Chain(_)) && period < watched {
                return Err(format!(
                    "the channel's challenge period is {period} s, shorter than two looks of \
                     this node's watchtower ({watched} s): open one with a longer period"
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
    pub(crate) fn withhold_ack(&self) -> bool {
        let n = self.inner.misbehave.withhold_payment_acks;
        n > 0
            && self
                .inner
                .withheld
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                < n
    }

    /// A request to `peer` that must be answered [`types::OK`]; its JSON answer.
    pub(crate) async fn ask(
        &self,
        peer: PeerId,
        call: types::Call,
        body: Vec<u8>,
    ) -> Result<serde_json::Value, String> {
        self.ask_signed(peer, call, body)
            .await
            .map(|(answer, _)| answer)
    }

    /// [`Payments::ask`], and for a request to the ledger the answer as it signed it,
    /// checked against `peer`'s key: an answer the ledger did not sign is refused.
    pub(crate) async fn ask_signed(
        &self,
        peer: PeerId,
        call: types::Call,
        body: Vec<u8>,
    ) -> Result<(serde_json::Value, Option<SignedAnswer>), String> {
        let kind = call.as_str();
        let request = if call.for_ledger() {
            body.clone()
        } else {
            Vec::new()
        };
        let answer = if peer == self.inner.transport.local_peer() {
            // This node runs the ledger itself.
            self.ledger_answer(&self.inner.key.public(), call, &body)?
        } else {
            self.inner.transport.ask(peer, call, body).await?
        };
        if !call.for_ledger() {
            let answer =
                serde_json::from_slice(&answer).map_err(|e| format!("{kind} answer: {e}"))?;
            return Ok((answer, None));
        }
        let wire: SignedAnswerJson = serde_json::from_slice(&answer)
            .map_err(|e| format!("the ledger's answer to {kind} is not a signed answer: {e}"))?;
        let operator = key_of(&peer).ok_or("the ledger's peer id has no ed25519 key")?;
        let signed = SignedAnswer::received(
            &operator,
            kind,
            &request,
            wire.answer.into_bytes(),
            signature(&wire.signature, "the ledger's signature")?,
        )
        .map_err(|e| format!("the answer to {kind} is not signed by the ledger: {e}"))?;
        let answer =
            serde_json::from_slice(&signed.answer).map_err(|e| format!("{kind} answer: {e}"))?;
        Ok((answer, Some(signed)))
    }

    /// Pays `executor` for a receipt: `amount` base units, the receipt's hash in the state.
    /// Opens a channel on first use. Records `payment.flow`.
    pub async fn pay(&self, executor: PeerId, amount: u64, receipt: [u8; 32]) -> PaymentRecord {
        let Some(backend) = self.backend() else {
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
            let mut channel = self.channel_to(executor, backend, value).await?;
            // On a chain the state's voucher is signed aside while the state is committed.
            let mut voucher = None;
            let mut pay = |channel: ChannelId| {
                self.inner
                    .payer
                    .pay_then(&channel, value, receipt, now(), |signed| {
                        if let Backend::Chain(_) = backend {
                            let amount = signed.state.cumulative;
                            let sign = self.on_chain_aside(move |on| on.voucher(&channel, amount));
                            voucher = Some((signed.state.nonce, sign));
                        }
                    })
            };
            let mut paid = pay(channel);
            if let Err(PaymentError::Overdraft { .. } | PaymentError::WrongStatus { .. }) = paid {
                // Used up or being settled since it was remembered: a new channel.
                self.forget(&channel);
                channel = self.channel_to(executor, backend, value).await?;
                paid = pay(channel);
            }
            tracing::Span::current().record("channel.id", hex::encode(channel.0).as_str());
            let state = paid.map_err(|e| e.to_string())?;
            self.deliver(executor, &channel, state.state.nonce, voucher)
                .await?;
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
    pub(crate) fn undelivered(&self, channel: &ChannelId, state: &ChannelState) {
        let mut pending = self.undelivered_states();
        if pending.len() < UNDELIVERED_KEPT {
            pending.insert(state.receipt, (*channel, *state));
        }
    }

    /// The undelivered payment for this receipt, if one is remembered.
    pub(crate) fn pending(&self, receipt: &[u8; 32]) -> Option<(ChannelId, ChannelState)> {
        self.undelivered_states().get(receipt).copied()
    }

    fn undelivered_states(&self) -> std::sync::MutexGuard<'_, Undelivered> {
        self.inner
            .undelivered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Delivers to `payee`, in nonce order, every state signed on `channel` it has not
    /// acknowledged, until the one with nonce `upto` is acknowledged. The payee takes only
    /// the next nonce, so states signed at once by concurrent payments, or left behind by a
    /// delivery that failed (the payee was down, the answer lost), go in order, one
    /// delivery at a time per channel; a state the payee already holds is acknowledged as
    /// held, so nothing is paid twice.
    pub(crate) async fn deliver(
        &self,
        payee: PeerId,
        channel: &ChannelId,
        upto: u64,
        mut signed: Option<(u64, Aside<[u8; 65]>)>,
    ) -> Result<(), String> {
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
            let mut body = state.to_bytes().to_vec();
            if let Some(Backend::Chain(on)) = self.backend() {
                // On a chain each state carries the voucher the payee settles with: the
                // one signed aside for it, or signed now.
                let voucher = match signed.take_if(|(nonce, _)| *nonce == state.state.nonce) {
                    Some((_, aside)) => aside.wait()?,
                    None => on.voucher(channel, state.state.cumulative)?,
                };
                body.extend_from_slice(&voucher);
            }
            if let Err(why) = self.ask(payee, types::Call::Payment, body).await {
                // The state with nonce `upto` is signed and kept: it goes with the next
                // delivery on this channel. Remembered before the channel is free, so that
                // the delivery that carries it finds it.
                if let Some(mine) = pending.iter().find(|s| s.state.nonce == upto) {
                    self.undelivered(channel, &mine.state);
                }
                return Err(why);
            }
            self.inner.payer.acknowledged(channel, state.state.nonce);
            let receipt = state.state.receipt;
            if self.undelivered_states().remove(&receipt).is_some() {
                // Nobody listening is no error: the record that said `failed` is gone.
                let _ = self
                    .inner
                    .events
                    .send(PaymentEvent::DeliveredLate { receipt });
            }
        }
        Ok(())
    }

    /// Forgets `channel` as the one to its payee (used up, or being settled).
    pub(crate) fn forget(&self, channel: &ChannelId) {
        self.inner
            .open_to
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, (id, _)| id != channel);
    }

    /// The open channel from this node to `payee` with room for `amount`, opened now when
    /// there is none.
    pub(crate) async fn channel_to(
        &self,
        payee: PeerId,
        backend: Backend<'_>,
        amount: Amount,
    ) -> Result<ChannelId, String> {
        let ledger = backend.ledger();
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
                    && c.opening.is_none()
                    && c.params
                        .deposit
                        .checked_sub(c.state.cumulative)
                        .is_some_and(|room| room >= amount)
            });
        if let Some(c) = existing {
            return Ok(remember(c.params.id(), c.params.expiry));
        }
        // An open to this payee whose answer was lost may have locked a deposit: used
        // rather than locking another.
        if let Err(why) = self.recover_opening(Some(payee_key)).await {
            tracing::debug!("asking the ledger about channels still opening: {why}");
        }
        if let Some(id) = cached(&self.inner) {
            return Ok(id);
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
            payer_account: None,
            payer_binding: None,
        };
        if let Backend::Chain(on) = backend {
            body.payer_account = Some(on.binding.address.to_checksum(None));
            body.payer_binding = Some(hex::encode(on.binding.signature.0));
        }
        let signed = self
            .ask(
                payee,
                types::Call::ChannelOpen,
                serde_json::to_vec(&body).map_err(|e| e.to_string())?,
            )
            .await?;
        body.payee_signature = signed["payee_signature"].as_str().map(str::to_owned);
        // On a chain: the payee's account, as its node key binds it.
        let account = match backend {
            Backend::Chain(_) => {
                let text = |k: &str| {
                    signed[k]
                        .as_str()
                        .ok_or_else(|| format!("the payee's answer names no {k}"))
                };
                let bound = zerostate_chain::KeyBinding::checked(
                    payee_key,
                    text("payee_account")?,
                    text("payee_binding")?,
                )
                .map_err(|e| format!("the payee's account: {e}"))?;
                Some(bound.address)
            }
            Backend::Ledger { .. } => None,
        };
        // Known before the ledger is asked: if the answer is lost, or this process dies
        // meanwhile, the channel is still known and the ledger can be asked about it.
        let id = self
            .inner
            .payer
            .add_opening(&params, now())
            .map_err(|e| e.to_string())?;
        if let (Backend::Chain(on), Some(account)) = (backend, account) {
            let me = on.binding.address;
            let booked = zerostate_chain::BookedChannel {
                onchain: zerostate_chain::channel_id(
                    me,
                    account,
                    zerostate_chain::B256::from(id.0),
                ),
                payer: me,
                payee: account,
            };
            on.book(&id, &booked)?;
        }
        // Misbehaviour `skip-ledger-open`: a channel nobody locked money for.
        if !self.inner.misbehave.skip_ledger_open {
            let sent = match (backend, account) {
                (Backend::Ledger { peer, .. }, _) => self
                    .ask(
                        peer,
                        types::Call::LedgerOpen,
                        serde_json::to_vec(&body).map_err(|e| e.to_string())?,
                    )
                    .await
                    .map(drop),
                (Backend::Chain(on), Some(account)) => {
                    self.lock_on_chain(on, &params, account).await
                }
                (Backend::Chain(_), None) => Err("the payee named no account".into()),
            };
            if let Err(why) = sent {
                // Refused, or the answer lost: the ledger says which.
                match self.settle_opening(backend, &id).await {
                    Ok(Opening::Locked) => {
                        tracing::info!(
                            channel.id = %id,
                            "the ledger's answer to the open was lost; it holds the deposit"
                        );
                    }
                    Ok(_) | Err(_) => return Err(why),
                }
            }
        }
        self.inner.payer.opened(&id).map_err(|e| e.to_string())?;
        self.count_open(0, 1);
        Ok(remember(id, params.expiry))
    }

    /// Asks the ledger about every channel this node opened whose deposit it has not seen
    /// confirmed (an answer lost, a crash before it came): those it holds are paid through
    /// from now on, those it never locked are forgotten once no open sent for them can
    /// still arrive. Run when the node starts, and before a new channel is opened; only
    /// the channels to `payee`, when given. How many are still opening.
    pub async fn recover_opening(&self, payee: Option<PublicKey>) -> Result<usize, String> {
        let Some(backend) = self.backend() else {
            return Ok(0);
        };
        let ledger = backend.ledger();
        let opening: Vec<(ChannelId, PublicKey, u64, bool)> = self
            .inner
            .payer
            .channels()
            .map_err(|e| e.to_string())?
            .iter()
            .filter(|c| c.opening.is_some() && c.params.ledger == ledger)
            .filter(|c| payee.is_none_or(|p| p == c.params.payee))
            .map(|c| (c.params.id(), c.params.payee, c.params.expiry, c.closing))
            .collect();
        let mut left = 0;
        for (id, to, expiry, closing) in opening {
            match self.settle_opening(backend, &id).await? {
                Opening::Locked => {
                    tracing::info!(channel.id = %id, "{} holds a channel whose open was not answered", backend.name());
                    self.inner.payer.opened(&id).map_err(|e| e.to_string())?;
                    if closing {
                        continue;
                    }
                    self.count_open(0, 1);
                    self.inner
                        .open_to
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .entry(to.0)
                        .or_insert((id, expiry));
                }
                Opening::NotLocked => {}
                Opening::Undecided => left += 1,
            }
        }
        Ok(left)
    }

    /// What the ledger says of `id`, a channel this node has as opening: locked (the
    /// caller marks it opened), or not locked and forgotten here when its open was sent
    /// more than [`OPEN_SETTLES`] ago, or not yet (asked again later).
    async fn settle_opening(
        &self,
        backend: Backend<'_>,
        id: &ChannelId,
    ) -> Result<Opening, String> {
        let local = self.inner.payer.channel(id).map_err(|e| e.to_string())?;
        let Some(since) = local.opening else {
            return Ok(Opening::Locked);
        };
        let answer = self.where_settled(backend, &local.params).await?;
        if answer.status == "unknown" {
            if now().saturating_sub(since) < OPEN_SETTLES {
                return Ok(Opening::Undecided);
            }
            self.inner.payer.abandon(id).map_err(|e| e.to_string())?;
            tracing::info!(channel.id = %id, "the ledger never locked a channel: forgotten");
            return Ok(Opening::NotLocked);
        }
        Ok(Opening::Locked)
    }

    /// Where the ledger says channel `id` stands, and its terms (none when it holds no
    /// such channel).
    pub(crate) async fn ledger_channel(
        &self,
        ledger_peer: PeerId,
        id: &ChannelId,
    ) -> Result<(ChannelAnswer, Option<ChannelParams>), String> {
        let answer = self
            .ask(
                ledger_peer,
                types::Call::LedgerChannel,
                hex::encode(id.0).into_bytes(),
            )
            .await?;
        let answer: ChannelAnswer = serde_json::from_value(answer)
            .map_err(|e| format!("the ledger's answer about channel {id}: {e}"))?;
        if !["open", "closing", "settled", "unknown"].contains(&answer.status.as_str()) {
            return Err(format!(
                "the ledger's answer about channel {id} names no status it may have ({:?})",
                answer.status
            ));
        }
        let params = answer
            .params
            .as_ref()
            .map(ChannelParams::try_from)
            .transpose()?;
        if params.is_none() && answer.status != "unknown" {
            return Err(format!(
                "the ledger's answer about channel {id} has no terms"
            ));
        }
        Ok((answer, params))
    }
}

/// Where a channel whose open was not answered stands on the ledger.
enum Opening {
    /// The deposit is locked.
    Locked,
    /// It never was, and no open sent for it can still arrive: forgotten.
    NotLocked,
    /// Not locked yet: an open sent for it may still arrive.
    Undecided,
}

/// How long after its open was sent a channel the ledger does not hold stays known as
/// opening, seconds: longer than a request may be on its way, so that one arriving late
/// cannot lock a deposit nobody knows of.
const OPEN_SETTLES: u64 = 300;
