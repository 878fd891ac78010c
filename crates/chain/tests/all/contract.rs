//! The contract's rules, each tried by the party it protects against.

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::ProviderBuilder;
use alloy::sol;
use zerostate_chain::{
    Chain, ChainError, ChannelEvent, OnChainStatus, VoucherDomain, ZeroStateChannels, to_wei,
};
use zerostate_payment::Amount;

use crate::anvil::{self, Anvil};

sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    ReentrantPayee,
    "../../contracts/build/ReentrantPayee.json"
);

fn units(text: &str) -> Amount {
    text.parse().expect("amount")
}

fn salt(n: u8) -> B256 {
    B256::repeat_byte(n)
}

/// A chain with the contract deployed, a funded payer and payee, each connected.
struct Parties {
    anvil: Anvil,
    faucet: Chain,
    payer: Chain,
    payee: Chain,
}

async fn parties() -> Option<Parties> {
    let anvil = anvil::start(31337).await?;
    let dev = anvil.dev_key();
    let (contract, _) = Chain::deploy(anvil.url(), &dev).await.expect("deploy");
    let faucet = Chain::connect(anvil.url(), contract, dev, 1)
        .await
        .expect("connect");
    let payer_key = anvil.funded_key(&faucet, 100).await.expect("fund");
    let payee_key = anvil.funded_key(&faucet, 1).await.expect("fund");
    let payer = Chain::connect(anvil.url(), contract, payer_key, 1)
        .await
        .expect("payer");
    let payee = Chain::connect(anvil.url(), contract, payee_key, 1)
        .await
        .expect("payee");
    Some(Parties {
        anvil,
        faucet,
        payer,
        payee,
    })
}

fn refusal(result: Result<impl std::fmt::Debug, ChainError>) -> String {
    match result {
        Err(ChainError::Refused { reason, .. }) => reason,
        other => panic!("expected the contract to refuse, got {other:?}"),
    }
}

fn voucher(payer: &Chain, id: B256, amount: Amount) -> [u8; 65] {
    payer.domain().sign(payer.key(), id, amount).expect("sign")
}

#[tokio::test]
async fn the_payee_closes_at_exactly_the_voucher_and_each_side_withdraws_its_part() {
    let Some(p) = parties().await else { return };
    let opened = p
        .payer
        .open(p.payee.address(), salt(1), 60, units("5"))
        .await
        .expect("open");
    let on_chain = p.payer.channel(opened.id).await.expect("read");
    assert_eq!(on_chain.status, OnChainStatus::Open);
    assert_eq!(
        (on_chain.payer, on_chain.payee),
        (p.payer.address(), p.payee.address())
    );
    assert_eq!(
        (on_chain.deposit, on_chain.challenge_period),
        (units("5"), 60)
    );

    // Vouchers off chain; the payee closes with the latest.
    let mut latest = [0; 65];
    for paid in ["0.5", "1.25", "3.000000001"] {
        latest = voucher(&p.payer, opened.id, units(paid));
    }
    let before = p
        .payee
        .coin_balance(p.payee.address())
        .await
        .expect("balance");
    p.payee
        .close(opened.id, units("3.000000001"), &latest)
        .await
        .expect("close");
    assert_eq!(
        p.payee.channel(opened.id).await.expect("read").status,
        OnChainStatus::Settled
    );
    assert_eq!(
        p.payee.settled_balance(p.payee.address()).await.expect("b"),
        units("3.000000001")
    );
    assert_eq!(
        p.payer.settled_balance(p.payer.address()).await.expect("b"),
        units("1.999999999")
    );

    p.payee.withdraw().await.expect("withdraw");
    let after = p
        .payee
        .coin_balance(p.payee.address())
        .await
        .expect("balance");
    // Paid its part, less the gas of one withdrawal.
    assert!(
        after > before && after < before + to_wei(units("3.000000001")),
        "{before} -> {after}"
    );
    p.payer.withdraw().await.expect("payer withdraws the rest");
    let nothing = refusal(p.payee.withdraw().await);
    assert!(nothing.contains("nothing is settled"), "{nothing}");

    // A settled channel is spent: no second close, no reopening its id.
    let again = refusal(
        p.payee
            .close(opened.id, units("3.000000001"), &latest)
            .await,
    );
    assert!(again.contains("settled"), "{again}");
    let reopened = refusal(
        p.payer
            .open(p.payee.address(), salt(1), 60, units("5"))
            .await,
    );
    assert!(reopened.contains("exists or existed"), "{reopened}");

    let events = p
        .payer
        .events(0, p.payer.block_number().await.expect("n"))
        .await
        .expect("events");
    assert!(
        matches!(events.first(), Some(ChannelEvent::Opened { id, deposit, .. }) if *id == opened.id && *deposit == units("5"))
    );
    assert!(events.iter().any(
        |e| matches!(e, ChannelEvent::Settled { to_payee, to_payer, .. }
        if *to_payee == units("3.000000001") && *to_payer == units("1.999999999"))
    ));
}

#[tokio::test]
async fn a_payers_close_is_topped_by_a_higher_voucher_and_otherwise_finalized_after_its_period() {
    let Some(p) = parties().await else { return };
    // Topped: the payer names 1, the payee holds a voucher for 3.
    let topped = p
        .payer
        .open(p.payee.address(), salt(2), 600, units("5"))
        .await
        .expect("open");
    let best = voucher(&p.payer, topped.id, units("3"));
    p.payer
        .start_close(topped.id, units("1"))
        .await
        .expect("start close");
    let closing = p.payer.channel(topped.id).await.expect("read");
    assert_eq!(
        (closing.status, closing.closing_amount),
        (OnChainStatus::Closing, units("1"))
    );
    let early = refusal(p.payer.finalize(topped.id).await);
    assert!(early.contains("challenge period runs until"), "{early}");
    p.payee
        .close(topped.id, units("3"), &best)
        .await
        .expect("dispute");
    assert_eq!(
        p.payee.settled_balance(p.payee.address()).await.expect("b"),
        units("3")
    );

    // A voucher below what the payer named pays the payer's figure: the larger wins.
    let low = p
        .payer
        .open(p.payee.address(), salt(3), 600, units("5"))
        .await
        .expect("open");
    let small = voucher(&p.payer, low.id, units("0.5"));
    p.payer
        .start_close(low.id, units("2"))
        .await
        .expect("start close");
    p.payee
        .close(low.id, units("0.5"), &small)
        .await
        .expect("close");
    assert_eq!(
        p.payee.settled_balance(p.payee.address()).await.expect("b"),
        units("5")
    );

    // Nobody answers: after the period anyone finalizes on the named amount, and the
    // payee's answer comes too late.
    let vanished = p
        .payer
        .open(p.payee.address(), salt(4), 600, units("5"))
        .await
        .expect("open");
    let late = voucher(&p.payer, vanished.id, units("4"));
    p.payer
        .start_close(vanished.id, units("0"))
        .await
        .expect("start close");
    p.anvil.advance(601).await.expect("advance");
    let too_late = refusal(p.payee.close(vanished.id, units("4"), &late).await);
    assert!(too_late.contains("challenge period is over"), "{too_late}");
    p.faucet
        .finalize(vanished.id)
        .await
        .expect("anyone finalizes");
    let settled = p.payer.channel(vanished.id).await.expect("read");
    assert_eq!(settled.status, OnChainStatus::Settled);
    // 5 - 3 from the first, 5 - 2 from the second, 5 - 0 from the third.
    assert_eq!(
        p.payer.settled_balance(p.payer.address()).await.expect("b"),
        units("10")
    );
}

#[tokio::test]
async fn vouchers_for_another_chain_contract_or_signer_and_strangers_are_refused() {
    let Some(p) = parties().await else { return };
    let opened = p
        .payer
        .open(p.payee.address(), salt(5), 60, units("5"))
        .await
        .expect("open");
    // The same channel (payer, payee, salt) on a second deployment of the contract.
    let (second, _) = Chain::deploy(p.anvil.url(), &p.anvil.dev_key())
        .await
        .expect("deploy");
    let payer_b = Chain::connect(p.anvil.url(), second, p.payer.key().clone(), 1)
        .await
        .expect("b");
    let payee_b = Chain::connect(p.anvil.url(), second, p.payee.key().clone(), 1)
        .await
        .expect("b");
    let opened_b = payer_b
        .open(p.payee.address(), salt(5), 60, units("5"))
        .await
        .expect("open");
    assert_eq!(opened.id, opened_b.id);

    let for_a = voucher(&p.payer, opened.id, units("2"));
    let replayed = refusal(payee_b.close(opened.id, units("2"), &for_a).await);
    assert!(
        replayed.contains("not signed by the channel's payer"),
        "{replayed}"
    );

    let other_chain = VoucherDomain {
        chain_id: 1,
        ..p.payer.domain()
    };
    let foreign = other_chain
        .sign(p.payer.key(), opened.id, units("2"))
        .expect("sign");
    let replayed = refusal(p.payee.close(opened.id, units("2"), &foreign).await);
    assert!(
        replayed.contains("not signed by the channel's payer"),
        "{replayed}"
    );

    // Signed by the payee itself, or a different amount than the one signed.
    let forged = p
        .payee
        .domain()
        .sign(p.payee.key(), opened.id, units("5"))
        .expect("sign");
    assert!(refusal(p.payee.close(opened.id, units("5"), &forged).await).contains("not signed"));
    assert!(refusal(p.payee.close(opened.id, units("3"), &for_a).await).contains("not signed"));

    // The malleable twin of a good voucher.
    let parsed = alloy::primitives::Signature::from_raw(&for_a).expect("parse");
    let n = U256::from_str_radix(
        "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141",
        16,
    )
    .expect("order");
    let twin = alloy::primitives::Signature::new(parsed.r(), n - parsed.s(), !parsed.v());
    assert!(
        refusal(p.payee.close(opened.id, units("2"), &twin.as_bytes()).await)
            .contains("not signed")
    );

    // Strangers: only the payee closes, only the payer starts a close.
    let stranger = Chain::connect(
        p.anvil.url(),
        p.payer.domain().contract,
        p.anvil.dev_key(),
        1,
    )
    .await
    .expect("stranger");
    assert!(
        refusal(stranger.close(opened.id, units("2"), &for_a).await)
            .contains("only the channel's payee")
    );
    assert!(
        refusal(stranger.start_close(opened.id, units("0")).await)
            .contains("only the channel's payer")
    );
    assert!(
        refusal(p.payee.start_close(opened.id, units("0")).await)
            .contains("only the channel's payer")
    );

    // The good voucher still works where it belongs.
    p.payee
        .close(opened.id, units("2"), &for_a)
        .await
        .expect("close");
}

#[tokio::test]
async fn amounts_past_the_deposit_and_bad_terms_are_refused() {
    let Some(p) = parties().await else { return };
    let payee = p.payee.address();
    assert!(
        refusal(p.payer.open(payee, salt(6), 0, units("1")).await).contains("challenge period")
    );
    assert!(
        refusal(
            p.payer
                .open(payee, salt(6), 30 * 86_400 + 1, units("1"))
                .await
        )
        .contains("challenge period")
    );
    assert!(
        refusal(p.payer.open(payee, salt(6), 60, Amount::ZERO).await).contains("deposit is zero")
    );
    assert!(
        refusal(
            p.payer
                .open(p.payer.address(), salt(6), 60, units("1"))
                .await
        )
        .contains("payer itself")
    );
    assert!(
        refusal(p.payer.open(Address::ZERO, salt(6), 60, units("1")).await)
            .contains("payee is empty")
    );

    let opened = p
        .payer
        .open(payee, salt(6), 60, units("5"))
        .await
        .expect("open");
    let over = voucher(&p.payer, opened.id, units("5.000000001"));
    let refused = refusal(p.payee.close(opened.id, units("5.000000001"), &over).await);
    assert!(refused.contains("over the deposit"), "{refused}");

    // Values no Amount can hold, sent through the raw binding: the largest uint256.
    let provider = ProviderBuilder::new()
        .wallet(p.payer.key().signer().clone())
        .connect_http(p.anvil.url().parse().expect("url"));
    let raw = ZeroStateChannels::new(p.payer.domain().contract, provider);
    let error = raw
        .startClose(opened.id, U256::MAX)
        .send()
        .await
        .expect_err("overflow");
    let decoded = error.as_decoded_interface_error::<ZeroStateChannels::ZeroStateChannelsErrors>();
    assert!(
        matches!(
            decoded,
            Some(ZeroStateChannels::ZeroStateChannelsErrors::AmountOverDeposit(_))
        ),
        "{error}"
    );
    let error = raw
        .close(opened.id, U256::MAX, Bytes::from(over.to_vec()))
        .send()
        .await
        .expect_err("not the payee");
    assert!(error.as_revert_data().is_some(), "{error}");
    assert_eq!(
        p.payer.channel(opened.id).await.expect("read").status,
        OnChainStatus::Open
    );
}

#[tokio::test]
async fn a_payee_that_reenters_withdraw_is_paid_once() {
    let Some(p) = parties().await else { return };
    let provider = ProviderBuilder::new()
        .wallet(
            alloy::signers::local::PrivateKeySigner::from_bytes(
                &anvil::DEV_KEY.parse().expect("k"),
            )
            .expect("key"),
        )
        .connect_http(p.anvil.url().parse().expect("url"));
    let attacker = ReentrantPayee::deploy(provider, p.payer.domain().contract)
        .await
        .expect("deploy the attacker");
    let opened = p
        .payer
        .open(*attacker.address(), salt(7), 60, units("5"))
        .await
        .expect("open");
    let paid = voucher(&p.payer, opened.id, units("2"));
    attacker
        .closeChannel(opened.id, to_wei(units("2")), Bytes::from(paid.to_vec()))
        .send()
        .await
        .expect("send")
        .get_receipt()
        .await
        .expect("close");
    attacker
        .take()
        .send()
        .await
        .expect("send")
        .get_receipt()
        .await
        .expect("take");

    let received = attacker.received().call().await.expect("received");
    let reentries = attacker.reentries().call().await.expect("reentries");
    assert_eq!(received, to_wei(units("2")), "paid exactly its part, once");
    assert_eq!(
        reentries,
        U256::from(1),
        "it tried to enter again, and failed"
    );
    assert_eq!(
        p.payer
            .settled_balance(*attacker.address())
            .await
            .expect("b"),
        Amount::ZERO
    );
    let held = p
        .payer
        .coin_balance(p.payer.domain().contract)
        .await
        .expect("contract");
    assert_eq!(held, to_wei(units("3")), "the payer's part is still there");
    p.payer.withdraw().await.expect("the payer takes the rest");
    assert_eq!(
        p.payer
            .coin_balance(p.payer.domain().contract)
            .await
            .expect("c"),
        U256::ZERO
    );
}

#[tokio::test]
async fn gas_per_operation() {
    let Some(p) = parties().await else { return };
    let payee = p.payee.address();
    let open = p
        .payer
        .open(payee, salt(8), 60, units("5"))
        .await
        .expect("open");
    let close = p
        .payee
        .close(open.id, units("1"), &voucher(&p.payer, open.id, units("1")))
        .await
        .expect("close");
    let disputed = p
        .payer
        .open(payee, salt(9), 60, units("5"))
        .await
        .expect("open");
    let start = p
        .payer
        .start_close(disputed.id, units("1"))
        .await
        .expect("start");
    let dispute = p
        .payee
        .close(
            disputed.id,
            units("2"),
            &voucher(&p.payer, disputed.id, units("2")),
        )
        .await
        .expect("dispute");
    let finalized = p
        .payer
        .open(payee, salt(10), 60, units("5"))
        .await
        .expect("open");
    p.payer
        .start_close(finalized.id, units("1"))
        .await
        .expect("start");
    p.anvil.advance(61).await.expect("advance");
    let finalize = p.payer.finalize(finalized.id).await.expect("finalize");
    let withdraw = p.payee.withdraw().await.expect("withdraw");
    println!("| operation | gas |\n|---|---|");
    for (name, gas) in [
        ("open", open.tx.gas_used),
        ("close (payee, with a voucher)", close.gas_used),
        ("startClose (payer)", start.gas_used),
        (
            "close answering a payer's close (dispute)",
            dispute.gas_used,
        ),
        ("finalize", finalize.gas_used),
        ("withdraw", withdraw.gas_used),
    ] {
        println!("| {name} | {gas} |");
        assert!((21_000..200_000).contains(&gas), "{name}: {gas}");
    }
}

#[test]
fn the_committed_build_is_what_the_pinned_solc_makes_of_the_source() {
    let contracts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contracts");
    if !contracts.join("node_modules/solc").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the pinned solc is not installed: scripts/test-deps.sh runs npm ci in contracts/"
        );
        eprintln!("skipped: run npm ci in contracts/ (scripts/test-deps.sh does)");
        return;
    }
    let output = std::process::Command::new("node")
        .arg("compile.mjs")
        .arg("--check")
        .current_dir(&contracts)
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
