//! `executors-killed`: executors killed (SIGKILL) mid-task and started again, `--kills` times.

use super::prelude::*;

/// Executors killed (SIGKILL) mid-task and started again, `--kills` times.
pub(crate) struct ExecutorsKilled;

impl Scenario for ExecutorsKilled {
    fn name(&self) -> &'static str {
        "executors-killed"
    }

    fn about(&self) -> &'static str {
        "Executors killed (SIGKILL) mid-task and started again, `--kills` times."
    }

    fn task(&self) -> u64 {
        load::HEAVY
    }

    fn run(
        &self,
        net: &mut Net,
        load: Load,
        setting: &Setting,
        row: &mut Row,
    ) -> anyhow::Result<Book> {
        executors_killed(net, load, setting.third, setting.kills, row)
    }
}

fn executors_killed(
    net: &mut Net,
    load: Load,
    third: Duration,
    kills: u32,
    row: &mut Row,
) -> anyhow::Result<Book> {
    row.fault = format!("{kills} × executor SIGKILL mid-task, started again");
    let executors = net.executors();
    // The kills spread over the middle two thirds.
    let window = third * 2;
    let every = window / kills.max(1);
    std::thread::sleep(third / 2);
    let mut mid_task = 0;
    let mut rejoins = Vec::new();
    for i in 0..kills {
        let started = Instant::now();
        // An executor running a task now: waited for, up to a second.
        let mut running = None;
        let _ = until(Duration::from_secs(1), || {
            running = load
                .running_on()
                .iter()
                .find_map(|peer| net.name_of(peer).map(str::to_owned));
            running.is_some()
        });
        if running.is_some() {
            mid_task += 1;
        }
        let victim = running.unwrap_or_else(|| executors[i as usize % executors.len()].clone());
        let killed = Instant::now();
        net.kill(&victim)?;
        net.restart(&victim)?;
        let back = until(RECOVERY_LIMIT, || net.converged(&victim));
        rejoins.push(back.map(|_| killed.elapsed()));
        std::thread::sleep(every.saturating_sub(started.elapsed()));
    }
    let rejoined: Vec<Duration> = rejoins.iter().flatten().copied().collect();
    row.recovered(
        rejoined.iter().max().copied(),
        "kill → started again and a member again (slowest)",
    );
    row.notes.push(format!(
        "{mid_task} of {kills} kills hit an executor while it ran a task"
    ));
    row.check(
        "every killed executor came back",
        rejoined.len() == rejoins.len(),
        format!("{} of {} back in the guild", rejoined.len(), rejoins.len()),
    );
    std::thread::sleep(third / 2);
    let book = load.finish(&net.runtime);
    row.all_succeeded(&book, "every task completed on another member");
    Ok(book)
}
