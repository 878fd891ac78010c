//! Parties, a ledger and an open channel, for the tests to start from.

use std::path::Path;

use zerostate_payment::{
    Amount, ChannelId, ChannelParams, Keypair, LedgerId, OpenRequest, PayeeStore, PayerStore,
    Settlement, SqliteLedger,
};

pub(crate) const NOW: u64 = 1_700_000_000;
pub(crate) const EXPIRY: u64 = NOW + 86_400;
pub(crate) const CHALLENGE: u64 = 3_600;

/// The ledger every test channel lives on.
pub(crate) fn ledger_id() -> LedgerId {
    LedgerId::of_operator(&Keypair::from_seed([9; 32]).public())
}

pub(crate) fn amount(s: &str) -> Amount {
    s.parse().expect("test amount")
}

pub(crate) fn payer_key() -> Keypair {
    Keypair::from_seed([1; 32])
}

pub(crate) fn payee_key() -> Keypair {
    Keypair::from_seed([2; 32])
}

pub(crate) fn params(deposit: &str, nonce: u64) -> ChannelParams {
    ChannelParams {
        ledger: ledger_id(),
        payer: payer_key().public(),
        payee: payee_key().public(),
        deposit: amount(deposit),
        expiry: EXPIRY,
        nonce,
    }
}

pub(crate) fn open_request(p: ChannelParams) -> OpenRequest {
    let bytes = p.open_bytes();
    OpenRequest {
        params: p,
        payer_signature: payer_key().sign(&bytes),
        payee_signature: payee_key().sign(&bytes),
    }
}

/// A ledger with a funded payer and one open channel of `deposit`.
pub(crate) fn ledger_with_channel(deposit: &str) -> (SqliteLedger, ChannelId) {
    let ledger = SqliteLedger::in_memory(ledger_id(), CHALLENGE).expect("ledger");
    ledger
        .fund(&payer_key().public(), amount("100"))
        .expect("fund");
    let id = ledger
        .open(
            &payer_key().public(),
            &open_request(params(deposit, 1)),
            NOW,
        )
        .expect("open");
    (ledger, id)
}

/// Payer and payee stores in `dir`, both knowing one channel of `deposit`.
pub(crate) fn stores(dir: &Path, deposit: &str) -> (PayerStore, PayeeStore, ChannelId) {
    let payer = PayerStore::open(&dir.join("payer.db"), payer_key()).expect("payer store");
    let payee = PayeeStore::open(&dir.join("payee.db")).expect("payee store");
    let p = params(deposit, 1);
    let id = payer.add_channel(&p).expect("payer channel");
    payee.add_channel(&p).expect("payee channel");
    (payer, payee, id)
}
