//! Span timestamps. Reading the wall clock costs about 35 ns on a virtual machine; a span
//! reads the time twice. The calling thread instead reads a calibrated TSC clock (a few ns,
//! falling back to the OS monotonic clock where the TSC is not invariant), and the export
//! thread turns those readings into wall-clock times against an anchor it takes again
//! for every batch, so clock adjustments never skew a span by more than the batch's age.

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

/// A wall-clock time and the monotonic reading taken with it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallAnchor {
    wall: SystemTime,
    mono: Timestamp,
}

impl WallAnchor {
    pub(crate) fn new() -> Self {
        Self {
            mono: now(),
            wall: SystemTime::now(),
        }
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
