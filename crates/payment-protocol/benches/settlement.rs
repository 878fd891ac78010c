//! Payments per second through the whole payment protocol, settled on the embedded ledger
//! and on a chain (a real anvil from `PATH`): the payer signs and persists each state, the
//! payee verifies and persists it and acknowledges, one payment at a time on one channel,
//! over the in-memory transport of the tests. On a chain each state also carries the
//! payer's EIP-712 voucher, which the payee recovers and keeps; nothing goes on chain
//! between the open and the close.
//!
//! ```text
//! cargo bench -p zerostate-payment-protocol --bench settlement
//! ```
//!
//! Rounds alternate between the two, so that the machine's noise falls on both; the table
//! gives each one's median rate with the range over the rounds, and the ratio of the
//! medians.

#[allow(dead_code)]
#[path = "../tests/all/harness.rs"]
mod harness;

use std::time::Instant;

use harness::{Cast, ChainCast};
use zerostate_p2p::PeerId;
use zerostate_payment_protocol::{Misbehaviour, Payments};

/// Payments per round.
const PAYMENTS: u64 = 300;
/// Rounds of each.
const ROUNDS: usize = 7;
/// Each channel's deposit: room for every payment of the run, one base unit each.
const DEPOSIT: u64 = 1_000_000;

/// Pays `payee` `PAYMENTS` times one base unit, receipts numbered from `from`; the rate.
async fn round(payer: &Payments, payee: PeerId, from: u64) -> f64 {
    let start = Instant::now();
    for n in from..from + PAYMENTS {
        let mut receipt = [0u8; 32];
        receipt[..8].copy_from_slice(&n.to_be_bytes());
        let record = payer.pay(payee, 1, receipt).await;
        assert_eq!(record.status, "paid", "{record:?}");
    }
    PAYMENTS as f64 / start.elapsed().as_secs_f64()
}

fn median(rates: &mut [f64]) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let ledger = Cast::with_deposit(DEPOSIT, 10 * DEPOSIT);
        let Some(chain) = ChainCast::start(Misbehaviour::default(), 3600, DEPOSIT).await else {
            return;
        };
        // The channels are opened (and on chain, mined) before anything is timed.
        round(&ledger.payer.payments, ledger.payee.peer, 0).await;
        round(&chain.payer.payments, chain.payee.peer, 0).await;
        let (mut on_ledger, mut on_chain) = (Vec::new(), Vec::new());
        for r in 1..=ROUNDS as u64 {
            let from = r * PAYMENTS;
            on_ledger.push(round(&ledger.payer.payments, ledger.payee.peer, from).await);
            on_chain.push(round(&chain.payer.payments, chain.payee.peer, from).await);
        }
        let ratios: Vec<f64> = on_chain
            .iter()
            .zip(&on_ledger)
            .map(|(c, l)| c / l)
            .collect();
        let range = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            (lo, hi)
        };
        let (ll, lh) = range(&on_ledger);
        let (cl, ch) = range(&on_chain);
        let (rl, rh) = range(&ratios);
        let (l, c) = (median(&mut on_ledger), median(&mut on_chain));
        println!(
            "\n{ROUNDS} rounds of {PAYMENTS} payments each, alternating\n\n\
             | settled on | payments/s (median) | range over rounds |\n|---|---:|---:|\n\
             | the embedded ledger | {l:.0} | {ll:.0}–{lh:.0} |\n\
             | a chain (anvil) | {c:.0} | {cl:.0}–{ch:.0} |\n\n\
             chain / ledger: {:.3} (medians); per round {rl:.3}–{rh:.3}",
            c / l
        );
    });
}
