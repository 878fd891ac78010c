//! Each party's own record of its channels: the payer's latest signed state (so a nonce is
//! never signed twice) and the payee's latest accepted state (so no acknowledged payment is
//! lost). Both persist before they hand anything out.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use zerostate_telemetry::names::span;

use crate::channel::{ChannelId, ChannelParams, ChannelState, LedgerId, SignedState};
use crate::db::{self, amount, int, uint};
use crate::keys::{Keypair, Signature, Verifier};
use crate::{Amount, PaymentError};

/// The format of a party's database (SQLite `user_version`). Version 3 keeps the channels
/// whose deposit the ledger has not confirmed (`opening`); version 4 the payee's best
/// voucher for each channel settled on a chain (`vouchers`).
const SCHEMA_VERSION: i64 = 4;

/// The table version 4 adds.
const VOUCHERS: &str = "
CREATE TABLE IF NOT EXISTS vouchers (
    channel BLOB PRIMARY KEY,
    cumulative INTEGER NOT NULL,
    signature BLOB NOT NULL
) WITHOUT ROWID";

/// The table version 3 adds.
const OPENING: &str = "
CREATE TABLE IF NOT EXISTS opening (
    channel BLOB PRIMARY KEY,
    since INTEGER NOT NULL
) WITHOUT ROWID";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS channels (
    id BLOB PRIMARY KEY,
    ledger BLOB NOT NULL,
    payer BLOB NOT NULL,
    payee BLOB NOT NULL,
    deposit INTEGER NOT NULL,
    expiry INTEGER NOT NULL,
    nonce INTEGER NOT NULL,
    state_nonce INTEGER NOT NULL,
    state_cumulative INTEGER NOT NULL,
    state_receipt BLOB NOT NULL,
    state_signature BLOB
);
CREATE TABLE IF NOT EXISTS unacknowledged (
    channel BLOB NOT NULL,
    nonce INTEGER NOT NULL,
    cumulative INTEGER NOT NULL,
    receipt BLOB NOT NULL,
    signature BLOB NOT NULL,
    PRIMARY KEY (channel, nonce)
);
CREATE TABLE IF NOT EXISTS history (
    channel BLOB NOT NULL,
    nonce INTEGER NOT NULL,
    cumulative INTEGER NOT NULL,
    receipt BLOB NOT NULL,
    PRIMARY KEY (channel, nonce)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS closing (
    channel BLOB PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS opening (
    channel BLOB PRIMARY KEY,
    since INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vouchers (
    channel BLOB PRIMARY KEY,
    cumulative INTEGER NOT NULL,
    signature BLOB NOT NULL
) WITHOUT ROWID;
";

/// The most states a payer keeps signed but unacknowledged on one channel; past it,
/// payments are refused until the payee acknowledges.
pub const MAX_UNACKNOWLEDGED: usize = 1024;

/// A channel and its latest state, as one party keeps them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalChannel {
    /// What the channel is.
    pub params: ChannelParams,
    /// The latest state (nonce 0 before any payment).
    pub state: ChannelState,
    /// The payer's signature on `state`; `None` before any payment.
    pub signature: Option<Signature>,
    /// Whether this side has agreed to or started its settlement: no payment is made or
    /// accepted on it any more.
    pub closing: bool,
    /// The payer's side: since when (unix seconds) its open was sent to the ledger without
    /// an answer that the deposit is locked; `None` once it is (and always on the
    /// payee's side). No payment is made on it meanwhile.
    pub opening: Option<u64>,
}

impl LocalChannel {
    /// The latest signed state, if any payment was made.
    pub fn signed(&self) -> Option<SignedState> {
        self.signature.map(|signature| SignedState {
            state: self.state,
            signature,
        })
    }
}

/// One payment on a channel, as its history keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payment {
    /// The state's nonce.
    pub nonce: u64,
    /// What this payment added.
    pub amount: Amount,
    /// The cumulative amount after it.
    pub cumulative: Amount,
    /// SHA-256 of the receipt it paid for.
    pub receipt: [u8; 32],
}

/// The shared table and its operations.
#[derive(Debug)]
struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    fn new(conn: Connection) -> Result<Self, PaymentError> {
        db::prepare(
            &conn,
            SCHEMA,
            SCHEMA_VERSION,
            &[(2, OPENING.to_owned()), (3, VOUCHERS.to_owned())],
            "payment store",
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, p: &ChannelParams) -> Result<ChannelId, PaymentError> {
        insert(&self.lock(), p)
    }

    fn close(&self, id: &ChannelId) -> Result<LocalChannel, PaymentError> {
        let conn = self.lock();
        load(&conn, id)?;
        conn.execute(
            "INSERT OR IGNORE INTO closing (channel) VALUES (?1)",
            [&id.0[..]],
        )?;
        load(&conn, id)
    }

    fn get(&self, id: &ChannelId) -> Result<LocalChannel, PaymentError> {
        load(&self.lock(), id)
    }

    /// The newest `limit` payments on `id`, newest first.
    fn history(&self, id: &ChannelId, limit: usize) -> Result<Vec<Payment>, PaymentError> {
        let conn = self.lock();
        load(&conn, id)?;
        // One row more than asked, for the amount the oldest one added.
        let rows = conn
            .prepare_cached(
                "SELECT nonce, cumulative, receipt FROM history WHERE channel = ?1
                 ORDER BY nonce DESC LIMIT ?2",
            )?
            .query_map(
                params![
                    &id.0[..],
                    i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX)
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(rows.len().min(limit));
        for (i, (nonce, cumulative, receipt)) in rows.iter().enumerate().take(limit) {
            let before = rows.get(i + 1).map_or(0, |r| r.1);
            let (cumulative, before) = (amount(*cumulative), amount(before));
            out.push(Payment {
                nonce: uint(*nonce),
                amount: cumulative.checked_sub(before).unwrap_or_default(),
                cumulative,
                receipt: db::bytes32(receipt.clone(), "stored receipt")?,
            });
        }
        Ok(out)
    }

    fn all(&self) -> Result<Vec<LocalChannel>, PaymentError> {
        let conn = self.lock();
        let ids = conn
            .prepare("SELECT id FROM channels ORDER BY rowid")?
            .query_map([], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        ids.into_iter()
            .map(|id| load(&conn, &ChannelId(db::bytes32(id, "stored channel id")?)))
            .collect()
    }
}

/// Adds the channel `p` with nothing paid; a channel already there is refused.
fn insert(conn: &Connection, p: &ChannelParams) -> Result<ChannelId, PaymentError> {
    let id = p.id();
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO channels (id, ledger, payer, payee, deposit, expiry, nonce,
             state_nonce, state_cumulative, state_receipt)
         VALUES (?1, ?8, ?2, ?3, ?4, ?5, ?6, 0, 0, ?7)",
        params![
            &id.0[..],
            &p.payer.0[..],
            &p.payee.0[..],
            int(p.deposit.base_units()),
            int(p.expiry),
            int(p.nonce),
            &[0u8; 32][..],
            &p.ledger.0[..]
        ],
    )?;
    if inserted == 0 {
        return Err(PaymentError::DuplicateChannel(id));
    }
    Ok(id)
}

fn load(conn: &Connection, id: &ChannelId) -> Result<LocalChannel, PaymentError> {
    let row = conn
        .query_row(
            "SELECT payer, payee, deposit, expiry, nonce, state_nonce, state_cumulative, state_receipt,
                    state_signature, ledger FROM channels WHERE id = ?1",
            [&id.0[..]],
            |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, Vec<u8>>(7)?,
                    r.get::<_, Option<Vec<u8>>>(8)?,
                    r.get::<_, Vec<u8>>(9)?,
                ))
            },
        )
        .optional()?
        .ok_or(PaymentError::UnknownChannel(*id))?;
    let (payer, payee, deposit, expiry, nonce, s_nonce, s_cum, receipt, sig, ledger) = row;
    let closing = conn
        .prepare_cached("SELECT 1 FROM closing WHERE channel = ?1")?
        .exists([&id.0[..]])?;
    let opening = conn
        .prepare_cached("SELECT since FROM opening WHERE channel = ?1")?
        .query_row([&id.0[..]], |r| r.get::<_, i64>(0))
        .optional()?
        .map(uint);
    let signature = sig.map(signature_from).transpose()?;
    let ledger = LedgerId(db::bytes32(ledger, "stored ledger id")?);
    Ok(LocalChannel {
        params: ChannelParams {
            ledger,
            payer: db::key(payer)?,
            payee: db::key(payee)?,
            deposit: amount(deposit),
            expiry: uint(expiry),
            nonce: uint(nonce),
        },
        state: ChannelState {
            ledger,
            channel: *id,
            nonce: uint(s_nonce),
            cumulative: amount(s_cum),
            receipt: db::bytes32(receipt, "stored receipt")?,
        },
        signature,
        closing,
        opening,
    })
}

fn signature_from(bytes: Vec<u8>) -> Result<Signature, PaymentError> {
    <[u8; 64]>::try_from(bytes.as_slice())
        .map(Signature)
        .map_err(|_| PaymentError::Malformed {
            what: "stored signature",
            reason: format!("{} bytes, expected 64", bytes.len()),
        })
}

fn save(conn: &Connection, s: &SignedState) -> Result<(), PaymentError> {
    let _span = tracing::info_span!(
        span::PAYMENT_CHANNEL_UPDATE,
        channel.id = %s.state.channel,
        nonce = s.state.nonce,
        amount = %s.state.cumulative,
    )
    .entered();
    conn.execute(
        "UPDATE channels SET state_nonce = ?2, state_cumulative = ?3, state_receipt = ?4,
                state_signature = ?5 WHERE id = ?1",
        params![
            &s.state.channel.0[..],
            int(s.state.nonce),
            int(s.state.cumulative.base_units()),
            &s.state.receipt[..],
            &s.signature.0[..]
        ],
    )?;
    Ok(())
}

/// Adds `s` to its channel's payment history, in the caller's transaction.
fn record(conn: &Connection, s: &SignedState) -> Result<(), PaymentError> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO history (channel, nonce, cumulative, receipt)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        &s.state.channel.0[..],
        int(s.state.nonce),
        int(s.state.cumulative.base_units()),
        &s.state.receipt[..]
    ])?;
    Ok(())
}

/// The paying side.
#[derive(Debug)]
pub struct PayerStore {
    store: Store,
    key: Keypair,
    /// Nonces the payee has acknowledged, per channel, not yet pruned from disk.
    acknowledged: Mutex<HashMap<ChannelId, u64>>,
}

impl PayerStore {
    /// Opens the store at `path`; `key` signs every state.
    pub fn open(path: &Path, key: Keypair) -> Result<Self, PaymentError> {
        Ok(Self {
            store: Store::new(db::open(path)?)?,
            key,
            acknowledged: Mutex::new(HashMap::new()),
        })
    }

    /// Records a channel this side pays through.
    pub fn add_channel(&self, params: &ChannelParams) -> Result<ChannelId, PaymentError> {
        if params.payer != self.key.public() {
            return Err(PaymentError::InvalidChannel(
                "this store's key is not the channel's payer",
            ));
        }
        self.store.add(params)
    }

    /// Records a channel this side is about to ask the ledger to lock the deposit of, as
    /// opening since `now`, in one commit: whatever happens to the request or to this
    /// process, the channel is known, and the ledger can be asked whether it locked it.
    pub fn add_opening(&self, params: &ChannelParams, now: u64) -> Result<ChannelId, PaymentError> {
        if params.payer != self.key.public() {
            return Err(PaymentError::InvalidChannel(
                "this store's key is not the channel's payer",
            ));
        }
        let mut conn = self.store.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let id = insert(&tx, params)?;
        tx.execute(
            "INSERT INTO opening (channel, since) VALUES (?1, ?2)",
            params![&id.0[..], int(now)],
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// The ledger locked `channel`'s deposit: payments may be made on it.
    pub fn opened(&self, channel: &ChannelId) -> Result<(), PaymentError> {
        self.store
            .lock()
            .execute("DELETE FROM opening WHERE channel = ?1", [&channel.0[..]])?;
        Ok(())
    }

    /// Forgets `channel`, still opening, whose deposit the ledger never locked. Refused
    /// for a channel the ledger confirmed (it holds money) or anything was paid on.
    pub fn abandon(&self, channel: &ChannelId) -> Result<(), PaymentError> {
        let mut conn = self.store.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let local = load(&tx, channel)?;
        if local.opening.is_none() || local.state.nonce != 0 {
            return Err(PaymentError::WrongStatus {
                channel: *channel,
                status: "open",
                operation: "abandon",
            });
        }
        tx.execute("DELETE FROM opening WHERE channel = ?1", [&channel.0[..]])?;
        tx.execute("DELETE FROM channels WHERE id = ?1", [&channel.0[..]])?;
        tx.commit()?;
        Ok(())
    }

    /// Signs the next state, paying `amount` more for the receipt with hash `receipt`, and
    /// persists it before returning it. If sending it fails, deliver
    /// [`Self::unacknowledged`] again rather than paying anew.
    pub fn pay(
        &self,
        channel: &ChannelId,
        value: Amount,
        receipt: [u8; 32],
        now: u64,
    ) -> Result<SignedState, PaymentError> {
        self.pay_then(channel, value, receipt, now, |_| {})
    }

    /// [`PayerStore::pay`], handing the new state to `signed` once it is signed and before
    /// the commit that keeps it: work that needs only the state (a voucher for its
    /// cumulative amount) goes on while the commit is written.
    pub fn pay_then(
        &self,
        channel: &ChannelId,
        value: Amount,
        receipt: [u8; 32],
        now: u64,
        signed: impl FnOnce(&SignedState),
    ) -> Result<SignedState, PaymentError> {
        let mut states = self.pay_many_then(channel, &[(value, receipt)], now, |states| {
            if let Some(last) = states.last() {
                signed(last);
            }
        })?;
        states.pop().ok_or(PaymentError::ZeroAmount)
    }

    /// Group commit on the paying side: signs one state per payment, in order, and persists
    /// them all in one commit before returning them. Any refused payment refuses the whole
    /// group and persists nothing.
    pub fn pay_many(
        &self,
        channel: &ChannelId,
        payments: &[(Amount, [u8; 32])],
        now: u64,
    ) -> Result<Vec<SignedState>, PaymentError> {
        self.pay_many_then(channel, payments, now, |_| {})
    }

    fn pay_many_then(
        &self,
        channel: &ChannelId,
        payments: &[(Amount, [u8; 32])],
        now: u64,
        signed_all: impl FnOnce(&[SignedState]),
    ) -> Result<Vec<SignedState>, PaymentError> {
        let span = tracing::info_span!(
            span::PAYMENT_TRANSACTION,
            channel.id = %channel,
            count = payments.len(),
            amount = tracing::field::Empty,
            peer.id = tracing::field::Empty,
            nonce = tracing::field::Empty,
        );
        let _entered = span.enter();
        if payments.is_empty() || payments.iter().any(|(v, _)| v.is_zero()) {
            return Err(PaymentError::ZeroAmount);
        }
        let mut conn = self.store.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let local = load(&tx, channel)?;
        span.record("peer.id", tracing::field::display(local.params.payee));
        if local.closing || local.opening.is_some() {
            return Err(PaymentError::WrongStatus {
                channel: *channel,
                status: if local.closing { "closing" } else { "opening" },
                operation: "pay",
            });
        }
        if now >= local.params.expiry {
            return Err(PaymentError::Expired {
                expiry: local.params.expiry,
                now,
            });
        }
        let acked = self.acked(channel);
        if acked > 0 {
            tx.execute(
                "DELETE FROM unacknowledged WHERE channel = ?1 AND nonce <= ?2",
                params![&channel.0[..], int(acked)],
            )?;
        }
        let pending: i64 = tx.query_row(
            "SELECT COUNT(*) FROM unacknowledged WHERE channel = ?1",
            [&channel.0[..]],
            |r| r.get(0),
        )?;
        if usize::try_from(pending)
            .unwrap_or(usize::MAX)
            .saturating_add(payments.len())
            > MAX_UNACKNOWLEDGED
        {
            return Err(PaymentError::TooManyUnacknowledged {
                limit: MAX_UNACKNOWLEDGED,
            });
        }
        let mut state = local.state;
        let mut signed = Vec::with_capacity(payments.len());
        for (value, receipt) in payments {
            let cumulative = state
                .cumulative
                .checked_add(*value)
                .ok_or(PaymentError::Overflow)?;
            if cumulative > local.params.deposit {
                return Err(PaymentError::Overdraft {
                    cumulative,
                    deposit: local.params.deposit,
                });
            }
            state = ChannelState {
                ledger: local.params.ledger,
                channel: *channel,
                nonce: state.nonce.checked_add(1).ok_or(PaymentError::Overflow)?,
                cumulative,
                receipt: *receipt,
            };
            signed.push(state.sign(&self.key));
        }
        span.record("nonce", state.nonce);
        let total = state
            .cumulative
            .checked_sub(local.state.cumulative)
            .unwrap_or_default();
        span.record("amount", tracing::field::display(total));
        let mut insert = tx.prepare_cached(
            "INSERT INTO unacknowledged (channel, nonce, cumulative, receipt, signature)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for s in &signed {
            insert.execute(params![
                &channel.0[..],
                int(s.state.nonce),
                int(s.state.cumulative.base_units()),
                &s.state.receipt[..],
                &s.signature.0[..]
            ])?;
            record(&tx, s)?;
        }
        drop(insert);
        if let Some(last) = signed.last() {
            save(&tx, last)?;
        }
        signed_all(&signed);
        tx.commit()?;
        Ok(signed)
    }

    /// Every state signed on `channel` and not yet acknowledged, in nonce order: what to
    /// deliver again after a crash or a lost message, from the payee's last nonce on.
    pub fn unacknowledged(&self, channel: &ChannelId) -> Result<Vec<SignedState>, PaymentError> {
        let acked = self.acked(channel);
        let conn = self.store.lock();
        let ledger = load(&conn, channel)?.params.ledger;
        let mut stmt = conn.prepare(
            "SELECT nonce, cumulative, receipt, signature FROM unacknowledged
             WHERE channel = ?1 AND nonce > ?2 ORDER BY nonce",
        )?;
        let rows = stmt.query_map(params![&channel.0[..], int(acked)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (nonce, cumulative, receipt, signature) = row?;
            out.push(SignedState {
                state: ChannelState {
                    ledger,
                    channel: *channel,
                    nonce: uint(nonce),
                    cumulative: amount(cumulative),
                    receipt: db::bytes32(receipt, "stored receipt")?,
                },
                signature: signature_from(signature)?,
            });
        }
        Ok(out)
    }

    /// Records that the payee acknowledged every state up to `nonce`. They are pruned in
    /// the next payment's transaction (no extra commit); if that is lost in a crash, they
    /// are only delivered again, and the payee refuses them as stale.
    pub fn acknowledged(&self, channel: &ChannelId, nonce: u64) {
        let mut acked = self.acknowledged.lock().unwrap_or_else(|p| p.into_inner());
        let entry = acked.entry(*channel).or_insert(0);
        *entry = (*entry).max(nonce);
    }

    fn acked(&self, channel: &ChannelId) -> u64 {
        let acked = self.acknowledged.lock().unwrap_or_else(|p| p.into_inner());
        acked.get(channel).copied().unwrap_or(0)
    }

    /// The channel with its latest signed state.
    pub fn channel(&self, channel: &ChannelId) -> Result<LocalChannel, PaymentError> {
        self.store.get(channel)
    }

    /// Every channel this side pays through, oldest first.
    pub fn channels(&self) -> Result<Vec<LocalChannel>, PaymentError> {
        self.store.all()
    }

    /// Marks `channel` as being settled: no payment is made on it any more. Returns the
    /// channel with its latest signed state, to settle on.
    pub fn close(&self, channel: &ChannelId) -> Result<LocalChannel, PaymentError> {
        self.store.close(channel)
    }

    /// The newest `limit` payments made on `channel`, newest first, each with the receipt
    /// it paid for.
    pub fn history(&self, channel: &ChannelId, limit: usize) -> Result<Vec<Payment>, PaymentError> {
        self.store.history(channel, limit)
    }
}

/// A voucher a payee holds: the payer's signature, on a chain, for `amount` in all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldVoucher {
    /// The cumulative amount.
    pub amount: Amount,
    /// The signature (65 bytes of r, s and v for an EIP-712 voucher).
    pub signature: Vec<u8>,
}

/// Keeps `voucher` for `channel` when it is for more than the one held.
fn hold(tx: &Connection, channel: &ChannelId, voucher: &HeldVoucher) -> Result<(), PaymentError> {
    tx.prepare_cached(
        "INSERT INTO vouchers (channel, cumulative, signature) VALUES (?1, ?2, ?3)
         ON CONFLICT(channel) DO UPDATE SET cumulative = excluded.cumulative,
             signature = excluded.signature
         WHERE excluded.cumulative > vouchers.cumulative",
    )?
    .execute(params![
        channel.0.as_slice(),
        int(voucher.amount.base_units()),
        voucher.signature
    ])?;
    Ok(())
}

/// What the payee returns for an accepted payment, after it is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The channel.
    pub channel: ChannelId,
    /// The accepted nonce.
    pub nonce: u64,
    /// The cumulative amount now owed.
    pub cumulative: Amount,
    /// What this payment added.
    pub paid: Amount,
}

/// The paid side.
#[derive(Debug)]
pub struct PayeeStore {
    store: Store,
}

impl PayeeStore {
    /// Opens the store at `path`.
    pub fn open(path: &Path) -> Result<Self, PaymentError> {
        Ok(Self {
            store: Store::new(db::open(path)?)?,
        })
    }

    /// Records a channel this side is paid through.
    pub fn add_channel(&self, params: &ChannelParams) -> Result<ChannelId, PaymentError> {
        self.store.add(params)
    }

    /// Verifies `state` and persists it; the acknowledgement is returned only once the state
    /// is on disk. Refused states change nothing.
    pub fn accept(&self, state: &SignedState, now: u64) -> Result<Ack, PaymentError> {
        let mut conn = self.store.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ack = accept_one(&tx, state, now)?;
        tx.commit()?;
        Ok(ack)
    }

    /// [`PayeeStore::accept`] of a state on a channel settled on a chain, with the payer's
    /// `voucher` for its cumulative amount, kept in the same commit: an acknowledged
    /// payment always has its voucher on disk. `checked` says whether the voucher is good;
    /// asked once the state is found good, before the commit, and nothing is kept when it
    /// is not.
    pub fn accept_with_voucher(
        &self,
        state: &SignedState,
        voucher: &[u8],
        now: u64,
        checked: impl FnOnce() -> Result<(), String>,
    ) -> Result<Ack, PaymentError> {
        let mut conn = self.store.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ack = accept_one(&tx, state, now)?;
        let held = HeldVoucher {
            amount: state.state.cumulative,
            signature: voucher.to_vec(),
        };
        hold(&tx, &state.state.channel, &held)?;
        checked().map_err(|reason| PaymentError::Malformed {
            what: "voucher",
            reason,
        })?;
        tx.commit()?;
        Ok(ack)
    }

    /// Keeps `voucher` (checked by the caller, and not over the deposit) for `channel`
    /// when it is for more than the one held: a payer's voucher sent with its close.
    pub fn hold_voucher(
        &self,
        channel: &ChannelId,
        voucher: &HeldVoucher,
    ) -> Result<(), PaymentError> {
        let local = self.store.get(channel)?;
        if voucher.amount > local.params.deposit {
            return Err(PaymentError::Overdraft {
                cumulative: voucher.amount,
                deposit: local.params.deposit,
            });
        }
        let conn = self.store.lock();
        hold(&conn, channel, voucher)
    }

    /// The best voucher held for `channel`.
    pub fn best_voucher(&self, channel: &ChannelId) -> Result<Option<HeldVoucher>, PaymentError> {
        let conn = self.store.lock();
        conn.query_row(
            "SELECT cumulative, signature FROM vouchers WHERE channel = ?1",
            params![channel.0.as_slice()],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
        )
        .optional()
        .map(|row| {
            row.map(|(cumulative, signature)| HeldVoucher {
                amount: amount(cumulative),
                signature,
            })
        })
        .map_err(PaymentError::from)
    }

    /// Group commit: verifies each state in order and persists all accepted ones in one
    /// transaction; every acknowledgement waits for that commit. A refused state changes
    /// nothing and does not affect the others; if the commit fails, every one fails.
    pub fn accept_batch(&self, states: &[SignedState], now: u64) -> Vec<Result<Ack, PaymentError>> {
        let all_fail = |e: rusqlite::Error| {
            let reason = e.to_string();
            states
                .iter()
                .map(|_| Err(PaymentError::CommitFailed(reason.clone())))
                .collect()
        };
        let fail = |e: PaymentError| match e {
            PaymentError::Storage(e) => all_fail(e),
            other => states
                .iter()
                .map(|_| Err(PaymentError::CommitFailed(other.to_string())))
                .collect(),
        };
        let mut conn = self.store.lock();
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => return all_fail(e),
        };
        // Each channel is read once and written once per batch, whatever the batch's size.
        let mut channels: HashMap<ChannelId, (LocalChannel, Verifier)> = HashMap::new();
        let mut changed: Vec<ChannelId> = Vec::new();
        let mut results = Vec::with_capacity(states.len());
        for s in states {
            let id = s.state.channel;
            let (local, verifier) = match channels.get_mut(&id) {
                Some(entry) => entry,
                None => match load(&tx, &id).and_then(|l| Ok((Verifier::new(&l.params.payer)?, l)))
                {
                    Ok((verifier, local)) => channels.entry(id).or_insert((local, verifier)),
                    Err(e) => {
                        results.push(Err(e));
                        continue;
                    }
                },
            };
            let result = check_next(local, verifier, s, now);
            if result.is_ok() {
                if let Err(e) = record(&tx, s) {
                    return fail(e);
                }
                local.state = s.state;
                local.signature = Some(s.signature);
                if !changed.contains(&id) {
                    changed.push(id);
                }
            }
            results.push(result);
        }
        for id in &changed {
            if let Some(signed) = channels.get(id).and_then(|(local, _)| local.signed())
                && let Err(e) = save(&tx, &signed)
            {
                return fail(e);
            }
        }
        match tx.commit() {
            Ok(()) => results,
            Err(e) => all_fail(e),
        }
    }

    /// The channel with its latest accepted state.
    pub fn channel(&self, channel: &ChannelId) -> Result<LocalChannel, PaymentError> {
        self.store.get(channel)
    }

    /// Every channel this side is paid through, oldest first.
    pub fn channels(&self) -> Result<Vec<LocalChannel>, PaymentError> {
        self.store.all()
    }

    /// Marks `channel` as being settled: no payment is accepted on it any more (a state
    /// signed later could not be settled on). Returns the channel with its best state.
    pub fn close(&self, channel: &ChannelId) -> Result<LocalChannel, PaymentError> {
        self.store.close(channel)
    }

    /// The newest `limit` payments accepted on `channel`, newest first, each with the
    /// receipt it paid for.
    pub fn history(&self, channel: &ChannelId, limit: usize) -> Result<Vec<Payment>, PaymentError> {
        self.store.history(channel, limit)
    }
}

fn accept_one(tx: &Connection, s: &SignedState, now: u64) -> Result<Ack, PaymentError> {
    let local = load(tx, &s.state.channel)?;
    let ack = check_next(&local, &Verifier::new(&local.params.payer)?, s, now)?;
    save(tx, s)?;
    record(tx, s)?;
    Ok(ack)
}

/// Checks that `s` is the valid next state after `local`'s.
fn check_next(
    local: &LocalChannel,
    verifier: &Verifier,
    s: &SignedState,
    now: u64,
) -> Result<Ack, PaymentError> {
    let id = s.state.channel;
    let _span = tracing::info_span!(
        span::PAYMENT_VERIFY,
        channel.id = %id,
        peer.id = %local.params.payer,
        nonce = s.state.nonce,
        amount = %s.state.cumulative,
    )
    .entered();
    if local.closing {
        return Err(PaymentError::WrongStatus {
            channel: id,
            status: "closing",
            operation: "accept a payment",
        });
    }
    if s.state.ledger != local.params.ledger {
        return Err(PaymentError::WrongLedger {
            expected: local.params.ledger,
            got: s.state.ledger,
        });
    }
    verifier.verify(&s.state.signing_bytes(), &s.signature)?;
    if now >= local.params.expiry {
        return Err(PaymentError::Expired {
            expiry: local.params.expiry,
            now,
        });
    }
    let expected = local
        .state
        .nonce
        .checked_add(1)
        .ok_or(PaymentError::Overflow)?;
    if s.state.nonce != expected {
        return Err(PaymentError::StaleNonce {
            got: s.state.nonce,
            expected,
        });
    }
    if s.state.cumulative <= local.state.cumulative {
        return Err(PaymentError::NotIncreasing {
            got: s.state.cumulative,
            last: local.state.cumulative,
        });
    }
    if s.state.cumulative > local.params.deposit {
        return Err(PaymentError::Overdraft {
            cumulative: s.state.cumulative,
            deposit: local.params.deposit,
        });
    }
    Ok(Ack {
        channel: id,
        nonce: s.state.nonce,
        cumulative: s.state.cumulative,
        paid: s
            .state
            .cumulative
            .checked_sub(local.state.cumulative)
            .ok_or(PaymentError::Overflow)?,
    })
}
