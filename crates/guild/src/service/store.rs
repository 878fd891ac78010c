//! Persisted guilds: every guild this node coordinates or belongs to is kept under its data
//! directory (`guilds/<id>.json`, readable by its owner only), written before the change is
//! acknowledged (the join answered, the invitation's use recorded, the call returned). A
//! node restarted on its data directory resumes them: a coordinator with the same id and
//! members under a new key epoch, a member by catching up with its coordinator.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use prost::Message as _;
use serde::{Deserialize, Serialize};

use super::messages::unix_micros;
use super::state::{Guild, Member, Status};
use crate::crypto::GuildKey;
use crate::wire::Membership;

/// The files of one node's guilds.
#[derive(Debug)]
pub(super) struct Store {
    dir: PathBuf,
}

/// A member as kept.
#[derive(Serialize, Deserialize)]
struct SavedMember {
    peer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exchange: Option<String>,
    since: u64,
}

/// A guild as kept. Keys are secrets: the file is readable by its owner only.
#[derive(Serialize, Deserialize)]
struct Saved {
    id: String,
    name: String,
    status: String,
    #[serde(default)]
    reason: Option<String>,
    coordinator: String,
    term: u64,
    /// The proof of this term (hex protobuf), after the first term.
    #[serde(default)]
    proof: Option<String>,
    successors: Vec<String>,
    /// The last signed membership a member applied (hex protobuf).
    #[serde(default)]
    signed: Option<String>,
    version: u64,
    epoch: u32,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    previous_key: Option<(u32, String)>,
    members: Vec<SavedMember>,
    /// Invitation id (hex) → the peer that used it, and when it expires (Unix ms).
    #[serde(default)]
    used_invitations: Vec<(String, String, u64)>,
    /// Members removed for silence and when (Unix ms).
    #[serde(default)]
    returning: Vec<(String, u64)>,
    /// Members removed by decision: version, peer, reason.
    #[serde(default)]
    removals: Vec<(u64, String, String)>,
    heartbeat_seq: u64,
}

/// Whether `id` may name a file: what this node makes (hex digits), nothing else.
fn storable(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn unix_ms() -> u64 {
    unix_micros() / 1000
}

fn peer(text: &str) -> Result<PeerId, String> {
    text.parse()
        .map_err(|e| format!("{text:?} is not a peer id: {e}"))
}

fn key32(text: &str) -> Result<[u8; 32], String> {
    hex::decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "a key is 64 hex digits".to_owned())
}

fn membership(text: &str) -> Result<Membership, String> {
    let bytes = hex::decode(text).map_err(|e| format!("a membership is hex: {e}"))?;
    Membership::decode(&bytes[..]).map_err(|e| format!("not a membership: {e}"))
}

impl Saved {
    fn of(g: &Guild) -> Saved {
        let now = Instant::now();
        let now_ms = unix_ms();
        Saved {
            id: g.id.clone(),
            name: g.name.clone(),
            status: g.status.as_str().to_owned(),
            reason: g.reason.clone(),
            coordinator: g.coordinator.to_string(),
            term: g.term,
            proof: g.proof.as_ref().map(|p| hex::encode(p.encode_to_vec())),
            successors: g.successors.iter().map(PeerId::to_string).collect(),
            signed: g.signed.as_ref().map(|m| hex::encode(m.encode_to_vec())),
            version: g.version,
            epoch: g.epoch,
            key: g.key.as_ref().map(|k| hex::encode(k.0)),
            previous_key: g.previous.as_ref().map(|(e, k)| (*e, hex::encode(k.0))),
            members: g
                .members
                .iter()
                .map(|(p, m)| SavedMember {
                    peer: p.to_string(),
                    exchange: m.exchange.map(hex::encode),
                    since: m.since,
                })
                .collect(),
            used_invitations: g
                .used_invitations
                .iter()
                .map(|(id, (p, expires))| (hex::encode(id), p.to_string(), *expires))
                .collect(),
            returning: g
                .returning
                .iter()
                .map(|(p, at)| {
                    let ago = u64::try_from(now.saturating_duration_since(*at).as_millis())
                        .unwrap_or(u64::MAX);
                    (p.to_string(), now_ms.saturating_sub(ago))
                })
                .collect(),
            removals: g
                .removals
                .iter()
                .map(|(v, p, why)| (*v, p.to_string(), why.clone()))
                .collect(),
            heartbeat_seq: g.heartbeat_seq,
        }
    }

    fn into_guild(self, joins_per_second: u32) -> Result<Guild, String> {
        let status = match self.status.as_str() {
            "coordinator" => Status::Coordinator,
            "member" => Status::Member,
            "left" => Status::Left,
            "removed" => Status::Removed,
            "dissolved" => Status::Dissolved,
            other => return Err(format!("unknown status {other:?}")),
        };
        let coordinator = peer(&self.coordinator)?;
        let mut g = Guild::new(self.id, self.name, coordinator, status, joins_per_second);
        g.reason = self.reason;
        g.term = self.term;
        g.proof = self
            .proof
            .as_deref()
            .map(membership)
            .transpose()?
            .map(Box::new);
        g.claim = Membership {
            term: g.term,
            coordinator: coordinator.to_bytes(),
            previous: g.proof.clone(),
            ..Membership::default()
        }
        .claim();
        g.successors = self
            .successors
            .iter()
            .map(|p| peer(p))
            .collect::<Result<_, _>>()?;
        g.signed = self.signed.as_deref().map(membership).transpose()?;
        g.version = self.version;
        g.epoch = self.epoch;
        g.key = self.key.as_deref().map(key32).transpose()?.map(GuildKey);
        g.previous = match self.previous_key {
            Some((epoch, key)) => Some((epoch, GuildKey(key32(&key)?))),
            None => None,
        };
        let now = Instant::now();
        for m in self.members {
            let mut member = Member::new(now, m.exchange.as_deref().map(key32).transpose()?);
            member.since = m.since;
            g.members.insert(peer(&m.peer)?, member);
        }
        g.used_invitations = self
            .used_invitations
            .into_iter()
            .map(|(id, p, expires)| {
                let id = hex::decode(&id).map_err(|e| format!("an invitation id is hex: {e}"))?;
                Ok((id, (peer(&p)?, expires)))
            })
            .collect::<Result<HashMap<_, _>, String>>()?;
        let now_ms = unix_ms();
        g.returning = self
            .returning
            .into_iter()
            .map(|(p, at)| {
                let ago = Duration::from_millis(now_ms.saturating_sub(at));
                Ok((peer(&p)?, now.checked_sub(ago).unwrap_or(now)))
            })
            .collect::<Result<VecDeque<_>, String>>()?;
        g.removals = self
            .removals
            .into_iter()
            .map(|(v, p, why)| Ok((v, peer(&p)?, why)))
            .collect::<Result<VecDeque<_>, String>>()?;
        g.heartbeat_seq = self.heartbeat_seq;
        Ok(g)
    }
}

impl Store {
    /// The store under `dir` (created, readable by its owner only).
    pub(super) fn open(dir: &Path) -> Result<Store, String> {
        let dir = dir.join("guilds");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("protecting {}: {e}", dir.display()))?;
        }
        Ok(Store { dir })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes `g` (not a guild only watched, nor one whose id cannot name a file): a new
    /// file written whole and synced, then renamed over the old one, so a crash leaves one
    /// or the other.
    pub(super) fn save(&self, g: &Guild) -> Result<(), String> {
        if g.status == Status::Watching || !storable(&g.id) {
            return Ok(());
        }
        let body = serde_json::to_vec_pretty(&Saved::of(g)).map_err(|e| e.to_string())?;
        let path = self.path(&g.id);
        let tmp = self.dir.join(format!(".{}.json.new", g.id));
        let write = || -> std::io::Result<()> {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp)?;
            file.write_all(&body)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// Every guild kept, or what is wrong with the first file that does not read.
    pub(super) fn load(&self, joins_per_second: u32) -> Result<Vec<Guild>, String> {
        let mut guilds = Vec::new();
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| format!("reading {}: {e}", self.dir.display()))?;
        for entry in entries {
            let path = entry
                .map_err(|e| format!("reading {}: {e}", self.dir.display()))?
                .path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            if !storable(id) {
                continue;
            }
            let text =
                std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            let guild = serde_json::from_slice::<Saved>(&text)
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    if s.id == id {
                        s.into_guild(joins_per_second)
                    } else {
                        Err(format!("it holds guild {}", s.id))
                    }
                })
                .map_err(|e| format!("{} is not a guild this node kept: {e}", path.display()))?;
            guilds.push(guild);
        }
        guilds.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(guilds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guild_comes_back_as_it_was_kept_and_a_damaged_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("opens");
        let mut g = Guild::new(
            "00aa11bb22cc33dd".into(),
            "farm".into(),
            PeerId::random(),
            Status::Coordinator,
            10,
        );
        let (a, b) = (PeerId::random(), PeerId::random());
        let now = Instant::now();
        g.members.insert(a, Member::new(now, Some([7; 32])));
        let mut second = Member::new(now, None);
        second.since = 1;
        g.members.insert(b, second);
        g.term = 2;
        g.version = 9;
        g.install_key(4, GuildKey::generate());
        g.install_key(5, GuildKey::generate());
        g.successors = vec![b];
        g.used_invitations.insert(vec![1, 2], (a, 99));
        g.fell_silent(b, now);
        g.removals.push_back((8, a, "cheated".into()));
        store.save(&g).expect("saves");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(store.path(&g.id))
                .expect("file")
                .permissions();
            assert_eq!(mode.mode() & 0o777, 0o600);
        }
        let back = store.load(10).expect("loads");
        assert_eq!(back.len(), 1);
        let back = &back[0];
        assert_eq!((back.term, back.version, back.epoch), (2, 9, 5));
        assert_eq!(back.key.as_ref().map(|k| k.0), g.key.as_ref().map(|k| k.0));
        assert_eq!(back.previous.as_ref().map(|(e, _)| *e), Some(4));
        assert_eq!(back.members[&a].exchange, Some([7; 32]));
        assert_eq!(back.members[&b].since, 1);
        assert_eq!(back.successors, vec![b]);
        assert_eq!(back.used_invitations[&vec![1, 2]], (a, 99));
        assert!(back.returning.iter().any(|(p, _)| *p == b));
        assert_eq!(back.removals.len(), 1);

        // A watched guild and an id that cannot name a file are not kept.
        let watched = Guild::new("abcd".into(), String::new(), a, Status::Watching, 10);
        store.save(&watched).expect("skips");
        let odd = Guild::new("../x".into(), String::new(), a, Status::Member, 10);
        store.save(&odd).expect("skips");
        assert_eq!(store.load(10).expect("loads").len(), 1);

        std::fs::write(store.path("ffff"), b"{not json").expect("write");
        let err = store.load(10).err().expect("refused");
        assert!(err.contains("ffff.json"), "{err}");
    }
}
