//! The ledger's side: open, cooperative and unilateral close, disputes, refunds.

use zerostate_payment::{
    ChannelState, ChannelStatus, Keypair, PaymentError, Settled, Settlement, SignedState,
    SqliteLedger,
};

use crate::harness::{
    CHALLENGE, EXPIRY, NOW, amount, ledger_with_channel, open_request, params, payee_key, payer_key,
};

fn state(id: zerostate_payment::ChannelId, nonce: u64, cumulative: &str) -> SignedState {
    ChannelState {
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
    let ledger = SqliteLedger::in_memory(CHALLENGE).expect("ledger");
    ledger
        .fund(&payer_key().public(), amount("5"))
        .expect("fund");
    let too_big = ledger.open(&open_request(params("6", 1)), NOW);
    assert!(
        matches!(too_big, Err(PaymentError::InsufficientFunds { .. })),
        "{too_big:?}"
    );

    let mut unsigned = open_request(params("1", 2));
    unsigned.payee_signature = Keypair::from_seed([7; 32]).sign(&unsigned.params.open_bytes());
    assert!(matches!(
        ledger.open(&unsigned, NOW),
        Err(PaymentError::BadSignature { .. })
    ));

    let expired = ledger.open(&open_request(params("1", 3)), EXPIRY);
    assert!(matches!(expired, Err(PaymentError::Expired { .. })));
    assert!(matches!(
        ledger.open(&open_request(params("0", 4)), NOW),
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
        ledger.open(&req, NOW),
        Err(PaymentError::InvalidChannel(_))
    ));

    ledger
        .open(&open_request(params("1", 6)), NOW)
        .expect("a valid one opens");
    let again = ledger.open(&open_request(params("1", 6)), NOW);
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
        .close_cooperative(&s, &payee_sig, NOW)
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
    let again = ledger.close_cooperative(&s, &payee_sig, NOW);
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
        ledger.close_cooperative(&s, &by_payer, NOW),
        Err(PaymentError::BadSignature { .. })
    ));
    let over = state(id, 2, "11");
    let sig = payee_key().sign(&over.state.close_bytes());
    assert!(matches!(
        ledger.close_cooperative(&over, &sig, NOW),
        Err(PaymentError::Overdraft { .. })
    ));
    assert_eq!(
        ledger.channel(&id).expect("channel").status,
        ChannelStatus::Open
    );
}

#[test]
fn a_unilateral_close_settles_on_the_highest_nonce_submitted_in_the_window() {
    let (ledger, id) = ledger_with_channel("10");
    // The payer starts a close on an old state, hoping to pay less.
    let ends = ledger
        .start_close(&id, Some(&state(id, 2, "1")), NOW)
        .expect("start");
    assert_eq!(ends, NOW + CHALLENGE);
    assert!(matches!(
        ledger.finalize(&id, ends - 1),
        Err(PaymentError::ChallengeWindow { .. })
    ));
    // The payee answers with the latest.
    ledger
        .dispute(&state(id, 5, "4"), NOW + 10)
        .expect("dispute");
    // An older state cannot take its place again.
    let older = ledger.dispute(&state(id, 4, "3"), NOW + 20);
    assert!(
        matches!(
            older,
            Err(PaymentError::StaleNonce {
                got: 4,
                expected: 6
            })
        ),
        "{older:?}"
    );
    // Nor can anything after the window.
    let late = ledger.dispute(&state(id, 9, "9"), ends);
    assert!(
        matches!(late, Err(PaymentError::ChallengeWindow { .. })),
        "{late:?}"
    );
    let settled = ledger.finalize(&id, ends).expect("finalize");
    assert_eq!(
        settled,
        Settled {
            to_payee: amount("4"),
            to_payer: amount("6")
        }
    );
    assert!(matches!(
        ledger.finalize(&id, ends),
        Err(PaymentError::WrongStatus { .. })
    ));
    assert!(ledger.audit().expect("audit").is_conserved());
}

#[test]
fn a_close_without_a_state_pays_nothing_unless_disputed() {
    let (ledger, id) = ledger_with_channel("10");
    let ends = ledger.start_close(&id, None, NOW).expect("start");
    assert_eq!(
        ledger.finalize(&id, ends).expect("finalize"),
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
        channel: id,
        nonce: 7,
        cumulative: amount("10"),
        receipt: [0; 32],
    }
    .sign(&Keypair::from_seed([5; 32]));
    assert!(matches!(
        ledger.start_close(&id, Some(&forged), NOW),
        Err(PaymentError::BadSignature { .. })
    ));
    ledger.start_close(&id, None, NOW).expect("start");
    assert!(matches!(
        ledger.dispute(&forged, NOW + 1),
        Err(PaymentError::BadSignature { .. })
    ));
}

#[test]
fn an_unclosed_channel_is_refunded_after_expiry_and_one_challenge_period() {
    let (ledger, id) = ledger_with_channel("10");
    let due = EXPIRY + CHALLENGE;
    assert!(matches!(
        ledger.refund_expired(&id, due - 1),
        Err(PaymentError::RefundNotDue { .. })
    ));
    assert_eq!(
        ledger.refund_expired(&id, due).expect("refund"),
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
        ledger.refund_expired(&id, due),
        Err(PaymentError::WrongStatus { .. })
    ));
}

#[test]
fn the_ledger_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.db");
    let id = {
        let ledger = SqliteLedger::open(&path, CHALLENGE).expect("ledger");
        ledger
            .fund(&payer_key().public(), amount("100"))
            .expect("fund");
        let id = ledger
            .open(&open_request(params("10", 1)), NOW)
            .expect("open");
        ledger
            .start_close(&id, Some(&state(id, 3, "2")), NOW)
            .expect("start");
        id
    };
    let ledger = SqliteLedger::open(&path, CHALLENGE).expect("reopen");
    match ledger.channel(&id).expect("channel").status {
        ChannelStatus::Closing {
            state,
            challenge_ends,
        } => {
            assert_eq!(state.nonce, 3);
            assert_eq!(challenge_ends, NOW + CHALLENGE);
        }
        other => panic!("expected closing, got {other:?}"),
    }
    assert!(ledger.audit().expect("audit").is_conserved());
}
