//! Settlement: where deposits are locked and channels are paid out.
//!
//! [`Settlement`] is what a chain would implement; [`SqliteLedger`] implements it on an
//! embedded SQLite database and stands in for the chain on a devnet.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use zerostate_telemetry::names::span;

use crate::channel::{ChannelId, ChannelParams, ChannelState, LedgerId, SignedState};
use crate::db::{self, amount, int, uint};
use crate::keys::{Signature, verify};
use crate::{Amount, PaymentError, PublicKey};

/// A request to open a channel, signed by both parties over [`ChannelParams::open_bytes`]:
/// the payer agrees to lock the deposit, the payee acknowledges the channel.
#[derive(Clone, Copy, Debug)]
pub struct OpenRequest {
    /// The channel.
    pub params: ChannelParams,
    /// The payer's signature.
    pub payer_signature: Signature,
    /// The payee's signature.
    pub payee_signature: Signature,
}

/// Where a channel stands on the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelStatus {
    /// Deposit locked, payments flowing.
    Open,
    /// A close was started with `state`; a state with a higher cumulative amount may
    /// replace it until `challenge_ends`.
    Closing {
        /// The state the channel will settle on.
        state: ChannelState,
        /// Unix seconds at which the challenge window ends.
        challenge_ends: u64,
        /// Who started the close (the other party may dispute).
        closer: PublicKey,
    },
    /// Paid out.
    Settled(Settled),
}

impl ChannelStatus {
    fn name(&self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closing { .. } => "closing",
            Self::Settled(_) => "settled",
        }
    }
}

/// How a channel's deposit was paid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    /// To the payee: the cumulative amount of the settling state.
    pub to_payee: Amount,
    /// Back to the payer: the rest of the deposit.
    pub to_payer: Amount,
}

/// A channel as the ledger knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelRecord {
    /// What the channel is.
    pub params: ChannelParams,
    /// Where it stands.
    pub status: ChannelStatus,
    /// How long, in seconds, the other party may dispute a unilateral close of this
    /// channel, and how long past expiry the payee may still close before the payer is
    /// refunded: the ledger's period when the channel was opened, fixed from then on.
    pub challenge_period: u64,
}

/// Totals for checking that money is neither created nor lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Audit {
    /// Everything ever credited with [`Settlement::fund`].
    pub funded: u128,
    /// The sum of all account balances.
    pub balances: u128,
    /// The deposits of channels not yet settled.
    pub locked: u128,
}

impl Audit {
    /// Whether balances and locked deposits add up to what was funded.
    pub fn is_conserved(&self) -> bool {
        self.balances + self.locked == self.funded
    }
}

/// What a settlement layer guarantees, whether a chain or the embedded ledger.
///
/// Contract:
/// - Every method is atomic: it either applies completely and durably before returning
///   `Ok`, or changes nothing and returns the reason.
/// - Money is conserved: balances plus locked deposits always equal what was funded.
/// - A channel never pays out more than its deposit, and pays out exactly once.
/// - `now` is the settlement layer's clock in unix seconds (a chain's block time); states
///   are only ever verified against the payer's key recorded at open.
/// - A unilateral close settles on the state with the highest cumulative amount submitted
///   before its challenge window ends. The payer signs every state and so controls the
///   nonce; the amount is what the payee is owed, so the nonce never decides.
/// - Every signed byte string names the ledger: what was signed for another is refused.
/// - `caller` is who asks, as the node authenticated it (a libp2p peer's key). Who may:
///   open, close cooperatively, start a close: the payer or the payee; dispute: the party
///   that did not start the close; finalize after the window, refund after expiry: anyone
///   (the payout follows the rules whoever asks).
pub trait Settlement {
    /// This ledger's id, named in everything signed for it.
    fn id(&self) -> LedgerId;
    /// Credits `amount` to `account` (a devnet faucet; a chain has its own way in).
    fn fund(&self, account: &PublicKey, amount: Amount) -> Result<(), PaymentError>;
    /// What `account` holds.
    fn balance(&self, account: &PublicKey) -> Result<Amount, PaymentError>;
    /// Locks the payer's deposit and opens the channel.
    fn open(
        &self,
        caller: &PublicKey,
        request: &OpenRequest,
        now: u64,
    ) -> Result<ChannelId, PaymentError>;
    /// Settles at once on `state`, which the payee agrees to by `payee_signature` over
    /// [`ChannelState::close_bytes`].
    fn close_cooperative(
        &self,
        caller: &PublicKey,
        state: &SignedState,
        payee_signature: &Signature,
        now: u64,
    ) -> Result<Settled, PaymentError>;
    /// Starts a unilateral close on `state` (or on nothing paid, when `None`); returns when
    /// the challenge window ends (the channel's own challenge period from `now`).
    fn start_close(
        &self,
        caller: &PublicKey,
        channel: &ChannelId,
        state: Option<&SignedState>,
        now: u64,
    ) -> Result<u64, PaymentError>;
    /// Replaces the closing state with one of a higher cumulative amount, inside the
    /// challenge window.
    fn dispute(
        &self,
        caller: &PublicKey,
        state: &SignedState,
        now: u64,
    ) -> Result<(), PaymentError>;
    /// Pays out a closing channel once its challenge window has ended.
    fn finalize(
        &self,
        caller: &PublicKey,
        channel: &ChannelId,
        now: u64,
    ) -> Result<Settled, PaymentError>;
    /// Returns the whole deposit to the payer of a channel nobody closed by its expiry plus
    /// the channel's challenge period.
    fn refund_expired(
        &self,
        caller: &PublicKey,
        channel: &ChannelId,
        now: u64,
    ) -> Result<Settled, PaymentError>;
    /// The channel's record.
    fn channel(&self, channel: &ChannelId) -> Result<ChannelRecord, PaymentError>;
    /// Totals, for checking conservation.
    fn audit(&self) -> Result<Audit, PaymentError>;
}

/// The embedded ledger: one SQLite database (WAL, every commit synced).
#[derive(Debug)]
pub struct SqliteLedger {
    conn: Mutex<Connection>,
    id: LedgerId,
    /// The challenge period of the channels opened from now on.
    challenge_period: u64,
}

/// The format of the ledger's database (SQLite `user_version`). Version 3 records each
/// channel's challenge period.
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    ledger_id BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    key BLOB PRIMARY KEY,
    balance INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS funded (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    total_hi INTEGER NOT NULL,
    total_lo INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS channels (
    id BLOB PRIMARY KEY,
    payer BLOB NOT NULL,
    payee BLOB NOT NULL,
    deposit INTEGER NOT NULL,
    expiry INTEGER NOT NULL,
    nonce INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'closing', 'settled')),
    state_nonce INTEGER,
    state_cumulative INTEGER,
    state_receipt BLOB,
    challenge_ends INTEGER,
    closer BLOB,
    to_payee INTEGER,
    to_payer INTEGER,
    challenge_period INTEGER NOT NULL
);
";

impl SqliteLedger {
    /// Opens the ledger `id` at `path`; channels opened from now on get `challenge_period`
    /// (seconds), those opened before keep theirs. A database made for another ledger id is
    /// refused. A version 2 database (before periods were kept per channel) is brought up
    /// to date, its channels given `challenge_period`: the period they were opened under,
    /// when it has not been changed since.
    pub fn open(path: &Path, id: LedgerId, challenge_period: u64) -> Result<Self, PaymentError> {
        Self::with_connection(db::open(path)?, id, challenge_period)
    }

    /// A ledger in memory: the same engine and rules, nothing on disk.
    pub fn in_memory(id: LedgerId, challenge_period: u64) -> Result<Self, PaymentError> {
        Self::with_connection(db::open_in_memory()?, id, challenge_period)
    }

    fn with_connection(
        conn: Connection,
        id: LedgerId,
        challenge_period: u64,
    ) -> Result<Self, PaymentError> {
        let migrations = [(
            2,
            format!(
                "ALTER TABLE channels ADD COLUMN challenge_period INTEGER NOT NULL DEFAULT {}",
                int(challenge_period)
            ),
        )];
        db::prepare(
            &conn,
            SCHEMA,
            SCHEMA_VERSION,
            &migrations,
            "ledger database",
        )?;
        let stored: Option<Vec<u8>> = conn
            .query_row("SELECT ledger_id FROM ledger WHERE id = 0", [], |r| {
                r.get(0)
            })
            .optional()?;
        match stored {
            None => {
                conn.execute(
                    "INSERT INTO ledger (id, ledger_id) VALUES (0, ?1)",
                    [&id.0[..]],
                )?;
            }
            Some(bytes) => {
                let got = LedgerId(db::bytes32(bytes, "stored ledger id")?);
                if got != id {
                    return Err(PaymentError::WrongLedger { expected: id, got });
                }
            }
        }
        Ok(Self {
            conn: Mutex::new(conn),
            id,
            challenge_period,
        })
    }

    /// Runs `f` in an immediate transaction, committing only if it succeeds.
    fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, PaymentError>,
    ) -> Result<T, PaymentError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

fn balance_of(tx: &Connection, account: &PublicKey) -> Result<Amount, PaymentError> {
    let b: Option<i64> = tx
        .query_row(
            "SELECT balance FROM accounts WHERE key = ?1",
            [&account.0[..]],
            |r| r.get(0),
        )
        .optional()?;
    Ok(b.map(amount).unwrap_or(Amount::ZERO))
}

fn set_balance(tx: &Connection, account: &PublicKey, value: Amount) -> Result<(), PaymentError> {
    tx.execute(
        "INSERT INTO accounts (key, balance) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET balance = excluded.balance",
        params![&account.0[..], int(value.base_units())],
    )?;
    Ok(())
}

fn credit(tx: &Connection, account: &PublicKey, value: Amount) -> Result<(), PaymentError> {
    let b = balance_of(tx, account)?
        .checked_add(value)
        .ok_or(PaymentError::Overflow)?;
    set_balance(tx, account, b)
}

fn load(tx: &Connection, ledger: LedgerId, id: &ChannelId) -> Result<ChannelRecord, PaymentError> {
    let row = tx
        .query_row(
            "SELECT payer, payee, deposit, expiry, nonce, status, state_nonce, state_cumulative,
                    state_receipt, challenge_ends, to_payee, to_payer, closer, challenge_period
             FROM channels WHERE id = ?1",
            [&id.0[..]],
            |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                    r.get::<_, Option<Vec<u8>>>(8)?,
                    r.get::<_, Option<i64>>(9)?,
                    r.get::<_, Option<i64>>(10)?,
                    r.get::<_, Option<i64>>(11)?,
                    r.get::<_, Option<Vec<u8>>>(12)?,
                    r.get::<_, i64>(13)?,
                ))
            },
        )
        .optional()?
        .ok_or(PaymentError::UnknownChannel(*id))?;
    let (
        payer,
        payee,
        deposit,
        expiry,
        nonce,
        status,
        s_nonce,
        s_cum,
        s_receipt,
        ends,
        to_payee,
        to_payer,
        closer,
        period,
    ) = row;
    let params = ChannelParams {
        ledger,
        payer: db::key(payer)?,
        payee: db::key(payee)?,
        deposit: amount(deposit),
        expiry: uint(expiry),
        nonce: uint(nonce),
    };
    let corrupt = |reason: &str| PaymentError::Malformed {
        what: "stored channel",
        reason: reason.to_owned(),
    };
    let status = match status.as_str() {
        "open" => ChannelStatus::Open,
        "closing" => ChannelStatus::Closing {
            state: ChannelState {
                ledger,
                channel: *id,
                nonce: uint(s_nonce.ok_or_else(|| corrupt("closing without a nonce"))?),
                cumulative: amount(s_cum.ok_or_else(|| corrupt("closing without an amount"))?),
                receipt: db::bytes32(
                    s_receipt.ok_or_else(|| corrupt("closing without a receipt"))?,
                    "stored receipt",
                )?,
            },
            challenge_ends: uint(ends.ok_or_else(|| corrupt("closing without a window"))?),
            closer: db::key(closer.ok_or_else(|| corrupt("closing without a closer"))?)?,
        },
        "settled" => ChannelStatus::Settled(Settled {
            to_payee: amount(to_payee.ok_or_else(|| corrupt("settled without payouts"))?),
            to_payer: amount(to_payer.ok_or_else(|| corrupt("settled without payouts"))?),
        }),
        other => return Err(corrupt(&format!("unknown status {other:?}"))),
    };
    Ok(ChannelRecord {
        params,
        status,
        challenge_period: uint(period),
    })
}

/// Checks a state against the channel it claims to belong to.
fn check_state(record: &ChannelRecord, state: &SignedState) -> Result<(), PaymentError> {
    if state.state.ledger != record.params.ledger {
        return Err(PaymentError::WrongLedger {
            expected: record.params.ledger,
            got: state.state.ledger,
        });
    }
    state.verify(&record.params.payer)?;
    if state.state.cumulative > record.params.deposit {
        return Err(PaymentError::Overdraft {
            cumulative: state.state.cumulative,
            deposit: record.params.deposit,
        });
    }
    Ok(())
}

fn settle(
    tx: &Connection,
    id: &ChannelId,
    record: &ChannelRecord,
    to_payee: Amount,
) -> Result<Settled, PaymentError> {
    let to_payer = record
        .params
        .deposit
        .checked_sub(to_payee)
        .ok_or(PaymentError::Overdraft {
            cumulative: to_payee,
            deposit: record.params.deposit,
        })?;
    credit(tx, &record.params.payee, to_payee)?;
    credit(tx, &record.params.payer, to_payer)?;
    tx.execute(
        "UPDATE channels SET status = 'settled', to_payee = ?2, to_payer = ?3 WHERE id = ?1",
        params![
            &id.0[..],
            int(to_payee.base_units()),
            int(to_payer.base_units())
        ],
    )?;
    let settled = Settled { to_payee, to_payer };
    tracing::info!(
        channel.id = %id,
        to_payee = %to_payee,
        to_payer = %to_payer,
        "channel settled"
    );
    Ok(settled)
}

/// Refuses a caller that is neither the payer nor the payee.
fn party_only(
    caller: &PublicKey,
    id: &ChannelId,
    params: &ChannelParams,
    operation: &'static str,
) -> Result<(), PaymentError> {
    if *caller == params.payer || *caller == params.payee {
        Ok(())
    } else {
        Err(PaymentError::NotAllowed {
            caller: *caller,
            channel: *id,
            operation,
            reason: "only the payer or the payee may",
        })
    }
}

fn wrong_status(id: &ChannelId, record: &ChannelRecord, operation: &'static str) -> PaymentError {
    PaymentError::WrongStatus {
        channel: *id,
        status: record.status.name(),
        operation,
    }
}

impl Settlement for SqliteLedger {
    fn id(&self) -> LedgerId {
        self.id
    }

    fn fund(&self, account: &PublicKey, value: Amount) -> Result<(), PaymentError> {
        if value.is_zero() {
            return Err(PaymentError::ZeroAmount);
        }
        self.write(|tx| {
            credit(tx, account, value)?;
            let (hi, lo): (i64, i64) = tx
                .query_row("SELECT total_hi, total_lo FROM funded WHERE id = 0", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .unwrap_or((0, 0));
            let total = (u128::from(uint(hi)) << 64 | u128::from(uint(lo)))
                .checked_add(u128::from(value.base_units()))
                .ok_or(PaymentError::Overflow)?;
            tx.execute(
                "INSERT INTO funded (id, total_hi, total_lo) VALUES (0, ?1, ?2)
                 ON CONFLICT(id) DO UPDATE SET total_hi = excluded.total_hi, total_lo = excluded.total_lo",
                params![int((total >> 64) as u64), int(total as u64)],
            )?;
            Ok(())
        })
    }

    fn balance(&self, account: &PublicKey) -> Result<Amount, PaymentError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        balance_of(&conn, account)
    }

    fn open(
        &self,
        caller: &PublicKey,
        request: &OpenRequest,
        now: u64,
    ) -> Result<ChannelId, PaymentError> {
        let p = &request.params;
        let id = p.id();
        let _span = tracing::info_span!(span::PAYMENT_CHANNEL_OPEN, channel.id = %id, peer.id = %p.payee, amount = %p.deposit).entered();
        if p.ledger != self.id {
            return Err(PaymentError::WrongLedger {
                expected: self.id,
                got: p.ledger,
            });
        }
        party_only(caller, &id, p, "open")?;
        p.validate(now)?;
        let bytes = p.open_bytes();
        verify(&p.payer, &bytes, &request.payer_signature)?;
        verify(&p.payee, &bytes, &request.payee_signature)?;
        self.write(|tx| {
            let exists: Option<i64> = tx
                .query_row("SELECT 1 FROM channels WHERE id = ?1", [&id.0[..]], |r| {
                    r.get(0)
                })
                .optional()?;
            if exists.is_some() {
                return Err(PaymentError::DuplicateChannel(id));
            }
            let available = balance_of(tx, &p.payer)?;
            let rest = available
                .checked_sub(p.deposit)
                .ok_or(PaymentError::InsufficientFunds {
                    account: p.payer,
                    available,
                    needed: p.deposit,
                })?;
            set_balance(tx, &p.payer, rest)?;
            tx.execute(
                "INSERT INTO channels (id, payer, payee, deposit, expiry, nonce, status,
                                       challenge_period)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open', ?7)",
                params![
                    &id.0[..],
                    &p.payer.0[..],
                    &p.payee.0[..],
                    int(p.deposit.base_units()),
                    int(p.expiry),
                    int(p.nonce),
                    int(self.challenge_period)
                ],
            )?;
            Ok(id)
        })
    }

    fn close_cooperative(
        &self,
        caller: &PublicKey,
        state: &SignedState,
        payee_signature: &Signature,
        _now: u64,
    ) -> Result<Settled, PaymentError> {
        let id = state.state.channel;
        let _span = tracing::info_span!(span::PAYMENT_CHANNEL_CLOSE, channel.id = %id, nonce = state.state.nonce, cooperative = true).entered();
        self.write(|tx| {
            let record = load(tx, self.id, &id)?;
            party_only(caller, &id, &record.params, "close")?;
            if matches!(record.status, ChannelStatus::Settled(_)) {
                return Err(wrong_status(&id, &record, "close"));
            }
            check_state(&record, state)?;
            verify(
                &record.params.payee,
                &state.state.close_bytes(),
                payee_signature,
            )?;
            let _s = tracing::info_span!(span::PAYMENT_SETTLEMENT, channel.id = %id).entered();
            settle(tx, &id, &record, state.state.cumulative)
        })
    }

    fn start_close(
        &self,
        caller: &PublicKey,
        channel: &ChannelId,
        state: Option<&SignedState>,
        now: u64,
    ) -> Result<u64, PaymentError> {
        let _span = tracing::info_span!(span::PAYMENT_CHANNEL_CLOSE, channel.id = %channel, cooperative = false).entered();
        self.write(|tx| {
            let record = load(tx, self.id, channel)?;
            party_only(caller, channel, &record.params, "start a close of")?;
            if record.status != ChannelStatus::Open {
                return Err(wrong_status(channel, &record, "start a close"));
            }
            let closing = match state {
                Some(s) => {
                    if s.state.channel != *channel {
                        return Err(PaymentError::InvalidChannel(
                            "the state belongs to another channel",
                        ));
                    }
                    check_state(&record, s)?;
                    s.state
                }
                None => ChannelState::initial(self.id, *channel),
            };
            let ends = now
                .checked_add(record.challenge_period)
                .ok_or(PaymentError::Overflow)?;
            tx.execute(
                "UPDATE channels SET status = 'closing', state_nonce = ?2, state_cumulative = ?3,
                        state_receipt = ?4, challenge_ends = ?5, closer = ?6 WHERE id = ?1",
                params![
                    &channel.0[..],
                    int(closing.nonce),
                    int(closing.cumulative.base_units()),
                    &closing.receipt[..],
                    int(ends),
                    &caller.0[..]
                ],
            )?;
            Ok(ends)
        })
    }

    fn dispute(
        &self,
        caller: &PublicKey,
        state: &SignedState,
        now: u64,
    ) -> Result<(), PaymentError> {
        let id = state.state.channel;
        let _span =
            tracing::info_span!(span::PAYMENT_DISPUTE, channel.id = %id, nonce = state.state.nonce)
                .entered();
        self.write(|tx| {
            let record = load(tx, self.id, &id)?;
            let ChannelStatus::Closing { state: current, challenge_ends, closer } = record.status else {
                return Err(wrong_status(&id, &record, "dispute"));
            };
            party_only(caller, &id, &record.params, "dispute")?;
            if *caller == closer {
                return Err(PaymentError::NotAllowed {
                    caller: *caller,
                    channel: id,
                    operation: "dispute",
                    reason: "the party that started the close may not dispute it",
                });
            }
            if now >= challenge_ends {
                return Err(PaymentError::ChallengeWindow { channel: id, ends: challenge_ends, now });
            }
            check_state(&record, state)?;
            // The amount owed decides, never the nonce: the payer signs every state, so it
            // could sign a newer state that pays less.
            if state.state.cumulative <= current.cumulative {
                return Err(PaymentError::NotIncreasing {
                    got: state.state.cumulative,
                    last: current.cumulative,
                });
            }
            tx.execute(
                "UPDATE channels SET state_nonce = ?2, state_cumulative = ?3, state_receipt = ?4 WHERE id = ?1",
                params![
                    &id.0[..],
                    int(state.state.nonce),
                    int(state.state.cumulative.base_units()),
                    &state.state.receipt[..]
                ],
            )?;
            Ok(())
        })
    }

    fn finalize(
        &self,
        _caller: &PublicKey,
        channel: &ChannelId,
        now: u64,
    ) -> Result<Settled, PaymentError> {
        let _span = tracing::info_span!(span::PAYMENT_SETTLEMENT, channel.id = %channel).entered();
        self.write(|tx| {
            let record = load(tx, self.id, channel)?;
            let ChannelStatus::Closing {
                state,
                challenge_ends,
                ..
            } = record.status
            else {
                return Err(wrong_status(channel, &record, "finalize"));
            };
            if now < challenge_ends {
                return Err(PaymentError::ChallengeWindow {
                    channel: *channel,
                    ends: challenge_ends,
                    now,
                });
            }
            settle(tx, channel, &record, state.cumulative)
        })
    }

    fn refund_expired(
        &self,
        _caller: &PublicKey,
        channel: &ChannelId,
        now: u64,
    ) -> Result<Settled, PaymentError> {
        let _span =
            tracing::info_span!(span::PAYMENT_SETTLEMENT, channel.id = %channel, refund = true)
                .entered();
        self.write(|tx| {
            let record = load(tx, self.id, channel)?;
            if record.status != ChannelStatus::Open {
                return Err(wrong_status(channel, &record, "refund"));
            }
            let from = record.params.expiry.saturating_add(record.challenge_period);
            if now < from {
                return Err(PaymentError::RefundNotDue {
                    channel: *channel,
                    from,
                    now,
                });
            }
            settle(tx, channel, &record, Amount::ZERO)
        })
    }

    fn channel(&self, channel: &ChannelId) -> Result<ChannelRecord, PaymentError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        load(&conn, self.id, channel)
    }

    fn audit(&self) -> Result<Audit, PaymentError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let sum = |sql: &str| -> Result<u128, PaymentError> {
            let mut stmt = conn.prepare(sql)?;
            let rows = stmt.query_map([], |r| r.get::<_, i64>(0))?;
            let mut total = 0u128;
            for v in rows {
                total = total
                    .checked_add(u128::from(uint(v?)))
                    .ok_or(PaymentError::Overflow)?;
            }
            Ok(total)
        };
        let (hi, lo): (i64, i64) = conn
            .query_row(
                "SELECT total_hi, total_lo FROM funded WHERE id = 0",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .unwrap_or((0, 0));
        Ok(Audit {
            funded: u128::from(uint(hi)) << 64 | u128::from(uint(lo)),
            balances: sum("SELECT balance FROM accounts")?,
            locked: sum("SELECT deposit FROM channels WHERE status != 'settled'")?,
        })
    }
}
