//! What an executor holds against each payer: the work it is running or has delivered and
//! not yet been paid for, reserved against a channel the ledger confirmed. No I/O: the
//! node asks the ledger and the payee store, and tells this what happened.
//!
//! The rules, from who signs what: money exists for the executor only once the ledger has
//! locked the payer's deposit (the ledger's word, asked once per channel: a lock stays
//! until a close, and the payee refuses states once it agrees to or sees one); a task's
//! most expensive bill (the fuel limit at the executor's price) is reserved against the
//! deposit less what the payer already signed over, so a channel never carries more work
//! than it can pay; and a payer owing for more delivered tasks than its credit gets no more.

use std::collections::{HashMap, HashSet};

use zerostate_payment::{ChannelId, PublicKey};

/// Reservations held at once, at most (tasks running or delivered and unpaid).
pub(crate) const RESERVATIONS_KEPT: usize = 65_536;
/// Channels remembered as confirmed by the ledger.
const CONFIRMED_KEPT: usize = 65_536;

/// Work served against channels, and the channels the ledger confirmed.
#[derive(Debug, Default)]
pub(crate) struct Served {
    reservations: HashMap<u64, Reservation>,
    next: u64,
    confirmed: HashSet<ChannelId>,
}

#[derive(Debug)]
struct Reservation {
    payer: PublicKey,
    channel: ChannelId,
    /// The most the task can cost while it runs; its bill once delivered.
    amount: u64,
    /// Set once the result was delivered: the receipt whose payment clears it.
    receipt: Option<[u8; 32]>,
}

impl Served {
    /// Delivered tasks `payer` has not paid for.
    pub(crate) fn owed_tasks(&self, payer: &PublicKey) -> usize {
        self.reservations
            .values()
            .filter(|r| r.payer == *payer && r.receipt.is_some())
            .count()
    }

    /// Whether the ledger confirmed `channel`'s deposit locked.
    pub(crate) fn is_confirmed(&self, channel: &ChannelId) -> bool {
        self.confirmed.contains(channel)
    }

    /// Remembers the ledger's confirmation that `channel` is locked.
    pub(crate) fn confirm(&mut self, channel: ChannelId) {
        if self.confirmed.len() >= CONFIRMED_KEPT {
            self.confirmed.clear();
        }
        self.confirmed.insert(channel);
    }

    /// Reserves `max_bill` on `channel` (confirmed, `unsigned` left of its deposit) for a
    /// task of `payer`'s; the reservation's id, or why not.
    pub(crate) fn reserve(
        &mut self,
        payer: PublicKey,
        channel: ChannelId,
        unsigned: u64,
        max_bill: u64,
        credit: u32,
    ) -> Result<u64, String> {
        if !self.is_confirmed(&channel) {
            return Err("the ledger has not confirmed this channel's deposit".into());
        }
        let owed = self.owed_tasks(&payer);
        if owed >= credit as usize {
            return Err(format!(
                "you have not paid for {owed} delivered task(s), and this node's credit is {credit}"
            ));
        }
        let reserved: u64 = self
            .reservations
            .values()
            .filter(|r| r.channel == channel)
            .map(|r| r.amount)
            .sum();
        let room = unsigned.saturating_sub(reserved);
        if room < max_bill {
            return Err(format!(
                "the channel has {room} left (deposit less payments and work in progress), \
                 less than the task's most expensive bill ({max_bill})"
            ));
        }
        if self.reservations.len() >= RESERVATIONS_KEPT {
            return Err("this node holds too much work in progress".into());
        }
        self.next += 1;
        self.reservations.insert(
            self.next,
            Reservation {
                payer,
                channel,
                amount: max_bill,
                receipt: None,
            },
        );
        Ok(self.next)
    }

    /// The task under reservation `id` was delivered with `receipt`, billed `bill`: held
    /// until paid (nothing owed: let go at once).
    pub(crate) fn delivered(&mut self, id: u64, receipt: [u8; 32], bill: u64) {
        if bill == 0 {
            self.reservations.remove(&id);
        } else if let Some(r) = self.reservations.get_mut(&id) {
            r.amount = bill;
            r.receipt = Some(receipt);
        }
    }

    /// The task under reservation `id` ended without a delivery.
    pub(crate) fn release(&mut self, id: u64) {
        self.reservations.remove(&id);
    }

    /// A payment for `receipt` arrived; whether it cleared a reservation.
    pub(crate) fn paid(&mut self, receipt: &[u8; 32]) -> bool {
        let found = self
            .reservations
            .iter()
            .find(|(_, r)| r.receipt.as_ref() == Some(receipt))
            .map(|(id, _)| *id);
        found.is_some_and(|id| self.reservations.remove(&id).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        zerostate_payment::Keypair::from_seed([b; 32]).public()
    }

    #[test]
    fn work_is_served_only_against_a_confirmed_channel_with_room() {
        let mut s = Served::default();
        let (payer, channel) = (key(1), ChannelId([7; 32]));
        let err = s
            .reserve(payer, channel, 100, 10, 1)
            .expect_err("unconfirmed");
        assert!(err.contains("not confirmed"), "{err}");
        s.confirm(channel);
        let a = s.reserve(payer, channel, 100, 60, 1).expect("room");
        // Running tasks hold their most expensive bill.
        let err = s.reserve(payer, channel, 100, 60, 1).expect_err("no room");
        assert!(err.contains("40 left"), "{err}");
        // Delivered, its bill is what it holds.
        s.delivered(a, [1; 32], 5);
        s.paid(&[1; 32]);
        s.reserve(payer, channel, 95, 60, 1).expect("room again");
    }

    #[test]
    fn a_payer_that_does_not_pay_is_served_no_more_than_its_credit() {
        let mut s = Served::default();
        let (payer, channel) = (key(1), ChannelId([7; 32]));
        s.confirm(channel);
        let a = s.reserve(payer, channel, 1000, 10, 1).expect("first");
        s.delivered(a, [1; 32], 10);
        assert_eq!(s.owed_tasks(&payer), 1);
        let err = s
            .reserve(payer, channel, 1000, 10, 1)
            .expect_err("owes one");
        assert!(err.contains("not paid for 1"), "{err}");
        // Another payer is served meanwhile; a payment clears the debt, paid once.
        let other = key(2);
        let channel2 = ChannelId([8; 32]);
        s.confirm(channel2);
        s.reserve(other, channel2, 1000, 10, 1)
            .expect("another payer");
        assert!(s.paid(&[1; 32]));
        assert!(!s.paid(&[1; 32]));
        s.reserve(payer, channel, 990, 10, 1).expect("paid up");
    }

    #[test]
    fn a_task_that_ends_without_delivery_or_costs_nothing_holds_nothing() {
        let mut s = Served::default();
        let (payer, channel) = (key(1), ChannelId([7; 32]));
        s.confirm(channel);
        let a = s.reserve(payer, channel, 10, 10, 1).expect("a");
        s.release(a);
        let b = s.reserve(payer, channel, 10, 10, 1).expect("b");
        s.delivered(b, [2; 32], 0);
        assert_eq!(s.owed_tasks(&payer), 0);
        s.reserve(payer, channel, 10, 10, 1).expect("c");
    }
}
