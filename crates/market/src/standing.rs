//! Standing offers: an executor that delivered a task tells its requester, in the same
//! answer, that it takes the requester's next task at the same price for a moment
//! (`[tasks] standing_offer_ms`). The requester hands its next task in that guild straight
//! to it — no announcement, no offer round — and announces the task as usual when it holds
//! no such offer, or the executor declines.
//!
//! Nothing in a standing offer is taken on trust. The executor keeps what it gave in its
//! own table, and a hand-over on it passes every check a hand-over on an offer taken in a
//! round passes (a member of its guilds, a free slot, money locked, credit). The requester
//! takes one only from an executor that is still a member of the task's guild and not
//! refused, at a price within the task's maximum; bills are checked against that price. So
//! that a requester does not stay with one executor while a cheaper one joins, it makes an
//! offer round in a guild at least every [`ROUND_EVERY`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use zerostate_p2p::PeerId;

use crate::wire::{StandingOffer, TaskOffer};

/// A requester announces a task to a guild (an offer round) at least this often.
pub(crate) const ROUND_EVERY: Duration = Duration::from_secs(10);

/// The longest a requester keeps a standing offer, whatever its executor says.
const LONGEST: Duration = Duration::from_secs(60);

/// Standing offers an executor keeps (one per requester), and a requester holds.
const KEPT: usize = 4096;

/// The executor's side: the standing offers it gave, by requester.
#[derive(Default)]
pub(crate) struct Given {
    until: HashMap<PeerId, Instant>,
}

impl Given {
    /// Gives `requester` a standing offer at `price` for `valid`; none while this node
    /// keeps as many as it keeps for others.
    pub(crate) fn give(
        &mut self,
        requester: PeerId,
        price: u64,
        valid: Duration,
    ) -> Option<StandingOffer> {
        let now = Instant::now();
        if self.until.len() >= KEPT {
            self.until.retain(|_, until| *until > now);
        }
        if self.until.len() >= KEPT && !self.until.contains_key(&requester) {
            return None;
        }
        self.until.insert(requester, now + valid);
        Some(StandingOffer {
            price,
            valid_ms: u64::try_from(valid.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Whether `requester` holds a standing offer of this node that still stands (used up
    /// by asking).
    pub(crate) fn take(&mut self, requester: PeerId) -> bool {
        self.until
            .remove(&requester)
            .is_some_and(|until| until > Instant::now())
    }
}

/// One standing offer a requester holds.
struct Offer {
    price: u64,
    /// The executor's name, as it gave it in the offer it was first handed a task on.
    name: Option<String>,
    until: Instant,
    /// The module (SHA-256, hex) of the task it delivered: it holds that one.
    module: Option<String>,
}

/// The requester's side: the standing offers it holds, by guild and executor, and when it
/// last made an offer round in each guild.
#[derive(Default)]
pub(crate) struct Held {
    offers: HashMap<(String, PeerId), Offer>,
    rounds: HashMap<String, Instant>,
    /// How long the first answer to the last answered offer round in each guild took.
    answers: HashMap<String, Duration>,
}

impl Held {
    /// Keeps `executor`'s standing offer for the next task in `guild`; `module` is the one
    /// it just ran (a built-in's is `None`).
    pub(crate) fn keep(
        &mut self,
        guild: &str,
        executor: PeerId,
        offer: StandingOffer,
        name: Option<String>,
        module: Option<String>,
    ) {
        let now = Instant::now();
        let valid = Duration::from_millis(offer.valid_ms).min(LONGEST);
        if valid.is_zero() {
            return;
        }
        if self.offers.len() >= KEPT {
            self.offers.retain(|_, o| o.until > now);
        }
        let key = (guild.to_owned(), executor);
        if self.offers.len() < KEPT || self.offers.contains_key(&key) {
            self.offers.insert(
                key,
                Offer {
                    price: offer.price,
                    name,
                    until: now + valid,
                    module,
                },
            );
        }
    }

    /// Notes an offer round made in `guild` now.
    pub(crate) fn round_made(&mut self, guild: &str) {
        if self.rounds.len() >= KEPT && !self.rounds.contains_key(guild) {
            let now = Instant::now();
            self.rounds
                .retain(|_, at| now.duration_since(*at) < ROUND_EVERY);
        }
        if self.rounds.len() < KEPT || self.rounds.contains_key(guild) {
            self.rounds.insert(guild.to_owned(), Instant::now());
        }
    }

    /// Notes that the first answer to an offer round in `guild` came `took` after it was
    /// announced.
    pub(crate) fn first_answer(&mut self, guild: &str, took: Duration) {
        if self.answers.len() < KEPT || self.answers.contains_key(guild) {
            self.answers.insert(guild.to_owned(), took);
        }
    }

    /// How long an offer round in `guild` goes without an answer before it counts as
    /// silent (every member busy, or owed): twice as long as the first answer to the last
    /// answered round there took, at least a millisecond; `None` before any was answered.
    pub(crate) fn silent_after(&self, guild: &str) -> Option<Duration> {
        self.answers
            .get(guild)
            .map(|took| took.saturating_mul(2).max(Duration::from_millis(1)))
    }

    /// Takes the cheapest standing offer for task `task_id` in `guild` (at most
    /// `max_price`, the module by its SHA-256) from an executor `usable` allows, as an
    /// offer; none when the guild's last offer round is [`ROUND_EVERY`] old.
    pub(crate) fn take(
        &mut self,
        guild: &str,
        task_id: &str,
        max_price: u64,
        module_sha256: &str,
        usable: impl Fn(PeerId) -> bool,
    ) -> Option<(PeerId, TaskOffer)> {
        let now = Instant::now();
        let recent = self
            .rounds
            .get(guild)
            .is_some_and(|at| now.duration_since(*at) < ROUND_EVERY);
        self.offers.retain(|_, o| o.until > now);
        if !recent {
            return None;
        }
        let key = self
            .offers
            .iter()
            .filter(|((g, executor), o)| g == guild && o.price <= max_price && usable(*executor))
            .min_by_key(|(_, o)| (o.price, std::cmp::Reverse(o.until)))
            .map(|(key, _)| key.clone())?;
        let offer = self.offers.remove(&key)?;
        Some((
            key.1,
            TaskOffer {
                task_id: task_id.to_owned(),
                price: offer.price,
                running: 0,
                has_module: offer.module.as_deref() == Some(module_sha256),
                declined: None,
                name: offer.name,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(seed: u8) -> PeerId {
        zerostate_p2p::identity::Keypair::ed25519_from_bytes([seed; 32])
            .expect("a key")
            .public()
            .to_peer_id()
    }

    fn standing(price: u64, valid_ms: u64) -> StandingOffer {
        StandingOffer { price, valid_ms }
    }

    #[test]
    fn an_executor_takes_a_hand_over_on_its_standing_offer_once() {
        let mut given = Given::default();
        let (a, b) = (peer(1), peer(2));
        let offer = given.give(a, 3, Duration::from_secs(1)).expect("given");
        assert_eq!((offer.price, offer.valid_ms), (3, 1000));
        assert!(!given.take(b), "b was given none");
        assert!(given.take(a));
        assert!(!given.take(a), "used up");
        given.give(a, 3, Duration::ZERO);
        assert!(!given.take(a), "lapsed");
        // Full: none for a newcomer, until some lapse.
        let mut full = Given::default();
        for _ in 0..KEPT {
            let key = zerostate_p2p::identity::Keypair::generate_ed25519();
            full.give(key.public().to_peer_id(), 1, Duration::from_secs(60));
        }
        assert!(full.give(b, 1, Duration::from_secs(1)).is_none());
    }

    #[test]
    fn a_requester_takes_the_cheapest_usable_offer_after_a_recent_round_only() {
        let mut held = Held::default();
        let (a, b, c) = (peer(1), peer(2), peer(3));
        held.keep("g", a, standing(5, 1000), None, Some("m1".into()));
        held.keep("g", b, standing(2, 1000), Some("b".into()), None);
        held.keep("g", c, standing(1, 1000), None, None);
        held.keep("other", c, standing(0, 1000), None, None);
        assert!(
            held.take("g", "t", 10, "m1", |_| true).is_none(),
            "no round made in g yet"
        );
        held.round_made("g");
        // c is refused, say; b is the cheapest left; then a, which holds the module.
        let usable = |p: PeerId| p != c;
        let (first, offer) = held.take("g", "t1", 10, "m1", usable).expect("b's");
        assert_eq!((first, offer.price, offer.has_module), (b, 2, false));
        assert_eq!(offer.name.as_deref(), Some("b"));
        assert_eq!(offer.task_id, "t1");
        assert!(held.take("g", "t2", 4, "m1", usable).is_none(), "a asks 5");
        let (second, offer) = held.take("g", "t3", 5, "m1", usable).expect("a's");
        assert_eq!((second, offer.has_module), (a, true));
        assert!(held.take("g", "t4", 10, "m1", usable).is_none(), "used up");
    }

    #[test]
    fn what_an_executor_says_of_its_offers_length_is_bounded() {
        let mut held = Held::default();
        held.round_made("g");
        held.keep("g", peer(1), standing(1, 0), None, None);
        assert!(
            held.take("g", "t", 1, "m", |_| true).is_none(),
            "0 ms: none"
        );
        held.keep("g", peer(1), standing(1, u64::MAX), None, None);
        let kept = held.offers.values().next().expect("kept").until;
        assert!(kept <= Instant::now() + LONGEST);
    }

    #[test]
    fn a_round_is_silent_after_twice_the_last_first_answer_in_its_guild() {
        let mut held = Held::default();
        assert_eq!(held.silent_after("g"), None, "nothing to go by");
        held.first_answer("g", Duration::from_micros(700));
        assert_eq!(held.silent_after("g"), Some(Duration::from_micros(1400)));
        held.first_answer("g", Duration::from_micros(100));
        assert_eq!(
            held.silent_after("g"),
            Some(Duration::from_millis(1)),
            "at least a millisecond"
        );
        assert_eq!(held.silent_after("h"), None, "per guild");
        for n in 0..KEPT * 2 {
            held.first_answer(&format!("g{n}"), Duration::from_millis(1));
        }
        assert!(held.answers.len() <= KEPT);
    }
}
