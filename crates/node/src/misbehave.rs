//! What a node under test is told to do wrong: one setting, given on the command line
//! (`--misbehave`, repeatable) or in the node's file (`[test] misbehave = [...]`), never
//! read from the environment, so that nothing a user's shell happens to hold can make a
//! node cheat. A node running with any of them says so on start (its ready line), in
//! `GET /v1/node` (`misbehaving`) and in `/readyz` (`misbehaviour`).
//!
//! | item | what the node does |
//! |---|---|
//! | `forge-receipts` | as an executor, signs receipts naming an output it did not produce |
//! | `stall-answers=MS` | as an executor, holds each answer back MS milliseconds after the run |
//! | `inflate-fuel` | as an executor, signs receipts claiming a hundred times the fuel it used |
//! | `fake-output` | as an executor, returns made-up output and output files, its receipt's hashes consistent with them |
//! | `overprice` | as an executor, offers on every task at ten times the requester's maximum price |
//! | `tamper-chunks` | as a requester, flips a byte of every chunk of a module it serves |
//! | `drop-chunk-connection=N` | as a requester, closes the connection instead of answering the first request for chunk N of a module |
//! | `withhold-payment-acks=N` | as a payee, keeps the first N payments but answers each with an error |
//! | `never-pay` | as a requester, never pays for a receipt |
//! | `skip-ledger-open` | as a requester, opens channels with executors but never asks the ledger to lock them |
//! | `close-on-nothing` | as a payer, starts a unilateral close on nothing paid, whatever it signed |
//! | `withhold-membership` | ignores membership updates on guild topics, as if gossip lost them |
//! | `take-over-at-once` | as a named successor, takes the guild over as soon as its coordinator falls silent, not in its slot, and before judging another successor's takeover that reached it first |

use serde::{Deserialize, Serialize};

/// The misbehaviours a node runs with (all off by default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Misbehaviour {
    /// `forge-receipts`.
    pub forge_receipts: bool,
    /// `stall-answers=MS`: milliseconds, 0 when off.
    pub stall_answers_ms: u64,
    /// `inflate-fuel`.
    pub inflate_fuel: bool,
    /// `fake-output`.
    pub fake_output: bool,
    /// `overprice`.
    pub overprice: bool,
    /// `tamper-chunks`.
    pub tamper_chunks: bool,
    /// `drop-chunk-connection=N`: the chunk, `None` when off.
    pub drop_chunk_connection: Option<u32>,
    /// `withhold-payment-acks=N`: how many, 0 when off.
    pub withhold_payment_acks: u64,
    /// `never-pay`.
    pub never_pay: bool,
    /// `skip-ledger-open`.
    pub skip_ledger_open: bool,
    /// `close-on-nothing`.
    pub close_on_nothing: bool,
    /// `withhold-membership`.
    pub withhold_membership: bool,
    /// `take-over-at-once`.
    pub take_over_at_once: bool,
}

/// The names `--misbehave` takes, for its help and its errors.
pub const ITEMS: &str = "forge-receipts, stall-answers=MS, inflate-fuel, fake-output, overprice, \
                         tamper-chunks, drop-chunk-connection=N, withhold-payment-acks=N, never-pay, skip-ledger-open, close-on-nothing, withhold-membership, \
                         take-over-at-once";

impl Misbehaviour {
    /// Parses a list of items (`name` or `name=value`), naming the first it does not know.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        let mut m = Self::default();
        for item in items {
            let item = item.as_ref().trim();
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (item, None),
            };
            let number = |what: &str| -> Result<u64, String> {
                value
                    .ok_or_else(|| format!("misbehaviour {name} needs ={what}"))?
                    .parse::<u64>()
                    .map_err(|e| format!("misbehaviour {item:?}: {e}"))
            };
            let flag = || match value {
                None => Ok(true),
                Some(_) => Err(format!("misbehaviour {name} takes no value")),
            };
            match name {
                "forge-receipts" => m.forge_receipts = flag()?,
                "stall-answers" => m.stall_answers_ms = number("MS")?,
                "inflate-fuel" => m.inflate_fuel = flag()?,
                "fake-output" => m.fake_output = flag()?,
                "overprice" => m.overprice = flag()?,
                "tamper-chunks" => m.tamper_chunks = flag()?,
                "drop-chunk-connection" => {
                    let n = number("N")?;
                    m.drop_chunk_connection = Some(
                        u32::try_from(n)
                            .map_err(|_| format!("misbehaviour {item:?}: too large"))?,
                    );
                }
                "withhold-payment-acks" => m.withhold_payment_acks = number("N")?,
                "never-pay" => m.never_pay = flag()?,
                "skip-ledger-open" => m.skip_ledger_open = flag()?,
                "close-on-nothing" => m.close_on_nothing = flag()?,
                "withhold-membership" => m.withhold_membership = flag()?,
                "take-over-at-once" => m.take_over_at_once = flag()?,
                other => return Err(format!("unknown misbehaviour {other:?} (known: {ITEMS})")),
            }
        }
        Ok(m)
    }

    /// The items that are on, as `--misbehave` spells them.
    pub fn items(&self) -> Vec<String> {
        let mut items = Vec::new();
        let mut on = |yes: bool, item: String| {
            if yes {
                items.push(item);
            }
        };
        on(self.forge_receipts, "forge-receipts".into());
        on(
            self.stall_answers_ms > 0,
            format!("stall-answers={}", self.stall_answers_ms),
        );
        on(self.inflate_fuel, "inflate-fuel".into());
        on(self.fake_output, "fake-output".into());
        on(self.overprice, "overprice".into());
        on(self.tamper_chunks, "tamper-chunks".into());
        on(
            self.drop_chunk_connection.is_some(),
            format!(
                "drop-chunk-connection={}",
                self.drop_chunk_connection.unwrap_or(0)
            ),
        );
        on(
            self.withhold_payment_acks > 0,
            format!("withhold-payment-acks={}", self.withhold_payment_acks),
        );
        on(self.never_pay, "never-pay".into());
        on(self.skip_ledger_open, "skip-ledger-open".into());
        on(self.close_on_nothing, "close-on-nothing".into());
        on(self.withhold_membership, "withhold-membership".into());
        on(self.take_over_at_once, "take-over-at-once".into());
        items
    }

    /// Whether any is on.
    pub fn any(&self) -> bool {
        !self.items().is_empty()
    }

    /// The items the market acts on.
    pub fn market(&self) -> zerostate_market::Misbehaviour {
        zerostate_market::Misbehaviour {
            forge_receipts: self.forge_receipts,
            stall_answers_ms: self.stall_answers_ms,
            inflate_fuel: self.inflate_fuel,
            fake_output: self.fake_output,
            overprice: self.overprice,
            tamper_chunks: self.tamper_chunks,
            drop_chunk_connection: self.drop_chunk_connection,
        }
    }

    /// The items the payment protocol acts on.
    pub fn payments(&self) -> zerostate_payment_protocol::Misbehaviour {
        zerostate_payment_protocol::Misbehaviour {
            withhold_payment_acks: self.withhold_payment_acks,
            never_pay: self.never_pay,
            skip_ledger_open: self.skip_ledger_open,
            close_on_nothing: self.close_on_nothing,
        }
    }
}

/// The `[test]` section of a node's file: what tests and the chaos suite make a node do
/// wrong. Default: nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestSettings {
    /// Misbehaviours, as `--misbehave` takes them (see [`ITEMS`]). Default none.
    pub misbehave: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_and_unknown_ones_are_named() {
        let items = [
            "forge-receipts",
            "stall-answers=60000",
            "inflate-fuel",
            "fake-output",
            "overprice",
            "tamper-chunks",
            "drop-chunk-connection=3",
            "withhold-payment-acks=1",
            "never-pay",
            "skip-ledger-open",
            "close-on-nothing",
            "withhold-membership",
            "take-over-at-once",
        ];
        let m = Misbehaviour::parse(&items).expect("parses");
        assert_eq!(m.items(), items);
        assert!(m.any());
        assert!(!Misbehaviour::default().any());
        let err = Misbehaviour::parse(&["lie"]).expect_err("unknown");
        assert!(
            err.contains("\"lie\"") && err.contains("forge-receipts"),
            "{err}"
        );
        assert!(Misbehaviour::parse(&["stall-answers"]).is_err());
        assert!(Misbehaviour::parse(&["never-pay=1"]).is_err());
    }
}
