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
    /// Bytes of decrypted message bodies kept per guild for the API; the oldest go first.
    /// Default 1048576 (1 MiB).
    pub received_kept_bytes: usize,
    /// Who may join a guild this node coordinates: `invite` (a single-use, expiring
    /// invitation the coordinator signed), `allowlist` (the peer ids in `allowlist`) or
    /// `open` (anyone connected). Default `invite`.
    pub admission: Admission,
    /// The peer ids admitted when `admission = "allowlist"`. Default: none.
    pub allowlist: Vec<String>,
    /// For tests only, never read from a settings file: this member ignores the
    /// coordinator's membership updates on the topic, as if gossip lost every one, and
    /// learns of changes only by catching up.
    #[doc(hidden)]
    #[serde(skip)]
    pub withhold_membership_updates: bool,
    /// For tests only, never read from a settings file: this successor takes over as soon
    /// as the coordinator falls silent, whatever its place in the order, and when another
    /// successor's takeover reaches it first, takes over before judging it, as if it had
    /// not heard the successors before it.
    #[doc(hidden)]
    #[serde(skip)]
    pub take_over_without_waiting: bool,
}

/// Who may join a guild this node coordinates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Admission {
    /// Anyone connected.
    Open,
    /// The peer ids in [`GuildConfig::allowlist`].
    Allowlist,
    /// Whoever presents a valid invitation signed by the coordinator, once.
    #[default]
    Invite,
}

impl Admission {
    /// Its name in settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Admission::Open => "open",
            Admission::Allowlist => "allowlist",
            Admission::Invite => "invite",
        }
    }
}

impl Default for GuildConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 2000,
            missed_heartbeats: 3,
            max_members: 64,
            joins_per_second: 10,
            received_kept: 256,
            received_kept_bytes: 1 << 20,
            admission: Admission::Invite,
            allowlist: Vec::new(),
            withhold_membership_updates: false,
            take_over_without_waiting: false,
        }
    }
}

impl GuildConfig {
    /// Checks every setting, naming each one that is out of range: a zero interval would
    /// stop the service, a zero window would mark every member down at once.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if !(10..=3_600_000).contains(&self.heartbeat_interval_ms) {
            problems.push(format!(
                "heartbeat_interval_ms = {} must be between 10 and 3600000",
                self.heartbeat_interval_ms
            ));
        }
        if !(1..=1_000).contains(&self.missed_heartbeats) {
            problems.push(format!(
                "missed_heartbeats = {} must be between 1 and 1000",
                self.missed_heartbeats
            ));
        }
        if !(1..=10_000).contains(&self.max_members) {
            problems.push(format!(
                "max_members = {} must be between 1 and 10000",
                self.max_members
            ));
        }
        if !(1..=10_000).contains(&self.joins_per_second) {
            problems.push(format!(
                "joins_per_second = {} must be between 1 and 10000",
                self.joins_per_second
            ));
        }
        if self.received_kept > 100_000 {
            problems.push(format!(
                "received_kept = {} must be at most 100000",
                self.received_kept
            ));
        }
        if self.received_kept_bytes > 1 << 30 {
            problems.push(format!(
                "received_kept_bytes = {} must be at most 1073741824",
                self.received_kept_bytes
            ));
        }
        for peer in &self.allowlist {
            if peer.parse::<libp2p::PeerId>().is_err() {
                problems.push(format!("allowlist entry {peer:?} is not a peer id"));
            }
        }
        if self.admission == Admission::Allowlist && self.allowlist.is_empty() {
            problems
                .push("admission = \"allowlist\" needs at least one peer id in allowlist".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// The allowlist as peer ids (validated at start).
    pub(super) fn allowed(&self) -> Vec<libp2p::PeerId> {
        self.allowlist
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// The heartbeat interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// How long a member may stay silent before it is marked down.
    pub fn down_after(&self) -> Duration {
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
    fn every_setting_out_of_range_is_named() {
        assert!(GuildConfig::default().validate().is_ok());
        let bad = GuildConfig {
            heartbeat_interval_ms: 0,
            missed_heartbeats: 0,
            max_members: 0,
            joins_per_second: 0,
            received_kept: usize::MAX,
            received_kept_bytes: usize::MAX,
            admission: Admission::Allowlist,
            allowlist: vec!["not-a-peer".into()],
            withhold_membership_updates: false,
            take_over_without_waiting: false,
        };
        let err = bad.validate().expect_err("refused");
        for name in [
            "heartbeat_interval_ms",
            "missed_heartbeats",
            "max_members",
            "joins_per_second",
            "received_kept",
            "received_kept_bytes",
            "allowlist entry",
        ] {
            assert!(err.contains(name), "{name} missing from {err}");
        }
    }

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
