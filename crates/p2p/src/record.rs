//! DHT records signed by their publisher. A value is stored together with the publisher's
//! public key and its ed25519 signature over the record's key and value; a node stores only
//! records whose signature checks, keeps a key bound to the first publisher it stored it
//! for, and a reader learns who published what it reads.

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use prost::Message;

/// Domain tag of a record signature.
const DOMAIN: &[u8] = b"zerostate-dht-record-v1";

/// A record as stored in the DHT.
#[derive(Clone, PartialEq, Message)]
struct Signed {
    #[prost(bytes = "vec", tag = "1")]
    value: Vec<u8>,
    /// The publisher's public key, protobuf-encoded.
    #[prost(bytes = "vec", tag = "2")]
    publisher: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    signature: Vec<u8>,
}

/// A record read from the DHT: its value and who signed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhtRecord {
    /// The value.
    pub value: Vec<u8>,
    /// The peer that published (signed) it.
    pub publisher: PeerId,
}

/// Why a stored record was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// Not a signed record.
    #[error("not a signed record")]
    Malformed,
    /// The signature does not check against the key, the value and the publisher.
    #[error("the record's signature does not match its key, value and publisher")]
    BadSignature,
}

fn signing_bytes(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(DOMAIN.len() + 4 + key.len() + value.len());
    b.extend_from_slice(DOMAIN);
    b.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes());
    b.extend_from_slice(key);
    b.extend_from_slice(value);
    b
}

/// The bytes to store under `key`: `value` signed by `publisher`.
pub(crate) fn seal(key: &[u8], value: Vec<u8>, publisher: &Keypair) -> Vec<u8> {
    let signature = publisher
        .sign(&signing_bytes(key, &value))
        .expect("ed25519 signing does not fail");
    Signed {
        value,
        publisher: publisher.public().encode_protobuf(),
        signature,
    }
    .encode_to_vec()
}

/// The value and publisher of bytes stored under `key`, if the signature checks.
pub(crate) fn open(key: &[u8], stored: &[u8]) -> Result<DhtRecord, RecordError> {
    let signed = Signed::decode(stored).map_err(|_| RecordError::Malformed)?;
    let public =
        PublicKey::try_decode_protobuf(&signed.publisher).map_err(|_| RecordError::Malformed)?;
    if !public.verify(&signing_bytes(key, &signed.value), &signed.signature) {
        return Err(RecordError::BadSignature);
    }
    Ok(DhtRecord {
        value: signed.value,
        publisher: public.to_peer_id(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_opens_under_its_key_only_and_names_its_publisher() {
        let key = Keypair::generate_ed25519();
        let stored = seal(b"k", b"value".to_vec(), &key);
        let record = open(b"k", &stored).expect("opens");
        assert_eq!(record.value, b"value");
        assert_eq!(record.publisher, key.public().to_peer_id());
        assert_eq!(open(b"other", &stored), Err(RecordError::BadSignature));
        assert_eq!(open(b"k", b"\xff\xff"), Err(RecordError::Malformed));
        let mut signed = Signed::decode(&stored[..]).expect("decodes");
        signed.value.push(b'!');
        assert_eq!(
            open(b"k", &signed.encode_to_vec()),
            Err(RecordError::BadSignature)
        );
        let mut signed = Signed::decode(&stored[..]).expect("decodes");
        signed.publisher = Keypair::generate_ed25519().public().encode_protobuf();
        assert_eq!(
            open(b"k", &signed.encode_to_vec()),
            Err(RecordError::BadSignature),
            "a publisher cannot be swapped in"
        );
    }
}
