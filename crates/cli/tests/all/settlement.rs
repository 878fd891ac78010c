//! Channels settled on a real chain, on real `zerostate node` processes and a real `anvil`
//! (from `PATH`; under `CI=true` a missing anvil fails): tasks paid by vouchers off chain,
//! a cooperative close at exactly the payer's latest voucher, a payer's close on nothing
//! topped by the payee's watchtower, a payer whose payee vanished paid back after the
//! period, and a payer killed while its open was being mined finding the channel on chain.

use zerostate_chain::{Address, Anvil, B256, Chain, ChannelEvent};
use zerostate_telemetry::testing::OtlpReceiver;

use crate::cluster::{NodeProcess, eventually, guild_coordinator};
use crate::journey::{CONFIG, run_task};

/// The challenge period of the channels the requesters open, seconds.
const PERIOD: u64 = 10;

/// A chain with the channel contract, and the faucet's connection to it.
struct OnChain {
    anvil: Anvil,
    faucet: Chain,
}

/// Starts anvil (mining every `block_time` seconds, or at once) and deploys the contract.
fn chain(runtime: &tokio::runtime::Runtime, block_time: Option<u64>) -> Option<OnChain> {
    if !zerostate_chain::anvil_for_tests() {
        return None;
    }
    runtime.block_on(async {
        let anvil = match block_time {
            Some(seconds) => Anvil::start_mining_every(31337, seconds).await,
            None => Anvil::start(31337, None).await,
        }
        .expect("anvil starts");
        let (contract, _) = Chain::deploy(anvil.url(), &anvil.dev_key())
            .await
            .expect("the contract deploys");
        let faucet = Chain::connect(anvil.url(), contract, anvil.dev_key(), 1)
            .await
            .expect("the faucet connects");
        Some(OnChain { anvil, faucet })
    })
}

impl OnChain {
    /// The nodes' settings: `CONFIG` settling on this chain, the watchtower looking every
    /// second, `extra` added to `[tasks]`.
    fn config(&self, extra: &str) -> String {
        CONFIG
            .replacen(
                "challenge_period_s = 3\n",
                &format!(
                    "challenge_period_s = {PERIOD}\nwatch_interval_s = 1\nchain = \"{}\"\n\
                     contract = \"{}\"\n",
                    self.anvil.url(),
                    self.faucet.domain().contract
                ),
                1,
            )
            .replacen("[tasks]\n", &format!("[tasks]\n{extra}"), 1)
    }

    /// Sends `node`'s settlement account 10 coins.
    fn fund(&self, runtime: &tokio::runtime::Runtime, node: &NodeProcess) {
        let (status, body) = node.get("/v1/node");
        assert_eq!(status, 200, "{body}");
        let info: serde_json::Value = serde_json::from_str(&body).expect("json");
        let address: Address = info["settlement"]["address"]
            .as_str()
            .expect("a settlement address")
            .parse()
            .expect("an address");
        runtime
            .block_on(
                self.faucet
                    .transfer(address, zerostate_chain::coins_to_wei(10)),
            )
            .expect("funded");
    }

    /// Every channel event so far.
    fn events(&self, runtime: &tokio::runtime::Runtime) -> Vec<ChannelEvent> {
        runtime.block_on(async {
            let latest = self.faucet.block_number().await.expect("a block number");
            self.faucet.events(0, latest).await.expect("the events")
        })
    }

    /// Every settlement so far: (to payee, to payer), base units.
    fn settled(&self, runtime: &tokio::runtime::Runtime) -> Vec<(u64, u64)> {
        self.events(runtime)
            .into_iter()
            .filter_map(|e| match e {
                ChannelEvent::Settled {
                    to_payee, to_payer, ..
                } => Some((to_payee.base_units(), to_payer.base_units())),
                _ => None,
            })
            .collect()
    }

    /// Every channel opened so far, by id.
    fn opened(&self, runtime: &tokio::runtime::Runtime) -> Vec<B256> {
        self.events(runtime)
            .into_iter()
            .filter_map(|e| match e {
                ChannelEvent::Opened { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }
}

/// Starts `name` joining the guild `id` of `coordinator` on `settings`.
fn member(
    dir: &std::path::Path,
    (coordinator, id): (&NodeProcess, &str),
    name: &str,
    settings: &str,
    otlp: &str,
    misbehave: &[&str],
) -> NodeProcess {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, settings).expect("settings");
    let config = config.to_string_lossy().into_owned();
    let bootstrap = coordinator.tcp_address();
    let join = format!("{id}@{bootstrap}");
    let invitation = crate::guild::invitation(coordinator, id);
    let mut args = vec![
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--bootstrap",
        &bootstrap,
        "--config",
        &config,
        "--join-guild",
        &join,
        "--invitation",
        &invitation,
    ];
    for item in misbehave {
        args.extend(["--misbehave", item]);
    }
    NodeProcess::start(dir, name, &args, otlp)
}

/// A coordinator and an executor settling on `chain`, and a requester (misbehaving so)
/// that executes nothing, all funded on chain, in one guild's mesh.
struct Cast {
    coordinator: NodeProcess,
    executor: NodeProcess,
    requester: NodeProcess,
    /// The guild's id.
    id: String,
}

/// Waits until `nodes` are in the gossip mesh of guild `id`, which has three members.
fn meshed(coordinator: &NodeProcess, id: &str, nodes: &[&NodeProcess]) {
    eventually("every node in the guild's mesh", || {
        let topic = format!("zerostate%2Fguild%2F{id}");
        let members = crate::guild::guild(coordinator, id)["members"]
            .as_array()?
            .len();
        let meshed = nodes.iter().all(|n| {
            let (status, body) = n.get(&format!("/v1/p2p/mesh/{topic}"));
            status == 200 && body != "[]"
        });
        (meshed && members == 3).then_some(())
    });
}

fn cast(
    dir: &std::path::Path,
    runtime: &tokio::runtime::Runtime,
    chain: &OnChain,
    otlp: &str,
    misbehave: &[&str],
) -> Cast {
    let idle = chain.config("execute = false\n");
    let (coordinator, id, _) = guild_coordinator(dir, "coordinator", &idle, "chain", otlp);
    let executor = member(
        dir,
        (&coordinator, &id),
        "executor",
        &chain.config(""),
        otlp,
        &[],
    );
    let requester = member(
        dir,
        (&coordinator, &id),
        "requester",
        &idle,
        otlp,
        misbehave,
    );
    for node in [&coordinator, &executor, &requester] {
        chain.fund(runtime, node);
    }
    meshed(&coordinator, &id, &[&executor, &requester]);
    Cast {
        coordinator,
        executor,
        requester,
        id,
    }
}

/// Runs one task on the requester: it succeeded and was paid; (channel, amount).
fn paid_task(requester: &NodeProcess, input: &str) -> (String, u64) {
    let task = serde_json::json!({ "module": "builtin:crc32", "input": input });
    let record = run_task(requester, &task);
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(record["payment"]["status"], "paid", "{record}");
    let amount = record["payment"]["amount"].as_u64().expect("an amount");
    assert!(amount > 0, "{record}");
    let channel = record["payment"]["channel"]
        .as_str()
        .expect("a channel")
        .to_owned();
    (channel, amount)
}

/// Waits for a span `name` from `service` with `tx.hash` and `tx.block`; (hash, block).
fn tx_span(receiver: &OtlpReceiver, service: &str, name: &str) -> (String, u64) {
    eventually(
        &format!("{service}'s {name} span with its transaction"),
        || {
            receiver.spans().iter().find_map(|s| {
                if s.service != service || s.span.name != name {
                    return None;
                }
                let hash = s.attribute("tx.hash")?;
                let block = s.attribute("tx.block")?.parse().ok()?;
                Some((hash, block))
            })
        },
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn tasks_paid_off_chain_settle_on_chain_at_exactly_the_payers_latest_voucher() {
    let runtime = runtime();
    let Some(chain) = self::chain(&runtime, None) else {
        return;
    };
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let Cast {
        coordinator,
        executor,
        requester,
        ..
    } = cast(dir.path(), &runtime, &chain, &receiver.endpoint(), &[]);
    let (channel, first) = paid_task(&requester, "zero");
    let (same, second) = paid_task(&requester, "state");
    assert_eq!(channel, same, "both tasks are paid through one channel");
    assert_eq!(
        chain.opened(&runtime).len(),
        1,
        "one deposit locked on chain"
    );
    assert!(chain.settled(&runtime).is_empty(), "payments are off chain");

    let (status, closed) = requester.post(
        &format!("/v1/channels/{channel}/close"),
        &serde_json::json!({}),
        &[],
    );
    assert_eq!(status, 200, "{closed}");
    let closed: serde_json::Value = serde_json::from_str(&closed).expect("json");
    assert_eq!(closed["to_payee"], first + second, "{closed}");
    // The payee's close on chain is a `payment.settlement` span naming its transaction.
    let (hash, block) = tx_span(&receiver, "executor", "payment.settlement");
    assert_eq!(closed["tx"]["hash"], hash.as_str(), "{closed}");
    assert_eq!(closed["tx"]["block"], block, "{closed}");
    let deposit = 1_000_000;
    assert_eq!(
        chain.settled(&runtime),
        vec![(first + second, deposit - first - second)]
    );
    crate::cluster::stop_cleanly(vec![requester, executor, coordinator]);
}

#[test]
fn a_payers_close_on_nothing_is_topped_by_the_payees_watchtower_without_anyone_acting() {
    let runtime = runtime();
    let Some(chain) = self::chain(&runtime, None) else {
        return;
    };
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let Cast {
        coordinator,
        executor,
        requester,
        ..
    } = cast(
        dir.path(),
        &runtime,
        &chain,
        &receiver.endpoint(),
        &["close-on-nothing"],
    );
    let (channel, owed) = paid_task(&requester, "zerostate");
    let (status, started) = requester.post(
        &format!("/v1/channels/{channel}/close"),
        &serde_json::json!({ "unilateral": true }),
        &[],
    );
    assert_eq!(status, 200, "{started}");
    let started: serde_json::Value = serde_json::from_str(&started).expect("json");
    assert_eq!(started["amount"], 0, "{started}");
    // Nobody acts: the executor's watchtower closes with its best voucher inside the
    // period.
    let settled = eventually("the executor's watchtower to top the close", || {
        chain.settled(&runtime).first().copied()
    });
    assert_eq!(settled, (owed, 1_000_000 - owed));
    // Topping the close is a `payment.dispute` span naming its transaction.
    let (hash, _) = tx_span(&receiver, "executor", "payment.dispute");
    assert!(hash.starts_with("0x") && hash.len() == 66, "{hash}");
    let (_, metrics) = crate::cluster::http(&executor.admin, "GET", "/metrics", None, &[]);
    assert!(
        metrics.contains("payment_settlements_total{result=\"dispute\"} 1"),
        "{metrics}"
    );
    crate::cluster::stop_cleanly(vec![requester, executor, coordinator]);
}

#[test]
fn a_payer_whose_payee_vanished_gets_the_rest_back_after_the_challenge_period() {
    let runtime = runtime();
    let Some(chain) = self::chain(&runtime, None) else {
        return;
    };
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let Cast {
        coordinator,
        executor,
        requester,
        ..
    } = cast(dir.path(), &runtime, &chain, &receiver.endpoint(), &[]);
    let (channel, owed) = paid_task(&requester, "gone");
    executor.kill();
    let (status, started) = requester.post(
        &format!("/v1/channels/{channel}/close"),
        &serde_json::json!({ "unilateral": true }),
        &[],
    );
    assert_eq!(status, 200, "{started}");
    runtime
        .block_on(chain.anvil.advance(PERIOD + 1))
        .expect("time passes on chain");
    // The requester's watchtower pays its own close out after the period.
    let settled = eventually("the requester's close to be paid out", || {
        chain.settled(&runtime).first().copied()
    });
    assert_eq!(settled, (owed, 1_000_000 - owed));
    crate::cluster::stop_cleanly(vec![requester, coordinator]);
}

#[test]
fn a_payer_killed_while_its_open_was_mined_finds_the_channel_on_chain_and_pays_through_it() {
    let runtime = runtime();
    // A block every 3 s: an open waits for it, and the requester is killed meanwhile.
    let Some(chain) = self::chain(&runtime, Some(3)) else {
        return;
    };
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let Cast {
        coordinator,
        executor,
        requester,
        id,
    } = cast(dir.path(), &runtime, &chain, &receiver.endpoint(), &[]);
    let task = serde_json::json!({ "module": "builtin:crc32", "input": "killed" });
    let (status, answer) = requester.post("/v1/tasks", &task, &[]);
    assert_eq!(status, 202, "{answer}");
    // Killed once the open is sent to the chain, before it is mined.
    eventually("the requester to send its open", || {
        requester
            .log_text()
            .contains("open transaction sent")
            .then_some(())
    });
    requester.kill();
    eventually("the open to be mined", || {
        (chain.opened(&runtime).len() == 1).then_some(())
    });
    // Started again on its data: it finds the channel on chain, and pays through it.
    let requester = NodeProcess::start(
        dir.path(),
        "requester",
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            &coordinator.tcp_address(),
            "--config",
            &dir.path().join("requester.toml").to_string_lossy(),
        ],
        &receiver.endpoint(),
    );
    let channel = eventually("the channel to be known as opened", || {
        let (_, body) = requester.get("/v1/channels");
        let channels: Vec<serde_json::Value> = serde_json::from_str(&body).ok()?;
        channels
            .iter()
            .find(|c| c["opening"] == false && c["side"] == "payer")
            .map(|c| c["id"].as_str().expect("an id").to_owned())
    });
    assert!(
        requester
            .log_text()
            .contains("the chain holds a channel whose open was not answered"),
        "the channel was found on chain, not in the requester's store"
    );
    meshed(&coordinator, &id, &[&executor, &requester]);
    let (paid_on, _) = paid_task(&requester, "again");
    assert_eq!(paid_on, channel, "paid through the channel found on chain");
    assert_eq!(
        chain.opened(&runtime).len(),
        1,
        "no second deposit was locked"
    );
    crate::cluster::stop_cleanly(vec![requester, executor, coordinator]);
}
