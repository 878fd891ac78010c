//! Random sequences of ledger operations: money is conserved, no channel pays out more than
//! its deposit, and the highest-nonce state submitted in the window always wins.

use proptest::prelude::*;
use zerostate_payment::{
    Amount, ChannelId, ChannelParams, ChannelState, ChannelStatus, Keypair, OpenRequest,
    PaymentError, Settlement, SignedState, SqliteLedger,
};

const CHALLENGE: u64 = 100;
const START: u64 = 1_000;

#[derive(Debug, Clone)]
enum Op {
    Fund {
        who: usize,
        units: u64,
    },
    Open {
        payer: usize,
        payee: usize,
        deposit: u64,
        expiry_in: u64,
    },
    Sign {
        channel: usize,
        add: u64,
    },
    StartClose {
        channel: usize,
        state: Option<usize>,
    },
    Dispute {
        channel: usize,
        state: usize,
    },
    CoopClose {
        channel: usize,
        state: usize,
    },
    Finalize {
        channel: usize,
    },
    Refund {
        channel: usize,
    },
    Advance {
        seconds: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    // Few channels and states, so closes, disputes and settlements meet each other often.
    prop_oneof![
        2 => (0..3usize, 1..1_000u64).prop_map(|(who, units)| Op::Fund { who, units }),
        2 => (0..3usize, 0..3usize, 1..500u64, 1..400u64)
            .prop_map(|(payer, payee, deposit, expiry_in)| Op::Open { payer, payee, deposit, expiry_in }),
        5 => (0..2usize, 0..60u64).prop_map(|(channel, add)| Op::Sign { channel, add }),
        2 => (0..2usize, proptest::option::of(0..3usize)).prop_map(|(channel, state)| Op::StartClose { channel, state }),
        4 => (0..2usize, 0..3usize).prop_map(|(channel, state)| Op::Dispute { channel, state }),
        1 => (0..2usize, 0..3usize).prop_map(|(channel, state)| Op::CoopClose { channel, state }),
        2 => (0..2usize).prop_map(|channel| Op::Finalize { channel }),
        1 => (0..2usize).prop_map(|channel| Op::Refund { channel }),
        2 => (1..150u64).prop_map(|seconds| Op::Advance { seconds }),
    ]
}

struct ModelChannel {
    id: ChannelId,
    payer: usize,
    payee: usize,
    deposit: u64,
    /// States the payer signed, in nonce order (some may exceed the deposit).
    states: Vec<SignedState>,
    /// The best state submitted to a unilateral close: (nonce, cumulative).
    closing: Option<(u64, u64)>,
}

fn newest(states: &[SignedState], back: usize) -> Option<SignedState> {
    states.len().checked_sub(back + 1).map(|i| states[i])
}

fn keys() -> Vec<Keypair> {
    (1..=3u8).map(|i| Keypair::from_seed([i; 32])).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn ledger_invariants_hold(ops in proptest::collection::vec(op(), 1..60)) {
        let keys = keys();
        let ledger = SqliteLedger::in_memory(CHALLENGE).expect("ledger");
        let mut now = START;
        let mut channels: Vec<ModelChannel> = Vec::new();
        let mut next_nonce = 0u64;

        for op in ops {
            match op {
                Op::Fund { who, units } => {
                    ledger.fund(&keys[who].public(), Amount::from_base_units(units)).expect("fund");
                }
                Op::Open { payer, payee, deposit, expiry_in } => {
                    next_nonce += 1;
                    let params = ChannelParams {
                        payer: keys[payer].public(),
                        payee: keys[payee].public(),
                        deposit: Amount::from_base_units(deposit),
                        expiry: now + expiry_in,
                        nonce: next_nonce,
                    };
                    let bytes = params.open_bytes();
                    let req = OpenRequest {
                        params,
                        payer_signature: keys[payer].sign(&bytes),
                        payee_signature: keys[payee].sign(&bytes),
                    };
                    let before = ledger.balance(&params.payer).expect("balance");
                    match ledger.open(&req, now) {
                        Ok(id) => {
                            prop_assert!(before.base_units() >= deposit);
                            channels.push(ModelChannel { id, payer, payee, deposit, states: Vec::new(), closing: None });
                        }
                        Err(PaymentError::InsufficientFunds { .. }) => prop_assert!(before.base_units() < deposit),
                        Err(PaymentError::InvalidChannel(_)) => prop_assert_eq!(payer, payee),
                        Err(e) => prop_assert!(false, "unexpected open error {}", e),
                    }
                }
                Op::Sign { channel, add } => {
                    if let Some(c) = channels.get_mut(channel) {
                        let (nonce, cum) = c.states.last().map_or((0, 0), |s| (s.state.nonce, s.state.cumulative.base_units()));
                        let state = ChannelState {
                            channel: c.id,
                            nonce: nonce + 1,
                            cumulative: Amount::from_base_units(cum + add),
                            receipt: [(nonce % 251) as u8; 32],
                        };
                        c.states.push(state.sign(&keys[c.payer]));
                    }
                }
                Op::StartClose { channel, state } => {
                    if let Some(c) = channels.get_mut(channel) {
                        let s = state.and_then(|back| newest(&c.states, back));
                        let status = ledger.channel(&c.id).expect("channel").status;
                        match ledger.start_close(&c.id, s.as_ref(), now) {
                            Ok(ends) => {
                                prop_assert_eq!(status, ChannelStatus::Open);
                                prop_assert_eq!(ends, now + CHALLENGE);
                                c.closing = Some(s.map_or((0, 0), |s| (s.state.nonce, s.state.cumulative.base_units())));
                            }
                            Err(PaymentError::Overdraft { .. }) => {
                                prop_assert!(s.is_some_and(|s| s.state.cumulative.base_units() > c.deposit));
                            }
                            Err(PaymentError::WrongStatus { .. }) => prop_assert!(status != ChannelStatus::Open),
                            Err(e) => prop_assert!(false, "unexpected start_close error {}", e),
                        }
                    }
                }
                Op::Dispute { channel, state } => {
                    if let Some(c) = channels.get_mut(channel)
                        && let Some(s) = newest(&c.states, state)
                    {
                        let status = ledger.channel(&c.id).expect("channel").status;
                        let result = ledger.dispute(&s, now);
                        let within = s.state.cumulative.base_units() <= c.deposit;
                        match status {
                            ChannelStatus::Closing { state: current, challenge_ends } => {
                                let should_win = now < challenge_ends && within && s.state.nonce > current.nonce;
                                // The highest nonce always wins a dispute inside the window.
                                prop_assert_eq!(result.is_ok(), should_win, "{:?}", result);
                                if should_win {
                                    c.closing = Some((s.state.nonce, s.state.cumulative.base_units()));
                                }
                            }
                            _ => {
                                let wrong_status = matches!(result, Err(PaymentError::WrongStatus { .. }));
                                prop_assert!(wrong_status, "{:?}", result);
                            }
                        }
                    }
                }
                Op::CoopClose { channel, state } => {
                    if let Some(c) = channels.get(channel)
                        && let Some(s) = newest(&c.states, state)
                    {
                        let sig = keys[c.payee].sign(&s.state.close_bytes());
                        if let Ok(settled) = ledger.close_cooperative(&s, &sig, now) {
                            prop_assert_eq!(settled.to_payee, s.state.cumulative);
                        }
                    }
                }
                Op::Finalize { channel } => {
                    if let Some(c) = channels.get(channel)
                        && let Ok(settled) = ledger.finalize(&c.id, now)
                    {
                        let (_, best) = c.closing.expect("a finalized channel was closing");
                        prop_assert_eq!(settled.to_payee.base_units(), best);
                    }
                }
                Op::Refund { channel } => {
                    if let Some(c) = channels.get(channel)
                        && let Ok(settled) = ledger.refund_expired(&c.id, now)
                    {
                        prop_assert_eq!(settled.to_payer.base_units(), c.deposit);
                    }
                }
                Op::Advance { seconds } => now += seconds,
            }

            let audit = ledger.audit().expect("audit");
            prop_assert!(audit.is_conserved(), "{:?}", audit);
            for c in &channels {
                if let ChannelStatus::Settled(s) = ledger.channel(&c.id).expect("channel").status {
                    prop_assert!(s.to_payee.base_units() <= c.deposit);
                    prop_assert_eq!(s.to_payee.base_units() + s.to_payer.base_units(), c.deposit);
                }
            }
        }
    }
}
