//! Joining: a member's request to the coordinator and what it does with the answer, and
//! the coordinator's side — admission (rate, policy, capacity), the key wrapped for the new
//! member, the new membership announced — invitations, and a member's notice that it
//! leaves.

use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::identity::Keypair;
use prost::Message as _;
use tracing::{Instrument, Span};
use zerostate_p2p::IncomingRequest;
use zerostate_telemetry::SpanExt;
use zerostate_telemetry::names::span as names;

use super::config::Admission;
use super::handle::{Command, Reply};
use super::messages::unix_micros;
use super::state::{Admitted, Guild};
use super::stats::bump;
use super::{GuildError, GuildInfo, Member, Service, Status, TOPIC_PREFIX};
use crate::crypto::ExchangeKey;
use crate::wire::{Invitation, JoinReply, JoinRequest, KeyUpdate, LeaveRequest, types};

/// Longest an invitation may be valid.
pub const MAX_INVITATION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The join requests a coordinator still takes for one guild: refilled at the configured
/// rate, at most two seconds' worth.
#[derive(Debug)]
pub(super) struct JoinBucket {
    tokens: f64,
    refilled: Instant,
}

impl JoinBucket {
    /// A full bucket for `per_second` joins.
    pub(super) fn full(per_second: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(per_second) * 2.0,
            refilled: now,
        }
    }

    /// Adds what the time since the last refill earned, up to the bound.
    pub(super) fn refill(&mut self, now: Instant, per_second: u32) {
        let rate = f64::from(per_second);
        self.tokens = (self.tokens
            + now.saturating_duration_since(self.refilled).as_secs_f64() * rate)
            .min(rate * 2.0);
        self.refilled = now;
    }

    /// Takes one join; false when none is left.
    pub(super) fn take(&mut self) -> bool {
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// A refused join or sync, encoded.
pub(super) fn refusal(reason: &str) -> Vec<u8> {
    JoinReply {
        refusal: reason.to_owned(),
        membership: None,
        key: None,
    }
    .encode_to_vec()
}

/// What an admitted joiner, or a member catching up, receives: `g`'s current membership
/// signed with `sign_key` and its current key wrapped for `public`. `None` when `g` holds no
/// key or `public` is a low-order point.
pub(super) fn admission(
    g: &Guild,
    sign_key: &Keypair,
    exchange: &ExchangeKey,
    public: &[u8; 32],
) -> Option<JoinReply> {
    let key = g.key.as_ref()?;
    let (nonce, wrapped) = exchange.wrap(public, key, &KeyUpdate::context(&g.id, g.epoch))?;
    Some(JoinReply {
        refusal: String::new(),
        membership: Some(g.membership(sign_key)),
        key: Some(KeyUpdate {
            guild_id: g.id.clone(),
            key_epoch: g.epoch,
            exchange_public: exchange.public().to_vec(),
            nonce: nonce.to_vec(),
            wrapped,
        }),
    })
}

/// The admission reply for `peer` (already in `g.members`, with its exchange key): the
/// one sent before when nothing changed since, else a new one, remembered.
pub(super) fn admission_for(
    g: &mut Guild,
    peer: PeerId,
    sign_key: &Keypair,
    exchange: &ExchangeKey,
) -> Option<Vec<u8>> {
    let public = g.members.get(&peer)?.exchange?;
    let (version, epoch) = (g.version, g.epoch);
    if let Some(a) = &g.members.get(&peer)?.admitted
        && a.version == version
        && a.epoch == epoch
        && a.exchange == public
    {
        return Some(a.reply.clone());
    }
    let reply = admission(g, sign_key, exchange, &public)?.encode_to_vec();
    g.members.get_mut(&peer)?.admitted = Some(Admitted {
        version,
        epoch,
        exchange: public,
        reply: reply.clone(),
    });
    Some(reply)
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    unix_micros() / 1000
}

/// Why `invitation` does not admit `peer` to `g` (coordinated by `coordinator`) at
/// `now_ms`; `None` when it does. An invitation already used by `peer` itself admits it
/// again (a join whose reply was lost is retried with the same invitation).
pub(super) fn invitation_problem(
    g: &Guild,
    coordinator: &PeerId,
    peer: &PeerId,
    invitation: Option<&Invitation>,
    now_ms: u64,
) -> Option<&'static str> {
    let Some(inv) = invitation else {
        return Some("this guild admits by invitation: ask its coordinator for one");
    };
    if inv.guild_id != g.id || !inv.verify(coordinator) {
        return Some("the invitation is not signed by this guild's coordinator");
    }
    if inv.expires_unix_ms <= now_ms {
        return Some("the invitation has expired");
    }
    if !inv.invitee.is_empty() && inv.invitee != peer.to_bytes() {
        return Some("the invitation is for another peer");
    }
    match g.used_invitations.get(&inv.id) {
        Some((user, _)) if user != peer => Some("the invitation was already used"),
        _ => None,
    }
}

/// The least time a dial getting back into a guild is given, however short the heartbeat.
pub(super) const MIN_REJOIN_DIAL: Duration = Duration::from_millis(250);

/// Connects to `peer` of guild `guild` on a new connection (see
/// [`zerostate_p2p::Network::dial_afresh`]), giving the dial `within`.
pub(super) async fn dial_afresh(
    network: &zerostate_p2p::Network,
    guild: &str,
    peer: PeerId,
    addresses: Vec<zerostate_p2p::Multiaddr>,
    within: Duration,
) -> Result<(), GuildError> {
    match tokio::time::timeout(within, network.dial_afresh(peer, addresses)).await {
        Ok(dialled) => dialled.map(|_| ()).map_err(GuildError::from),
        Err(_) => Err(GuildError::Unreachable {
            guild: guild.to_owned(),
            peer: peer.to_string(),
            within,
        }),
    }
}

impl Service {
    /// Signs an invitation to `id` (coordinator only), for `invitee` or whoever presents it
    /// first, valid for `ttl`.
    pub(super) fn invite(
        &mut self,
        id: &str,
        invitee: Option<PeerId>,
        ttl: Duration,
    ) -> Result<Invitation, GuildError> {
        let key = self.key.clone();
        let g = self.guild(id)?;
        if g.status != Status::Coordinator {
            return Err(GuildError::NotCoordinator(id.to_owned()));
        }
        if ttl.is_zero() || ttl > MAX_INVITATION_TTL {
            return Err(GuildError::InvalidInvitation(format!(
                "an invitation lasts between 1 s and {} days",
                MAX_INVITATION_TTL.as_secs() / 86_400
            )));
        }
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        Ok(Invitation {
            guild_id: id.to_owned(),
            id: crate::crypto::random::<16>().to_vec(),
            invitee: invitee.map(|p| p.to_bytes()).unwrap_or_default(),
            expires_unix_ms: unix_ms().saturating_add(ttl_ms),
            signature: Vec::new(),
        }
        .sign(&key))
    }

    pub(super) async fn start_join(
        &mut self,
        id: String,
        coordinator: PeerId,
        addresses: Vec<zerostate_p2p::Multiaddr>,
        invitation: Option<Invitation>,
        span: Span,
        tx: Reply<GuildInfo>,
    ) {
        if let Some(g) = self.guilds.get(&id)
            && g.status.is_active()
        {
            let _ = tx.send(Ok(g.info(&self.me)));
            return;
        }
        // Subscribe first, so that no membership update published after admission is missed.
        if let Err(e) = self.network.subscribe(&format!("{TOPIC_PREFIX}{id}")).await {
            let _ = tx.send(Err(e.into()));
            return;
        }
        let request = JoinRequest {
            guild_id: id.clone(),
            exchange_public: self.exchange.public().to_vec(),
            invitation,
        }
        .encode_to_vec();
        // A node that held the guild before is getting back in: whatever connection it had
        // to the coordinator may have stalled (a partition), so it dials afresh, giving the
        // dial a heartbeat interval; its caller tries again.
        let afresh = self
            .guilds
            .contains_key(&id)
            .then(|| self.config.interval().max(MIN_REJOIN_DIAL));
        let network = self.network.clone();
        let loopback = self.loopback.clone();
        self.tasks.spawn(
            async move {
                let reply = async {
                    if let Some(within) = afresh {
                        dial_afresh(&network, &id, coordinator, addresses.clone(), within).await?;
                    }
                    Ok(network
                        .request(coordinator, addresses, types::JOIN, request)
                        .await?)
                }
                .await
                .and_then(|env| {
                    JoinReply::decode(&env.payload[..]).map_err(|e| GuildError::BadReply {
                        guild: id.clone(),
                        reason: format!("malformed reply: {e}"),
                    })
                });
                let _ = loopback
                    .send(Command::Joined {
                        guild: id,
                        coordinator,
                        answer: reply,
                        span,
                        reply: tx,
                    })
                    .await;
            }
            .instrument(Span::current()),
        );
    }

    pub(super) async fn finish_join(
        &mut self,
        id: &str,
        coordinator: PeerId,
        reply: Result<JoinReply, GuildError>,
        span: &Span,
    ) -> Result<GuildInfo, GuildError> {
        let bad = |reason: &str| GuildError::BadReply {
            guild: id.to_owned(),
            reason: reason.to_owned(),
        };
        let reply = reply?;
        if !reply.refusal.is_empty() {
            return Err(GuildError::Refused {
                guild: id.to_owned(),
                reason: reply.refusal,
            });
        }
        let membership = reply
            .membership
            .ok_or_else(|| bad("no membership in the reply"))?;
        if membership.guild_id != id || !membership.verify(&coordinator) {
            bump(&self.counters.rejected_forged);
            return Err(bad("the membership is not signed by the coordinator"));
        }
        let members = membership.member_ids();
        if !members.contains(&self.me) {
            return Err(bad("the membership does not include this node"));
        }
        let update = reply.key.ok_or_else(|| bad("no key in the reply"))?;
        let exchange_span = tracing::info_span!(
            parent: span,
            names::GUILD_KEY_EXCHANGE,
            guild.id = id,
            peer.id = %coordinator,
        );
        let key = exchange_span.in_scope(|| self.unwrap_key(id, &update));
        let key = match key {
            Ok(k) => k,
            Err(e) => {
                exchange_span.record_error(&e);
                return Err(e);
            }
        };
        drop(exchange_span);
        let mut guild = Guild::new(
            id.to_owned(),
            membership.name.clone(),
            coordinator,
            Status::Member,
            self.config.joins_per_second,
        );
        // What the coordinator's membership says of the term, the successors and the
        // members' seniority, as a member holds it.
        guild.term = membership.term;
        guild.claim = membership.claim();
        guild.adopt(self.me, &membership, Instant::now());
        guild.epoch = update.key_epoch;
        guild.key = Some(key);
        let info = guild.info(&self.me);
        self.guilds.insert(id.to_owned(), guild);
        self.persist(id);
        Ok(info)
    }

    /// A join that failed leaves nothing behind: no subscription to a guild this node is
    /// not in.
    pub(super) async fn abandon_join(&mut self, id: &str) {
        if self.guilds.get(id).is_some_and(|g| g.status.is_active()) {
            return;
        }
        if let Err(e) = self
            .network
            .unsubscribe(&format!("{TOPIC_PREFIX}{id}"))
            .await
        {
            tracing::debug!(guild.id = id, "leaving the topic of a failed join: {e}");
        }
    }

    /// The coordinator's side of a join: rate, then policy (for a newcomer), then capacity;
    /// the reply is the signed membership and the key wrapped for the joiner.
    pub(super) async fn join_request(&mut self, r: &IncomingRequest) -> Vec<u8> {
        let Ok(req) = JoinRequest::decode(&r.envelope.payload[..]) else {
            bump(&self.counters.rejected_malformed);
            return refusal("malformed join request");
        };
        let Ok(public): Result<[u8; 32], _> = req.exchange_public.as_slice().try_into() else {
            bump(&self.counters.rejected_malformed);
            return refusal("the exchange key must be 32 bytes");
        };
        let config = self.config.clone();
        let (me, sign_key, exchange) = (self.me, self.key.clone(), self.exchange.clone());
        let counters = self.counters.clone();
        let refused = |reason: &str, policy: bool| {
            bump(&counters.joins_refused);
            if policy {
                bump(&counters.joins_refused_policy);
            }
            r.span.record_error(&GuildError::Refused {
                guild: req.guild_id.clone(),
                reason: reason.to_owned(),
            });
            tracing::info!(parent: &r.span, guild.id = req.guild_id.as_str(), peer.id = %r.peer, "refused a join: {reason}");
            refusal(reason)
        };
        let Some(g) = self.guilds.get_mut(&req.guild_id) else {
            return refused("no such guild here", false);
        };
        if g.status != Status::Coordinator {
            return refused("this node does not coordinate that guild", false);
        }
        let now = Instant::now();
        // Members too: a member re-joining in a loop costs what a stranger would.
        g.joins.refill(now, config.joins_per_second);
        if !g.joins.take() {
            return refused("too many join requests: try again later", false);
        }
        if let Some((.., why)) = g.removals.iter().find(|(_, p, _)| *p == r.peer) {
            let why = format!("this node removed you from the guild: {why}");
            return refused(&why, true);
        }
        let already = g.members.contains_key(&r.peer);
        // A member removed only because it fell silent (a pause, a partition) comes back
        // on the admission it had.
        let returning = !already && g.is_returning(&r.peer, now);
        if !already && !returning {
            let now_ms = unix_ms();
            g.used_invitations
                .retain(|_, (_, expires)| *expires > now_ms);
            let problem = match config.admission {
                Admission::Open => None,
                Admission::Allowlist => (!config.allowed().contains(&r.peer))
                    .then_some("this guild admits only the peers on its allowlist"),
                Admission::Invite => {
                    invitation_problem(g, &me, &r.peer, req.invitation.as_ref(), now_ms)
                }
            };
            if let Some(reason) = problem {
                return refused(reason, true);
            }
        }
        if !already && g.members.len() >= config.max_members {
            // Neither the invitation nor a returning member's one way back is used up.
            return refused("the guild is full", false);
        }
        if returning {
            g.take_returning(&r.peer, now);
        }
        if !already
            && !returning
            && let Some(inv) = &req.invitation
            && config.admission == Admission::Invite
        {
            g.used_invitations
                .insert(inv.id.clone(), (r.peer, inv.expires_unix_ms));
        }
        let span = tracing::info_span!(
            parent: &r.span,
            names::GUILD_JOIN,
            guild.id = req.guild_id.as_str(),
            peer.id = %r.peer,
            count = tracing::field::Empty,
        );
        let _entered = span.enter();
        let since = g.next_since();
        let member = g.members.entry(r.peer).or_insert_with(|| {
            let mut m = Member::new(now, None);
            m.since = since;
            m
        });
        member.exchange = Some(public);
        member.last_seen = now;
        member.up = true;
        if !already {
            g.version += 1;
            g.choose_successors();
        }
        span.record("count", g.members.len());
        let admitted = {
            let _x = tracing::info_span!(
                names::GUILD_KEY_EXCHANGE,
                guild.id = req.guild_id.as_str(),
                peer.id = %r.peer,
            )
            .entered();
            admission_for(g, r.peer, &sign_key, &exchange)
        };
        let Some(reply) = admitted else {
            g.members.remove(&r.peer);
            if !already {
                g.version -= 1;
            }
            bump(&self.counters.rejected_malformed);
            return refusal("the exchange key is a low-order point");
        };
        bump(&self.counters.joins_admitted);
        let id = g.id.clone();
        drop(_entered);
        // Kept before the joiner hears it is in (with the invitation's use).
        self.persist(&id);
        if !already {
            self.announce(&id);
        }
        reply
    }

    pub(super) async fn leave_request(&mut self, r: &IncomingRequest) -> Vec<u8> {
        let Ok(req) = LeaveRequest::decode(&r.envelope.payload[..]) else {
            bump(&self.counters.rejected_malformed);
            return Vec::new();
        };
        let coordinates = self
            .guilds
            .get(&req.guild_id)
            .is_some_and(|g| g.status == Status::Coordinator && g.members.contains_key(&r.peer));
        if coordinates {
            let span = tracing::info_span!(
                parent: &r.span,
                names::GUILD_LEAVE,
                guild.id = req.guild_id.as_str(),
                peer.id = %r.peer,
            );
            self.remove_member(&req.guild_id, r.peer)
                .instrument(span)
                .await;
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn joins_are_limited_to_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = JoinBucket::full(10, start);
        let burst = (0..100).take_while(|_| bucket.take()).count();
        assert_eq!(burst, 20, "two seconds' worth at once");
        bucket.refill(start + Duration::from_millis(500), 10);
        let later = (0..100).take_while(|_| bucket.take()).count();
        assert_eq!(later, 5, "half a second at ten a second");
        bucket.refill(start + Duration::from_secs(3600), 10);
        assert_eq!((0..100).take_while(|_| bucket.take()).count(), 20, "capped");
    }
}
