//! Channels and their signed states: a one-way voucher channel. The payer locks a deposit;
//! each payment is a new state (nonce + 1, a higher cumulative amount, the hash of the
//! receipt it pays for) signed by the payer. At settlement the state with the highest
//! cumulative amount counts, never the highest nonce: the payer signs every state, so it
//! controls the nonce and could sign a newer, smaller one.
//!
//! Every signed byte string and every channel id names the ledger ([`LedgerId`]), so a
//! signature made for one ledger cannot be replayed on another.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::keys::{Keypair, Signature, verify};
use crate::{Amount, PaymentError, PublicKey};

const LEDGER_DOMAIN: &[u8] = b"zerostate/payment/ledger/v1";
const CHANNEL_DOMAIN: &[u8] = b"zerostate/payment/channel/v2";
const OPEN_DOMAIN: &[u8] = b"zerostate/payment/open/v2";
const STATE_DOMAIN: &[u8] = b"zerostate/payment/state/v2";
const CLOSE_DOMAIN: &[u8] = b"zerostate/payment/close/v2";
const CHAIN_DOMAIN: &[u8] = b"zerostate/payment/chain/v1";
const ANSWER_DOMAIN: &[u8] = b"zerostate/payment/ledger-answer/v1";

/// Which ledger a channel lives on: part of its id and of every byte string either party
/// signs for it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LedgerId(pub [u8; 32]);

impl LedgerId {
    /// The id of the ledger run by the node whose key is `operator` (as a devnet's bootnode
    /// runs one): SHA-256 of a domain tag and the key.
    pub fn of_operator(operator: &PublicKey) -> Self {
        let mut h = Sha256::new();
        h.update(LEDGER_DOMAIN);
        h.update(operator.0);
        Self(h.finalize().into())
    }

    /// The id of the channel contract at `contract` on the EVM chain `chain_id`, as the
    /// ledger of the channels settled there: SHA-256 of a domain tag, the chain id and the
    /// contract's address.
    pub fn of_chain(chain_id: u64, contract: &[u8; 20]) -> Self {
        let mut h = Sha256::new();
        h.update(CHAIN_DOMAIN);
        h.update(chain_id.to_be_bytes());
        h.update(contract);
        Self(h.finalize().into())
    }
}

impl fmt::Display for LedgerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for LedgerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LedgerId({self})")
    }
}

/// A channel's id: SHA-256 of the ledger, the parties and a nonce.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub [u8; 32]);

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelId({self})")
    }
}

/// What a channel is: who pays whom, how much is locked, until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelParams {
    /// The ledger that holds the deposit.
    pub ledger: LedgerId,
    /// Who pays (signs states).
    pub payer: PublicKey,
    /// Who is paid.
    pub payee: PublicKey,
    /// What the payer locks.
    pub deposit: Amount,
    /// Unix seconds after which no payment is accepted.
    pub expiry: u64,
    /// Makes the id unique between the same two parties.
    pub nonce: u64,
}

impl ChannelParams {
    /// The channel's id.
    pub fn id(&self) -> ChannelId {
        let mut h = Sha256::new();
        h.update(CHANNEL_DOMAIN);
        h.update(self.ledger.0);
        h.update(self.payer.0);
        h.update(self.payee.0);
        h.update(self.nonce.to_be_bytes());
        ChannelId(h.finalize().into())
    }

    /// Checks what can be checked without a ledger.
    pub fn validate(&self, now: u64) -> Result<(), PaymentError> {
        if self.payer == self.payee {
            return Err(PaymentError::InvalidChannel(
                "payer and payee are the same key",
            ));
        }
        if self.deposit.is_zero() {
            return Err(PaymentError::ZeroAmount);
        }
        if self.expiry <= now {
            return Err(PaymentError::Expired {
                expiry: self.expiry,
                now,
            });
        }
        Ok(())
    }

    /// The bytes both parties sign to open the channel.
    pub fn open_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(OPEN_DOMAIN.len() + 32 * 4 + 24);
        b.extend_from_slice(OPEN_DOMAIN);
        b.extend_from_slice(&self.ledger.0);
        b.extend_from_slice(&self.id().0);
        b.extend_from_slice(&self.payer.0);
        b.extend_from_slice(&self.payee.0);
        b.extend_from_slice(&self.deposit.base_units().to_be_bytes());
        b.extend_from_slice(&self.expiry.to_be_bytes());
        b.extend_from_slice(&self.nonce.to_be_bytes());
        b
    }
}

/// A channel's state after some payments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelState {
    /// The ledger the channel lives on.
    pub ledger: LedgerId,
    /// The channel.
    pub channel: ChannelId,
    /// Number of payments so far; each payment adds one.
    pub nonce: u64,
    /// Everything paid so far.
    pub cumulative: Amount,
    /// SHA-256 of the receipt the latest payment is for.
    pub receipt: [u8; 32],
}

impl ChannelState {
    /// The state before any payment.
    pub fn initial(ledger: LedgerId, channel: ChannelId) -> Self {
        Self {
            ledger,
            channel,
            nonce: 0,
            cumulative: Amount::ZERO,
            receipt: [0; 32],
        }
    }

    fn body(&self) -> [u8; Self::BODY] {
        let mut b = [0u8; Self::BODY];
        b[..32].copy_from_slice(&self.ledger.0);
        b[32..64].copy_from_slice(&self.channel.0);
        b[64..72].copy_from_slice(&self.nonce.to_be_bytes());
        b[72..80].copy_from_slice(&self.cumulative.base_units().to_be_bytes());
        b[80..112].copy_from_slice(&self.receipt);
        b
    }

    const BODY: usize = 32 + 32 + 8 + 8 + 32;

    /// The bytes the payer signs.
    pub fn signing_bytes(&self) -> Vec<u8> {
        [STATE_DOMAIN, &self.body()].concat()
    }

    /// The bytes the payee signs to agree to close on this state.
    pub fn close_bytes(&self) -> Vec<u8> {
        [CLOSE_DOMAIN, &self.body()].concat()
    }

    /// Signs the state as the payer.
    pub fn sign(self, payer: &Keypair) -> SignedState {
        let _span = tracing::info_span!(
            zerostate_telemetry::names::span::PAYMENT_SIGNATURE_SIGN,
            channel.id = %self.channel,
            nonce = self.nonce,
        )
        .entered();
        SignedState {
            signature: payer.sign(&self.signing_bytes()),
            state: self,
        }
    }
}

/// A state with the payer's signature: what travels from payer to payee.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedState {
    /// The state.
    pub state: ChannelState,
    /// The payer's signature over [`ChannelState::signing_bytes`].
    pub signature: Signature,
}

impl SignedState {
    /// Length of the wire form.
    pub const LEN: usize = 1 + ChannelState::BODY + 64;
    const FORMAT: u8 = 2;

    /// Checks the payer's signature.
    pub fn verify(&self, payer: &PublicKey) -> Result<(), PaymentError> {
        verify(payer, &self.state.signing_bytes(), &self.signature)
    }

    /// The wire form: a format byte, the state, the signature.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = Self::FORMAT;
        b[1..1 + ChannelState::BODY].copy_from_slice(&self.state.body());
        b[1 + ChannelState::BODY..].copy_from_slice(&self.signature.0);
        b
    }

    /// Reads the wire form; the signature is not checked here.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PaymentError> {
        let malformed = |reason: String| PaymentError::Malformed {
            what: "signed state",
            reason,
        };
        if bytes.len() != Self::LEN {
            return Err(malformed(format!(
                "{} bytes, expected {}",
                bytes.len(),
                Self::LEN
            )));
        }
        if bytes[0] != Self::FORMAT {
            return Err(malformed(format!("unknown format {}", bytes[0])));
        }
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&bytes[i..i + 8]);
            u64::from_be_bytes(a)
        };
        let bytes32 = |i: usize| {
            let mut a = [0u8; 32];
            a.copy_from_slice(&bytes[i..i + 32]);
            a
        };
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[1 + ChannelState::BODY..]);
        Ok(Self {
            state: ChannelState {
                ledger: LedgerId(bytes32(1)),
                channel: ChannelId(bytes32(33)),
                nonce: u64_at(65),
                cumulative: Amount::from_base_units(u64_at(73)),
                receipt: bytes32(81),
            },
            signature: Signature(signature),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn wire_form_round_trips(ledger in any::<[u8; 32]>(), id in any::<[u8; 32]>(), nonce in any::<u64>(), cum in any::<u64>(),
                                 receipt in any::<[u8; 32]>(), sig in proptest::collection::vec(any::<u8>(), 64)) {
            let mut signature = [0u8; 64];
            signature.copy_from_slice(&sig);
            let s = SignedState {
                state: ChannelState { ledger: LedgerId(ledger), channel: ChannelId(id), nonce, cumulative: Amount::from_base_units(cum), receipt },
                signature: Signature(signature),
            };
            prop_assert_eq!(SignedState::from_bytes(&s.to_bytes()).ok(), Some(s));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = SignedState::from_bytes(&bytes);
        }
    }

    #[test]
    fn every_field_is_covered_by_the_signature() {
        let payer = Keypair::from_seed([1; 32]);
        let id = ChannelId([7; 32]);
        let signed = ChannelState {
            ledger: LedgerId([3; 32]),
            channel: id,
            nonce: 3,
            cumulative: Amount::from_base_units(10),
            receipt: [9; 32],
        }
        .sign(&payer);
        signed.verify(&payer.public()).expect("valid");
        let bytes = signed.to_bytes();
        for i in 1..SignedState::LEN {
            let mut tampered = bytes;
            tampered[i] ^= 0x01;
            let t = SignedState::from_bytes(&tampered).expect("still decodes");
            assert!(
                t.verify(&payer.public()).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
    }
}

/// An answer the ledger gave, signed with its operator's key: to whom, for what and what
/// it said, so that whoever holds it can show a third party what the ledger answered
/// (a settlement's payout, a deposit locked) and the ledger cannot deny it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedAnswer {
    /// The ledger that answered.
    pub ledger: LedgerId,
    /// The request it answered (`ledger_close`, `ledger_channel`, ...).
    pub operation: String,
    /// SHA-256 of the request's bytes.
    pub request_sha256: [u8; 32],
    /// The answer's bytes (JSON).
    pub answer: Vec<u8>,
    /// The operator's signature over [`SignedAnswer::signed_bytes`].
    pub signature: Signature,
}

impl SignedAnswer {
    /// The ledger run by `operator` answers `request` to `operation` with `answer`.
    pub fn sign(operator: &Keypair, operation: &str, request: &[u8], answer: Vec<u8>) -> Self {
        let mut signed = Self {
            ledger: LedgerId::of_operator(&operator.public()),
            operation: operation.to_owned(),
            request_sha256: Sha256::digest(request).into(),
            answer,
            signature: Signature([0; 64]),
        };
        signed.signature = operator.sign(&signed.signed_bytes());
        signed
    }

    /// The answer `answer` with `signature` that the ledger run by `operator` gave to
    /// `request` for `operation`, checked.
    pub fn received(
        operator: &PublicKey,
        operation: &str,
        request: &[u8],
        answer: Vec<u8>,
        signature: Signature,
    ) -> Result<Self, PaymentError> {
        let signed = Self {
            ledger: LedgerId::of_operator(operator),
            operation: operation.to_owned(),
            request_sha256: Sha256::digest(request).into(),
            answer,
            signature,
        };
        signed.verify(operator)?;
        Ok(signed)
    }

    /// What is signed: a domain tag, the ledger id, the operation's length (one byte) and
    /// name, the request's SHA-256 and the answer.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let op = self.operation.as_bytes();
        let mut b =
            Vec::with_capacity(ANSWER_DOMAIN.len() + 32 + 1 + op.len() + 32 + self.answer.len());
        b.extend_from_slice(ANSWER_DOMAIN);
        b.extend_from_slice(&self.ledger.0);
        b.push(u8::try_from(op.len()).unwrap_or(u8::MAX));
        b.extend_from_slice(op);
        b.extend_from_slice(&self.request_sha256);
        b.extend_from_slice(&self.answer);
        b
    }

    /// Checks that the ledger run by `operator` gave this answer, to the request whose
    /// hash it names (a third party holding only the answer can check this much).
    pub fn verify(&self, operator: &PublicKey) -> Result<(), PaymentError> {
        let ledger = LedgerId::of_operator(operator);
        if self.ledger != ledger {
            return Err(PaymentError::WrongLedger {
                expected: ledger,
                got: self.ledger,
            });
        }
        if self.operation.len() > usize::from(u8::MAX) {
            return Err(PaymentError::InvalidChannel(
                "the operation's name is too long",
            ));
        }
        verify(operator, &self.signed_bytes(), &self.signature)
    }
}
