//! Guild messages: sealing one under the guild key, and opening one — sender and
//! membership checked, then authenticity, then the replay window, then the trace context
//! restored so the receive span joins the sender's trace.
//!
//! A message from a sender this node does not know yet, or under a key epoch it does not
//! hold yet, is not refused at once: gossip may have lost the membership update or the key.
//! It is held (bounded in count, bytes and time) while this node catches up with the
//! coordinator, then opened or finally refused. Every refusal ends the message's receive
//! span, in the sender's trace, with the reason.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use prost::Message as _;
use tracing::{Instrument, Span};
use zerostate_p2p::GossipMessage;
use zerostate_telemetry::names::span as names;
use zerostate_telemetry::{SpanExt, TraceContext, propagation};

use super::refusal::Refusal;
use super::state::Guild;
use super::stats::bump;
use super::{GuildError, GuildMessage, ReceivedMessage, Service, Status};
use crate::wire::{Plain, Sealed, types};

/// How far (in counter units, microseconds) below a sender's highest counter a message may
/// still arrive: a minute of out-of-order delivery.
pub(super) const REPLAY_WINDOW: u64 = 60_000_000;
/// Most counters remembered per sender; beyond it the oldest raise the floor.
pub(super) const REPLAY_SEEN: usize = 4096;
/// How far a sender's clock may lag this node's when it joins: messages sent more than this
/// before this node joined are refused as replays (it could not have received them then).
/// It is also what a restarted receiver can be made to open twice: a ciphertext sent at
/// most this long before it rejoined.
pub(super) const CLOCK_SKEW: Duration = Duration::from_secs(2);
/// Most messages held per guild while this node catches up.
pub(super) const HELD_MESSAGES: usize = 64;
/// Most bytes of messages held per guild while this node catches up.
pub(super) const HELD_BYTES: usize = 1 << 20;

/// The counters one sender used: a floor at or below which everything is refused, the
/// highest, and those seen within [`REPLAY_WINDOW`] of it.
#[derive(Debug)]
pub(super) struct ReplayWindow {
    floor: u64,
    highest: u64,
    seen: BTreeSet<u64>,
}

impl ReplayWindow {
    /// A window that refuses every counter at or below `floor`.
    pub(super) fn above(floor: u64) -> Self {
        Self {
            floor,
            highest: floor,
            seen: BTreeSet::new(),
        }
    }

    /// Takes `counter` if it is new and not below the window; false for a replay. The
    /// arithmetic is checked, so any counter a sender chooses is safe.
    pub(super) fn accept(&mut self, counter: u64) -> bool {
        let window_floor = self.highest.saturating_sub(REPLAY_WINDOW).max(self.floor);
        if counter <= window_floor || !self.seen.insert(counter) {
            return false;
        }
        self.highest = self.highest.max(counter);
        let keep_above = self.highest.saturating_sub(REPLAY_WINDOW);
        self.seen = self.seen.split_off(&keep_above.saturating_add(1));
        while self.seen.len() > REPLAY_SEEN {
            if let Some(oldest) = self.seen.pop_first() {
                self.floor = self.floor.max(oldest);
            }
        }
        true
    }
}

/// Microseconds since the Unix epoch.
pub(super) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The next message counter: the time in microseconds, strictly increasing within this
/// process, so that a restarted sender continues above everything it sent before.
fn next_counter() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = unix_micros();
    let previous = LAST
        .fetch_update(Relaxed, Relaxed, |last| {
            Some(now.max(last.saturating_add(1)))
        })
        .unwrap_or_else(|last| last);
    now.max(previous.saturating_add(1))
}

/// A message waiting for this node to catch up.
pub(super) struct Held {
    pub(super) source: PeerId,
    pub(super) message: GossipMessage,
    pub(super) since: Instant,
}

impl Guild {
    /// Holds `message` until the next catch-up; gives it back when the hold is full.
    fn hold(&mut self, source: PeerId, message: GossipMessage) -> Option<GossipMessage> {
        let bytes = message.envelope.payload.len();
        if self.held.len() >= HELD_MESSAGES || self.held_bytes + bytes > HELD_BYTES {
            return Some(message);
        }
        self.held_bytes += bytes;
        self.held.push_back(Held {
            source,
            message,
            since: Instant::now(),
        });
        None
    }

    /// Takes every held message, or (with `older_than`) those held longer than that.
    pub(super) fn release(&mut self, older_than: Option<Duration>) -> Vec<Held> {
        let now = Instant::now();
        let (due, keep): (Vec<_>, Vec<_>) = self
            .held
            .drain(..)
            .partition(|h| older_than.is_none_or(|d| now.saturating_duration_since(h.since) >= d));
        self.held = keep.into();
        self.held_bytes = self
            .held
            .iter()
            .map(|h| h.message.envelope.payload.len())
            .sum();
        due
    }

    /// Keeps an opened message for the API, dropping the oldest beyond `count` or `bytes`.
    fn keep(&mut self, message: ReceivedMessage, count: usize, bytes: usize) {
        self.received_bytes += message.body.len();
        self.received.push_back(message);
        while self.received.len() > count || self.received_bytes > bytes {
            let Some(old) = self.received.pop_front() else {
                break;
            };
            self.received_bytes -= old.body.len();
        }
    }
}

/// The context a sealed message's clear `traceparent` names.
fn sender_context(sealed: &Sealed) -> Option<TraceContext> {
    let headers = HashMap::from([(
        propagation::TRACEPARENT.to_owned(),
        sealed.traceparent.clone(),
    )]);
    propagation::extract(&headers)
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
        if !guild.status.is_active() {
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
        let traceparent = take(propagation::TRACEPARENT);
        let shown_as = message_type.clone();
        let plain = Plain {
            message_type,
            body,
            traceparent: String::new(),
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
            traceparent,
        };
        let (nonce, ct) = key.seal(&plain.encode_to_vec(), &sealed.aad());
        sealed.nonce = nonce.to_vec();
        sealed.ciphertext = ct;
        let topic = guild.topic();
        self.network
            .publish_sealed(&topic, types::MESSAGE, &shown_as, sealed.encode_to_vec())
            .instrument(span)
            .await?;
        bump(&self.counters.messages_sent);
        Ok(())
    }

    /// A sealed message from the topic. `retry` is set when it was held and this node has
    /// caught up since (or given up): what is still unknown is then refused.
    pub(super) fn sealed_message(
        &mut self,
        id: &str,
        source: PeerId,
        m: GossipMessage,
        retry: bool,
    ) {
        let Some(g) = self.guilds.get_mut(id) else {
            return;
        };
        if !retry {
            g.ciphertexts_seen += 1;
        }
        let Ok(sealed) = Sealed::decode(&m.envelope.payload[..]) else {
            return self.refuse(&m.span, id, Refusal::Malformed);
        };
        if !g.status.is_active() {
            // A watcher holds no key, and a node that left or was removed opens nothing
            // more: it sees ciphertexts and counts them, and its spans stay out of the
            // guild's traces.
            g.undecryptable += 1;
            return;
        }
        if !retry && let Some(cx) = sender_context(&sealed) {
            // The network's receive span had nothing to go on (the context is in the guild
            // message); from here it sits in the sender's trace, refused or not.
            m.span.set_parent(&cx);
        }
        if sealed.guild_id != id || sealed.sender != source.to_bytes() {
            return self.refuse(&m.span, id, Refusal::WrongSender);
        }
        let coordinating = g.status == Status::Coordinator;
        let known_sender = g.members.contains_key(&source);
        let key = g.key_for(sealed.key_epoch).cloned();
        let newer_epoch = sealed.key_epoch > g.epoch;
        if (!known_sender || (key.is_none() && newer_epoch)) && !coordinating && !retry {
            // Perhaps a membership update or a key this node missed: catch up, then decide.
            match g.hold(source, m) {
                None => {
                    bump(&self.counters.messages_held);
                    self.start_sync(id);
                }
                Some(m) => self.refuse(&m.span, id, Refusal::HoldFull),
            }
            return;
        }
        if !known_sender {
            return self.refuse(&m.span, id, Refusal::NotMember);
        }
        let Some(key) = key else {
            g.undecryptable += 1;
            return self.refuse(&m.span, id, Refusal::UnknownEpoch(sealed.key_epoch));
        };
        let Ok(bytes) = key.open(&sealed.nonce, &sealed.ciphertext, &sealed.aad()) else {
            g.undecryptable += 1;
            return self.refuse(&m.span, id, Refusal::Tampered);
        };
        if let Some(member) = g.members.get_mut(&source) {
            // An authentic message is as good a sign of life as a heartbeat.
            member.last_seen = Instant::now();
            member.up = true;
        }
        // Replay check only after the message proved authentic, so that forged counters
        // cannot poison the window.
        let floor = g.replay_floor;
        if !g
            .replay
            .entry(source)
            .or_insert_with(|| ReplayWindow::above(floor))
            .accept(sealed.counter)
        {
            return self.refuse(&m.span, id, Refusal::Replayed);
        }
        let Ok(plain) = Plain::decode(&bytes[..]) else {
            return self.refuse(&m.span, id, Refusal::Malformed);
        };
        let mut headers = HashMap::new();
        headers.insert(
            propagation::TRACEPARENT.to_owned(),
            sealed.traceparent.clone(),
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
        // Nobody listening is normal; a listener that lags loses the oldest.
        let _ = self.opened.send(GuildMessage {
            guild: id.to_owned(),
            from: source,
            message_type: plain.message_type.clone(),
            body: plain.body.clone(),
            context: span.context(),
        });
        let (count, bytes) = (self.config.received_kept, self.config.received_kept_bytes);
        g.keep(
            ReceivedMessage {
                from: source.to_string(),
                message_type: plain.message_type,
                body: String::from_utf8_lossy(&plain.body).into_owned(),
                trace_id: cx.map(|c| c.trace_id.to_string()),
            },
            count,
            bytes,
        );
    }

    /// Opens, or finally refuses, the messages of `id` held for a catch-up: all of them
    /// (after a catch-up) or those held longer than `older_than`.
    pub(super) fn release_held(&mut self, id: &str, older_than: Option<Duration>) {
        let Some(g) = self.guilds.get_mut(id) else {
            return;
        };
        for held in g.release(older_than) {
            self.sealed_message(id, held.source, held.message, true);
        }
    }
}

impl Guild {
    /// Forgets the replay windows of senders that are no longer members.
    pub(super) fn prune_replay(&mut self) {
        let members = &self.members;
        self.replay.retain(|p, _| members.contains_key(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_taken_once_in_any_order_within_the_window() {
        let mut w = ReplayWindow::above(0);
        assert!(w.accept(5));
        assert!(w.accept(3), "out of order but new");
        assert!(!w.accept(5), "a replay");
        assert!(!w.accept(3), "a replay");
        assert!(w.accept(5 + REPLAY_WINDOW));
        assert!(!w.accept(4), "now below the window");
        assert!(w.seen.len() <= REPLAY_SEEN);
    }

    #[test]
    fn extreme_counters_neither_panic_nor_open_the_window() {
        let mut w = ReplayWindow::above(0);
        assert!(w.accept(u64::MAX));
        assert!(!w.accept(u64::MAX));
        assert!(!w.accept(0), "far below the highest");
        assert!(w.accept(u64::MAX - 1));
        let mut w = ReplayWindow::above(u64::MAX);
        assert!(!w.accept(u64::MAX), "nothing is above the top");
    }

    #[test]
    fn a_window_refuses_what_came_before_its_floor() {
        let mut w = ReplayWindow::above(1_000);
        assert!(!w.accept(999), "sent before this node joined");
        assert!(!w.accept(1_000));
        assert!(w.accept(1_001));
    }

    #[test]
    fn the_window_remembers_a_bounded_number_of_counters() {
        let mut w = ReplayWindow::above(0);
        for c in 1..=(REPLAY_SEEN as u64 * 2) {
            assert!(w.accept(c));
        }
        assert_eq!(w.seen.len(), REPLAY_SEEN);
        assert!(
            !w.accept(1),
            "forgotten counters are below the raised floor"
        );
    }

    #[test]
    fn kept_messages_are_bounded_in_bytes_as_well_as_count() {
        let mut g = crate::service::state::test_guild(Status::Member);
        let message = |n: usize| ReceivedMessage {
            from: "p".into(),
            message_type: "t".into(),
            body: "x".repeat(n),
            trace_id: None,
        };
        for _ in 0..3 {
            g.keep(message(600 * 1024), 256, 1 << 20);
        }
        assert_eq!(g.received.len(), 1, "two of 600 KiB exceed 1 MiB");
        assert_eq!(g.received_bytes, 600 * 1024);
        for _ in 0..10 {
            g.keep(message(1), 4, 1 << 20);
        }
        assert_eq!(g.received.len(), 4);
        assert_eq!(g.received_bytes, 4);
    }

    #[test]
    fn counters_increase_strictly_and_start_above_an_earlier_run() {
        let before = unix_micros();
        let a = next_counter();
        let b = next_counter();
        assert!(a >= before && b > a);
    }
}
