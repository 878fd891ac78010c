//! The payee's vouchers for channels settled on a chain: kept in the commit that keeps
//! their state, only ever replaced by a larger one, never over the deposit, and brought
//! into a store of the version before.

use zerostate_payment::{HeldVoucher, PayeeStore};

use crate::harness::{NOW, amount, stores};

fn voucher(units: &str, byte: u8) -> HeldVoucher {
    HeldVoucher {
        amount: amount(units),
        signature: vec![byte; 65],
    }
}

#[test]
fn a_voucher_is_kept_with_its_state_and_only_a_larger_one_replaces_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (payer, payee, id) = stores(dir.path(), "10");
    assert_eq!(payee.best_voucher(&id).expect("read"), None);
    let first = payer.pay(&id, amount("3"), [1; 32], NOW).expect("pay");
    payee
        .accept_with_voucher(&first, &[1; 65], NOW, || Ok(()))
        .expect("accepted with its voucher");
    assert_eq!(
        payee.best_voucher(&id).expect("read"),
        Some(voucher("3", 1))
    );
    // A refused state keeps no voucher: the same state again.
    assert!(
        payee
            .accept_with_voucher(&first, &[9; 65], NOW, || Ok(()))
            .is_err()
    );
    // Nor does a refused voucher keep its state: the next state with a bad voucher.
    let second = payer.pay(&id, amount("1"), [2; 32], NOW).expect("pay");
    let refused = payee
        .accept_with_voucher(&second, &[8; 65], NOW, || Err("not the payer's".into()))
        .expect_err("a bad voucher");
    assert!(refused.to_string().contains("not the payer's"), "{refused}");
    assert_eq!(payee.channel(&id).expect("channel").state.nonce, 1);
    payee
        .accept_with_voucher(&second, &[2; 65], NOW, || Ok(()))
        .expect("the same state with a good voucher");
    assert_eq!(
        payee.best_voucher(&id).expect("read"),
        Some(voucher("4", 2))
    );
    // A smaller voucher does not replace it; a larger one does; none over the deposit.
    payee
        .hold_voucher(&id, &voucher("2", 2))
        .expect("kept or not");
    payee.hold_voucher(&id, &voucher("7", 3)).expect("larger");
    assert!(payee.hold_voucher(&id, &voucher("11", 4)).is_err());
    drop(payee);
    let payee = PayeeStore::open(&dir.path().join("payee.db")).expect("reopen");
    assert_eq!(
        payee.best_voucher(&id).expect("read"),
        Some(voucher("7", 3))
    );
}

#[test]
fn a_store_of_the_version_before_vouchers_is_brought_up_to_date() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (payer, payee, id) = stores(dir.path(), "10");
    drop(payee);
    let path = dir.path().join("payee.db");
    rusqlite::Connection::open(&path)
        .expect("open")
        .execute_batch("DROP TABLE vouchers; PRAGMA user_version = 3;")
        .expect("made a version 3 store");
    let payee = PayeeStore::open(&path).expect("migrated");
    let state = payer.pay(&id, amount("1"), [1; 32], NOW).expect("pay");
    payee
        .accept_with_voucher(&state, &[5; 65], NOW, || Ok(()))
        .expect("accepted");
    assert_eq!(
        payee.best_voucher(&id).expect("read"),
        Some(voucher("1", 5))
    );
}
