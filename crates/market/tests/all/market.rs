//! Offers, hand-overs, bills and payments between a requester and executors.

use zerostate_market::wire;
use zerostate_market::{Misbehaviour, TaskState};

use std::time::Duration;

use crate::harness::{Net, crc32, executor, primes, requester, run, settled};

/// What `node` holds as payee: (channels, payments on them, their sum).
fn received(node: &crate::harness::Node) -> (usize, u64, u64) {
    let channels = node.payments.channels().expect("channels");
    let payee: Vec<_> = channels.iter().filter(|c| c.side == "payee").collect();
    (
        payee.len(),
        payee.iter().map(|c| c.nonce).sum(),
        payee.iter().map(|c| c.cumulative).sum(),
    )
}

/// A requester with `settings` and the only executor, which runs one task at a time.
fn one_slot(
    settings: zerostate_market::TaskSettings,
) -> (
    std::sync::Arc<Net>,
    crate::harness::Node,
    crate::harness::Node,
) {
    let (net, ledger) = Net::new();
    let me = net.node(1, ledger, settings, Misbehaviour::default());
    let only = net.node(
        2,
        ledger,
        zerostate_market::TaskSettings {
            max_running: 1,
            ..executor(1)
        },
        Misbehaviour::default(),
    );
    (net, me, only)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cheapest_offer_runs_the_task_and_its_receipt_is_paid_once() {
    let (net, ledger) = Net::new();
    let me = net.node(1, ledger, requester(), Misbehaviour::default());
    let cheap = net.node(2, ledger, executor(1), Misbehaviour::default());
    let dear = net.node(3, ledger, executor(2), Misbehaviour::default());
    let record = run(&me, crc32("zerostate", 10)).await;
    assert_eq!(record.state, TaskState::Succeeded, "{record:?}");
    assert_eq!(record.executor, Some(cheap.peer.to_string()));
    let payment = record.payment.as_ref().expect("a payment");
    assert_eq!(payment.status, "paid", "{payment:?}");
    // Paid once, for what the receipt states, to the one that ran it.
    assert_eq!(received(&cheap), (1, 1, payment.amount));
    assert_eq!(received(&dear), (0, 0, 0));
    assert_eq!(net.asked(me.peer, wire::TASK_OFFER), 2, "both offered");
    assert_eq!(net.asked(cheap.peer, wire::TASK_RUN), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_above_the_maximum_price_is_refused() {
    let (net, ledger) = Net::new();
    let me = net.node(1, ledger, requester(), Misbehaviour::default());
    let greedy = net.node(
        2,
        ledger,
        executor(1),
        Misbehaviour {
            overprice: true,
            ..Misbehaviour::default()
        },
    );
    let honest = net.node(3, ledger, executor(3), Misbehaviour::default());
    for input in ["first", "second"] {
        let record = run(&me, crc32(input, 5)).await;
        assert_eq!(record.state, TaskState::Succeeded, "{record:?}");
        // The greedy executor offered and was refused: it was never handed the task.
        assert_eq!(record.executor, Some(honest.peer.to_string()));
        assert!(
            record
                .attempts
                .iter()
                .all(|a| a.executor != greedy.peer.to_string()),
            "{record:?}"
        );
    }
    assert_eq!(net.asked(greedy.peer, wire::TASK_RUN), 0);
    assert_eq!(received(&greedy), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_receipt_is_refused_and_the_task_goes_to_the_next_offer() {
    let (net, ledger) = Net::new();
    let me = net.node(1, ledger, requester(), Misbehaviour::default());
    let forger = net.node(
        2,
        ledger,
        executor(1),
        Misbehaviour {
            forge_receipts: true,
            ..Misbehaviour::default()
        },
    );
    let honest = net.node(3, ledger, executor(2), Misbehaviour::default());
    let record = run(&me, crc32("zerostate", 10)).await;
    assert_eq!(record.state, TaskState::Succeeded, "{record:?}");
    assert_eq!(record.attempts.len(), 2, "{record:?}");
    assert_eq!(record.attempts[0].executor, forger.peer.to_string());
    assert_ne!(record.attempts[0].outcome, "delivered", "{record:?}");
    assert_eq!(record.attempts[1].executor, honest.peer.to_string());
    assert_eq!(record.attempts[1].outcome, "delivered");
    // The forger's bill is not paid; the honest one's is, once.
    assert_eq!(received(&forger).2, 0);
    let paid = record.payment.as_ref().expect("a payment").amount;
    assert_eq!(received(&honest), (1, 1, paid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_whose_answer_was_lost_is_answered_again_and_billed_once() {
    let (net, ledger) = Net::new();
    let me = net.node(1, ledger, requester(), Misbehaviour::default());
    let only = net.node(2, ledger, executor(1), Misbehaviour::default());
    net.lose_answers(only.peer, wire::TASK_RUN, 1);
    let record = run(&me, crc32("zerostate", 10)).await;
    assert_eq!(record.state, TaskState::Succeeded, "{record:?}");
    // Handed over twice, answered from the first run: one attempt, one payment.
    assert_eq!(net.asked(only.peer, wire::TASK_RUN), 2);
    assert_eq!(record.attempts.len(), 1, "{record:?}");
    let paid = record.payment.as_ref().expect("a payment").amount;
    assert_eq!(received(&only), (1, 1, paid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_declined_as_busy_costs_no_attempt() {
    let (_net, me, only) = one_slot(zerostate_market::TaskSettings {
        max_attempts: 1,
        ..requester()
    });
    // Announced at once, offered on at once by the idle executor, handed over at once: it
    // runs one and declines the others as busy, which are asked again, each still with its
    // one attempt.
    let ids: Vec<String> = (0..4)
        .map(|n| {
            let task = crc32(&format!("zerostate {n}"), 10);
            me.tasks.submit(task).expect("accepted").id
        })
        .collect();
    let mut records = Vec::new();
    for id in &ids {
        records.push(settled(&me, id, Duration::from_secs(60)).await);
    }
    let summary: Vec<_> = records
        .iter()
        .map(|r| (r.state, r.attempts.len(), r.payment.clone()))
        .collect();
    for record in &records {
        let took: Vec<&str> = record.attempts.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(record.state, TaskState::Succeeded, "{took:#?}\n{summary:?}");
        let ran: Vec<_> = record
            .attempts
            .iter()
            .filter(|a| !a.outcome.contains(wire::DECLINED))
            .collect();
        assert_eq!(ran.len(), 1, "one attempt ran: {record:?}");
    }
    let declined = records
        .iter()
        .flat_map(|r| &r.attempts)
        .filter(|a| a.outcome.contains(wire::DECLINED))
        .count();
    assert!(declined > 0, "no hand-over was declined: {records:?}");
    assert_eq!(received(&only).1, 4, "four payments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_longer_than_the_guilds_slots_waits_for_them() {
    // Rounds of 100 ms: a task nobody offers on for a while is announced many times.
    let (net, me, only) = one_slot(zerostate_market::TaskSettings {
        max_attempts: 1,
        offer_window_ms: 100,
        ..requester()
    });
    // Eight tasks of tens of milliseconds each at once on one slot: the last waits for
    // seven to run (and be paid) before it, through many silent rounds.
    let ids: Vec<String> = (0..8)
        .map(|n| {
            let task = primes(3_000_000 + n, 1_000);
            me.tasks.submit(task).expect("accepted").id
        })
        .collect();
    let mut records = Vec::new();
    for id in &ids {
        records.push(settled(&me, id, Duration::from_secs(60)).await);
    }
    for record in &records {
        assert_eq!(record.state, TaskState::Succeeded, "{record:#?}");
    }
    assert_eq!(received(&only).1, 8, "eight payments");
    // The queue took more announcements than tasks: the waiting was asked again.
    let announced = net.asked(me.peer, wire::TASK_OFFER);
    assert!(announced >= 8, "{announced} offers");
}

/// Submits a task of about half a second, which takes the only slot, and a short one behind
/// it; their ids.
async fn long_then_short(me: &crate::harness::Node) -> (String, String) {
    let long = me
        .tasks
        .submit(primes(30_000_000, 1_000))
        .expect("accepted")
        .id;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let short = me.tasks.submit(primes(1_000, 1_000)).expect("accepted").id;
    (long, short)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_waiting_on_this_nodes_own_work_goes_when_that_ends_not_when_its_round_does() {
    // Rounds of 20 s: a round nobody offers on would end long after the work ahead of it.
    let (_net, me, only) = one_slot(zerostate_market::TaskSettings {
        offer_window_ms: 20_000,
        ..requester()
    });
    // The one behind the long task is announced, meets silence, and goes as soon as the
    // first has ended and been paid: on the standing offer that first task brought.
    let (long, short) = long_then_short(&me).await;
    let long = settled(&me, &long, Duration::from_secs(60)).await;
    assert_eq!(long.state, TaskState::Succeeded, "{long:#?}");
    let record = settled(&me, &short, Duration::from_secs(60)).await;
    assert_eq!(record.state, TaskState::Succeeded, "{record:#?}");
    let waited = record.duration_ms.unwrap_or(f64::MAX);
    assert!(
        waited < 15_000.0,
        "the task waited {waited:.0} ms: its silent round ran out (the long one took {:?} ms)",
        long.duration_ms
    );
    assert_eq!(record.attempts.len(), 1, "{record:#?}");
    assert!(record.attempts[0].standing_offer, "{record:#?}");
    assert_eq!(received(&only).1, 2, "two payments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_guild_is_waited_for_for_busy_wait_ms_at_most() {
    let (_net, me, _only) = one_slot(zerostate_market::TaskSettings {
        max_attempts: 1,
        offer_window_ms: 100,
        busy_wait_ms: 100,
        ..requester()
    });
    // The one behind the long task gives up after its first silent round and 100 ms more.
    let (long, short) = long_then_short(&me).await;
    let record = settled(&me, &short, Duration::from_secs(30)).await;
    assert_eq!(record.state, TaskState::Failed, "{record:#?}");
    let error = record.error.as_deref().unwrap_or_default();
    assert!(error.contains("while its executors were busy"), "{error}");
    let record = settled(&me, &long, Duration::from_secs(60)).await;
    assert_eq!(record.state, TaskState::Succeeded, "{record:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_task_goes_on_a_standing_offer_and_a_declined_one_falls_back_to_a_round() {
    let (net, ledger) = Net::new();
    let me = net.node(1, ledger, requester(), Misbehaviour::default());
    // The cheap executor runs one task at a time, and its standing offers stand long
    // enough for this test on a loaded machine.
    let cheap = net.node(
        2,
        ledger,
        zerostate_market::TaskSettings {
            max_running: 1,
            standing_offer_ms: 30_000,
            ..executor(1)
        },
        Misbehaviour::default(),
    );
    let dear = net.node(3, ledger, executor(2), Misbehaviour::default());
    let first = run(&me, crc32("first", 10)).await;
    assert_eq!(first.executor, Some(cheap.peer.to_string()), "{first:?}");
    assert!(!first.attempts[0].standing_offer, "{first:?}");
    assert_eq!(net.asked(me.peer, wire::TASK_OFFER), 2, "both offered");

    // The next task goes straight to the executor that delivered: no offer round.
    let second = run(&me, crc32("second", 10)).await;
    assert_eq!(second.state, TaskState::Succeeded, "{second:?}");
    assert_eq!(second.attempts.len(), 1, "{second:?}");
    assert!(second.attempts[0].standing_offer, "{second:?}");
    assert_eq!(second.executor, Some(cheap.peer.to_string()));
    assert_eq!(
        second.payment.as_ref().map(|p| p.status.as_str()),
        Some("paid")
    );
    assert_eq!(
        net.asked(me.peer, wire::TASK_OFFER),
        2,
        "no offers asked for"
    );
    assert_eq!(received(&cheap).1, 2, "two payments");

    // Another requester's long task holds the cheap executor's only slot: the standing
    // offer is declined, costing no attempt, and the task is announced and runs on the
    // other executor.
    let other = net.node(4, ledger, requester(), Misbehaviour::default());
    let long = other
        .tasks
        .submit(primes(30_000_000, 10))
        .expect("accepted")
        .id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while net.asked(cheap.peer, wire::TASK_RUN) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the long task never went"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Handed over: its slot is taken a moment later (the money checked first), and held
    // for about half a second.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        other.tasks.get(&long).and_then(|r| r.executor),
        Some(cheap.peer.to_string())
    );
    let third = run(&me, crc32("third", 10)).await;
    assert_eq!(third.state, TaskState::Succeeded, "{third:?}");
    assert_eq!(third.executor, Some(dear.peer.to_string()), "{third:?}");
    assert_eq!(
        third.attempts.len(),
        1,
        "the declined one is no attempt: {third:?}"
    );
    assert!(!third.attempts[0].standing_offer, "{third:?}");
    assert_eq!(
        net.asked(cheap.peer, wire::TASK_RUN),
        4,
        "three of mine, one of other's"
    );
    let long = settled(&other, &long, Duration::from_secs(60)).await;
    assert_eq!(long.state, TaskState::Succeeded, "{long:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_is_answered_when_its_task_ends_or_its_wait_does() {
    let (net, ledger) = Net::new();
    let me = net.node(1, ledger, requester(), Misbehaviour::default());
    let _only = net.node(2, ledger, executor(1), Misbehaviour::default());
    let none = me
        .tasks
        .wait_final("no-such-task", Duration::from_millis(10));
    assert!(none.await.is_none());
    // About half a second of work: a wait of 10 ms is answered with the record as it is.
    let id = me
        .tasks
        .submit(primes(30_000_000, 10))
        .expect("accepted")
        .id;
    let early = me.tasks.wait_final(&id, Duration::from_millis(10)).await;
    let early = early.expect("the record is kept");
    assert!(!early.state.is_final(), "{early:?}");
    let record = me.tasks.wait_final(&id, Duration::from_secs(60)).await;
    let record = record.expect("the record is kept");
    assert_eq!(record.state, TaskState::Succeeded, "{record:?}");
    let paid = record.payment.as_ref().map(|p| p.status.as_str());
    assert_eq!(paid, Some("paid"), "{record:?}");
}
