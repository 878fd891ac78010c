//! What guild nodes send each other, as protobuf messages inside p2p envelopes, and the
//! coordinator's signatures over them.

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use prost::Message;

/// Domain tag of a signed membership.
const MEMBERSHIP_DOMAIN: &[u8] = b"zerostate-guild-membership-v1";
/// Domain tag of a signed dissolution (v2: bound to the membership version).
const DISSOLVE_DOMAIN: &[u8] = b"zerostate-guild-dissolve-v2";
/// Domain tag of a signed invitation.
const INVITATION_DOMAIN: &[u8] = b"zerostate-guild-invitation-v1";

/// Message types on the wire (p2p envelope `message_type`).
pub(crate) mod types {
    pub(crate) const MESSAGE: &str = "guild_message";
    pub(crate) const MEMBERSHIP: &str = "guild_membership";
    pub(crate) const HEARTBEAT: &str = "guild_heartbeat";
    pub(crate) const DISSOLVE: &str = "guild_dissolve";
    pub(crate) const JOIN: &str = "guild_join";
    pub(crate) const JOIN_REPLY: &str = "guild_join_reply";
    pub(crate) const KEY: &str = "guild_key";
    pub(crate) const LEAVE: &str = "guild_leave";
    pub(crate) const ACK: &str = "guild_ack";
    pub(crate) const SYNC: &str = "guild_sync";
    /// The answer to a key delivery this node did not take, with the reason as payload.
    pub(crate) const REFUSED: &str = "guild_refused";

    zerostate_p2p::request_types! {
        /// The direct requests of the guild protocol.
        pub(crate) enum Call {
            /// A member asks to join.
            Join = JOIN,
            /// A member asks for the current membership and key.
            Sync = SYNC,
            /// A member leaves.
            Leave = LEAVE,
            /// The coordinator delivers a key.
            Key = KEY,
            /// A member's heartbeat to its coordinator, answered with the coordinator's.
            Heartbeat = HEARTBEAT,
        }
    }
}

/// Who is in a guild, at which version and key epoch, signed by the coordinator.
#[derive(Clone, PartialEq, Message)]
pub struct Membership {
    /// The guild's id.
    #[prost(string, tag = "1")]
    pub guild_id: String,
    /// Its name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Grows with every change; an update not above the current version is stale.
    #[prost(uint64, tag = "3")]
    pub version: u64,
    /// The coordinator's peer id (bytes).
    #[prost(bytes = "vec", tag = "4")]
    pub coordinator: Vec<u8>,
    /// Members' peer ids (bytes), the coordinator included.
    #[prost(bytes = "vec", repeated, tag = "5")]
    pub members: Vec<Vec<u8>>,
    /// The key epoch messages are sealed under from this version on.
    #[prost(uint32, tag = "6")]
    pub key_epoch: u32,
    /// The coordinator's signature over all the above.
    #[prost(bytes = "vec", tag = "7")]
    pub signature: Vec<u8>,
    /// Members this version removed by the coordinator's decision, and why (`cheated: …`);
    /// signed with the rest.
    #[prost(message, repeated, tag = "8")]
    pub removed: Vec<Removal>,
    /// The coordinator's term: 0 for the guild's creator, one more at every succession.
    /// Of two memberships, the one of the later term wins (see [`Claim`]).
    #[prost(uint64, tag = "9")]
    pub term: u64,
    /// Who takes over, in order, should the coordinator fall silent: peer ids (bytes) of
    /// members, the longest-standing first.
    #[prost(bytes = "vec", repeated, tag = "10")]
    pub successors: Vec<Vec<u8>>,
    /// Each member's X25519 public key, in the order of `members` (empty where unknown):
    /// a successor delivers the next key with them.
    #[prost(bytes = "vec", repeated, tag = "11")]
    pub exchange_keys: Vec<Vec<u8>>,
    /// For a term after the first: the membership of the term before, signed by its
    /// coordinator, that names this coordinator among its successors (its own `previous`
    /// stripped). Not covered by this membership's signature: it carries its own.
    #[prost(message, optional, boxed, tag = "12")]
    pub previous: Option<Box<Membership>>,
}

/// How strong a coordinator's hold on a guild is, from its signed membership: a later
/// term beats an earlier one; within a term (two successors that acted at once), the
/// successor named earlier wins, then the one whose proof is newer, then the lower peer id.
/// Every member orders two memberships the same way, so a guild converges on one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The term.
    pub term: u64,
    /// The coordinator's place in its proof's successor list (0 for the creator).
    pub rank: u32,
    /// The version of the proof (0 for the creator).
    pub proof_version: u64,
    /// The coordinator's peer id (bytes).
    pub coordinator: Vec<u8>,
}

impl Claim {
    /// Whether this claim wins over `other`.
    pub fn beats(&self, other: &Claim) -> bool {
        use std::cmp::Reverse;
        (
            self.term,
            Reverse(self.rank),
            self.proof_version,
            Reverse(&self.coordinator),
        ) > (
            other.term,
            Reverse(other.rank),
            other.proof_version,
            Reverse(&other.coordinator),
        )
    }
}

/// A member removed from a guild and why, as its membership states it.
#[derive(Clone, PartialEq, Message)]
pub struct Removal {
    /// The removed member's peer id (bytes).
    #[prost(bytes = "vec", tag = "1")]
    pub peer: Vec<u8>,
    /// Why.
    #[prost(string, tag = "2")]
    pub reason: String,
}

/// A guild message as it travels: everything but the ciphertext is in the clear and
/// bound to it as associated data.
#[derive(Clone, PartialEq, Message)]
pub struct Sealed {
    /// The guild's id.
    #[prost(string, tag = "1")]
    pub guild_id: String,
    /// The key epoch it is sealed under.
    #[prost(uint32, tag = "2")]
    pub key_epoch: u32,
    /// The sender's peer id (bytes); must be the gossip publisher.
    #[prost(bytes = "vec", tag = "3")]
    pub sender: Vec<u8>,
    /// The sender's message counter: microseconds since the Unix epoch, strictly increasing
    /// per sender, so that it keeps increasing across the sender's restarts. A counter seen
    /// before is a replay.
    #[prost(uint64, tag = "4")]
    pub counter: u64,
    /// XChaCha20-Poly1305 nonce.
    #[prost(bytes = "vec", tag = "5")]
    pub nonce: Vec<u8>,
    /// The sealed [`Plain`].
    #[prost(bytes = "vec", tag = "6")]
    pub ciphertext: Vec<u8>,
    /// The sender's `traceparent`, in the clear (and bound as associated data) so that a
    /// node that cannot open the message still records its refusal in the sender's trace.
    /// `tracestate` and baggage stay sealed.
    #[prost(string, tag = "7")]
    pub traceparent: String,
}

impl Sealed {
    /// The associated data: every clear field.
    pub(crate) fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64);
        aad.extend_from_slice(self.guild_id.as_bytes());
        aad.push(0);
        aad.extend_from_slice(&self.key_epoch.to_be_bytes());
        aad.extend_from_slice(&self.sender);
        aad.extend_from_slice(&self.counter.to_be_bytes());
        aad.extend_from_slice(self.traceparent.as_bytes());
        aad
    }
}

/// What a sealed guild message holds: the application's bytes and the parts of the trace
/// context that may carry application data (`tracestate`, baggage).
#[derive(Clone, PartialEq, Message)]
pub struct Plain {
    /// The application's message type.
    #[prost(string, tag = "1")]
    pub message_type: String,
    /// The application's bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub body: Vec<u8>,
    /// Unused since the `traceparent` travels in [`Sealed`]; kept so that the tag is not
    /// reused.
    #[prost(string, tag = "3")]
    pub traceparent: String,
    /// The sender's `tracestate`.
    #[prost(string, tag = "4")]
    pub tracestate: String,
    /// The sender's `baggage`.
    #[prost(string, tag = "5")]
    pub baggage: String,
}

/// A node's sign of life: the coordinator's on the topic and in answer to a member's, a
/// member's sent straight to the coordinator (on the topic while the coordinator is silent).
#[derive(Clone, PartialEq, Message)]
pub struct Heartbeat {
    /// The guild's id.
    #[prost(string, tag = "1")]
    pub guild_id: String,
    /// A counter, for logs.
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    /// The membership version the sender holds; a member behind the coordinator's asks it
    /// for the current one.
    #[prost(uint64, tag = "3")]
    pub version: u64,
    /// The key epoch the sender holds.
    #[prost(uint32, tag = "4")]
    pub key_epoch: u32,
    /// The coordinator's term the sender holds; a node that sees a later one asks the
    /// sender for its membership.
    #[prost(uint64, tag = "5")]
    pub term: u64,
}

/// A member's request for the current signed membership and key, to the coordinator.
#[derive(Clone, PartialEq, Message)]
pub struct SyncRequest {
    /// The guild's id.
    #[prost(string, tag = "1")]
    pub guild_id: String,
}

/// A request to join, to the coordinator.
#[derive(Clone, PartialEq, Message)]
pub struct JoinRequest {
    /// The guild's id.
    #[prost(string, tag = "1")]
    pub guild_id: String,
    /// The joiner's X25519 public key, for the guild key.
    #[prost(bytes = "vec", tag = "2")]
    pub exchange_public: Vec<u8>,
    /// The coordinator's invitation, for a guild that admits by invitation.
    #[prost(message, optional, tag = "3")]
    pub invitation: Option<Invitation>,
}

/// A coordinator's signed, single-use, expiring permission to join one guild.
#[derive(Clone, PartialEq, Message)]
pub struct Invitation {
    /// The guild's id.
    #[prost(string, tag = "1")]
    pub guild_id: String,
    /// Its id: 16 random bytes, used once.
    #[prost(bytes = "vec", tag = "2")]
    pub id: Vec<u8>,
    /// The peer id (bytes) it is for; empty: whoever presents it first.
    #[prost(bytes = "vec", tag = "3")]
    pub invitee: Vec<u8>,
    /// When it expires, in milliseconds since the Unix epoch.
    #[prost(uint64, tag = "4")]
    pub expires_unix_ms: u64,
    /// The coordinator's signature.
    #[prost(bytes = "vec", tag = "5")]
    pub signature: Vec<u8>,
}

impl CoordinatorSigned for Invitation {
    const DOMAIN: &'static [u8] = INVITATION_DOMAIN;

    fn signature_field(&mut self) -> &mut Vec<u8> {
        &mut self.signature
    }

    fn signature(&self) -> &[u8] {
        &self.signature
    }
}

impl Invitation {
    /// Signs it with the coordinator's key.
    pub(crate) fn sign(self, key: &Keypair) -> Self {
        self.signed_with(key)
    }

    /// Whether `coordinator` signed it.
    pub(crate) fn verify(&self, coordinator: &PeerId) -> bool {
        self.signed_by(coordinator)
    }

    /// The text form a user passes around: `zsinv1` and the message in lowercase hex.
    pub fn to_token(&self) -> String {
        format!("{INVITATION_PREFIX}{}", hex::encode(self.encode_to_vec()))
    }

    /// Reads the text form back.
    pub fn from_token(token: &str) -> Result<Self, String> {
        let body = token
            .trim()
            .strip_prefix(INVITATION_PREFIX)
            .ok_or_else(|| format!("an invitation starts with {INVITATION_PREFIX}"))?;
        if body.len() > 2 * MAX_INVITATION_BYTES {
            return Err(format!(
                "an invitation is at most {MAX_INVITATION_BYTES} bytes"
            ));
        }
        let bytes = hex::decode(body).map_err(|e| format!("an invitation is hex: {e}"))?;
        Self::decode(&bytes[..]).map_err(|e| format!("not an invitation: {e}"))
    }
}

/// What every invitation token starts with.
const INVITATION_PREFIX: &str = "zsinv1";
/// Largest invitation accepted, in bytes.
const MAX_INVITATION_BYTES: usize = 512;

/// The coordinator's answer to a join: the membership and the guild key wrapped for the
/// joiner, or a refusal.
#[derive(Clone, PartialEq, Message)]
pub struct JoinReply {
    /// Why the join was refused; empty when admitted.
    #[prost(string, tag = "1")]
    pub refusal: String,
    /// The membership that includes the joiner.
    #[prost(message, optional, tag = "2")]
    pub membership: Option<Membership>,
    /// The guild key, wrapped for the joiner.
    #[prost(message, optional, tag = "3")]
    pub key: Option<KeyUpdate>,
}

/// A guild key wrapped for one member.
#[derive(Clone, PartialEq, Message)]
pub struct KeyUpdate {
    /// The guild's id.
    #[prost(string, tag = "1")]
    pub guild_id: String,
    /// The key's epoch.
    #[prost(uint32, tag = "2")]
    pub key_epoch: u32,
    /// The coordinator's X25519 public key.
    #[prost(bytes = "vec", tag = "3")]
    pub exchange_public: Vec<u8>,
    /// Nonce of the wrapped key.
    #[prost(bytes = "vec", tag = "4")]
    pub nonce: Vec<u8>,
    /// The wrapped key.
    #[prost(bytes = "vec", tag = "5")]
    pub wrapped: Vec<u8>,
}

impl KeyUpdate {
    /// What the wrapped key is bound to.
    pub(crate) fn context(guild_id: &str, epoch: u32) -> Vec<u8> {
        let mut c = guild_id.as_bytes().to_vec();
        c.push(b'/');
        c.extend_from_slice(&epoch.to_be_bytes());
        c
    }
}

/// A member leaving, to the coordinator.
#[derive(Clone, PartialEq, Message)]
pub struct LeaveRequest {
    /// The guild's id.
    #[prost(string, tag = "1")]
    pub guild_id: String,
}

/// The coordinator ending the guild.
#[derive(Clone, PartialEq, Message)]
pub struct Dissolve {
    /// The guild's id.
    #[prost(string, tag = "1")]
    pub guild_id: String,
    /// The coordinator's signature over the id and the version.
    #[prost(bytes = "vec", tag = "2")]
    pub signature: Vec<u8>,
    /// The membership version it ends: a member holding a newer one ignores it.
    #[prost(uint64, tag = "3")]
    pub version: u64,
}

/// The public key inside an ed25519 peer id.
pub(crate) fn public_key_of(peer: &PeerId) -> Option<PublicKey> {
    let mh = peer.as_ref();
    // Identity multihash (code 0): the digest is the protobuf-encoded public key.
    (mh.code() == 0)
        .then(|| PublicKey::try_decode_protobuf(mh.digest()).ok())
        .flatten()
}

fn tagged(domain: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = domain.to_vec();
    v.extend_from_slice(body);
    v
}

/// A message the coordinator signs whole: the signature covers the domain tag and the
/// message encoded with an empty signature field.
trait CoordinatorSigned: Message + Clone + Sized {
    const DOMAIN: &'static [u8];

    fn signature_field(&mut self) -> &mut Vec<u8>;

    fn signature(&self) -> &[u8];

    /// The message as signed: without its signature (and without what carries its own).
    fn unsigned(&self) -> Self {
        let mut unsigned = self.clone();
        unsigned.signature_field().clear();
        unsigned
    }

    fn signing_bytes(&self) -> Vec<u8> {
        tagged(Self::DOMAIN, &self.unsigned().encode_to_vec())
    }

    fn signed_with(mut self, key: &Keypair) -> Self {
        *self.signature_field() = key
            .sign(&self.signing_bytes())
            .expect("ed25519 signing does not fail");
        self
    }

    fn signed_by(&self, coordinator: &PeerId) -> bool {
        public_key_of(coordinator)
            .is_some_and(|k| k.verify(&self.signing_bytes(), self.signature()))
    }
}

impl CoordinatorSigned for Membership {
    const DOMAIN: &'static [u8] = MEMBERSHIP_DOMAIN;

    fn unsigned(&self) -> Self {
        Membership {
            signature: Vec::new(),
            previous: None,
            ..self.clone()
        }
    }

    fn signature_field(&mut self) -> &mut Vec<u8> {
        &mut self.signature
    }

    fn signature(&self) -> &[u8] {
        &self.signature
    }
}

impl Membership {
    /// Signs it with the coordinator's key.
    pub(crate) fn sign(self, key: &Keypair) -> Self {
        self.signed_with(key)
    }

    /// Whether `coordinator` signed it.
    pub(crate) fn verify(&self, coordinator: &PeerId) -> bool {
        self.coordinator == coordinator.to_bytes() && self.signed_by(coordinator)
    }

    /// The members as peer ids (malformed entries skipped).
    pub(crate) fn member_ids(&self) -> Vec<PeerId> {
        self.members
            .iter()
            .filter_map(|b| PeerId::from_bytes(b).ok())
            .collect()
    }

    /// The coordinator's peer id, when it is one.
    pub(crate) fn coordinator_id(&self) -> Option<PeerId> {
        PeerId::from_bytes(&self.coordinator).ok()
    }

    /// The successors as peer ids (malformed entries skipped).
    pub(crate) fn successor_ids(&self) -> Vec<PeerId> {
        self.successors
            .iter()
            .filter_map(|b| PeerId::from_bytes(b).ok())
            .collect()
    }

    /// `peer`'s exchange key as this membership states it.
    pub(crate) fn exchange_key_of(&self, peer: &PeerId) -> Option<[u8; 32]> {
        let bytes = peer.to_bytes();
        let at = self.members.iter().position(|m| *m == bytes)?;
        self.exchange_keys.get(at)?.as_slice().try_into().ok()
    }

    /// This membership's claim, given its proof checked (see [`Membership::takeover`]).
    pub fn claim(&self) -> Claim {
        let (rank, proof_version) = self
            .previous
            .as_deref()
            .map(|p| {
                let rank = p
                    .successors
                    .iter()
                    .position(|s| *s == self.coordinator)
                    .map_or(u32::MAX, |r| u32::try_from(r).unwrap_or(u32::MAX));
                (rank, p.version)
            })
            .unwrap_or((0, 0));
        Claim {
            term: self.term,
            rank,
            proof_version,
            coordinator: self.coordinator.clone(),
        }
    }

    /// Checks a succession: this membership is signed by its own coordinator and carries,
    /// as `previous`, a membership of the term before, signed by `trusted` (the coordinator
    /// of that term the checking node knows), that names this coordinator as a successor.
    pub(crate) fn takeover_by(&self, trusted: &PeerId) -> Result<(), &'static str> {
        let Some(coordinator) = self.coordinator_id() else {
            return Err("the coordinator is not a peer id");
        };
        if !self.verify(&coordinator) {
            return Err("not signed by the coordinator it names");
        }
        let Some(proof) = self.previous.as_deref() else {
            return Err("a new coordinator without the membership that named it");
        };
        if proof.guild_id != self.guild_id || proof.term.checked_add(1) != Some(self.term) {
            return Err("its proof is not the term before, of this guild");
        }
        if !proof.verify(trusted) {
            return Err("its proof is not signed by the coordinator this node knows");
        }
        if !proof.successors.contains(&self.coordinator) {
            return Err("its proof does not name it a successor");
        }
        Ok(())
    }

    /// Why this version removed `peer`, when it says (bounded to 256 bytes).
    pub(crate) fn removal_reason(&self, peer: &PeerId) -> Option<String> {
        let bytes = peer.to_bytes();
        self.removed
            .iter()
            .find(|r| r.peer == bytes)
            .map(|r| r.reason.chars().take(256).collect())
    }
}

impl Dissolve {
    fn signing_bytes(guild_id: &str, version: u64) -> Vec<u8> {
        let mut body = guild_id.as_bytes().to_vec();
        body.push(0);
        body.extend_from_slice(&version.to_be_bytes());
        tagged(DISSOLVE_DOMAIN, &body)
    }

    /// Signed by the coordinator, for membership `version`.
    pub(crate) fn signed(guild_id: &str, version: u64, key: &Keypair) -> Self {
        let signature = key
            .sign(&Self::signing_bytes(guild_id, version))
            .expect("ed25519 signing does not fail");
        Self {
            guild_id: guild_id.to_owned(),
            signature,
            version,
        }
    }

    /// Whether `coordinator` signed it (for its version).
    pub(crate) fn verify(&self, coordinator: &PeerId) -> bool {
        public_key_of(coordinator).is_some_and(|k| {
            k.verify(
                &Self::signing_bytes(&self.guild_id, self.version),
                &self.signature,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn membership_signature_covers_every_field() {
        let key = Keypair::generate_ed25519();
        let me = key.public().to_peer_id();
        let m = Membership {
            guild_id: "g".into(),
            name: "n".into(),
            version: 3,
            coordinator: me.to_bytes(),
            members: vec![me.to_bytes()],
            key_epoch: 2,
            ..Membership::default()
        }
        .sign(&key);
        assert!(m.verify(&me));
        let other = Keypair::generate_ed25519().public().to_peer_id();
        assert!(!m.verify(&other));
        for tamper in [
            |m: &mut Membership| m.version += 1,
            |m: &mut Membership| m.key_epoch += 1,
            |m: &mut Membership| m.members.push(vec![1]),
            |m: &mut Membership| m.name.push('x'),
            |m: &mut Membership| m.guild_id.push('x'),
            |m: &mut Membership| m.term += 1,
            |m: &mut Membership| m.successors.push(vec![1]),
            |m: &mut Membership| m.exchange_keys.push(vec![1]),
        ] {
            let mut t = m.clone();
            tamper(&mut t);
            assert!(!t.verify(&me));
        }
        let d = Dissolve::signed("g", 4, &key);
        assert!(d.verify(&me));
        let mut older = d.clone();
        older.version = 3;
        assert!(!older.verify(&me), "the version is signed");
        assert!(!Dissolve::signed("g", 4, &Keypair::generate_ed25519()).verify(&me));
    }

    #[test]
    fn an_invitation_round_trips_as_a_token_and_its_signature_covers_every_field() {
        let key = Keypair::generate_ed25519();
        let me = key.public().to_peer_id();
        let invitation = Invitation {
            guild_id: "g".into(),
            id: vec![7; 16],
            invitee: Vec::new(),
            expires_unix_ms: 1_000,
            signature: Vec::new(),
        }
        .sign(&key);
        let back = Invitation::from_token(&invitation.to_token()).expect("parses");
        assert_eq!(back, invitation);
        assert!(back.verify(&me));
        for tamper in [
            |i: &mut Invitation| i.expires_unix_ms += 1,
            |i: &mut Invitation| i.id[0] ^= 1,
            |i: &mut Invitation| i.invitee = vec![1],
            |i: &mut Invitation| i.guild_id.push('x'),
        ] {
            let mut t = invitation.clone();
            tamper(&mut t);
            assert!(!t.verify(&me));
        }
        assert!(Invitation::from_token("zsinv1zz").is_err());
        assert!(Invitation::from_token("hello").is_err());
        assert!(Invitation::from_token(&format!("zsinv1{}", "00".repeat(4096))).is_err());
    }

    /// A membership of `term` signed by `key`, naming `successors`.
    fn membership(key: &Keypair, term: u64, version: u64, successors: &[PeerId]) -> Membership {
        Membership {
            guild_id: "g".into(),
            version,
            term,
            coordinator: key.public().to_peer_id().to_bytes(),
            successors: successors.iter().map(|p| p.to_bytes()).collect(),
            ..Membership::default()
        }
        .sign(key)
    }

    #[test]
    fn a_takeover_holds_only_with_a_proof_from_the_known_coordinator_naming_it() {
        let (old, first, second, stranger) = (
            Keypair::generate_ed25519(),
            Keypair::generate_ed25519(),
            Keypair::generate_ed25519(),
            Keypair::generate_ed25519(),
        );
        let (old_id, first_id, second_id) = (
            old.public().to_peer_id(),
            first.public().to_peer_id(),
            second.public().to_peer_id(),
        );
        let proof = membership(&old, 0, 7, &[first_id, second_id]);
        let takeover = |key: &Keypair, proof: &Membership| Membership {
            previous: Some(Box::new(proof.clone())),
            ..membership(key, 1, 8, &[])
        };
        let by_first = takeover(&first, &proof);
        assert_eq!(by_first.takeover_by(&old_id), Ok(()));
        assert!(
            by_first.verify(&first_id),
            "the proof is outside the signature"
        );
        assert!(
            by_first.takeover_by(&first_id).is_err(),
            "an unknown signer"
        );
        assert!(takeover(&stranger, &proof).takeover_by(&old_id).is_err());
        let forged_proof = membership(&stranger, 0, 7, &[first_id]);
        assert!(
            takeover(&first, &forged_proof)
                .takeover_by(&old_id)
                .is_err()
        );
        let skipped = Membership {
            term: 2,
            ..by_first.clone()
        };
        assert!(skipped.takeover_by(&old_id).is_err(), "not the term before");
        let mut no_proof = by_first.clone();
        no_proof.previous = None;
        assert!(no_proof.takeover_by(&old_id).is_err());

        // Two successors at once: the one named first wins, whatever arrives first.
        let by_second = takeover(&second, &proof);
        assert!(by_first.claim().beats(&by_second.claim()));
        assert!(!by_second.claim().beats(&by_first.claim()));
        // A later term wins over everything before it; the creator's claim is the weakest.
        let later = Membership {
            previous: Some(Box::new(membership(&second, 1, 3, &[old_id]))),
            ..membership(&old, 2, 1, &[])
        };
        assert!(later.claim().beats(&by_first.claim()));
        assert!(by_second.claim().beats(&proof.claim()));
        assert!(
            !proof.claim().beats(&proof.claim()),
            "a claim does not beat itself"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Membership::decode(&bytes[..]).map(|m| (m.member_ids(), m.verify(&PeerId::random())));
            let _ = Sealed::decode(&bytes[..]).map(|s| s.aad());
            let _ = Plain::decode(&bytes[..]);
            let _ = JoinReply::decode(&bytes[..]);
            let _ = Dissolve::decode(&bytes[..]).map(|d| d.verify(&PeerId::random()));
        }
    }
}
