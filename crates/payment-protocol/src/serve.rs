//! Answers to the other nodes: as a payee (opening a channel, taking a payment, closing) and as the ledger.

use super::*;

impl Payments {
    pub(crate) fn answer(
        &self,
        from: PeerId,
        call: types::Call,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        let caller = key_of(&from).ok_or("the caller has no ed25519 key")?;
        let json = |v: serde_json::Value| Ok(v.to_string().into_bytes());
        let e = |e: PaymentError| e.to_string();
        match call {
            types::Call::ChannelOpen => {
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
            types::Call::Payment => {
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
                if self.served().paid(&state.state.receipt) {
                    self.inner.cleared.notify_waiters();
                }
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
            types::Call::ChannelClose => {
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
            ledger => self.ledger_answer(&caller, ledger, payload),
        }
    }

    /// The ledger's side of a request from `caller`.
    pub(crate) fn ledger_answer(
        &self,
        caller: &PublicKey,
        call: types::Call,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        let json = |v: serde_json::Value| Ok(v.to_string().into_bytes());
        let e = |e: PaymentError| e.to_string();
        let ledger = self
            .inner
            .ledger
            .as_ref()
            .ok_or("this node does not run a ledger")?;
        match call {
            types::Call::LedgerOpen => {
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
            types::Call::LedgerClose => {
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
            types::Call::LedgerBalance => {
                let balance = ledger.balance(caller).map_err(e)?;
                json(serde_json::json!({ "balance": balance.base_units() }))
            }
            types::Call::LedgerStartClose => {
                let body: SettleBody =
                    serde_json::from_slice(payload).map_err(|e| e.to_string())?;
                let id = ChannelId(bytes32(&body.channel, "channel")?);
                let state = body.state.as_deref().map(signed_state).transpose()?;
                let ends = ledger
                    .start_close(caller, &id, state.as_ref(), now())
                    .map_err(e)?;
                json(serde_json::json!({ "challenge_ends": ends }))
            }
            types::Call::LedgerDispute => {
                let body: SettleBody =
                    serde_json::from_slice(payload).map_err(|e| e.to_string())?;
                let state = signed_state(body.state.as_deref().ok_or("a dispute needs a state")?)?;
                ledger.dispute(caller, &state, now()).map_err(e)?;
                json(serde_json::json!({ "disputed": body.channel }))
            }
            types::Call::LedgerChannel => {
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
            types::Call::LedgerFinalize => {
                let body: SettleBody =
                    serde_json::from_slice(payload).map_err(|e| e.to_string())?;
                let id = ChannelId(bytes32(&body.channel, "channel")?);
                let settled = ledger.finalize(caller, &id, now()).map_err(e)?;
                json(serde_json::json!({
                    "to_payee": settled.to_payee.base_units(),
                    "to_payer": settled.to_payer.base_units(),
                }))
            }
            other @ (types::Call::ChannelOpen
            | types::Call::Payment
            | types::Call::ChannelClose) => Err(format!(
                "{} is not a request for the ledger",
                other.as_str()
            )),
        }
    }
}
