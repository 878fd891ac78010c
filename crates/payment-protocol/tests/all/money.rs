//! Who may open channels, work served only against money the ledger locked, credit, and
//! settlement at exactly what the payer signed.

use zerostate_payment_protocol::Misbehaviour;

use crate::harness::{Cast, DEPOSIT, receipt};

#[tokio::test]
async fn only_members_of_the_payees_guilds_open_channels_to_it() {
    let cast = Cast::with(Misbehaviour::default(), Misbehaviour::default(), false);
    let paid = cast
        .payer
        .payments
        .pay(cast.payee.peer, 10, receipt(1))
        .await;
    assert_eq!(paid.status, "failed");
    let why = paid.reason.unwrap_or_default();
    assert!(
        why.contains("only members of this node's guilds may open channels to it"),
        "{why}"
    );
    assert!(cast.payee.payments.channels().unwrap().is_empty());
}

#[tokio::test]
async fn a_payee_serves_only_against_a_channel_the_ledger_locked() {
    // A payer that opens channels but never has the ledger lock them.
    let skip = Misbehaviour {
        skip_ledger_open: true,
        ..Misbehaviour::default()
    };
    let cast = Cast::with(skip, Misbehaviour::default(), true);
    let channel = cast
        .payer
        .payments
        .lock_for(cast.payee.peer, 100)
        .await
        .expect("the payee signed the channel")
        .expect("a ledger is configured");
    let refused = cast
        .payee
        .payments
        .reserve(cast.payer.peer, Some(&channel), 100, 1)
        .await
        .expect_err("nobody locked that money");
    assert!(
        refused.contains("the ledger did not confirm the channel"),
        "{refused}"
    );

    // The same with the money locked is served.
    let cast = Cast::new();
    let channel = cast.locked(100).await;
    let reserved = cast
        .payee
        .payments
        .reserve(cast.payer.peer, Some(&channel), 100, 1)
        .await
        .expect("the ledger confirms the deposit");
    assert!(reserved.is_some());
}

#[tokio::test]
async fn a_payer_that_owes_for_its_credit_is_served_no_more_until_it_pays() {
    let cast = Cast::new();
    let channel = cast.locked(100).await;
    let payees = &cast.payee.payments;
    let first = payees
        .reserve(cast.payer.peer, Some(&channel), 100, 1)
        .await
        .unwrap()
        .unwrap();
    payees.delivered(first, receipt(1), 40);
    assert_eq!(payees.owes(cast.payer.peer), 1);
    let refused = payees
        .reserve(cast.payer.peer, Some(&channel), 100, 1)
        .await
        .expect_err("one unpaid task is the credit");
    assert!(
        refused.contains("you have not paid for 1 delivered task(s)"),
        "{refused}"
    );

    let paid = cast
        .payer
        .payments
        .pay(cast.payee.peer, 40, receipt(1))
        .await;
    assert_eq!(paid.status, "paid", "{paid:?}");
    assert_eq!(payees.owes(cast.payer.peer), 0);
    payees
        .reserve(cast.payer.peer, Some(&channel), 100, 1)
        .await
        .expect("paid up: served again");
}

#[tokio::test]
async fn a_reservation_larger_than_what_is_left_on_the_channel_is_refused() {
    let cast = Cast::new();
    let channel = cast.locked(DEPOSIT).await;
    let refused = cast
        .payee
        .payments
        .reserve(cast.payer.peer, Some(&channel), DEPOSIT + 1, 1)
        .await;
    assert!(refused.is_err(), "a bill above the deposit: {refused:?}");
}

#[tokio::test]
async fn a_cooperative_close_settles_at_exactly_the_payers_latest_state() {
    let cast = Cast::new();
    for (n, amount) in [(1, 100), (2, 250), (3, 1)] {
        assert_eq!(
            cast.payer
                .payments
                .pay(cast.payee.peer, amount, receipt(n))
                .await
                .status,
            "paid"
        );
    }
    let channel = cast.payer.payments.channels().unwrap()[0].id.clone();
    let settled = cast.payer.payments.close(&channel).await.expect("closed");
    assert_eq!(
        cast.payee.payments.balance().await.unwrap(),
        351,
        "{settled}"
    );
    assert_eq!(
        cast.payer.payments.balance().await.unwrap(),
        100 * DEPOSIT - 351,
        "the rest of the deposit is back with the payer"
    );
}

#[tokio::test]
async fn the_ledger_serves_a_refund_and_refuses_it_before_it_is_due() {
    let cast = Cast::new();
    let channel = cast.locked(100).await;
    let refused = cast
        .payer
        .payments
        .settle(&channel, zerostate_payment_protocol::Settle::Refund)
        .await
        .expect_err("the channel has not expired");
    assert!(refused.contains("can be refunded from"), "{refused}");
    // The deposit stays locked meanwhile: nothing was paid out.
    let balance = cast.payer.payments.balance().await.expect("a balance");
    assert_eq!(balance, 100 * DEPOSIT - DEPOSIT);
}

#[tokio::test]
async fn the_ledgers_answers_are_signed_and_one_changed_on_the_way_is_refused() {
    let cast = Cast::new();
    let channel = cast.locked(100).await;
    let paid = cast
        .payer
        .payments
        .pay(cast.payee.peer, 40, receipt(1))
        .await;
    assert_eq!(paid.status, "paid", "{paid:?}");
    // The settlement's answer carries what the ledger signed: anyone with the ledger's peer
    // id can check it.
    let settled = cast.payer.payments.close(&channel).await.expect("settled");
    let proof =
        zerostate_payment_protocol::check_ledger_proof(&cast.ledger.peer, &settled["ledger_proof"])
            .expect("signed by the ledger");
    assert_eq!(proof.operation, "ledger_close");
    let said: serde_json::Value = serde_json::from_slice(&proof.answer).expect("json");
    assert_eq!(said["to_payee"], 40);
    assert_eq!(said["to_payee"], settled["to_payee"]);
    // Checked against another node's key, it is not the ledger's.
    assert!(
        zerostate_payment_protocol::check_ledger_proof(&cast.payee.peer, &settled["ledger_proof"])
            .is_err()
    );

    // An answer changed between the ledger and the payer is refused, not believed.
    cast.net.fail(
        cast.ledger.peer,
        zerostate_payment_protocol::types::Call::LedgerBalance,
        crate::harness::Fault::Tampered,
        1,
    );
    let refused = cast.payer.payments.balance().await.expect_err("tampered");
    assert!(refused.contains("not signed by the ledger"), "{refused}");
    assert!(cast.payer.payments.balance().await.is_ok());
}
