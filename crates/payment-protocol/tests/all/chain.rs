//! Channels settled on a real chain (anvil from `PATH`; under `CI=true` a missing anvil
//! fails): paid off chain by states that carry vouchers, closed on chain at the payer's
//! latest voucher, a payer's close on less topped by the payee's watchtower, a payer's
//! deposit back after its payee vanished.

use zerostate_chain::{B256, ChannelEvent, OnChainStatus};
use zerostate_payment_protocol::{Misbehaviour, Settle};

use crate::harness::{ChainCast, DEPOSIT};

async fn cast(payer: Misbehaviour) -> Option<ChainCast> {
    ChainCast::start(payer, PERIOD, DEPOSIT).await
}

/// The challenge period the payer opens its channels with, seconds.
const PERIOD: u64 = 600;

impl ChainCast {
    /// The payer pays the payee `amounts`, one receipt each; the channel (hex).
    async fn paid(&self, amounts: &[u64]) -> String {
        let mut channel = String::new();
        for (n, amount) in amounts.iter().enumerate() {
            let record = self
                .payer
                .payments
                .pay(self.payee.peer, *amount, [n as u8 + 1; 32])
                .await;
            assert_eq!(record.status, "paid", "{record:?}");
            channel = record.channel.expect("a channel");
        }
        channel
    }

    /// Every `Settled` event on chain: (to payee, to payer), base units.
    async fn settlements(&self) -> Vec<(u64, u64)> {
        let latest = self.faucet.block_number().await.expect("a block number");
        self.faucet
            .events(0, latest)
            .await
            .expect("the contract's events")
            .into_iter()
            .filter_map(|e| match e {
                ChannelEvent::Settled {
                    to_payee, to_payer, ..
                } => Some((to_payee.base_units(), to_payer.base_units())),
                _ => None,
            })
            .collect()
    }

    /// Every channel opened on chain: (id, deposit in base units, challenge period).
    async fn opened(&self) -> Vec<(B256, u64, u64)> {
        let latest = self.faucet.block_number().await.expect("a block number");
        self.faucet
            .events(0, latest)
            .await
            .expect("the contract's events")
            .into_iter()
            .filter_map(|e| match e {
                ChannelEvent::Opened {
                    id,
                    deposit,
                    challenge_period,
                    ..
                } => Some((id, deposit.base_units(), challenge_period)),
                _ => None,
            })
            .collect()
    }
}

#[tokio::test]
async fn payments_off_chain_settle_on_chain_at_the_payers_latest_voucher() {
    let Some(cast) = cast(Misbehaviour::default()).await else {
        return;
    };
    let channel = cast.paid(&[10, 20, 5]).await;
    let opened = cast.opened().await;
    assert_eq!(opened.len(), 1, "one channel locked on chain: {opened:?}");
    assert_eq!((opened[0].1, opened[0].2), (DEPOSIT, PERIOD));
    // Nothing was settled by paying: payments are off chain.
    assert!(cast.settlements().await.is_empty());

    let answer = cast
        .payer
        .payments
        .close(&channel)
        .await
        .expect("the payer closes cooperatively");
    assert_eq!(answer["to_payee"], 35, "{answer}");
    assert!(answer["tx"]["hash"].is_string(), "{answer}");
    assert_eq!(cast.settlements().await, vec![(35, DEPOSIT - 35)]);
    let held = cast.faucet.channel(opened[0].0).await.expect("the channel");
    assert_eq!(held.status, OnChainStatus::Settled);
    // Both sides took their money: nothing is left in the contract for either.
    for node in [&cast.payer, &cast.payee] {
        let view = node.payments.channels().expect("channels");
        assert_eq!(view.len(), 1);
    }
    let payee_balance = cast.payee.payments.balance().await.expect("a balance");
    assert!(payee_balance > 0);
}

#[tokio::test]
async fn a_payers_close_on_nothing_is_topped_by_the_payees_watchtower_with_its_best_voucher() {
    let Some(cast) = cast(Misbehaviour {
        close_on_nothing: true,
        ..Misbehaviour::default()
    })
    .await
    else {
        return;
    };
    let channel = cast.paid(&[10, 20, 5]).await;
    // A first look reads every channel; the next ones follow the contract's events.
    let first = cast.payee.payments.watch().await;
    assert_eq!((first.asked, first.disputed), (1, 0), "{first:?}");
    let quiet = cast.payee.payments.watch().await;
    assert_eq!(quiet.asked, 0, "nothing happened on chain: {quiet:?}");
    let started = cast
        .payer
        .payments
        .settle(&channel, Settle::Start)
        .await
        .expect("the payer starts closing on chain");
    assert_eq!(started["amount"], 0, "{started}");

    let watched = cast.payee.payments.watch().await;
    assert_eq!((watched.asked, watched.disputed), (1, 1), "{watched:?}");
    assert_eq!(cast.settlements().await, vec![(35, DEPOSIT - 35)]);
    // Settled: not asked about again.
    let again = cast.payee.payments.watch().await;
    assert_eq!(again.disputed + again.failed, 0, "{again:?}");
}

#[tokio::test]
async fn a_payer_whose_payee_vanished_takes_the_rest_back_after_the_challenge_period() {
    let Some(cast) = cast(Misbehaviour::default()).await else {
        return;
    };
    let channel = cast.paid(&[10]).await;
    cast.net.vanish(cast.payee.peer);
    cast.payer
        .payments
        .settle(&channel, Settle::Start)
        .await
        .expect("the payer starts closing on chain");
    // Inside the period nothing is paid out.
    let early = cast.payer.payments.watch().await;
    assert_eq!(early.finalized, 0, "{early:?}");
    cast.anvil.advance(PERIOD + 1).await.expect("time passes");
    let late = cast.payer.payments.watch().await;
    assert_eq!(late.finalized, 1, "{late:?}");
    assert_eq!(cast.settlements().await, vec![(10, DEPOSIT - 10)]);
    let onchain = cast.opened().await[0].0;
    let payer_account = cast
        .faucet
        .channel(onchain)
        .await
        .expect("the channel")
        .payer;
    assert_eq!(
        cast.faucet
            .settled_balance(payer_account)
            .await
            .expect("a balance")
            .base_units(),
        0,
        "the payer withdrew what came back to it"
    );
}

#[tokio::test]
async fn a_refund_is_refused_on_a_chain_and_the_channel_stays_usable() {
    let Some(cast) = cast(Misbehaviour::default()).await else {
        return;
    };
    let channel = cast.paid(&[10]).await;
    let refused = cast
        .payer
        .payments
        .settle(&channel, Settle::Refund)
        .await
        .expect_err("no refund on a chain");
    assert!(refused.contains("channel close --unilateral"), "{refused}");
    let views = cast.payer.payments.channels().expect("channels");
    assert!(!views[0].closing, "{views:?}");
    assert_eq!(
        cast.paid(&[5]).await,
        channel,
        "paid through the same channel"
    );
}
