//! Answers to the other nodes: as a payee (opening a channel, taking a payment, closing) and as the ledger.

use super::*;

/// A voucher's length: r, s and v.
const VOUCHER_LEN: usize = 65;

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
                let Some(backend) = self.backend() else {
                    return Err("this node has no ledger configured: it cannot be paid".into());
                };
                if params.ledger != backend.ledger() {
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
                let mut answer = serde_json::Map::new();
                if let Backend::Chain(on) = backend {
                    // The payer's account, bound to the caller's node key: the vouchers
                    // must be signed by it, and the channel on chain must be from it.
                    let (Some(account), Some(binding)) = (&body.payer_account, &body.payer_binding)
                    else {
                        return Err("a channel on a chain needs the payer's account and its \
                                    binding (payer_account, payer_binding)"
                            .into());
                    };
                    let bound = zerostate_chain::KeyBinding::checked(caller, account, binding)
                        .map_err(|e| format!("the payer's account: {e}"))?;
                    let me = on.binding.address;
                    let booked = zerostate_chain::BookedChannel {
                        onchain: zerostate_chain::channel_id(
                            bound.address,
                            me,
                            zerostate_chain::B256::from(params.id().0),
                        ),
                        payer: bound.address,
                        payee: me,
                    };
                    on.book(&params.id(), &booked)?;
                    answer.insert("payee_account".into(), me.to_checksum(None).into());
                    answer.insert(
                        "payee_binding".into(),
                        hex::encode(on.binding.signature.0).into(),
                    );
                }
                let known = self.inner.payee.channel(&params.id()).is_ok();
                self.inner.payee.add_channel(&params).map_err(e)?;
                if !known {
                    self.count_open(1, 1);
                }
                let sig = self.inner.key.sign(&params.open_bytes());
                answer.insert("payee_signature".into(), hex::encode(sig.0).into());
                json(serde_json::Value::Object(answer))
            }
            types::Call::Payment => {
                // On a chain the state is followed by the payer's voucher for its
                // cumulative amount.
                let chain = match self.backend() {
                    Some(Backend::Chain(on)) => Some(on),
                    _ => None,
                };
                let (payload, voucher) = match chain {
                    Some(_) => {
                        let at = payload.len().checked_sub(VOUCHER_LEN).ok_or(
                            "a payment on a chain is a signed state and a 65-byte voucher",
                        )?;
                        (&payload[..at], Some(&payload[at..]))
                    }
                    None => (payload, None),
                };
                let state = SignedState::from_bytes(payload).map_err(e)?;
                let local = self.inner.payee.channel(&state.state.channel).map_err(e)?;
                if local.params.payer != caller {
                    return Err("the caller is not this channel's payer".into());
                }
                // On a chain the voucher is kept in the commit that keeps the state (an
                // acknowledged payment can always be claimed on chain), once its signer is
                // found to be the channel's payer account. Its signer is recovered aside
                // while the state is checked and written.
                let accepted = match (chain, voucher) {
                    (Some(_), Some(voucher)) => {
                        let (id, amount) = (state.state.channel, state.state.cumulative);
                        let (deposit, signed) = (local.params.deposit, voucher.to_vec());
                        let check = self.on_chain_aside(move |on| {
                            on.check_voucher(&id, amount, deposit, &signed)
                        });
                        self.inner
                            .payee
                            .accept_with_voucher(&state, voucher, now(), || check.wait())
                    }
                    _ => self.inner.payee.accept(&state, now()),
                };
                let ack = match accepted {
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

    /// The ledger's side of a request from `caller`, its answer signed with this node's
    /// key (the ledger's operator). Refusals are not signed.
    pub(crate) fn ledger_answer(
        &self,
        caller: &PublicKey,
        call: types::Call,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        let answer = self.ledger_reply(caller, call, payload)?;
        let signed = SignedAnswer::sign(&self.inner.key, call.as_str(), payload, answer);
        let wire = SignedAnswerJson {
            answer: String::from_utf8(signed.answer).map_err(|e| e.to_string())?,
            signature: hex::encode(signed.signature.0),
        };
        serde_json::to_vec(&wire).map_err(|e| e.to_string())
    }

    /// What the ledger answers a request from `caller`.
    fn ledger_reply(
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
                let record = match ledger.channel(&id) {
                    Ok(record) => record,
                    // An answer, not a refusal: a payer asks to learn whether an open it
                    // sent was applied.
                    Err(PaymentError::UnknownChannel(_)) => {
                        let unknown = ChannelAnswer {
                            status: "unknown".into(),
                            params: None,
                            challenge_period_s: None,
                            closing: None,
                        };
                        return serde_json::to_vec(&unknown).map_err(|e| e.to_string());
                    }
                    Err(other) => return Err(e(other)),
                };
                let (status, closing) = match record.status {
                    zerostate_payment::ChannelStatus::Open => ("open", None),
                    zerostate_payment::ChannelStatus::Closing {
                        state,
                        challenge_ends,
                        closer,
                    } => (
                        "closing",
                        Some(ClosingJson {
                            cumulative: state.cumulative.base_units(),
                            nonce: state.nonce,
                            challenge_ends,
                            closer: hex::encode(closer.0),
                        }),
                    ),
                    zerostate_payment::ChannelStatus::Settled(_) => ("settled", None),
                };
                let answer = ChannelAnswer {
                    status: status.into(),
                    params: Some(ParamsJson::from(&record.params)),
                    challenge_period_s: Some(record.challenge_period),
                    closing,
                };
                serde_json::to_vec(&answer).map_err(|e| e.to_string())
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
            types::Call::LedgerRefund => {
                let body: SettleBody =
                    serde_json::from_slice(payload).map_err(|e| e.to_string())?;
                let id = ChannelId(bytes32(&body.channel, "channel")?);
                let settled = ledger.refund_expired(caller, &id, now()).map_err(e)?;
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
