//! The ledger's side: open, cooperative and unilateral close, disputes, refunds.

use zerostate_payment::{
    ChannelState, ChannelStatus, Keypair, LedgerId, PaymentError, Settled, Settlement, SignedState,
    SqliteLedger,
};

use crate::harness::{
    CHALLENGE, EXPIRY, NOW, amount, ledger_with_channel, open_request, params, payee_key, payer_key,
};

fn state(id: zerostate_payment::ChannelId, nonce: u64, cumulative: &str) -> SignedState {
    ChannelState {
        ledger: crate::harness::ledger_id(),
        channel: id,
        nonce,
        cumulative: amount(cumulative),
        receipt: [nonce as u8; 32],
    }
    .sign(&payer_key())
}

#[test]
fn opening_locks_the_deposit() {
    let (ledger, id) = ledger_with_channel("10");
    assert_eq!(
        ledger.balance(&payer_key().public()).expect("balance"),
        amount("90")
    );
    assert_eq!(
        ledger.channel(&id).expect("channel").status,
        ChannelStatus::Open
    );
    assert!(ledger.audit().expect("audit").is_conserved());
}

#[test]
fn opening_refuses_bad_requests_and_changes_nothing() {
    let ledger = SqliteLedger::in_memory(crate::harness::ledger_id(), CHALLENGE).expect("ledger");
    ledger
        .fund(&payer_key().public(), amount("5"))
        .expect("fund");
    let too_big = ledger.open(&payer_key().public(), &open_request(params("6", 1)), NOW);
    assert!(
        matches!(too_big, Err(PaymentError::InsufficientFunds { .. })),
        "{too_big:?}"
    );

    let mut unsigned = open_request(params("1", 2));
    unsigned.payee_signature = Keypair::from_seed([7; 32]).sign(&unsigned.params.open_bytes());
    assert!(matches!(
        ledger.open(&payer_key().public(), &unsigned, NOW),
        Err(PaymentError::BadSignature { .. })
    ));

    let expired = ledger.open(&payer_key().public(), &open_request(params("1", 3)), EXPIRY);
    assert!(matches!(expired, Err(PaymentError::Expired { .. })));
    assert!(matches!(
        ledger.open(&payer_key().public(), &open_request(params("0", 4)), NOW),
        Err(PaymentError::ZeroAmount)
    ));

    let mut to_self = params("1", 5);
    to_self.payee = to_self.payer;
    let bytes = to_self.open_bytes();
    let req = zerostate_payment::OpenRequest {
        params: to_self,
        payer_signature: payer_key().sign(&bytes),
        payee_signature: payer_key().sign(&bytes),
    };
    assert!(matches!(
        ledger.open(&payer_key().public(), &req, NOW),
        Err(PaymentError::InvalidChannel(_))
    ));

    ledger
        .open(&payer_key().public(), &open_request(params("1", 6)), NOW)
        .expect("a valid one opens");
    let again = ledger.open(&payer_key().public(), &open_request(params("1", 6)), NOW);
    assert!(matches!(again, Err(PaymentError::DuplicateChannel(_))));
    assert_eq!(
        ledger.balance(&payer_key().public()).expect("balance"),
        amount("4")
    );
    assert!(ledger.audit().expect("audit").is_conserved());
}

#[test]
fn a_cooperative_close_settles_at_once() {
    let (ledger, id) = ledger_with_channel("10");
    let s = state(id, 3, "2.5");
    let payee_sig = payee_key().sign(&s.state.close_bytes());
    let settled = ledger
        .close_cooperative(&payee_key().public(), &s, &payee_sig, NOW)
        .expect("close");
    assert_eq!(
        settled,
        Settled {
            to_payee: amount("2.5"),
            to_payer: amount("7.5")
        }
    );
    assert_eq!(
        ledger.balance(&payee_key().public()).expect("balance"),
        amount("2.5")
    );
    assert_eq!(
        ledger.balance(&payer_key().public()).expect("balance"),
        amount("97.5")
    );
    // Pays out once.
    let again = ledger.close_cooperative(&payee_key().public(), &s, &payee_sig, NOW);
    assert!(
        matches!(
            again,
            Err(PaymentError::WrongStatus {
                status: "settled",
                ..
            })
        ),
        "{again:?}"
    );
    assert!(ledger.audit().expect("audit").is_conserved());
}

#[test]
fn a_cooperative_close_needs_the_payee_and_a_state_within_the_deposit() {
    let (ledger, id) = ledger_with_channel("10");
    let s = state(id, 1, "1");
    let by_payer = payer_key().sign(&s.state.close_bytes());
    assert!(matches!(
        ledger.close_cooperative(&payee_key().public(), &s, &by_payer, NOW),
        Err(PaymentError::BadSignature { .. })
    ));
    let over = state(id, 2, "11");
    let sig = payee_key().sign(&over.state.close_bytes());
    assert!(matches!(
        ledger.close_cooperative(&payee_key().public(), &over, &sig, NOW),
        Err(PaymentError::Overdraft { .. })
    ));
    assert_eq!(
        ledger.channel(&id).expect("channel").status,
        ChannelStatus::Open
    );
}

#[test]
fn a_unilateral_close_settles_on_the_highest_amount_submitted_in_the_window() {
    let (ledger, id) = ledger_with_channel("10");
    // The payer starts a close on an old state, hoping to pay less.
    let ends = ledger
        .start_close(&payer_key().public(), &id, Some(&state(id, 2, "1")), NOW)
        .expect("start");
    assert_eq!(ends, NOW + CHALLENGE);
    assert!(matches!(
        ledger.finalize(&payee_key().public(), &id, ends - 1),
        Err(PaymentError::ChallengeWindow { .. })
    ));
    // The payee answers with the latest.
    ledger
        .dispute(&payee_key().public(), &state(id, 5, "4"), NOW + 10)
        .expect("dispute");
    // A smaller amount cannot take its place again, whatever its nonce.
    let smaller = ledger.dispute(&payee_key().public(), &state(id, 9, "3"), NOW + 20);
    assert!(
        matches!(smaller, Err(PaymentError::NotIncreasing { .. })),
        "{smaller:?}"
    );
    // Nor can anything after the window.
    let late = ledger.dispute(&payee_key().public(), &state(id, 9, "9"), ends);
    assert!(
        matches!(late, Err(PaymentError::ChallengeWindow { .. })),
        "{late:?}"
    );
    // Anyone may finalize once the window is over; the payout follows the rules.
    let stranger = Keypair::from_seed([42; 32]).public();
    let settled = ledger.finalize(&stranger, &id, ends).expect("finalize");
    assert_eq!(
        settled,
        Settled {
            to_payee: amount("4"),
            to_payer: amount("6")
        }
    );
    assert!(matches!(
        ledger.finalize(&payee_key().public(), &id, ends),
        Err(PaymentError::WrongStatus { .. })
    ));
    assert!(ledger.audit().expect("audit").is_conserved());
}

#[test]
fn a_payer_cannot_settle_on_a_newer_smaller_state() {
    let (ledger, id) = ledger_with_channel("10");
    // The payee holds nonce 5 worth 5 units. The payer signs nonce 6 worth nothing and
    // closes with it.
    let payees_best = state(id, 5, "5");
    let undercut = state(id, 6, "0");
    let ends = ledger
        .start_close(&payer_key().public(), &id, Some(&undercut), NOW)
        .expect("start");
    ledger
        .dispute(&payee_key().public(), &payees_best, NOW + 1)
        .expect("the payee's higher amount wins, though its nonce is older");
    let settled = ledger
        .finalize(&payee_key().public(), &id, ends)
        .expect("finalize");
    assert_eq!(settled.to_payee, amount("5"));
    assert_eq!(settled.to_payer, amount("5"));
}

#[test]
fn only_the_parties_close_and_only_the_other_party_disputes() {
    let (ledger, id) = ledger_with_channel("10");
    let stranger = Keypair::from_seed([42; 32]).public();
    let refused = ledger.start_close(&stranger, &id, None, NOW);
    assert!(
        matches!(refused, Err(PaymentError::NotAllowed { .. })),
        "{refused:?}"
    );
    let s = state(id, 1, "1");
    let sig = payee_key().sign(&s.state.close_bytes());
    assert!(matches!(
        ledger.close_cooperative(&stranger, &s, &sig, NOW),
        Err(PaymentError::NotAllowed { .. })
    ));
    assert_eq!(
        ledger.channel(&id).expect("channel").status,
        ChannelStatus::Open
    );

    let ends = ledger
        .start_close(&payer_key().public(), &id, None, NOW)
        .expect("the payer may start a close");
    for who in [payer_key().public(), stranger] {
        let refused = ledger.dispute(&who, &state(id, 2, "3"), NOW + 1);
        assert!(
            matches!(refused, Err(PaymentError::NotAllowed { .. })),
            "{refused:?}"
        );
    }
    ledger
        .dispute(&payee_key().public(), &state(id, 2, "3"), NOW + 1)
        .expect("the other party may dispute");
    assert_eq!(
        ledger
            .finalize(&stranger, &id, ends)
            .expect("finalize")
            .to_payee,
        amount("3")
    );
}

#[test]
fn a_payee_started_close_is_disputed_by_the_payer_only() {
    let (ledger, id) = ledger_with_channel("10");
    ledger
        .start_close(&payee_key().public(), &id, Some(&state(id, 1, "1")), NOW)
        .expect("the payee may start a close");
    let own = ledger.dispute(&payee_key().public(), &state(id, 2, "2"), NOW + 1);
    assert!(
        matches!(own, Err(PaymentError::NotAllowed { .. })),
        "{own:?}"
    );
}

#[test]
fn signatures_made_for_another_ledger_are_refused() {
    let (ledger, id) = ledger_with_channel("10");
    let other = LedgerId::of_operator(&Keypair::from_seed([10; 32]).public());
    let mut elsewhere = params("1", 7);
    elsewhere.ledger = other;
    assert_ne!(
        elsewhere.id(),
        params("1", 7).id(),
        "the id names the ledger"
    );
    let refused = ledger.open(&payer_key().public(), &open_request(elsewhere), NOW);
    assert!(
        matches!(refused, Err(PaymentError::WrongLedger { .. })),
        "{refused:?}"
    );
    // The same channel id, but the payer signed for the other ledger.
    let replayed = ChannelState {
        ledger: other,
        channel: id,
        nonce: 1,
        cumulative: amount("2"),
        receipt: [0; 32],
    }
    .sign(&payer_key());
    let refused = ledger.start_close(&payer_key().public(), &id, Some(&replayed), NOW);
    assert!(
        matches!(refused, Err(PaymentError::WrongLedger { .. })),
        "{refused:?}"
    );
    // Relabelled to this ledger, its signature no longer holds.
    let mut relabelled = replayed;
    relabelled.state.ledger = ledger.id();
    assert!(matches!(
        ledger.start_close(&payer_key().public(), &id, Some(&relabelled), NOW),
        Err(PaymentError::BadSignature { .. })
    ));
    // A ledger database refuses to be opened as another ledger.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.db");
    drop(SqliteLedger::open(&path, crate::harness::ledger_id(), CHALLENGE).expect("create"));
    assert!(matches!(
        SqliteLedger::open(&path, other, CHALLENGE),
        Err(PaymentError::WrongLedger { .. })
    ));
}

#[test]
fn extreme_numbers_are_errors_not_panics() {
    let (ledger, id) = ledger_with_channel("10");
    ledger
        .start_close(
            &payer_key().public(),
            &id,
            Some(&state(id, u64::MAX, "1")),
            NOW,
        )
        .expect("start");
    let same = ledger.dispute(&payee_key().public(), &state(id, u64::MAX, "1"), NOW + 1);
    assert!(
        matches!(same, Err(PaymentError::NotIncreasing { .. })),
        "{same:?}"
    );
    ledger
        .dispute(&payee_key().public(), &state(id, 0, "2"), NOW + 2)
        .expect("a higher amount wins whatever its nonce");

    let whale = Keypair::from_seed([77; 32]).public();
    ledger
        .fund(&whale, zerostate_payment::Amount::from_base_units(u64::MAX))
        .expect("fund");
    assert!(matches!(
        ledger.fund(&whale, zerostate_payment::Amount::from_base_units(1)),
        Err(PaymentError::Overflow)
    ));
    assert!(ledger.audit().expect("audit").is_conserved());
}

#[test]
fn a_close_without_a_state_pays_nothing_unless_disputed() {
    let (ledger, id) = ledger_with_channel("10");
    let ends = ledger
        .start_close(&payer_key().public(), &id, None, NOW)
        .expect("start");
    assert_eq!(
        ledger
            .finalize(&payee_key().public(), &id, ends)
            .expect("finalize"),
        Settled {
            to_payee: amount("0"),
            to_payer: amount("10")
        }
    );
}

#[test]
fn a_forged_state_cannot_start_a_close_or_win_a_dispute() {
    let (ledger, id) = ledger_with_channel("10");
    let forged = ChannelState {
        ledger: crate::harness::ledger_id(),
        channel: id,
        nonce: 7,
        cumulative: amount("10"),
        receipt: [0; 32],
    }
    .sign(&Keypair::from_seed([5; 32]));
    assert!(matches!(
        ledger.start_close(&payer_key().public(), &id, Some(&forged), NOW),
        Err(PaymentError::BadSignature { .. })
    ));
    ledger
        .start_close(&payer_key().public(), &id, None, NOW)
        .expect("start");
    assert!(matches!(
        ledger.dispute(&payee_key().public(), &forged, NOW + 1),
        Err(PaymentError::BadSignature { .. })
    ));
}

#[test]
fn an_unclosed_channel_is_refunded_after_expiry_and_one_challenge_period() {
    let (ledger, id) = ledger_with_channel("10");
    let due = EXPIRY + CHALLENGE;
    assert!(matches!(
        ledger.refund_expired(&payer_key().public(), &id, due - 1),
        Err(PaymentError::RefundNotDue { .. })
    ));
    assert_eq!(
        ledger
            .refund_expired(&payer_key().public(), &id, due)
            .expect("refund"),
        Settled {
            to_payee: amount("0"),
            to_payer: amount("10")
        }
    );
    assert_eq!(
        ledger.balance(&payer_key().public()).expect("balance"),
        amount("100")
    );
    assert!(matches!(
        ledger.refund_expired(&payer_key().public(), &id, due),
        Err(PaymentError::WrongStatus { .. })
    ));
}

#[test]
fn the_ledger_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.db");
    let id = {
        let ledger =
            SqliteLedger::open(&path, crate::harness::ledger_id(), CHALLENGE).expect("ledger");
        ledger
            .fund(&payer_key().public(), amount("100"))
            .expect("fund");
        let id = ledger
            .open(&payer_key().public(), &open_request(params("10", 1)), NOW)
            .expect("open");
        ledger
            .start_close(&payer_key().public(), &id, Some(&state(id, 3, "2")), NOW)
            .expect("start");
        id
    };
    let ledger = SqliteLedger::open(&path, crate::harness::ledger_id(), CHALLENGE).expect("reopen");
    match ledger.channel(&id).expect("channel").status {
        ChannelStatus::Closing {
            state,
            challenge_ends,
            ..
        } => {
            assert_eq!(state.nonce, 3);
            assert_eq!(challenge_ends, NOW + CHALLENGE);
        }
        other => panic!("expected closing, got {other:?}"),
    }
    assert!(ledger.audit().expect("audit").is_conserved());
}

#[test]
fn a_channel_keeps_the_challenge_period_it_was_opened_under() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.db");
    let id = {
        let ledger = SqliteLedger::open(&path, crate::harness::ledger_id(), 60).expect("ledger");
        ledger
            .fund(&payer_key().public(), amount("100"))
            .expect("fund");
        ledger
            .open(&payer_key().public(), &open_request(params("10", 1)), NOW)
            .expect("open")
    };
    // The operator restarts the ledger with a much longer period: the open channel keeps
    // the one both parties opened it under, for a close and for the refund.
    let ledger = SqliteLedger::open(&path, crate::harness::ledger_id(), 86_400).expect("reopen");
    assert_eq!(ledger.channel(&id).expect("channel").challenge_period, 60);
    assert!(matches!(
        ledger.refund_expired(&payer_key().public(), &id, EXPIRY + 59),
        Err(PaymentError::RefundNotDue { from, .. }) if from == EXPIRY + 60
    ));
    let ends = ledger
        .start_close(&payer_key().public(), &id, None, NOW + 5)
        .expect("start");
    assert_eq!(ends, NOW + 5 + 60);
    // A channel opened now gets the new period.
    let newer = ledger
        .open(&payer_key().public(), &open_request(params("10", 2)), NOW)
        .expect("open");
    assert_eq!(
        ledger.channel(&newer).expect("channel").challenge_period,
        86_400
    );
}

#[test]
fn a_ledger_from_before_periods_per_channel_is_brought_up_to_date() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.db");
    let id = {
        let ledger = SqliteLedger::open(&path, crate::harness::ledger_id(), 60).expect("ledger");
        ledger
            .fund(&payer_key().public(), amount("100"))
            .expect("fund");
        ledger
            .open(&payer_key().public(), &open_request(params("10", 1)), NOW)
            .expect("open")
    };
    // What version 2 wrote: the same tables without the channel's period.
    let old = rusqlite::Connection::open(&path).expect("the database");
    old.execute_batch(
        "ALTER TABLE channels DROP COLUMN challenge_period; PRAGMA user_version = 2;",
    )
    .expect("made a version 2 database");
    drop(old);
    let ledger = SqliteLedger::open(&path, crate::harness::ledger_id(), 60).expect("migrated");
    let record = ledger.channel(&id).expect("the channel survives");
    assert_eq!(record.challenge_period, 60);
    assert_eq!(record.status, ChannelStatus::Open);
    assert!(ledger.audit().expect("audit").is_conserved());
    // And a version the build does not know is still refused, not misread.
    drop(ledger);
    let newer = rusqlite::Connection::open(&path).expect("the database");
    newer
        .execute_batch("PRAGMA user_version = 9;")
        .expect("a later version");
    drop(newer);
    let refused = SqliteLedger::open(&path, crate::harness::ledger_id(), 60)
        .expect_err("a later version is refused");
    assert!(refused.to_string().contains("version 9"), "{refused}");
}

#[test]
fn a_signed_answer_holds_only_for_its_ledger_request_and_words() {
    let operator = Keypair::from_seed([9; 32]);
    let request = br#"{"channel":"ab"}"#;
    let answer = zerostate_payment::SignedAnswer::sign(
        &operator,
        "ledger_close",
        request,
        br#"{"to_payee":5,"to_payer":95}"#.to_vec(),
    );
    answer
        .verify(&operator.public())
        .expect("the operator's answer");
    assert_eq!(answer.ledger, crate::harness::ledger_id());
    let received = |request: &[u8], answer: &zerostate_payment::SignedAnswer| {
        zerostate_payment::SignedAnswer::received(
            &operator.public(),
            &answer.operation,
            request,
            answer.answer.clone(),
            answer.signature,
        )
    };
    assert_eq!(received(request, &answer).expect("as sent"), answer);
    // To another request, with other words, or under another name: refused.
    assert!(received(b"{}", &answer).is_err());
    let mut inflated = answer.clone();
    inflated.answer = br#"{"to_payee":50,"to_payer":50}"#.to_vec();
    assert!(inflated.verify(&operator.public()).is_err());
    assert!(received(request, &inflated).is_err());
    let mut renamed = answer.clone();
    renamed.operation = "ledger_finalize".into();
    assert!(renamed.verify(&operator.public()).is_err());
    let other = Keypair::from_seed([8; 32]).public();
    assert!(matches!(
        answer.verify(&other),
        Err(PaymentError::WrongLedger { .. })
    ));
}
