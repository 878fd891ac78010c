//! Vouchers: the payer's EIP-712 signature over a channel and the cumulative amount.

#![allow(missing_docs)] // the sol! struct's fields

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::sol;
use alloy::sol_types::{Eip712Domain, SolStruct};
use secp256k1::SECP256K1;
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use zerostate_payment::Amount;

use crate::{ChainError, SettlementKey, to_wei};

sol! {
    /// What a payer signs: everything paid on `channel` so far, in wei.
    #[derive(Debug, PartialEq, Eq)]
    struct Voucher {
        bytes32 channel;
        uint256 amount;
    }
}

/// Half the order of secp256k1: a signature's `s` above it is the malleable twin the
/// contract refuses.
const HALF_ORDER: U256 = U256::from_be_slice(&[
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
]);

/// The EIP-712 domain of one channel contract on one chain: a voucher signed for it is
/// worthless on any other contract or chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoucherDomain {
    /// The chain's EIP-155 id.
    pub chain_id: u64,
    /// The channel contract.
    pub contract: Address,
}

impl VoucherDomain {
    fn eip712(&self) -> Eip712Domain {
        Eip712Domain::new(
            Some("ZeroState Channels".into()),
            Some("1".into()),
            Some(U256::from(self.chain_id)),
            Some(self.contract),
            None,
        )
    }

    /// The digest signed for `amount` in all on `channel`.
    pub fn digest(&self, channel: B256, amount: Amount) -> B256 {
        Voucher {
            channel,
            amount: to_wei(amount),
        }
        .eip712_signing_hash(&self.eip712())
    }

    /// `key`'s voucher for `amount` in all on `channel`: 65 bytes of r, s and v (27 or 28),
    /// deterministic (RFC 6979) and in the low-`s` form the contract takes. Signed with
    /// libsecp256k1: a payer signs one per payment.
    pub fn sign(
        &self,
        key: &SettlementKey,
        channel: B256,
        amount: Amount,
    ) -> Result<[u8; 65], ChainError> {
        let digest = secp256k1::Message::from_digest(self.digest(channel, amount).0);
        let signature = SECP256K1.sign_ecdsa_recoverable(digest, key.secret());
        let (id, rs) = signature.serialize_compact();
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&rs);
        out[64] = 27 + u8::try_from(i32::from(id)).unwrap_or(0);
        Ok(out)
    }

    /// Who signed `signature` for `amount` on `channel`, refusing every form the contract
    /// refuses (wrong length, v other than 27 or 28, a high s).
    pub fn signer_of(
        &self,
        channel: B256,
        amount: Amount,
        signature: &[u8],
    ) -> Result<Address, ChainError> {
        if signature.len() != 65 {
            return Err(ChainError::Signature(format!(
                "{} bytes, not 65",
                signature.len()
            )));
        }
        if !matches!(signature[64], 27 | 28) {
            return Err(ChainError::Signature(format!(
                "v is {}, not 27 or 28",
                signature[64]
            )));
        }
        if U256::from_be_slice(&signature[32..64]) > HALF_ORDER {
            return Err(ChainError::Signature(
                "s is in the upper half (the malleable form)".into(),
            ));
        }
        let malformed = |e: secp256k1::Error| ChainError::Signature(e.to_string());
        let id = RecoveryId::try_from(i32::from(signature[64] - 27)).map_err(malformed)?;
        let parsed = RecoverableSignature::from_compact(&signature[..64], id).map_err(malformed)?;
        let digest = secp256k1::Message::from_digest(self.digest(channel, amount).0);
        let public = SECP256K1
            .recover_ecdsa(digest, &parsed)
            .map_err(malformed)?;
        // The address: the last 20 bytes of the Keccak-256 of the uncompressed key's x and y.
        let hash = keccak256(&public.serialize_uncompressed()[1..]);
        Ok(Address::from_slice(&hash[12..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_voucher_recovers_to_its_signer_only_under_its_domain_and_amount() {
        let key = SettlementKey::from_secret(B256::repeat_byte(5)).expect("key");
        let domain = VoucherDomain {
            chain_id: 31337,
            contract: Address::repeat_byte(0x11),
        };
        let channel = B256::repeat_byte(0x22);
        let amount: Amount = "0.25".parse().expect("amount");
        let signature = domain.sign(&key, channel, amount).expect("sign");
        assert_eq!(
            domain.signer_of(channel, amount, &signature).expect("ok"),
            key.address()
        );
        let other_chain = VoucherDomain {
            chain_id: 1,
            ..domain
        };
        let other_contract = VoucherDomain {
            contract: Address::repeat_byte(0x12),
            ..domain
        };
        for (domain, amount) in [
            (other_chain, amount),
            (other_contract, amount),
            (domain, "0.26".parse().expect("amount")),
        ] {
            let signer = domain.signer_of(channel, amount, &signature).ok();
            assert_ne!(signer, Some(key.address()));
        }
        // The malleable twin (s' = n - s, v flipped) is refused.
        let parsed = alloy::primitives::Signature::from_raw(&signature).expect("parse");
        let order = HALF_ORDER * U256::from(2) + U256::from(1);
        let twin = alloy::primitives::Signature::new(parsed.r(), order - parsed.s(), !parsed.v());
        let refused = domain.signer_of(channel, amount, &twin.as_bytes());
        assert!(refused.is_err(), "{refused:?}");
        assert!(domain.signer_of(channel, amount, &signature[..64]).is_err());
    }
}
