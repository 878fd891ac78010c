//! The payee's watchtower: a payer's close on less than it owes is answered, and paid out
//! at what the payee holds, without anyone acting.

use zerostate_payment_protocol::types::Call;
use zerostate_payment_protocol::{Settle, Watched};

use crate::harness::Cast;

/// Pays the payee `amounts`, one receipt each; the channel (hex).
async fn paid(cast: &Cast, amounts: &[u64]) -> String {
    let mut channel = String::new();
    for (n, amount) in amounts.iter().enumerate() {
        let record = cast.pay(*amount, n as u8 + 1).await;
        assert_eq!(record.status, "paid", "{record:?}");
        channel = record.channel.expect("a channel");
    }
    channel
}

/// A payer that starts closing `channel` on the ledger on nothing paid, although it signed
/// payments: the request it would send, straight to the ledger.
async fn payer_closes_on_nothing(cast: &Cast, channel: &str) {
    let body = serde_json::json!({ "channel": channel }).to_string();
    cast.ledger
        .payments
        .handle(cast.payer.peer, Call::LedgerStartClose, body.into_bytes())
        .await
        .expect("the ledger starts the close");
}

#[tokio::test]
async fn a_payers_close_on_less_is_disputed_and_paid_out_at_what_the_payee_holds() {
    // A window of 5 s: the ledger counts whole seconds, and a 1 s window could end before
    // the first look (it once did, under a whole test run's load).
    let cast = Cast::with_challenge_period(5);
    let channel = paid(&cast, &[10, 20, 5]).await;
    let before = cast.payee.payments.balance().await.expect("a balance");
    payer_closes_on_nothing(&cast, &channel).await;

    let first = cast.payee.payments.watch().await;
    assert_eq!(
        first,
        Watched {
            asked: 1,
            disputed: 1,
            ..Watched::default()
        }
    );
    // Inside the window nothing more is to be done.
    let again = cast.payee.payments.watch().await;
    assert_eq!(
        again.disputed + again.finalized + again.failed,
        0,
        "{again:?}"
    );

    // Once the window has ended, the close is paid out at the payee's 35.
    tokio::time::sleep(std::time::Duration::from_millis(6100)).await;
    let after = cast.payee.payments.watch().await;
    assert_eq!(after.finalized, 1, "{after:?}");
    let balance = cast.payee.payments.balance().await.expect("a balance");
    assert_eq!(balance - before, 35);
    // Paid out: not asked about again.
    assert_eq!(cast.payee.payments.watch().await, Watched::default());
}

#[tokio::test]
async fn a_payers_close_on_the_latest_state_is_not_disputed_and_a_payees_own_close_is_left_alone() {
    let cast = Cast::with_challenge_period(1);
    let channel = paid(&cast, &[10, 20]).await;
    cast.payer
        .payments
        .settle(&channel, Settle::Start)
        .await
        .expect("the payer starts a close on its latest state");
    let watched = cast.payee.payments.watch().await;
    assert_eq!(watched.asked, 1);
    assert_eq!(watched.disputed, 0, "{watched:?}");

    // A close the payee's operator started is theirs to pay out.
    let cast = Cast::with_challenge_period(1);
    let channel = paid(&cast, &[7]).await;
    cast.payee
        .payments
        .settle(&channel, Settle::Start)
        .await
        .expect("the payee starts a close");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let watched = cast.payee.payments.watch().await;
    assert_eq!(watched.finalized, 0, "{watched:?}");
}
