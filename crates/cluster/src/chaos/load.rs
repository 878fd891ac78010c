//! The steady task load: tasks submitted to the requester's API, each followed until it
//! ends or its deadline passes, every outcome kept.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zerostate_market::{TaskRecord, TaskState};
use zerostate_node::client::NodeClient;

/// How long a task may take from submission to a final state before it counts as lost.
pub(super) const TASK_DEADLINE: Duration = Duration::from_secs(90);

/// The task every scenario submits: the built-in that counts primes below `below`, under a
/// 2 s wall-time limit (so an executor that stops answering is given up on after 5 s).
fn task_body(below: u64) -> serde_json::Value {
    serde_json::json!({
        "module": "builtin:primes",
        "input": below.to_string(),
        "limits": { "wall_time_ms": 2000 },
    })
}

/// A task of tens of milliseconds.
pub(super) const LIGHT: u64 = 300_000;
/// A task of about a hundred milliseconds, so that an executor killed at a random moment is
/// likely to be running one, while the suite's load (4 a second over three executors) keeps
/// well within two cores: at 20 million (a third of a second each) the executors' six slots
/// shared two cores, queued tasks ran out of their 2 s wall time and CI runs failed.
pub(super) const HEAVY: u64 = 8_000_000;

/// How one task ended.
#[derive(Clone, Debug)]
pub(super) struct Outcome {
    /// When it was submitted, from the start of the load.
    pub(super) at: Duration,
    /// `succeeded`, `failed` or `lost`.
    pub(super) state: String,
    /// Why it failed or was lost.
    pub(super) reason: Option<String>,
    /// Its final record, when it has one.
    pub(super) record: Option<TaskRecord>,
    /// From submission to its end, as the harness saw it.
    pub(super) took: Duration,
}

impl Outcome {
    /// The payment's status (`paid`, `failed`, ...), when the record has one.
    pub(super) fn payment(&self) -> Option<&str> {
        Some(self.record.as_ref()?.payment.as_ref()?.status.as_str())
    }

    /// The hash of the receipt paid for, when paid.
    pub(super) fn paid_receipt(&self) -> Option<String> {
        (self.payment() == Some("paid"))
            .then(|| self.record.as_ref()?.payment.as_ref()?.receipt.clone())
            .flatten()
    }
}

/// Every outcome so far, and the tasks under way.
#[derive(Default)]
pub(super) struct Book {
    /// Ended tasks.
    pub(super) outcomes: Vec<Outcome>,
    /// Submitted, not ended, by submission number: the executor running it, while one
    /// does, and when the harness first saw it running there.
    pub(super) in_flight: std::collections::HashMap<u64, Option<(String, Instant)>>,
    /// Submitted so far.
    pub(super) submitted: usize,
}

/// How tasks are sent.
#[derive(Clone, Copy, Debug)]
pub(super) enum Pace {
    /// This many per second, whatever is under way (open loop).
    Rate(f64),
    /// Always this many under way (closed loop): as fast as the network takes them.
    InFlight(usize),
}

/// A load running on the harness's runtime until stopped.
pub(super) struct Load {
    /// What happened.
    pub(super) book: Arc<Mutex<Book>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    driver: tokio::task::JoinHandle<()>,
    /// When it started.
    pub(super) started: Instant,
}

impl Load {
    /// Starts submitting tasks (primes below `below`) to `requester` at `pace`.
    pub(super) fn start(
        runtime: &tokio::runtime::Runtime,
        requester: NodeClient,
        pace: Pace,
        below: u64,
    ) -> Load {
        let book = Arc::new(Mutex::new(Book::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started = Instant::now();
        let (b, s) = (book.clone(), stop.clone());
        let driver = runtime.spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            let mut n = 0u64;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                match pace {
                    Pace::Rate(per_second) => {
                        let due = started + Duration::from_secs_f64(n as f64 / per_second);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    Pace::InFlight(k) => {
                        while tasks.len() >= k {
                            tasks.join_next().await;
                        }
                    }
                }
                if s.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                n += 1;
                tasks.spawn(one(requester.clone(), b.clone(), started, n, below));
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        });
        Load {
            book,
            stop,
            driver,
            started,
        }
    }

    /// Stops submitting and waits until every task under way has ended or been given up
    /// on.
    pub(super) fn finish(self, runtime: &tokio::runtime::Runtime) -> Book {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = runtime.block_on(self.driver);
        std::mem::take(&mut *self.book.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Who is running each task under way now.
    pub(super) fn running_on(&self) -> Vec<String> {
        self.running_since(Duration::MAX)
    }

    /// Who began running a task under way at most `fresh` ago (as the harness, polling,
    /// saw it): a fault aimed at it then lands while the task still has its time to run.
    pub(super) fn running_since(&self, fresh: Duration) -> Vec<String> {
        self.book
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .in_flight
            .values()
            .flatten()
            .filter(|(_, since)| since.elapsed() <= fresh)
            .map(|(peer, _)| peer.clone())
            .collect()
    }
}

/// How long one request to the requester's API may take; past it the harness asks again
/// (or, for the submission, counts the task as failed).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Submits one task (the `n`th) and follows it to its end.
async fn one(requester: NodeClient, book: Arc<Mutex<Book>>, started: Instant, n: u64, below: u64) {
    let at = started.elapsed();
    let begun = Instant::now();
    {
        let mut b = book.lock().unwrap_or_else(|e| e.into_inner());
        b.submitted += 1;
        b.in_flight.insert(n, None);
    }
    let end = |state: &str, reason: String, record: Option<TaskRecord>| {
        let mut b = book.lock().unwrap_or_else(|e| e.into_inner());
        b.in_flight.remove(&n);
        b.outcomes.push(Outcome {
            at,
            state: state.to_owned(),
            reason: (!reason.is_empty()).then_some(reason),
            record,
            took: begun.elapsed(),
        });
    };
    let submitted = tokio::time::timeout(REQUEST_TIMEOUT, requester.submit(&task_body(below)))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} s", REQUEST_TIMEOUT.as_secs()))
        .and_then(|answer| answer);
    let id = match submitted {
        Ok(accepted) => accepted.task_id,
        Err(e) => {
            let why = crate::chaos::short(&e);
            return end("failed", format!("refused at submission: {why}"), None);
        }
    };
    loop {
        if begun.elapsed() > TASK_DEADLINE {
            let why = format!("no final state within {} s", TASK_DEADLINE.as_secs());
            return end("lost", why, None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let record = match tokio::time::timeout(REQUEST_TIMEOUT, requester.task(&id)).await {
            Ok(Ok(Some(r))) => r,
            // The requester is busy or gone for a moment: the deadline decides.
            _ => continue,
        };
        match record.state {
            TaskState::Succeeded => return end("succeeded", String::new(), Some(record)),
            TaskState::Failed => {
                let reason = record.error.clone().unwrap_or_default();
                return end("failed", reason, Some(record));
            }
            state => {
                let executor = (state == TaskState::Running)
                    .then(|| record.executor.clone())
                    .flatten();
                let mut b = book.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(running) = b.in_flight.get_mut(&n) {
                    // The time it was first seen on this executor is kept while it runs
                    // there.
                    let same =
                        matches!((&*running, &executor), (Some((was, _)), Some(now)) if was == now);
                    if !same {
                        *running = executor.map(|peer| (peer, Instant::now()));
                    }
                }
            }
        }
    }
}
