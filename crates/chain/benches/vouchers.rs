//! What a voucher costs: the payer signs one per payment, the payee recovers its signer.
//!
//! ```text
//! cargo bench -p zerostate-chain --bench vouchers
//! ```

use std::hint::black_box;

use criterion::Criterion;
use zerostate_chain::{Address, B256, SettlementKey, VoucherDomain};
use zerostate_payment::Amount;

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let key = SettlementKey::from_secret(B256::repeat_byte(5)).expect("a key");
    let domain = VoucherDomain {
        chain_id: 31337,
        contract: Address::repeat_byte(0x11),
    };
    let channel = B256::repeat_byte(0x22);
    let mut n = 0u64;
    c.bench_function("voucher: sign", |b| {
        b.iter(|| {
            n += 1;
            black_box(
                domain
                    .sign(&key, channel, Amount::from_base_units(n))
                    .expect("signed"),
            )
        })
    });
    let amount = Amount::from_base_units(7);
    let signature = domain.sign(&key, channel, amount).expect("signed");
    c.bench_function("voucher: recover the signer", |b| {
        b.iter(|| {
            black_box(
                domain
                    .signer_of(channel, amount, black_box(&signature))
                    .expect("recovered"),
            )
        })
    });
    c.final_summary();
}
