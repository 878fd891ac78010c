//! The guild key: unwrapping the one a coordinator delivers, rotating it when a member goes
//! (coordinator), delivering the new one to each remaining member with retries, and
//! accepting a delivered one (member).

use std::time::Duration;

use prost::Message as _;
use tracing::{Instrument, Span};
use zerostate_p2p::IncomingRequest;
use zerostate_telemetry::SpanExt;
use zerostate_telemetry::error_chain;
use zerostate_telemetry::names::span as names;

use super::stats::bump;
use super::{GuildError, Service, Status};
use crate::crypto::GuildKey;
use crate::wire::{KeyUpdate, types};

/// What a delivered key's epoch is to the one this node holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Offer {
    /// The same epoch: a retried delivery.
    Held,
    /// An older epoch: refused.
    Stale,
    /// A newer epoch: installed.
    Newer,
}

/// Compares an offered key epoch with the held one.
pub(super) fn offered_epoch(held: u32, offered: u32) -> Offer {
    match offered.cmp(&held) {
        std::cmp::Ordering::Equal => Offer::Held,
        std::cmp::Ordering::Less => Offer::Stale,
        std::cmp::Ordering::Greater => Offer::Newer,
    }
}

impl Service {
    pub(super) fn unwrap_key(&self, id: &str, update: &KeyUpdate) -> Result<GuildKey, GuildError> {
        let public: [u8; 32] =
            update
                .exchange_public
                .as_slice()
                .try_into()
                .map_err(|_| GuildError::BadReply {
                    guild: id.to_owned(),
                    reason: "the coordinator's exchange key is not 32 bytes".into(),
                })?;
        self.exchange
            .unwrap(
                &public,
                &update.nonce,
                &update.wrapped,
                &KeyUpdate::context(id, update.key_epoch),
            )
            .map_err(|e| GuildError::BadReply {
                guild: id.to_owned(),
                reason: format!("the guild key: {e}"),
            })
    }

    /// Rotates the key (coordinator only) and delivers it to every remaining member.
    pub(super) fn rotate_key(&mut self, id: &str) {
        let exchange = self.exchange.clone();
        let me = self.me;
        // By then heartbeats have removed a member that cannot be reached.
        let give_up_after = self
            .config
            .down_after()
            .saturating_mul(2)
            .max(Duration::from_secs(10));
        let Some(guild) = self.guilds.get_mut(id) else {
            return;
        };
        let key = GuildKey::generate();
        guild.install_key(guild.epoch.saturating_add(1), key.clone());
        let epoch = guild.epoch;
        // Deliveries of the key this one replaces are pointless now: at most one delivery
        // per member is in flight, however fast members come and go.
        for d in guild.deliveries.drain(..) {
            d.abort();
        }
        let mut deliveries = Vec::new();
        for (peer, member) in &guild.members {
            if *peer == me {
                continue;
            }
            let Some(public) = member.exchange else {
                continue;
            };
            let Some((nonce, wrapped)) =
                exchange.wrap(&public, &key, &KeyUpdate::context(id, epoch))
            else {
                continue;
            };
            let update = KeyUpdate {
                guild_id: id.to_owned(),
                key_epoch: epoch,
                exchange_public: exchange.public().to_vec(),
                nonce: nonce.to_vec(),
                wrapped,
            }
            .encode_to_vec();
            let network = self.network.clone();
            let peer = *peer;
            let span = tracing::info_span!(
                names::GUILD_KEY_EXCHANGE,
                guild.id = id,
                peer.id = %peer,
                key.epoch = epoch,
            );
            deliveries.push(
                self.tasks.spawn(
                    async move {
                        // A lost or refused delivery would leave the member on the old key, so it
                        // is retried (backing off to 2 s) until the member would have been
                        // removed by heartbeats; after that, the member catches up itself when
                        // a heartbeat shows it the new epoch. The service aborts it when it
                        // stops or rotates again.
                        let deadline = tokio::time::Instant::now() + give_up_after;
                        let mut wait = Duration::from_millis(250);
                        for attempt in 1u32.. {
                            let answer = network
                                .request(peer, vec![], types::KEY, update.clone())
                                .await
                                .map_err(GuildError::from)
                                .and_then(|reply| {
                                    if reply.message_type == types::ACK {
                                        Ok(())
                                    } else {
                                        Err(GuildError::Refused {
                                            guild: String::from_utf8_lossy(&reply.payload)
                                                .into_owned(),
                                            reason: "the member did not take the key".into(),
                                        })
                                    }
                                });
                            match answer {
                                Ok(()) => return,
                                Err(e) if tokio::time::Instant::now() + wait >= deadline => {
                                    Span::current().record_error(&e);
                                    return;
                                }
                                Err(e) => {
                                    tracing::debug!(
                                        "delivering the guild key (attempt {attempt}): {}",
                                        error_chain(&e)
                                    );
                                    tokio::time::sleep(wait).await;
                                    wait = (wait * 2).min(Duration::from_secs(2));
                                }
                            }
                        }
                    }
                    .instrument(span),
                ),
            );
        }
        if let Some(guild) = self.guilds.get_mut(id) {
            guild.deliveries = deliveries;
        }
    }

    /// A key delivered by the coordinator. The answer is [`types::ACK`] only when this
    /// node now holds that key; otherwise [`types::REFUSED`] with the reason, so that the
    /// coordinator tries again rather than believing the member has it.
    pub(super) fn key_request(&mut self, r: &IncomingRequest) -> (&'static str, Vec<u8>) {
        let refused = |why: &str| (types::REFUSED, why.as_bytes().to_vec());
        let Ok(update) = KeyUpdate::decode(&r.envelope.payload[..]) else {
            bump(&self.counters.rejected_malformed);
            return refused("malformed key update");
        };
        let Some(g) = self.guilds.get(&update.guild_id) else {
            return refused("this node is not in that guild (yet)");
        };
        if r.peer != g.coordinator {
            if g.successors.contains(&r.peer) {
                // A successor's key can overtake its membership on the topic: learn of the
                // takeover from it, and take the key when it delivers again.
                let (id, from) = (update.guild_id.clone(), r.peer);
                self.start_sync_from(&id, from);
                return refused("this node has not seen that successor take over yet");
            }
            bump(&self.counters.rejected_forged);
            return refused("only the guild's coordinator delivers its key");
        }
        if g.status != Status::Member {
            return refused("this node is no longer a member of that guild");
        }
        match offered_epoch(g.epoch, update.key_epoch) {
            // A retried delivery of the key this node already holds.
            Offer::Held => return (types::ACK, Vec::new()),
            Offer::Stale => {
                bump(&self.counters.rejected_stale);
                return refused("an older key epoch than the one held");
            }
            Offer::Newer => {}
        }
        let span = tracing::info_span!(
            parent: &r.span,
            names::GUILD_KEY_EXCHANGE,
            guild.id = update.guild_id.as_str(),
            peer.id = %r.peer,
            key.epoch = update.key_epoch,
        );
        let _entered = span.enter();
        match self.unwrap_key(&update.guild_id, &update) {
            Ok(key) => {
                if let Some(g) = self.guilds.get_mut(&update.guild_id) {
                    g.install_key(update.key_epoch, key);
                }
                self.persist(&update.guild_id);
                drop(_entered);
                // Messages held for this epoch can be opened now.
                self.release_held(&update.guild_id, None);
                (types::ACK, Vec::new())
            }
            Err(e) => {
                span.record_error(&e);
                bump(&self.counters.rejected_tampered);
                refused("the key did not open")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivered_key_is_installed_only_when_newer() {
        assert_eq!(offered_epoch(3, 3), Offer::Held);
        assert_eq!(offered_epoch(3, 2), Offer::Stale);
        assert_eq!(offered_epoch(3, 4), Offer::Newer);
        assert_eq!(offered_epoch(u32::MAX, 0), Offer::Stale);
    }

    #[test]
    fn a_wrapped_key_opens_only_for_its_guild_and_epoch() {
        let (coordinator, member) = (
            crate::crypto::ExchangeKey::generate(),
            crate::crypto::ExchangeKey::generate(),
        );
        let key = GuildKey::generate();
        let (nonce, wrapped) = coordinator
            .wrap(&member.public(), &key, &KeyUpdate::context("g1", 2))
            .expect("wraps");
        let opens = |id: &str, epoch: u32| {
            member
                .unwrap(
                    &coordinator.public(),
                    &nonce,
                    &wrapped,
                    &KeyUpdate::context(id, epoch),
                )
                .is_ok()
        };
        assert!(opens("g1", 2));
        assert!(!opens("g1", 3), "another epoch");
        assert!(!opens("g2", 2), "another guild");
    }
}
