//! `ledger-restarted`: the ledger node killed (SIGKILL) mid-payments and started again; on
//! a chain (`--chain anvil`), anvil killed and started again on its state.

use super::prelude::*;

/// The ledger node killed (SIGKILL) mid-payments and started again.
pub(crate) struct LedgerRestarted;

impl Scenario for LedgerRestarted {
    fn name(&self) -> &'static str {
        "ledger-restarted"
    }

    fn about(&self) -> &'static str {
        "The ledger node killed (SIGKILL) mid-payments and started again."
    }

    fn run(
        &self,
        net: &mut Net,
        load: Load,
        setting: &Setting,
        row: &mut Row,
    ) -> anyhow::Result<Book> {
        ledger_restarted(net, load, setting.third, row)
    }
}

fn ledger_restarted(
    net: &mut Net,
    load: Load,
    third: Duration,
    row: &mut Row,
) -> anyhow::Result<Book> {
    let what = if net.chain.is_some() {
        "anvil"
    } else {
        "ledger"
    };
    row.fault = format!("{what} SIGKILL for {:.0} s", third.as_secs_f64());
    std::thread::sleep(third);
    let down_at = load.started.elapsed();
    match &mut net.chain {
        Some((anvil, _)) => anvil.kill(),
        None => net.kill("ledger")?,
    }
    std::thread::sleep(third);
    let up_at = load.started.elapsed();
    match &mut net.chain {
        Some((anvil, _)) => net.runtime.block_on(anvil.restart())?,
        None => net.restart("ledger")?,
    }
    let requester = net.client("requester")?;
    let back = until(RECOVERY_LIMIT, || {
        net.runtime
            .block_on(requester.get("/v1/ledger/balance"))
            .is_ok_and(|b| b.is_some())
    });
    row.recovered(back, "restart → the requester's ledger calls answered");
    row.check(
        "the ledger answers again",
        back.is_some(),
        "the requester's balance query succeeded",
    );
    let recovered_at = load.started.elapsed();
    {
        let book = load.book.lock().unwrap_or_else(|e| e.into_inner());
        let during = book
            .outcomes
            .iter()
            .filter(|o| o.at >= down_at && o.at < up_at);
        let (n, paid) = during.fold((0, 0), |(n, p), o| {
            (n + 1, p + usize::from(o.payment() == Some("paid")))
        });
        row.notes.push(format!(
            "while the ledger was down: {n} tasks submitted, {paid} paid over channels \
             opened before"
        ));
    }
    // A channel opened before the restart is settled on the restarted ledger: it kept the
    // channel and takes the latest acknowledged state.
    let channels = net.runtime.block_on(requester.channels())?;
    let open = channels.iter().find(|c| !c.closing && c.nonce > 0).cloned();
    match open {
        Some(c) => {
            let id = c.id;
            let closed = net.runtime.block_on(
                requester.post(&format!("/v1/channels/{id}/close"), &serde_json::json!({})),
            );
            // The payee gets exactly what the payer's latest state says (the channel takes
            // no payment once closing, so it is final now).
            let cumulative = net
                .runtime
                .block_on(requester.channels())
                .ok()
                .and_then(|all| all.into_iter().find(|c| c.id == id))
                .map(|c| c.cumulative);
            let settled = closed
                .as_ref()
                .is_ok_and(|a| cumulative.is_some() && a["to_payee"].as_u64() == cumulative);
            row.check(
                "a channel from before the restart settles on the restarted ledger",
                settled,
                match &closed {
                    Ok(a) => format!("closed {id}, its latest state at {cumulative:?}: {a}"),
                    Err(e) => short(e),
                },
            );
        }
        None => row.check(
            "a channel from before the restart settles on the restarted ledger",
            false,
            format!("no open channel with payments on the requester: {channels:?}"),
        ),
    }
    std::thread::sleep(third.saturating_sub(back.unwrap_or_default()));
    let book = load.finish(&net.runtime);
    let paid_after = book
        .outcomes
        .iter()
        .filter(|o| o.at > recovered_at && o.payment() == Some("paid"))
        .count();
    row.check(
        "payments continue after it returns",
        paid_after > 0,
        format!("{paid_after} tasks submitted after the recovery were paid"),
    );
    row.all_succeeded(&book, "every task succeeded");
    Ok(book)
}
