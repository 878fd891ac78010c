//! SQLite plumbing shared by the ledger and the parties' stores.

use std::path::Path;

use rusqlite::Connection;

use crate::{Amount, PaymentError, PublicKey};

/// Opens (creating if needed) a database file for durable money state: WAL journal, every
/// commit synced to disk before it returns.
pub(crate) fn open(path: &Path) -> Result<Connection, PaymentError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Creates `schema` in a new database, or checks that an existing one was made with this
/// `version` (SQLite's `user_version`). A database of an older version that `migrations`
/// lists (each the version it upgrades from and the statements that bring it to the next)
/// is brought up to `version`, all in one transaction: a process killed meanwhile leaves
/// the old version whole. Any other version is refused rather than misread: channel ids
/// and signed bytes changed between versions.
pub(crate) fn prepare(
    conn: &Connection,
    schema: &str,
    version: i64,
    migrations: &[(i64, String)],
    what: &'static str,
) -> Result<(), PaymentError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tables: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
        [],
        |r| r.get(0),
    )?;
    if found == version || (found == 0 && tables == 0) {
        // One transaction: a process killed while creating the database leaves either
        // nothing or the whole schema with its version, never tables without a version.
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {schema}; PRAGMA user_version = {version}; COMMIT;"
        ))?;
        return Ok(());
    }
    let mut steps = String::new();
    let mut at = found;
    while let Some((_, sql)) = migrations.iter().find(|(from, _)| *from == at) {
        steps.push_str(sql);
        steps.push(';');
        at += 1;
    }
    if at == version && found > 0 {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {steps} PRAGMA user_version = {version}; COMMIT;"
        ))?;
        tracing::info!(from = found, to = version, "{what} brought up to date");
        return Ok(());
    }
    Err(PaymentError::Malformed {
        what,
        reason: format!(
            "made by format version {found}, this build reads version {version}; \
             settle its channels with the build that made it, then move the file away"
        ),
    })
}

/// A database in memory (the same engine, nothing on disk): for property tests.
pub(crate) fn open_in_memory() -> Result<Connection, PaymentError> {
    Ok(Connection::open_in_memory()?)
}

// SQLite integers are i64; u64 values are stored bit for bit and compared in Rust.
pub(crate) fn int(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

pub(crate) fn uint(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

pub(crate) fn amount(v: i64) -> Amount {
    Amount::from_base_units(uint(v))
}

pub(crate) fn key(v: Vec<u8>) -> Result<PublicKey, PaymentError> {
    <[u8; 32]>::try_from(v.as_slice())
        .map(PublicKey)
        .map_err(|_| PaymentError::Malformed {
            what: "stored key",
            reason: format!("{} bytes, expected 32", v.len()),
        })
}

pub(crate) fn bytes32(v: Vec<u8>, what: &'static str) -> Result<[u8; 32], PaymentError> {
    <[u8; 32]>::try_from(v.as_slice()).map_err(|_| PaymentError::Malformed {
        what,
        reason: format!("{} bytes, expected 32", v.len()),
    })
}
