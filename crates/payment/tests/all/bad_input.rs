//! Every kind of bad input is refused with its own error, and nothing is persisted.

use zerostate_payment::{
    Amount, ChannelId, ChannelState, Keypair, PayeeStore, PaymentError, SignedState,
};

use crate::harness::{EXPIRY, NOW, amount, payer_key, stores};

/// Accepts two payments, then checks that `bad` is refused with an error matching `is` and
/// that the payee's state is exactly as before, also after reopening the database.
fn refused(
    bad: impl FnOnce(&ChannelId, &SignedState) -> (SignedState, u64),
    is: fn(&PaymentError) -> bool,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (payer, payee, id) = stores(dir.path(), "10");
    payee
        .accept(
            &payer.pay(&id, amount("1"), [1; 32], NOW).expect("pay"),
            NOW,
        )
        .expect("accept");
    let last = payer.pay(&id, amount("1"), [2; 32], NOW).expect("pay");
    payee.accept(&last, NOW).expect("accept");
    let before = payee.channel(&id).expect("channel");

    let (state, now) = bad(&id, &last);
    let err = payee.accept(&state, now).expect_err("must be refused");
    assert!(is(&err), "unexpected error: {err}");
    assert_eq!(
        payee.channel(&id).expect("channel"),
        before,
        "a refused state changed the store"
    );
    drop(payee);
    let reopened = PayeeStore::open(&dir.path().join("payee.db")).expect("reopen");
    assert_eq!(reopened.channel(&id).expect("channel"), before);
}

fn next(id: &ChannelId, last: &SignedState, cumulative: Amount) -> ChannelState {
    ChannelState {
        ledger: crate::harness::ledger_id(),
        channel: *id,
        nonce: last.state.nonce + 1,
        cumulative,
        receipt: [3; 32],
    }
}

#[test]
fn a_forged_signature_is_refused() {
    refused(
        |id, last| {
            let mut s = next(id, last, amount("3")).sign(&payer_key());
            s.signature.0[10] ^= 0xff;
            (s, NOW)
        },
        |e| matches!(e, PaymentError::BadSignature { .. }),
    );
}

#[test]
fn a_state_signed_with_the_wrong_key_is_refused() {
    refused(
        |id, last| {
            (
                next(id, last, amount("3")).sign(&Keypair::from_seed([9; 32])),
                NOW,
            )
        },
        |e| matches!(e, PaymentError::BadSignature { .. }),
    );
}

#[test]
fn a_replayed_state_is_refused() {
    refused(
        |_, last| (*last, NOW),
        |e| {
            matches!(
                e,
                PaymentError::StaleNonce {
                    got: 2,
                    expected: 3
                }
            )
        },
    );
}

#[test]
fn an_older_nonce_is_refused() {
    refused(
        |id, _| {
            (
                ChannelState {
                    ledger: crate::harness::ledger_id(),
                    channel: *id,
                    nonce: 1,
                    cumulative: amount("5"),
                    receipt: [0; 32],
                }
                .sign(&payer_key()),
                NOW,
            )
        },
        |e| matches!(e, PaymentError::StaleNonce { got: 1, .. }),
    );
}

#[test]
fn a_skipped_nonce_is_refused() {
    refused(
        |id, last| {
            let mut s = next(id, last, amount("3"));
            s.nonce += 1;
            (s.sign(&payer_key()), NOW)
        },
        |e| {
            matches!(
                e,
                PaymentError::StaleNonce {
                    got: 4,
                    expected: 3
                }
            )
        },
    );
}

#[test]
fn a_lower_cumulative_amount_is_refused() {
    refused(
        |id, last| (next(id, last, amount("1.5")).sign(&payer_key()), NOW),
        |e| matches!(e, PaymentError::NotIncreasing { .. }),
    );
}

#[test]
fn an_equal_cumulative_amount_is_refused() {
    refused(
        |id, last| {
            (
                next(id, last, last.state.cumulative).sign(&payer_key()),
                NOW,
            )
        },
        |e| matches!(e, PaymentError::NotIncreasing { .. }),
    );
}

#[test]
fn an_overdraft_is_refused() {
    refused(
        |id, last| {
            (
                next(id, last, amount("10.000000001")).sign(&payer_key()),
                NOW,
            )
        },
        |e| matches!(e, PaymentError::Overdraft { .. }),
    );
}

#[test]
fn a_payment_on_an_expired_channel_is_refused() {
    refused(
        |id, last| (next(id, last, amount("3")).sign(&payer_key()), EXPIRY),
        |e| matches!(e, PaymentError::Expired { .. }),
    );
}

#[test]
fn a_payment_on_an_unknown_channel_is_refused() {
    refused(
        |_, last| {
            (
                next(&ChannelId([0xab; 32]), last, amount("3")).sign(&payer_key()),
                NOW,
            )
        },
        |e| matches!(e, PaymentError::UnknownChannel(_)),
    );
}

#[test]
fn malformed_bytes_are_refused_before_anything_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (payer, _, id) = stores(dir.path(), "10");
    let good = payer
        .pay(&id, amount("1"), [1; 32], NOW)
        .expect("pay")
        .to_bytes();
    for bad in [
        &good[..10],
        &good[..SignedState::LEN - 1],
        &[&good[..], &[0][..]].concat()[..],
        &[],
    ] {
        assert!(matches!(
            SignedState::from_bytes(bad),
            Err(PaymentError::Malformed { .. })
        ));
    }
    let mut wrong_format = good;
    wrong_format[0] = 9;
    assert!(matches!(
        SignedState::from_bytes(&wrong_format),
        Err(PaymentError::Malformed { .. })
    ));
}

#[test]
fn the_payer_refuses_zero_overflowing_overdrawn_and_expired_payments_and_keeps_its_nonce() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (payer, _, id) = stores(dir.path(), "10");
    payer.pay(&id, amount("9"), [1; 32], NOW).expect("pay");
    let before = payer.channel(&id).expect("channel");
    type Case = (Amount, u64, fn(&PaymentError) -> bool);
    let cases: [Case; 4] = [
        (Amount::ZERO, NOW, |e| matches!(e, PaymentError::ZeroAmount)),
        (Amount::from_base_units(u64::MAX), NOW, |e| {
            matches!(e, PaymentError::Overflow)
        }),
        (amount("1.1"), NOW, |e| {
            matches!(e, PaymentError::Overdraft { .. })
        }),
        (amount("0.5"), EXPIRY, |e| {
            matches!(e, PaymentError::Expired { .. })
        }),
    ];
    for (value, now, is) in cases {
        let err = payer.pay(&id, value, [2; 32], now).expect_err("refused");
        assert!(is(&err), "{err}");
        assert_eq!(payer.channel(&id).expect("channel"), before, "{err}");
    }
    assert!(matches!(
        payer.pay(&ChannelId([1; 32]), amount("1"), [0; 32], NOW),
        Err(PaymentError::UnknownChannel(_))
    ));
}

#[test]
fn a_bad_state_inside_a_group_is_refused_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (payer, payee, id) = stores(dir.path(), "10");
    let first = payer.pay(&id, amount("1"), [1; 32], NOW).expect("pay");
    let mut forged = ChannelState {
        ledger: crate::harness::ledger_id(),
        channel: id,
        nonce: 2,
        cumulative: amount("9"),
        receipt: [0; 32],
    }
    .sign(&payer_key());
    forged.signature.0[0] ^= 1;
    let second = payer.pay(&id, amount("1"), [2; 32], NOW).expect("pay");
    let results = payee.accept_batch(&[first, forged, second], NOW);
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(PaymentError::BadSignature { .. })));
    assert_eq!(results[2].as_ref().map(|a| a.nonce).ok(), Some(2));
    let stored = payee.channel(&id).expect("channel");
    assert_eq!(stored.signed(), Some(second));
}

#[test]
fn both_sides_keep_the_receipts_a_channel_paid_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (payer, payee, id) = stores(dir.path(), "10");
    let states = payer
        .pay_many(&id, &[(amount("1"), [1; 32]), (amount("2"), [2; 32])], NOW)
        .expect("pay");
    let third = payer.pay(&id, amount("0.5"), [3; 32], NOW).expect("pay");
    let mut forged = third;
    forged.state.nonce = 4;
    forged.state.receipt = [4; 32];
    let sent = [states[0], states[1], forged, third];
    assert!(payee.accept_batch(&sent, NOW)[2].is_err());
    for history in [
        payer.history(&id, 10).expect("payer history"),
        payee.history(&id, 10).expect("payee history"),
    ] {
        let seen: Vec<_> = history
            .iter()
            .map(|p| (p.nonce, p.amount, p.cumulative, p.receipt[0]))
            .collect();
        assert_eq!(
            seen,
            [
                (3, amount("0.5"), amount("3.5"), 3),
                (2, amount("2"), amount("3"), 2),
                (1, amount("1"), amount("1"), 1),
            ],
            "newest first, the forged state absent"
        );
    }
    // A shorter page still knows what its oldest payment added.
    let page = payee.history(&id, 1).expect("page");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].amount, amount("0.5"));
    // Kept across a restart.
    drop(payee);
    let reopened = PayeeStore::open(&dir.path().join("payee.db")).expect("reopen");
    assert_eq!(reopened.history(&id, 10).expect("history").len(), 3);
    assert!(matches!(
        reopened.history(&zerostate_payment::ChannelId([9; 32]), 10),
        Err(PaymentError::UnknownChannel(_))
    ));
}

#[test]
fn the_payer_refuses_to_run_too_far_ahead_of_acknowledgements() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (payer, _, id) = stores(dir.path(), "1000000");
    let group: Vec<_> = (0..zerostate_payment::MAX_UNACKNOWLEDGED)
        .map(|_| (Amount::from_base_units(1), [0; 32]))
        .collect();
    let states = payer.pay_many(&id, &group, NOW).expect("up to the limit");
    let over = payer.pay(&id, Amount::from_base_units(1), [0; 32], NOW);
    assert!(
        matches!(over, Err(PaymentError::TooManyUnacknowledged { .. })),
        "{over:?}"
    );
    assert_eq!(
        payer.unacknowledged(&id).expect("pending").len(),
        states.len()
    );
    payer.acknowledged(&id, states[99].state.nonce);
    assert_eq!(
        payer.unacknowledged(&id).expect("pending").len(),
        states.len() - 100
    );
    payer
        .pay(&id, Amount::from_base_units(1), [0; 32], NOW)
        .expect("room again");
}

#[test]
fn a_channel_being_settled_takes_no_more_payments_on_either_side() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (payer, payee, id) = stores(dir.path(), "10");
    let first = payer.pay(&id, amount("1"), [1; 32], NOW).expect("pay");
    let second = payer.pay(&id, amount("1"), [2; 32], NOW).expect("pay");
    payee.accept(&first, NOW).expect("accept");
    // The payee signed a close on the first state: the second is worth nothing to it.
    let closing = payee.close(&id).expect("close");
    assert!(closing.closing);
    assert_eq!(closing.signed(), Some(first));
    let late = payee.accept(&second, NOW);
    assert!(
        matches!(
            late,
            Err(PaymentError::WrongStatus {
                status: "closing",
                ..
            })
        ),
        "{late:?}"
    );
    payer.close(&id).expect("close");
    let more = payer.pay(&id, amount("1"), [3; 32], NOW);
    assert!(
        matches!(
            more,
            Err(PaymentError::WrongStatus {
                status: "closing",
                ..
            })
        ),
        "{more:?}"
    );
    // Remembered across a restart.
    drop(payee);
    let reopened = PayeeStore::open(&dir.path().join("payee.db")).expect("reopen");
    assert!(reopened.channel(&id).expect("channel").closing);
    assert!(reopened.accept(&second, NOW).is_err());
}
