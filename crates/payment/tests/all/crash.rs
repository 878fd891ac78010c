//! A child process makes payments and ledger operations and is killed with SIGKILL at
//! random moments, 200 times; after every kill, each acknowledged payment and funding is on
//! disk, no nonce was signed twice, nothing exceeds a deposit, and the ledger's money adds up.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use zerostate_payment::{
    Amount, ChannelParams, ChannelState, PayeeStore, PayerStore, PaymentError, Settlement,
    SqliteLedger,
};

use crate::harness::{EXPIRY, NOW, open_request, params, payee_key, payer_key};

fn params_with(nonce: u64) -> ChannelParams {
    ChannelParams {
        ledger: crate::harness::ledger_id(),
        payer: payer_key().public(),
        payee: payee_key().public(),
        deposit: Amount::from_base_units(5),
        expiry: EXPIRY,
        nonce,
    }
}

/// Names the child's directory; set only for the child process.
const CHILD_ENV: &str = "ZEROSTATE_PAYMENT_CRASH_CHILD";
const DEPOSIT: &str = "1000000";
const KILLS: usize = 200;

/// The child's entry point: the parent runs this test binary filtered to this function with
/// `CHILD_ENV` set. Without it (a normal test run) there is nothing to do.
#[test]
fn crash_child_entry_point() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        run_child(Path::new(&dir));
    }
}

/// Pays forever, alternating single payments and groups of five, printing every
/// acknowledgement once the payee has made it durable.
fn run_child(dir: &Path) {
    let payer = PayerStore::open(&dir.join("payer.db"), payer_key()).expect("payer store");
    let payee = PayeeStore::open(&dir.join("payee.db")).expect("payee store");
    let p = params(DEPOSIT, 1);
    let id = p.id();
    for result in [payer.add_channel(&p), payee.add_channel(&p)] {
        match result {
            Ok(_) | Err(PaymentError::DuplicateChannel(_)) => {}
            Err(e) => panic!("cannot add the channel: {e}"),
        }
    }
    let mut out = std::io::stdout().lock();
    // States the payer signed but the payee never acknowledged are delivered again, in order.
    let accepted = payee.channel(&id).expect("payee channel").state.nonce;
    let pending: Vec<_> = payer
        .unacknowledged(&id)
        .expect("unacknowledged")
        .into_iter()
        .filter(|s| s.state.nonce > accepted)
        .collect();
    for ack in payee.accept_batch(&pending, NOW) {
        let ack = ack.expect("redelivered state accepted");
        writeln!(out, "ACK {} {}", ack.nonce, ack.cumulative.base_units()).expect("stdout");
    }
    let accepted = payee.channel(&id).expect("payee channel").state.nonce;
    payer.acknowledged(&id, accepted);
    let ledger = SqliteLedger::open(&dir.join("ledger.db"), crate::harness::ledger_id(), 3_600)
        .expect("ledger");
    let mut i: u64 = 0;
    loop {
        i += 1;
        // The ledger too: fund, and now and then open and settle a side channel.
        ledger
            .fund(&payer_key().public(), Amount::from_base_units(10))
            .expect("fund");
        writeln!(out, "FUNDED 10").expect("stdout");
        if i.is_multiple_of(8) {
            let side = params_with(fastrand::u64(2..));
            let opened = ledger
                .open(&payer_key().public(), &open_request(side), NOW)
                .expect("open side channel");
            let state = ChannelState {
                ledger: crate::harness::ledger_id(),
                channel: opened,
                nonce: 1,
                cumulative: Amount::from_base_units(3),
                receipt: [0; 32],
            }
            .sign(&payer_key());
            let payee_sig = payee_key().sign(&state.state.close_bytes());
            ledger
                .close_cooperative(&payee_key().public(), &state, &payee_sig, NOW)
                .expect("settle side channel");
        }
        let value = Amount::from_base_units(1 + i % 997);
        let receipt = [(i % 251) as u8; 32];
        let acks = if i.is_multiple_of(2) {
            let s = payer.pay(&id, value, receipt, NOW).expect("pay");
            vec![payee.accept(&s, NOW)]
        } else {
            let group: Vec<_> = (0..5).map(|_| (value, receipt)).collect();
            let states = payer.pay_many(&id, &group, NOW).expect("pay many");
            payee.accept_batch(&states, NOW)
        };
        let mut last = 0;
        for ack in acks {
            let ack = ack.expect("accepted");
            last = ack.nonce;
            writeln!(out, "ACK {} {}", ack.nonce, ack.cumulative.base_units()).expect("stdout");
        }
        out.flush().expect("stdout");
        payer.acknowledged(&id, last);
    }
}

#[test]
fn acknowledged_payments_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    // Seeded so a failure can be replayed; the seed is printed.
    let seed = fastrand::u64(..);
    println!("crash test seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let deposit = DEPOSIT.parse::<Amount>().expect("deposit");
    let mut seen: HashMap<u64, u64> = HashMap::new();
    let mut highest_ack = 0u64;
    let mut funded_acks = 0u128;

    for kill in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "crash::crash_child_entry_point",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("child starts");
        // The kill comes a random number (1 to 4) of acknowledged payments and then a random
        // few milliseconds into the child's work, not at a time from its start: on a loaded
        // machine or in a slow build a child would otherwise be killed before it paid.
        let stdout = child.stdout.take().expect("stdout");
        let (ack_tx, ack_rx) = std::sync::mpsc::sync_channel(4096);
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = Vec::new();
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if line.starts_with("ACK ") {
                    let _ = ack_tx.try_send(());
                }
                lines.push(line);
            }
            lines
        });
        for _ in 0..rng.usize(1..=4) {
            if ack_rx.recv_timeout(Duration::from_secs(10)).is_err() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.u64(0..30)));
        child.kill().expect("SIGKILL");
        let _ = child.wait().expect("child reaped");
        let lines = reader.join().expect("reader");
        for line in &lines {
            if let Some(units) = line.strip_prefix("FUNDED ") {
                funded_acks += units.parse::<u128>().expect("units");
                continue;
            }
            let Some(rest) = line.strip_prefix("ACK ") else {
                continue;
            };
            let mut parts = rest.split(' ').map(|v| v.parse::<u64>().expect("number"));
            let (nonce, cumulative) = (
                parts.next().expect("nonce"),
                parts.next().expect("cumulative"),
            );
            // The same nonce always carries the same amount: it was never signed twice.
            let first = *seen.entry(nonce).or_insert(cumulative);
            assert_eq!(
                first, cumulative,
                "kill {kill}: nonce {nonce} acknowledged with two amounts"
            );
            highest_ack = highest_ack.max(nonce);
        }

        let ledger = SqliteLedger::open(
            &dir.path().join("ledger.db"),
            crate::harness::ledger_id(),
            3_600,
        )
        .expect("ledger");
        let audit = ledger.audit().expect("audit");
        assert!(audit.is_conserved(), "kill {kill}: {audit:?}");
        assert!(
            audit.funded >= funded_acks,
            "kill {kill}: acknowledged funding lost: {audit:?} < {funded_acks}"
        );
        drop(ledger);

        let (payer, payee, id) = reopen(dir.path());
        let theirs = payee.channel(&id).expect("payee channel");
        let ours = payer.channel(&id).expect("payer channel");
        assert!(
            theirs.state.nonce >= highest_ack,
            "kill {kill}: acknowledged nonce {highest_ack} lost (payee has {})",
            theirs.state.nonce
        );
        if let Some(&cumulative) = seen.get(&theirs.state.nonce) {
            assert_eq!(
                theirs.state.cumulative.base_units(),
                cumulative,
                "kill {kill}"
            );
        }
        assert!(
            ours.state.nonce >= theirs.state.nonce,
            "kill {kill}: payer behind payee"
        );
        assert!(
            ours.state.nonce - theirs.state.nonce <= 5,
            "kill {kill}: more than one group in flight"
        );
        for local in [&theirs, &ours] {
            assert!(
                local.state.cumulative <= deposit,
                "kill {kill}: beyond the deposit"
            );
            if let Some(signed) = local.signed() {
                signed
                    .verify(&payer_key().public())
                    .expect("stored state is the payer's");
            }
        }
    }
    assert!(
        highest_ack >= 200,
        "the children made too little progress to mean anything: {highest_ack}"
    );
    assert!(funded_acks > 0, "the children never reached the ledger");
    println!(
        "{KILLS} kills, {highest_ack} payments and {funded_acks} units of funding acknowledged"
    );
}

fn reopen(dir: &Path) -> (PayerStore, PayeeStore, zerostate_payment::ChannelId) {
    let payer = PayerStore::open(&dir.join("payer.db"), payer_key()).expect("payer store");
    let payee = PayeeStore::open(&dir.join("payee.db")).expect("payee store");
    (payer, payee, params(DEPOSIT, 1).id())
}
