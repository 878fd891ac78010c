//! Span timestamps. Reading the wall clock costs about 35 ns on a virtual machine; a span
//! reads the time twice. The calling thread instead reads a calibrated TSC clock (a few ns,
//! falling back to the OS monotonic clock where the TSC is not invariant), and the export
//! thread turns those readings into wall-clock times against an anchor. The anchor is
//! taken again every [`ANCHOR_MAX_AGE`], so clock adjustments never skew a span by much,
//! and kept in between, so that spans exported in different batches keep their order.

use std::time::SystemTime;

/// A monotonic reading taken on the calling thread.
pub(crate) type Timestamp = quanta::Instant;

/// The current monotonic reading.
pub(crate) fn now() -> Timestamp {
    quanta::Instant::now()
}

/// Calibrates the clock, so the first span does not pay for it.
pub(crate) fn warm_up() {
    let _ = now();
}

/// How long an anchor is used before it is taken again.
pub(crate) const ANCHOR_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(10);

/// A wall-clock time and the monotonic reading taken with it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallAnchor {
    wall: SystemTime,
    mono: Timestamp,
}

impl WallAnchor {
    /// Reads both clocks. The thread may be preempted between the two reads, which would
    /// shift every span converted with the anchor; so it reads five times and keeps the
    /// pair with the shortest gap, taking the monotonic reading in its middle.
    pub(crate) fn new() -> Self {
        let mut best: Option<(std::time::Duration, Self)> = None;
        for _ in 0..5 {
            let before = now();
            let wall = SystemTime::now();
            let after = now();
            let gap = after.duration_since(before);
            if best.as_ref().is_none_or(|(g, _)| gap < *g) {
                best = Some((
                    gap,
                    Self {
                        wall,
                        mono: before + gap / 2,
                    },
                ));
            }
        }
        best.map(|(_, a)| a).expect("five samples were taken")
    }

    /// Whether it is time to take a new anchor.
    pub(crate) fn is_stale(&self) -> bool {
        now().duration_since(self.mono) > ANCHOR_MAX_AGE
    }

    /// The wall-clock time of reading `t`.
    pub(crate) fn wall(&self, t: Timestamp) -> SystemTime {
        match t.checked_duration_since(self.mono) {
            Some(after) => self.wall + after,
            None => self.wall - self.mono.duration_since(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn readings_map_to_wall_time_on_both_sides_of_the_anchor() {
        let before = now();
        std::thread::sleep(Duration::from_millis(20));
        let anchor = WallAnchor::new();
        std::thread::sleep(Duration::from_millis(20));
        let after = now();
        let gap = anchor
            .wall(after)
            .duration_since(anchor.wall(before))
            .expect("ordered");
        assert!(gap >= Duration::from_millis(40), "{gap:?}");
        let wall_now = SystemTime::now();
        let skew = wall_now
            .duration_since(anchor.wall(now()))
            .unwrap_or_default();
        assert!(skew < Duration::from_millis(50), "{skew:?}");
    }
}
