//! The payment protocol's bodies on the wire (JSON, with hex for keys, signatures and signed states).

use super::*;

/// A channel's parameters on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ParamsJson {
    pub(crate) ledger: String,
    pub(crate) payer: String,
    pub(crate) payee: String,
    pub(crate) deposit: u64,
    pub(crate) expiry: u64,
    pub(crate) nonce: u64,
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

pub(crate) fn bytes32(hexed: &str, what: &str) -> Result<[u8; 32], String> {
    hex::decode(hexed)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{what} is not 32 hex-encoded bytes"))
}

pub(crate) fn signature(hexed: &str, what: &str) -> Result<Signature, String> {
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
pub(crate) struct OpenBody {
    pub(crate) params: ParamsJson,
    pub(crate) payer_signature: String,
    #[serde(default)]
    pub(crate) payee_signature: Option<String>,
    /// On a chain: the payer's settlement account (`0x…`) and its binding to the payer's
    /// node key, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) payer_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) payer_binding: Option<String>,
}

/// A payer's cooperative close of a channel on chain, to its payee: its voucher for
/// everything it paid.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChainCloseBody {
    /// The channel, hex.
    pub(crate) channel: String,
    /// What the payer paid on it in all, base units.
    pub(crate) amount: u64,
    /// The payer's voucher for `amount`, hex of its 65 bytes.
    pub(crate) voucher: String,
}

/// A unilateral close, a dispute or a finalization, to the ledger.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettleBody {
    /// The channel, hex.
    pub(crate) channel: String,
    /// The caller's best signed state, hex of its wire form (none: settle on nothing paid).
    #[serde(default)]
    pub(crate) state: Option<String>,
}

pub(crate) fn signed_state(hexed: &str) -> Result<SignedState, String> {
    let bytes = hex::decode(hexed).map_err(|e| format!("the state is not hex: {e}"))?;
    SignedState::from_bytes(&bytes).map_err(|e| e.to_string())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CloseBody {
    /// The signed state, hex of its wire form.
    pub(crate) state: String,
    pub(crate) payee_signature: String,
}

/// Every answer of the ledger on the wire: its JSON, as text, and the operator's signature
/// over it (see [`SignedAnswer`]).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignedAnswerJson {
    pub(crate) answer: String,
    pub(crate) signature: String,
}

/// A signed answer as the API shows it (`ledger_proof`): everything a third party needs,
/// with the ledger's peer id, to check what the ledger said.
pub(crate) fn proof(signed: &SignedAnswer) -> serde_json::Value {
    serde_json::json!({
        "ledger": hex::encode(signed.ledger.0),
        "operation": signed.operation,
        "request_sha256": hex::encode(signed.request_sha256),
        "answer": String::from_utf8_lossy(&signed.answer),
        "signature": hex::encode(signed.signature.0),
    })
}

/// Checks a `ledger_proof` the API showed against the peer id of the node that runs the
/// ledger: what the ledger answered, or why it did not.
pub fn check_ledger_proof(
    ledger: &PeerId,
    proof: &serde_json::Value,
) -> Result<SignedAnswer, String> {
    let operator = key_of(ledger).ok_or("the ledger's peer id has no ed25519 key")?;
    let text = |k: &str| {
        proof[k]
            .as_str()
            .ok_or_else(|| format!("the proof has no {k}"))
    };
    let signed = SignedAnswer {
        ledger: LedgerId(bytes32(text("ledger")?, "ledger")?),
        operation: text("operation")?.to_owned(),
        request_sha256: bytes32(text("request_sha256")?, "request_sha256")?,
        answer: text("answer")?.as_bytes().to_vec(),
        signature: signature(text("signature")?, "signature")?,
    };
    signed
        .verify(&operator)
        .map_err(|e| format!("not an answer of that ledger: {e}"))?;
    Ok(signed)
}

/// The ledger's answer to `ledger_channel`: where a channel stands.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChannelAnswer {
    /// `open`, `closing`, `settled`, or `unknown` (the ledger holds no such channel).
    pub(crate) status: String,
    /// What the channel is (all but `unknown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) params: Option<ParamsJson>,
    /// The channel's own challenge period, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) challenge_period_s: Option<u64>,
    /// While `closing`: the state it will settle on, and until when it may be disputed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) closing: Option<ClosingJson>,
}

/// A channel being closed, as the ledger holds it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClosingJson {
    /// The cumulative amount of the closing state, base units.
    pub(crate) cumulative: u64,
    /// Its nonce.
    pub(crate) nonce: u64,
    /// Unix seconds at which the challenge window ends.
    pub(crate) challenge_ends: u64,
    /// The payment key of the party that started the close, hex.
    pub(crate) closer: String,
}
