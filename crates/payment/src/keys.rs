//! Ed25519 keys and signatures: the same keys that make a node's libp2p peer id.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::PaymentError;

/// A party's public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Signature({:02x}{:02x}{:02x}{:02x}..)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// A signing key.
pub struct Keypair(SigningKey);

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.public())
    }
}

impl Keypair {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, PaymentError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| PaymentError::Randomness(e.to_string()))?;
        Ok(Self::from_seed(seed))
    }

    /// The key for a 32-byte secret seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
}

/// Checks that `signature` is `signer`'s over `message` (strict verification: no malleable
/// or small-order forms).
pub fn verify(
    signer: &PublicKey,
    message: &[u8],
    signature: &Signature,
) -> Result<(), PaymentError> {
    Verifier::new(signer)?.verify(message, signature)
}

/// A public key decoded once, for checking many signatures by the same signer (decoding a
/// key costs about as much as a fifth of a verification).
#[derive(Debug, Clone)]
pub(crate) struct Verifier {
    signer: PublicKey,
    key: VerifyingKey,
}

impl Verifier {
    pub(crate) fn new(signer: &PublicKey) -> Result<Self, PaymentError> {
        let key = VerifyingKey::from_bytes(&signer.0)
            .map_err(|_| PaymentError::BadSignature { signer: *signer })?;
        Ok(Self {
            signer: *signer,
            key,
        })
    }

    pub(crate) fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), PaymentError> {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.key
            .verify_strict(message, &sig)
            .map_err(|_| PaymentError::BadSignature {
                signer: self.signer,
            })
    }
}
