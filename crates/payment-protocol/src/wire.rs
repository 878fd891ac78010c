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
