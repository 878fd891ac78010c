//! The guild's secrecy: the symmetric guild key, messages sealed with XChaCha20-Poly1305,
//! and the X25519 exchange that delivers the key to one member.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

/// Domain tag of keys derived from an X25519 shared secret.
const KEY_WRAP_DOMAIN: &[u8] = b"zerostate-guild-key-wrap-v1";

/// Fresh random bytes.
pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system provides randomness");
    b
}

/// A guild's symmetric key, one per key epoch.
#[derive(Clone)]
pub struct GuildKey(pub(crate) [u8; 32]);

impl std::fmt::Debug for GuildKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GuildKey(..)")
    }
}

/// Why sealed bytes did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the ciphertext does not open with this key (tampered, or sealed under another key)")]
pub struct OpenError;

impl GuildKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self(random())
    }

    /// Seals `plaintext`, binding `aad` (which is sent in the clear) to it. Returns the
    /// random 24-byte nonce and the ciphertext with its tag.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> ([u8; 24], Vec<u8>) {
        let nonce: [u8; 24] = random();
        let cipher = XChaCha20Poly1305::new(&self.0.into());
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("encryption of an in-memory buffer cannot fail");
        (nonce, ct)
    }

    /// Opens what [`GuildKey::seal`] produced with the same `aad`.
    pub fn open(&self, nonce: &[u8], ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, OpenError> {
        if nonce.len() != 24 {
            return Err(OpenError);
        }
        XChaCha20Poly1305::new(&self.0.into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| OpenError)
    }
}

/// A node's X25519 key for receiving guild keys.
pub struct ExchangeKey {
    secret: StaticSecret,
}

impl Default for ExchangeKey {
    fn default() -> Self {
        Self::generate()
    }
}

impl ExchangeKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self {
            secret: StaticSecret::from(random::<32>()),
        }
    }

    /// The key derived from a node's identity secret (`seed`): the same at every start, so
    /// a restarted node still opens keys wrapped for it before.
    pub fn derived(seed: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"zerostate-guild-exchange-key-v1");
        h.update(seed);
        Self {
            secret: StaticSecret::from(<[u8; 32]>::from(h.finalize())),
        }
    }

    /// Its public half, sent to the coordinator.
    pub fn public(&self) -> [u8; 32] {
        PublicKey::from(&self.secret).to_bytes()
    }

    fn wrapping_key(&self, their_public: &[u8; 32], context: &[u8]) -> Option<GuildKey> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*their_public));
        if !shared.was_contributory() {
            return None;
        }
        let mut h = Sha256::new();
        h.update(KEY_WRAP_DOMAIN);
        h.update(shared.as_bytes());
        h.update(context);
        Some(GuildKey(h.finalize().into()))
    }

    /// Encrypts `key` for the holder of `their_public`; `context` (guild id and epoch) is
    /// bound to it. `None` when their public key is a low-order point.
    pub fn wrap(
        &self,
        their_public: &[u8; 32],
        key: &GuildKey,
        context: &[u8],
    ) -> Option<([u8; 24], Vec<u8>)> {
        Some(
            self.wrapping_key(their_public, context)?
                .seal(&key.0, context),
        )
    }

    /// Decrypts a key wrapped for this node by the holder of `their_public`.
    pub fn unwrap(
        &self,
        their_public: &[u8; 32],
        nonce: &[u8],
        ciphertext: &[u8],
        context: &[u8],
    ) -> Result<GuildKey, OpenError> {
        let plain = self
            .wrapping_key(their_public, context)
            .ok_or(OpenError)?
            .open(nonce, ciphertext, context)?;
        let key: [u8; 32] = plain.try_into().map_err(|_| OpenError)?;
        Ok(GuildKey(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tampering() {
        let key = GuildKey::generate();
        let (nonce, mut ct) = key.seal(b"hello guild", b"aad");
        assert_eq!(
            key.open(&nonce, &ct, b"aad").expect("opens"),
            b"hello guild"
        );
        assert_eq!(key.open(&nonce, &ct, b"other aad"), Err(OpenError));
        assert_eq!(
            GuildKey::generate().open(&nonce, &ct, b"aad"),
            Err(OpenError)
        );
        ct[0] ^= 1;
        assert_eq!(key.open(&nonce, &ct, b"aad"), Err(OpenError));
        assert_eq!(key.open(&nonce[..23], &ct, b"aad"), Err(OpenError));
    }

    #[test]
    fn key_exchange_delivers_the_key_to_its_holder_only() {
        let coordinator = ExchangeKey::generate();
        let member = ExchangeKey::generate();
        let outsider = ExchangeKey::generate();
        let key = GuildKey::generate();
        let (nonce, ct) = coordinator
            .wrap(&member.public(), &key, b"g1/1")
            .expect("wraps");
        let got = member
            .unwrap(&coordinator.public(), &nonce, &ct, b"g1/1")
            .expect("unwraps");
        assert_eq!(got.0, key.0);
        assert!(
            outsider
                .unwrap(&coordinator.public(), &nonce, &ct, b"g1/1")
                .is_err()
        );
        assert!(
            member
                .unwrap(&coordinator.public(), &nonce, &ct, b"g1/2")
                .is_err()
        );
        // A low-order public key gives no shared secret: refused, not an all-zero key.
        assert!(coordinator.wrap(&[0u8; 32], &key, b"g1/1").is_none());
    }
}
