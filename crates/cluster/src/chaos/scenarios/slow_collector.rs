//! `slow-collector`: the collector answering every export `--slow-ms` late.

use super::prelude::*;

/// The collector answering every export `--slow-ms` late.
pub(crate) struct SlowCollector;

impl Scenario for SlowCollector {
    fn name(&self) -> &'static str {
        "slow-collector"
    }

    fn about(&self) -> &'static str {
        "The collector answering every export `--slow-ms` late."
    }

    fn plan(&self, plan: &mut Plan<'_>, setting: &Setting) {
        plan.otlp_via = Some(setting.slow.clone());
    }

    fn run(
        &self,
        net: &mut Net,
        load: Load,
        setting: &Setting,
        row: &mut Row,
    ) -> anyhow::Result<Book> {
        slow_collector(
            net,
            load,
            setting.third,
            &setting.slow,
            setting.slow_ms,
            row,
        )
    }
}

fn slow_collector(
    net: &mut Net,
    load: Load,
    third: Duration,
    slow: &proxy::Delay,
    slow_ms: u64,
    row: &mut Row,
) -> anyhow::Result<Book> {
    row.fault = format!(
        "collector answers {slow_ms} ms late for {:.0} s",
        third.as_secs_f64()
    );
    // The operations listener of every member is asked for /metrics every 200 ms; the
    // slowest answer of each phase is kept.
    let admins: Vec<String> = std::iter::once("requester".to_owned())
        .chain(net.executors())
        .collect();
    let probe = |net: &Net, until_at: Instant| -> Duration {
        let mut worst = Duration::ZERO;
        while Instant::now() < until_at {
            for n in &admins {
                let t = Instant::now();
                let _ = net.metrics(n);
                worst = worst.max(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        worst
    };
    let before = probe(net, Instant::now() + third);
    let slow_from = load.started.elapsed();
    slow.set(Duration::from_millis(slow_ms));
    let during = probe(net, Instant::now() + third);
    slow.set(Duration::ZERO);
    let slow_to = load.started.elapsed();
    std::thread::sleep(third);
    let book = load.finish(&net.runtime);
    let phase = |from: Duration, to: Duration| {
        let mut l: Vec<f64> = book
            .outcomes
            .iter()
            .filter(|o| o.at >= from && o.at < to && o.state == "succeeded")
            .filter_map(|o| o.record.as_ref()?.duration_ms)
            .collect();
        quantile(&mut l, 0.5)
    };
    let (p_before, p_during) = (phase(Duration::ZERO, slow_from), phase(slow_from, slow_to));
    row.notes.push(format!(
        "task p50 {p_before:.1} ms before, {p_during:.1} ms while the collector was slow; \
         slowest /metrics answer {:.0} ms before, {:.0} ms during",
        before.as_secs_f64() * 1000.0,
        during.as_secs_f64() * 1000.0
    ));
    row.recovery = "—".to_owned();
    row.check(
        "the collector was slow",
        slow.held() > 0,
        format!("{} answers held {slow_ms} ms", slow.held()),
    );
    row.check(
        "no node thread blocks",
        during < Duration::from_secs(2),
        format!(
            "slowest /metrics answer while the collector was slow: {:.0} ms",
            during.as_secs_f64() * 1000.0
        ),
    );
    row.all_succeeded(&book, "tasks unaffected");
    Ok(book)
}
