//! How guilds behave: heartbeats, admission limits, what is kept.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How guilds behave. Every field says its default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuildConfig {
    /// Time between heartbeats of each member, in milliseconds. Default 2000.
    pub heartbeat_interval_ms: u64,
    /// Heartbeats a member may miss before it is marked down. Default 3.
    pub missed_heartbeats: u32,
    /// Most members a guild admits. Default 64.
    pub max_members: usize,
    /// Join requests a coordinator handles per second per guild (bursts of twice that);
    /// more are refused and counted. Default 10.
    pub joins_per_second: u32,
    /// Decrypted messages kept per guild for the API. Default 256.
    pub received_kept: usize,
}

impl Default for GuildConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 2000,
            missed_heartbeats: 3,
            max_members: 64,
            joins_per_second: 10,
            received_kept: 256,
        }
    }
}

impl GuildConfig {
    /// How long a member may stay silent before it is marked down.
    pub(super) fn down_after(&self) -> Duration {
        Duration::from_millis(
            self.heartbeat_interval_ms
                .saturating_mul(u64::from(self.missed_heartbeats)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_down_after_its_missed_heartbeats_and_the_product_cannot_overflow() {
        let c = GuildConfig::default();
        assert_eq!(c.down_after(), Duration::from_secs(6));
        let huge = GuildConfig {
            heartbeat_interval_ms: u64::MAX,
            missed_heartbeats: 3,
            ..GuildConfig::default()
        };
        assert_eq!(huge.down_after(), Duration::from_millis(u64::MAX));
    }
}
