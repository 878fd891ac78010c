//! A node's settlement key: the secp256k1 key it signs vouchers and transactions with.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use zerostate_payment::{Keypair, PublicKey, Signature, verify};

use crate::ChainError;

/// The domain tag of a key binding's signed bytes.
const BINDING_TAG: &[u8] = b"zerostate/settlement-key/v1";

/// A secp256k1 key kept in a file only its owner may read.
#[derive(Clone, Debug)]
pub struct SettlementKey {
    signer: PrivateKeySigner,
    /// The same key for libsecp256k1.
    secret: secp256k1::SecretKey,
    path: PathBuf,
}

impl SettlementKey {
    /// Loads the key at `path`, or makes one there (mode 0600, written whole or not at all)
    /// when there is none. A file another user may read is refused.
    pub fn load_or_create(path: &Path) -> Result<Self, ChainError> {
        let fail = |reason: String| ChainError::Key {
            path: path.to_path_buf(),
            reason,
        };
        match fs::read_to_string(path) {
            Ok(text) => {
                let mode = fs::metadata(path)
                    .map_err(|e| fail(e.to_string()))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(fail(format!(
                        "others may read it (mode {:o}); run chmod 600 on it",
                        mode & 0o777
                    )));
                }
                let bytes: B256 = text
                    .trim()
                    .parse()
                    .map_err(|_| fail("is not 32 bytes of hex".into()))?;
                let signer = PrivateKeySigner::from_bytes(&bytes)
                    .map_err(|e| fail(format!("is not a secp256k1 key: {e}")))?;
                Self::of(signer, path.to_path_buf())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let signer = PrivateKeySigner::random();
                let partial = path.with_extension("key.partial");
                let _ = fs::remove_file(&partial);
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&partial)
                    .map_err(|e| fail(e.to_string()))?;
                writeln!(file, "{}", signer.to_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| fail(e.to_string()))?;
                fs::rename(&partial, path).map_err(|e| fail(e.to_string()))?;
                Self::of(signer, path.to_path_buf())
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }

    /// The key for a known secret (anvil's well-known accounts, tests).
    pub fn from_secret(secret: B256) -> Result<Self, ChainError> {
        let signer = PrivateKeySigner::from_bytes(&secret).map_err(|e| ChainError::Key {
            path: PathBuf::from("(given)"),
            reason: format!("is not a secp256k1 key: {e}"),
        })?;
        Self::of(signer, PathBuf::from("(given)"))
    }

    fn of(signer: PrivateKeySigner, path: PathBuf) -> Result<Self, ChainError> {
        let secret = secp256k1::SecretKey::from_byte_array(signer.to_bytes().0).map_err(|e| {
            ChainError::Key {
                path: path.clone(),
                reason: format!("is not a secp256k1 key: {e}"),
            }
        })?;
        Ok(Self {
            signer,
            secret,
            path,
        })
    }

    /// The key's account address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// Where the key is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key for libsecp256k1, which signs vouchers.
    pub(crate) fn secret(&self) -> &secp256k1::SecretKey {
        &self.secret
    }

    /// The key as alloy's signer (for a provider of one's own).
    pub fn signer(&self) -> &PrivateKeySigner {
        &self.signer
    }

    /// The node key's signature naming this key's address as its settlement account.
    pub fn bind(&self, node: &Keypair) -> KeyBinding {
        let peer = node.public();
        let address = self.address();
        KeyBinding {
            peer,
            address,
            signature: node.sign(&binding_bytes(&peer, &address)),
        }
    }
}

/// A node's statement, signed with its ed25519 (peer id) key, that an address is its
/// settlement account: a peer checks it before opening a channel to that address, so a
/// channel on chain pays the node the peer dealt with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyBinding {
    /// The node's ed25519 key.
    pub peer: PublicKey,
    /// Its settlement account.
    pub address: Address,
    /// `peer`'s signature over the tag, `peer` and `address`.
    pub signature: Signature,
}

impl KeyBinding {
    /// The binding a node shows (`GET /v1/node`: `settlement.address`, `settlement.binding`)
    /// for the node whose ed25519 key is `peer`, checked: its address, or why it is not one.
    pub fn checked(peer: PublicKey, address: &str, binding: &str) -> Result<Self, ChainError> {
        let address: Address = address
            .parse()
            .map_err(|e| ChainError::Signature(format!("{address:?} is not an address: {e}")))?;
        let signature = hex::decode(binding)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(Signature)
            .ok_or_else(|| ChainError::Signature("a binding is 64 hex-encoded bytes".to_owned()))?;
        let bound = Self {
            peer,
            address,
            signature,
        };
        bound.verify()?;
        Ok(bound)
    }

    /// Checks the signature.
    pub fn verify(&self) -> Result<(), ChainError> {
        verify(
            &self.peer,
            &binding_bytes(&self.peer, &self.address),
            &self.signature,
        )
        .map_err(|_| {
            ChainError::Signature(format!(
                "the binding of {} to {} is not signed by that node",
                self.address, self.peer
            ))
        })
    }
}

fn binding_bytes(peer: &PublicKey, address: &Address) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(BINDING_TAG.len() + 32 + 20);
    bytes.extend_from_slice(BINDING_TAG);
    bytes.extend_from_slice(&peer.0);
    bytes.extend_from_slice(address.as_slice());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("settlement.key");
        let made = SettlementKey::load_or_create(&path).expect("made");
        let mode = fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let read = SettlementKey::load_or_create(&path).expect("read");
        assert_eq!(made.address(), read.address());

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let refused = SettlementKey::load_or_create(&path).expect_err("readable by others");
        assert!(refused.to_string().contains("chmod 600"), "{refused}");

        fs::write(&path, "not a key").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let garbage = SettlementKey::load_or_create(&path).expect_err("garbage");
        assert!(garbage.to_string().contains("32 bytes of hex"), "{garbage}");
    }

    #[test]
    fn a_binding_verifies_only_for_its_node_and_address() {
        let node = Keypair::from_seed([3; 32]);
        let key = SettlementKey::from_secret(B256::repeat_byte(7)).expect("key");
        let binding = key.bind(&node);
        binding.verify().expect("good");
        let other = SettlementKey::from_secret(B256::repeat_byte(8)).expect("key");
        let moved = KeyBinding {
            address: other.address(),
            ..binding
        };
        assert!(moved.verify().is_err());
        let stolen = KeyBinding {
            peer: Keypair::from_seed([4; 32]).public(),
            ..binding
        };
        assert!(stolen.verify().is_err());
    }

    #[test]
    fn a_binding_as_a_node_shows_it_is_checked() {
        let node = Keypair::from_seed([3; 32]);
        let key = SettlementKey::from_secret(B256::repeat_byte(7)).expect("key");
        let binding = key.bind(&node);
        let address = binding.address.to_checksum(None);
        let signature = hex::encode(binding.signature.0);
        let read = KeyBinding::checked(node.public(), &address, &signature).expect("checked");
        assert_eq!(read, binding);
        let other = Keypair::from_seed([4; 32]).public();
        assert!(KeyBinding::checked(other, &address, &signature).is_err());
        assert!(KeyBinding::checked(node.public(), "0x12", &signature).is_err());
        assert!(KeyBinding::checked(node.public(), &address, "abcd").is_err());
    }
}
