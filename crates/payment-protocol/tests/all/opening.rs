//! Opening a channel when the ledger's answer is lost: the deposit is never locked and
//! unknown to the payer, and never locked twice for one channel.

use zerostate_payment_protocol::types::Call;

use crate::harness::{Cast, DEPOSIT, Fault};

/// What the payer holds on the ledger.
async fn balance(cast: &Cast) -> u64 {
    cast.payer
        .payments
        .balance()
        .await
        .expect("the ledger answers")
}

#[tokio::test]
async fn an_open_whose_answer_was_lost_is_found_on_the_ledger_and_paid_through() {
    let cast = Cast::new();
    let before = balance(&cast).await;
    cast.net
        .fail(cast.ledger.peer, Call::LedgerOpen, Fault::AnswerLost, 1);
    let paid = cast.pay(10, 1).await;
    assert_eq!(paid.status, "paid", "{paid:?}");
    let channels = cast
        .payer
        .payments
        .channels()
        .expect("the payer's channels");
    assert_eq!(channels.len(), 1, "one channel, one deposit: {channels:?}");
    assert!(!channels[0].opening, "{channels:?}");
    assert_eq!(balance(&cast).await, before - DEPOSIT);
    assert_eq!(cast.payer.payments.open_counts()[0], 1);
}

#[tokio::test]
async fn an_open_nobody_could_confirm_is_kept_and_found_when_the_ledger_answers() {
    let cast = Cast::new();
    let before = balance(&cast).await;
    // The ledger locks the deposit, its answer is lost, and so is the question after it.
    cast.net
        .fail(cast.ledger.peer, Call::LedgerOpen, Fault::AnswerLost, 1);
    cast.net
        .fail(cast.ledger.peer, Call::LedgerChannel, Fault::Lost, 1);
    let paid = cast.pay(10, 1).await;
    assert_eq!(paid.status, "failed", "{paid:?}");
    let channels = cast
        .payer
        .payments
        .channels()
        .expect("the payer's channels");
    assert_eq!(channels.len(), 1, "{channels:?}");
    assert!(channels[0].opening, "known, as opening: {channels:?}");
    let locked = channels[0].id.clone();
    assert_eq!(
        balance(&cast).await,
        before - DEPOSIT,
        "the ledger locked it"
    );
    assert_eq!(cast.payer.payments.open_counts()[0], 0);

    // The ledger answers again: the channel is found and paid through, no second deposit.
    assert_eq!(cast.payer.payments.recover_opening(None).await, Ok(0));
    let paid = cast.pay(10, 2).await;
    assert_eq!(paid.status, "paid", "{paid:?}");
    assert_eq!(paid.channel.as_deref(), Some(locked.as_str()));
    assert_eq!(balance(&cast).await, before - DEPOSIT);
    assert_eq!(cast.payer.payments.open_counts()[0], 1);
}

#[tokio::test]
async fn an_open_the_ledger_never_got_is_not_paid_through() {
    let cast = Cast::new();
    let before = balance(&cast).await;
    cast.net
        .fail(cast.ledger.peer, Call::LedgerOpen, Fault::Lost, 1);
    let paid = cast.pay(10, 1).await;
    assert_eq!(paid.status, "failed", "{paid:?}");
    assert_eq!(balance(&cast).await, before, "nothing locked");
    // Until no open sent for it can still arrive, it stays known as opening and unused:
    // the next payment opens (and pays through) another.
    let paid = cast.pay(10, 2).await;
    assert_eq!(paid.status, "paid", "{paid:?}");
    let channels = cast
        .payer
        .payments
        .channels()
        .expect("the payer's channels");
    assert_eq!(channels.len(), 2, "{channels:?}");
    assert!(channels[0].opening && !channels[1].opening, "{channels:?}");
    assert_eq!(paid.channel.as_deref(), Some(channels[1].id.as_str()));
    assert_eq!(balance(&cast).await, before - DEPOSIT);
}
