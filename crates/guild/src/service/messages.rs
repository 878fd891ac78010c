//! Guild messages: sealing one under the guild key with the sender's trace context inside,
//! and opening one — sender and membership checked, then authenticity, then the replay
//! window, then the trace context restored so the receive span joins the sender's trace.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use libp2p::PeerId;
use prost::Message as _;
use tracing::{Instrument, Span};
use zerostate_p2p::GossipMessage;
use zerostate_telemetry::names::span as names;
use zerostate_telemetry::{SpanExt, propagation};

use super::stats::bump;
use super::{GuildError, ReceivedMessage, Service, Status};
use crate::wire::{Plain, Sealed, types};

/// Replay window: counters this far below a sender's highest are refused outright.
pub(super) const REPLAY_WINDOW: u64 = 1024;

/// The counters one sender used under one key epoch: the highest, and those seen within
/// [`REPLAY_WINDOW`] of it.
#[derive(Debug, Default)]
pub(super) struct ReplayWindow {
    highest: u64,
    seen: BTreeSet<u64>,
}

impl ReplayWindow {
    /// Takes `counter` if it is new and not below the window; false for a replay. The
    /// arithmetic is checked, so any counter a sender chooses is safe.
    pub(super) fn accept(&mut self, counter: u64) -> bool {
        let too_old = self
            .highest
            .checked_sub(REPLAY_WINDOW)
            .is_some_and(|floor| counter <= floor);
        if too_old || !self.seen.insert(counter) {
            return false;
        }
        self.highest = self.highest.max(counter);
        let floor = self.highest.saturating_sub(REPLAY_WINDOW);
        self.seen.retain(|&c| c > floor);
        true
    }
}

/// A process-wide message counter: never repeats within a run, so replays are detectable
/// per sender.
fn next_counter() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    COUNTER.fetch_add(1, Relaxed)
}

impl Service {
    pub(super) async fn send(
        &mut self,
        id: &str,
        message_type: String,
        body: Vec<u8>,
        span: Span,
    ) -> Result<(), GuildError> {
        let cx = span.context();
        let me = self.me;
        let guild = self.guild(id)?;
        if !guild.status.active() {
            return Err(GuildError::NotMember(
                id.to_owned(),
                guild.status.as_str().to_owned(),
            ));
        }
        let Some(key) = guild.key.clone() else {
            return Err(GuildError::NotMember(id.to_owned(), "no key yet".into()));
        };
        let mut headers = HashMap::new();
        if let Some(cx) = &cx {
            propagation::inject(cx, &mut headers);
        }
        let mut take = |k: &str| headers.remove(k).unwrap_or_default();
        let plain = Plain {
            message_type,
            body,
            traceparent: take(propagation::TRACEPARENT),
            tracestate: take(propagation::TRACESTATE),
            baggage: take(propagation::BAGGAGE),
        };
        let mut sealed = Sealed {
            guild_id: id.to_owned(),
            key_epoch: guild.epoch,
            sender: me.to_bytes(),
            counter: next_counter(),
            nonce: Vec::new(),
            ciphertext: Vec::new(),
        };
        let (nonce, ct) = key.seal(&plain.encode_to_vec(), &sealed.aad());
        sealed.nonce = nonce.to_vec();
        sealed.ciphertext = ct;
        let topic = guild.topic();
        self.network
            .publish_opaque(&topic, types::MESSAGE, sealed.encode_to_vec())
            .instrument(span)
            .await?;
        bump(&self.counters.messages_sent);
        Ok(())
    }

    pub(super) fn sealed_message(&mut self, id: &str, source: PeerId, m: GossipMessage) {
        let Some(g) = self.guilds.get_mut(id) else {
            return;
        };
        g.ciphertexts_seen += 1;
        let Ok(sealed) = Sealed::decode(&m.envelope.payload[..]) else {
            bump(&self.counters.rejected_malformed);
            return;
        };
        if sealed.guild_id != id || sealed.sender != source.to_bytes() {
            bump(&self.counters.rejected_not_member);
            return;
        }
        let key = match g.key_for(sealed.key_epoch) {
            Some(k) if g.status != Status::Watching => k.clone(),
            _ => {
                g.undecryptable += 1;
                return;
            }
        };
        if g.status.active() && !g.members.contains_key(&source) {
            bump(&self.counters.rejected_not_member);
            return;
        }
        let Ok(bytes) = key.open(&sealed.nonce, &sealed.ciphertext, &sealed.aad()) else {
            bump(&self.counters.rejected_tampered);
            return;
        };
        if let Some(member) = g.members.get_mut(&source) {
            // An authentic message is as good a sign of life as a heartbeat.
            member.last_seen = Instant::now();
            member.up = true;
        }
        // Replay check only after the message proved authentic, so that forged counters
        // cannot poison the window.
        if !g
            .replay
            .entry((source, sealed.key_epoch))
            .or_default()
            .accept(sealed.counter)
        {
            bump(&self.counters.rejected_replayed);
            return;
        }
        let Ok(plain) = Plain::decode(&bytes[..]) else {
            bump(&self.counters.rejected_malformed);
            return;
        };
        let mut headers = HashMap::new();
        headers.insert(
            propagation::TRACEPARENT.to_owned(),
            plain.traceparent.clone(),
        );
        headers.insert(propagation::TRACESTATE.to_owned(), plain.tracestate.clone());
        headers.insert(propagation::BAGGAGE.to_owned(), plain.baggage.clone());
        let cx = propagation::extract(&headers);
        let span = tracing::info_span!(
            parent: None,
            names::GUILD_RECEIVE_MESSAGE,
            otel.kind = "consumer",
            guild.id = id,
            peer.id = %source,
            message.type = plain.message_type.as_str(),
            size.bytes = plain.body.len(),
        );
        if let Some(cx) = &cx {
            // The network's receive span had nothing to go on (the context was sealed);
            // now both join the sender's trace.
            m.span.set_parent(cx);
            span.set_parent(cx);
        }
        let _entered = span.enter();
        tracing::info!(
            guild.id = id,
            from = %source,
            message.type = plain.message_type.as_str(),
            "guild message received"
        );
        bump(&self.counters.messages_received);
        g.received.push_back(ReceivedMessage {
            from: source.to_string(),
            message_type: plain.message_type,
            body: String::from_utf8_lossy(&plain.body).into_owned(),
            trace_id: cx.map(|c| c.trace_id.to_string()),
        });
        while g.received.len() > self.config.received_kept {
            g.received.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_taken_once_in_any_order_within_the_window() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(5));
        assert!(w.accept(3), "out of order but new");
        assert!(!w.accept(5), "a replay");
        assert!(!w.accept(3), "a replay");
        assert!(w.accept(5 + REPLAY_WINDOW));
        assert!(!w.accept(4), "now below the window");
        assert!(w.seen.len() as u64 <= REPLAY_WINDOW + 1);
    }

    #[test]
    fn extreme_counters_neither_panic_nor_open_the_window() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(u64::MAX));
        assert!(!w.accept(u64::MAX));
        assert!(!w.accept(0), "far below the highest");
        assert!(w.accept(u64::MAX - 1));
    }
}
