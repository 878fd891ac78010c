//! Payments reach the payee in nonce order, once each, whatever is lost on the way.

use zerostate_payment_protocol::PaymentEvent;
use zerostate_payment_protocol::types::Call;

use crate::harness::{Cast, Fault, receipt};

#[tokio::test]
async fn each_receipt_is_paid_once_and_the_payee_holds_every_state() {
    let cast = Cast::new();
    for (n, amount) in [(1, 10), (2, 20), (3, 5)] {
        let paid = cast
            .payer
            .payments
            .pay(cast.payee.peer, amount, receipt(n))
            .await;
        assert_eq!(paid.status, "paid", "{paid:?}");
        assert_eq!(paid.nonce, Some(u64::from(n)));
    }
    assert_eq!(cast.payee_holds(), (3, 35));
    let channel = &cast.payee.payments.channels().unwrap()[0].id;
    let history = cast.payee.payments.history(channel, 10).unwrap().unwrap();
    let receipts: Vec<_> = history.payments.iter().map(|p| p.receipt.clone()).collect();
    assert_eq!(
        receipts,
        [3, 2, 1].map(|n| hex::encode(receipt(n))),
        "newest first, one payment per receipt"
    );
}

#[tokio::test]
async fn concurrent_payments_are_delivered_in_nonce_order() {
    let cast = Cast::new();
    // The first opens the channel; the rest sign states at once on it.
    let first = cast
        .payer
        .payments
        .pay(cast.payee.peer, 1, receipt(1))
        .await;
    assert_eq!(first.status, "paid", "{first:?}");
    let pays = (2..=17u8).map(|n| {
        let payer = cast.payer.payments.clone();
        let payee = cast.payee.peer;
        tokio::spawn(async move { payer.pay(payee, u64::from(n), receipt(n)).await })
    });
    for paid in futures_join(pays).await {
        assert_eq!(paid.status, "paid", "{paid:?}");
    }
    assert_eq!(cast.payee_holds(), (17, (1..=17).sum()));
}

#[tokio::test]
async fn a_lost_acknowledgement_is_delivered_again_and_paid_once() {
    let cast = Cast::new();
    let mut events = cast.payer.payments.events();
    assert_eq!(
        cast.payer
            .payments
            .pay(cast.payee.peer, 7, receipt(1))
            .await
            .status,
        "paid"
    );
    // The payee keeps the second state; its answer never comes back.
    cast.net
        .fail(cast.payee.peer, Call::Payment, Fault::AnswerLost, 1);
    let lost = cast
        .payer
        .payments
        .pay(cast.payee.peer, 11, receipt(2))
        .await;
    assert_eq!(lost.status, "failed", "{lost:?}");
    assert_eq!(lost.nonce, Some(2), "the record names the state signed");
    assert_eq!(cast.payee_holds(), (2, 18), "the payee kept it");
    // The next payment carries it again: the payee says it holds it, and pays nothing
    // twice.
    let next = cast
        .payer
        .payments
        .pay(cast.payee.peer, 13, receipt(3))
        .await;
    assert_eq!(next.status, "paid", "{next:?}");
    assert_eq!(cast.payee_holds(), (3, 31));
    assert_eq!(
        events.try_recv(),
        Ok(PaymentEvent::DeliveredLate {
            receipt: receipt(2)
        }),
        "the payer is told the failed payment was made after all"
    );
}

#[tokio::test]
async fn a_state_that_never_arrived_goes_first_with_the_next_delivery() {
    let cast = Cast::new();
    let mut events = cast.payer.payments.events();
    assert_eq!(
        cast.payer
            .payments
            .pay(cast.payee.peer, 5, receipt(1))
            .await
            .status,
        "paid"
    );
    cast.net
        .fail(cast.payee.peer, Call::Payment, Fault::Lost, 1);
    let lost = cast
        .payer
        .payments
        .pay(cast.payee.peer, 6, receipt(2))
        .await;
    assert_eq!(lost.status, "failed", "{lost:?}");
    assert_eq!(cast.payee_holds(), (1, 5), "nothing arrived");
    // The payee takes only the next nonce: state 2 must go before state 3.
    let next = cast
        .payer
        .payments
        .pay(cast.payee.peer, 7, receipt(3))
        .await;
    assert_eq!(next.status, "paid", "{next:?}");
    assert_eq!(cast.payee_holds(), (3, 18));
    assert_eq!(
        events.try_recv(),
        Ok(PaymentEvent::DeliveredLate {
            receipt: receipt(2)
        })
    );
}

#[tokio::test]
async fn a_state_delivered_again_is_held_not_paid_twice() {
    let cast = Cast::new();
    // Every answer to the payee's first two payments is lost: the payer sends state 1
    // three times in all.
    cast.net
        .fail(cast.payee.peer, Call::Payment, Fault::AnswerLost, 2);
    assert_eq!(
        cast.payer
            .payments
            .pay(cast.payee.peer, 9, receipt(1))
            .await
            .status,
        "failed"
    );
    assert_eq!(
        cast.payer
            .payments
            .pay(cast.payee.peer, 4, receipt(2))
            .await
            .status,
        "failed"
    );
    let third = cast
        .payer
        .payments
        .pay(cast.payee.peer, 1, receipt(3))
        .await;
    assert_eq!(third.status, "paid", "{third:?}");
    assert_eq!(cast.payee_holds(), (3, 14), "each state counted once");
}

/// Awaits every task, in order.
async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("the task ends"));
    }
    out
}
