//! Durable payments per second on one channel: the payer signs and persists, the payee
//! verifies and persists, both on SQLite in WAL mode with every commit synced.
//!
//! ```text
//! cargo bench -p zerostate-payment --bench payments
//! ```
//!
//! Payer and payee run on their own threads, as two nodes would. Rows: one payment per
//! commit on each side, then group commit (the payer signs and persists a group in one
//! commit, the payee verifies and persists it in one commit, and every acknowledgement
//! waits for that commit), and signing plus verifying alone on one thread.

use std::hint::black_box;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use zerostate_payment::{
    Amount, ChannelParams, ChannelState, Keypair, LedgerId, PayeeStore, PayerStore,
};

const NOW: u64 = 1_700_000_000;

struct Pair {
    _dir: tempfile::TempDir,
    payer: PayerStore,
    payee: PayeeStore,
    id: zerostate_payment::ChannelId,
}

fn pair() -> Pair {
    // Under the target directory: a real disk, so every sync is a real one.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let payer_key = Keypair::from_seed([1; 32]);
    let params = ChannelParams {
        ledger: LedgerId([9; 32]),
        payer: payer_key.public(),
        payee: Keypair::from_seed([2; 32]).public(),
        deposit: Amount::from_base_units(u64::MAX),
        expiry: NOW + 86_400,
        nonce: 1,
    };
    let payer = PayerStore::open(&dir.path().join("payer.db"), payer_key).expect("payer");
    let payee = PayeeStore::open(&dir.path().join("payee.db")).expect("payee");
    let id = payer.add_channel(&params).expect("channel");
    payee.add_channel(&params).expect("channel");
    Pair {
        _dir: dir,
        payer,
        payee,
        id,
    }
}

/// The payer and the payee each on their own thread, as on two nodes: the payer signs and
/// persists a group and hands it over (a bounded hand-off, at most two groups in flight);
/// the payee verifies and persists it and returns the acknowledgement. Returns the time
/// until the last group is acknowledged.
fn pipeline(p: &Pair, payments: &[(Amount, [u8; 32])], groups: u64) -> Duration {
    let (to_payee, inbox) = sync_channel::<Vec<zerostate_payment::SignedState>>(1);
    let (to_payer, acks) = sync_channel::<u64>(2);
    let start = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for states in inbox {
                let acks = p.payee.accept_batch(&states, NOW);
                let last = acks
                    .last()
                    .and_then(|a| a.as_ref().ok())
                    .expect("accepted")
                    .nonce;
                if to_payer.send(last).is_err() {
                    return;
                }
            }
        });
        let mut in_flight = 0;
        for _ in 0..groups {
            if in_flight == 2 {
                let last = acks.recv().expect("payee answers");
                p.payer.acknowledged(&p.id, last);
                in_flight -= 1;
            }
            let states = p.payer.pay_many(&p.id, payments, NOW).expect("pay");
            to_payee.send(states).expect("payee listens");
            in_flight += 1;
        }
        drop(to_payee);
        for last in acks.iter() {
            p.payer.acknowledged(&p.id, last);
        }
    });
    start.elapsed()
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut table: Vec<(String, f64)> = Vec::new();

    let mut group = c.benchmark_group("durable payments");
    for size in [1usize, 16, 64, 256] {
        let p = pair();
        let mut rate = Vec::new();
        group.throughput(Throughput::Elements(size as u64));
        let name = if size == 1 {
            "one payment per commit".to_string()
        } else {
            format!("group commit of {size}")
        };
        group.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let payments: Vec<_> = (0..size)
                    .map(|i| (Amount::from_base_units(1), [i as u8; 32]))
                    .collect();
                let elapsed = pipeline(&p, &payments, iters);
                rate.push((iters as f64 * size as f64) / elapsed.as_secs_f64());
                elapsed
            })
        });
        rate.sort_by(f64::total_cmp);
        table.push((name, rate[rate.len() / 2]));
    }
    group.finish();

    let key = Keypair::from_seed([1; 32]);
    let public = key.public();
    let mut rate = Vec::new();
    c.bench_function("sign and verify only", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                let s = ChannelState {
                    ledger: LedgerId([9; 32]),
                    channel: zerostate_payment::ChannelId([7; 32]),
                    nonce: i,
                    cumulative: Amount::from_base_units(i),
                    receipt: [1; 32],
                }
                .sign(&key);
                black_box(s.verify(&public)).expect("valid");
            }
            let elapsed = start.elapsed();
            rate.push(iters as f64 / elapsed.as_secs_f64());
            elapsed
        })
    });
    rate.sort_by(f64::total_cmp);
    table.push((
        "sign and verify only (no persistence)".into(),
        rate[rate.len() / 2],
    ));

    c.final_summary();
    let base = table[0].1;
    println!("\n| mode | payments per second (median) | vs one per commit |");
    println!("|---|---:|---:|");
    for (name, r) in &table {
        println!("| {name} | {r:.0} | {:.1}x |", r / base);
    }
}
