//! Random sequences of ledger operations: money is conserved, no channel pays out more than
//! its deposit, the state with the highest cumulative amount submitted in the window always
//! wins (whatever its nonce), so the payee is never paid less than the best state it holds
//! and submits in time, and only the parties may act where the rules say so.

use proptest::prelude::*;
use zerostate_payment::{
    Amount, ChannelId, ChannelParams, ChannelState, ChannelStatus, Keypair, LedgerId, OpenRequest,
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
    /// The payer signs a new state: more (`add` > 0) or, to cheat, less than before.
    Sign {
        channel: usize,
        add: u64,
        cheat: bool,
    },
    StartClose {
        channel: usize,
        state: Option<usize>,
        by: Party,
    },
    Dispute {
        channel: usize,
        state: usize,
        by: Party,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Party {
    Payer,
    Payee,
    Stranger,
}

fn party() -> impl Strategy<Value = Party> {
    prop_oneof![4 => Just(Party::Payer), 4 => Just(Party::Payee), 1 => Just(Party::Stranger)]
}

fn op() -> impl Strategy<Value = Op> {
    // Few channels and states, so closes, disputes and settlements meet each other often.
    prop_oneof![
        2 => (0..3usize, 1..1_000u64).prop_map(|(who, units)| Op::Fund { who, units }),
        2 => (0..3usize, 0..3usize, 1..500u64, 1..400u64)
            .prop_map(|(payer, payee, deposit, expiry_in)| Op::Open { payer, payee, deposit, expiry_in }),
        5 => (0..2usize, 0..60u64, proptest::bool::weighted(0.2))
            .prop_map(|(channel, add, cheat)| Op::Sign { channel, add, cheat }),
        2 => (0..2usize, proptest::option::of(0..3usize), party())
            .prop_map(|(channel, state, by)| Op::StartClose { channel, state, by }),
        4 => (0..2usize, 0..3usize, party()).prop_map(|(channel, state, by)| Op::Dispute { channel, state, by }),
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
    /// States the payer signed, in nonce order (some may exceed the deposit, some may pay
    /// less than the one before).
    states: Vec<SignedState>,
    /// The best amount submitted to a unilateral close, and who started it.
    closing: Option<(u64, Party)>,
    /// The best amount the payee submitted to the close in time, if any.
    payee_submitted: Option<u64>,
}

impl ModelChannel {
    fn key<'k>(&self, keys: &'k [Keypair], by: Party) -> &'k Keypair {
        match by {
            Party::Payer => &keys[self.payer],
            Party::Payee => &keys[self.payee],
            Party::Stranger => &keys[3],
        }
    }
}

fn newest(states: &[SignedState], back: usize) -> Option<SignedState> {
    states.len().checked_sub(back + 1).map(|i| states[i])
}

fn keys() -> Vec<Keypair> {
    // Three account holders and a stranger who is party to nothing.
    (1..=4u8).map(|i| Keypair::from_seed([i; 32])).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn ledger_invariants_hold(ops in proptest::collection::vec(op(), 1..60)) {
        let keys = keys();
        let ledger_id = LedgerId([9; 32]);
        let ledger = SqliteLedger::in_memory(ledger_id, CHALLENGE).expect("ledger");
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
                        ledger: ledger_id,
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
                    match ledger.open(&keys[payer].public(), &req, now) {
                        Ok(id) => {
                            prop_assert!(before.base_units() >= deposit);
                            channels.push(ModelChannel {
                                id, payer, payee, deposit, states: Vec::new(), closing: None, payee_submitted: None,
                            });
                        }
                        Err(PaymentError::InsufficientFunds { .. }) => prop_assert!(before.base_units() < deposit),
                        Err(PaymentError::InvalidChannel(_)) => prop_assert_eq!(payer, payee),
                        Err(e) => prop_assert!(false, "unexpected open error {}", e),
                    }
                }
                Op::Sign { channel, add, cheat } => {
                    if let Some(c) = channels.get_mut(channel) {
                        let (nonce, cum) = c.states.last().map_or((0, 0), |s| (s.state.nonce, s.state.cumulative.base_units()));
                        let cumulative = if cheat { cum.saturating_sub(add) } else { cum + add };
                        let state = ChannelState {
                            ledger: ledger_id,
                            channel: c.id,
                            nonce: nonce + 1,
                            cumulative: Amount::from_base_units(cumulative),
                            receipt: [(nonce % 251) as u8; 32],
                        };
                        c.states.push(state.sign(&keys[c.payer]));
                    }
                }
                Op::StartClose { channel, state, by } => {
                    if let Some(c) = channels.get_mut(channel) {
                        let s = state.and_then(|back| newest(&c.states, back));
                        let status = ledger.channel(&c.id).expect("channel").status;
                        let caller = c.key(&keys, by).public();
                        match ledger.start_close(&caller, &c.id, s.as_ref(), now) {
                            Ok(ends) => {
                                prop_assert_eq!(status, ChannelStatus::Open);
                                prop_assert!(by != Party::Stranger);
                                prop_assert_eq!(ends, now + CHALLENGE);
                                let amount = s.map_or(0, |s| s.state.cumulative.base_units());
                                c.closing = Some((amount, by));
                                if by == Party::Payee {
                                    c.payee_submitted = Some(amount);
                                }
                            }
                            Err(PaymentError::NotAllowed { .. }) => prop_assert_eq!(by, Party::Stranger),
                            Err(PaymentError::Overdraft { .. }) => {
                                prop_assert!(s.is_some_and(|s| s.state.cumulative.base_units() > c.deposit));
                            }
                            Err(PaymentError::WrongStatus { .. }) => prop_assert!(status != ChannelStatus::Open),
                            Err(e) => prop_assert!(false, "unexpected start_close error {}", e),
                        }
                    }
                }
                Op::Dispute { channel, state, by } => {
                    if let Some(c) = channels.get_mut(channel)
                        && let Some(s) = newest(&c.states, state)
                    {
                        let status = ledger.channel(&c.id).expect("channel").status;
                        let caller = c.key(&keys, by).public();
                        let result = ledger.dispute(&caller, &s, now);
                        let within = s.state.cumulative.base_units() <= c.deposit;
                        match status {
                            ChannelStatus::Closing { state: current, challenge_ends, .. } => {
                                let (_, closer) = c.closing.expect("the model saw the close");
                                let allowed = by != Party::Stranger && by != closer;
                                let should_win = allowed
                                    && now < challenge_ends
                                    && within
                                    && s.state.cumulative > current.cumulative;
                                // A higher amount always wins a dispute inside the window,
                                // whatever its nonce.
                                prop_assert_eq!(result.is_ok(), should_win, "{:?}", result);
                                if !allowed {
                                    let not_allowed = matches!(result, Err(PaymentError::NotAllowed { .. }));
                                    prop_assert!(not_allowed, "{:?}", result);
                                }
                                if should_win {
                                    c.closing = Some((s.state.cumulative.base_units(), closer));
                                }
                                if allowed && by == Party::Payee && now < challenge_ends && within {
                                    let best = c.payee_submitted.unwrap_or(0).max(s.state.cumulative.base_units());
                                    c.payee_submitted = Some(best);
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
                        if let Ok(settled) = ledger.close_cooperative(&keys[c.payee].public(), &s, &sig, now) {
                            prop_assert_eq!(settled.to_payee, s.state.cumulative);
                        }
                    }
                }
                Op::Finalize { channel } => {
                    if let Some(c) = channels.get(channel)
                        && let Ok(settled) = ledger.finalize(&keys[3].public(), &c.id, now)
                    {
                        let (best, _) = c.closing.expect("a finalized channel was closing");
                        prop_assert_eq!(settled.to_payee.base_units(), best);
                        // The payee is never paid less than the best state it submitted in time.
                        if let Some(submitted) = c.payee_submitted {
                            prop_assert!(settled.to_payee.base_units() >= submitted);
                        }
                    }
                }
                Op::Refund { channel } => {
                    if let Some(c) = channels.get(channel)
                        && let Ok(settled) = ledger.refund_expired(&keys[3].public(), &c.id, now)
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
