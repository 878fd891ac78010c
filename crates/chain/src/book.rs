//! What a node keeps about its channels on a chain, beside the payment stores: each
//! channel's id on the chain and both accounts (the payer's to re-find an open after a
//! crash, the payee's to check every voucher). The vouchers a payee holds are in its
//! payment store, committed with the states they pay. One SQLite file, every write synced.

use std::path::Path;
use std::sync::Mutex;

use alloy::primitives::{Address, B256};
use rusqlite::{Connection, OptionalExtension, params};

use crate::ChainError;

/// The book's format (SQLite `user_version`).
const VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS channels (
    channel BLOB PRIMARY KEY,
    onchain BLOB NOT NULL UNIQUE,
    payer BLOB NOT NULL,
    payee BLOB NOT NULL
);
";

/// A channel as the book holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BookedChannel {
    /// The channel's id on the chain.
    pub onchain: B256,
    /// The payer's account.
    pub payer: Address,
    /// The payee's account.
    pub payee: Address,
}

/// The book of one node's channels on a chain (`<data dir>/chain.db`).
#[derive(Debug)]
pub struct ChainBook {
    conn: Mutex<Connection>,
}

fn failed(e: rusqlite::Error) -> ChainError {
    ChainError::Book(e.to_string())
}

impl ChainBook {
    /// Opens the book at `path`, making it when there is none.
    pub fn open(path: &Path) -> Result<Self, ChainError> {
        let conn = Connection::open(path).map_err(failed)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(failed)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(failed)?;
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(failed)?;
        if found != 0 && found != VERSION {
            return Err(ChainError::Book(format!(
                "{} is of version {found}; this build reads version {VERSION}",
                path.display()
            )));
        }
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {VERSION}; COMMIT;"
        ))
        .map_err(failed)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Books `channel` (the payment protocol's id) as `booked`; booking it again on the
    /// same terms is no change, on others is refused.
    pub fn add(&self, channel: &[u8; 32], booked: &BookedChannel) -> Result<(), ChainError> {
        let conn = self.lock();
        if let Some(existing) = get(&conn, channel)? {
            if existing == *booked {
                return Ok(());
            }
            return Err(ChainError::Book(format!(
                "channel {} is booked on chain as {} already",
                hex::encode(&channel[..8]),
                existing.onchain
            )));
        }
        conn.execute(
            "INSERT INTO channels (channel, onchain, payer, payee) VALUES (?1, ?2, ?3, ?4)",
            params![
                channel.as_slice(),
                booked.onchain.as_slice(),
                booked.payer.as_slice(),
                booked.payee.as_slice()
            ],
        )
        .map_err(failed)?;
        Ok(())
    }

    /// The channel (the payment protocol's id) booked with `onchain` as its id on chain.
    pub fn by_onchain(&self, onchain: &B256) -> Result<Option<[u8; 32]>, ChainError> {
        let found: Option<Vec<u8>> = self
            .lock()
            .query_row(
                "SELECT channel FROM channels WHERE onchain = ?1",
                params![onchain.as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(failed)?;
        found
            .map(|c| {
                <[u8; 32]>::try_from(c.as_slice())
                    .map_err(|_| ChainError::Book("a booked channel's id is malformed".into()))
            })
            .transpose()
    }

    /// How `channel` is booked, if it is.
    pub fn get(&self, channel: &[u8; 32]) -> Result<Option<BookedChannel>, ChainError> {
        get(&self.lock(), channel)
    }
}

fn get(conn: &Connection, channel: &[u8; 32]) -> Result<Option<BookedChannel>, ChainError> {
    let row: Option<(Vec<u8>, Vec<u8>, Vec<u8>)> = conn
        .query_row(
            "SELECT onchain, payer, payee FROM channels WHERE channel = ?1",
            params![channel.as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(failed)?;
    let Some((onchain, payer, payee)) = row else {
        return Ok(None);
    };
    let malformed = || ChainError::Book("a booked channel's row is malformed".into());
    Ok(Some(BookedChannel {
        onchain: B256::try_from(onchain.as_slice()).map_err(|_| malformed())?,
        payer: Address::try_from(payer.as_slice()).map_err(|_| malformed())?,
        payee: Address::try_from(payee.as_slice()).map_err(|_| malformed())?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_keeps_channels_across_a_reopen_and_refuses_other_terms() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("chain.db");
        let book = ChainBook::open(&path).expect("open");
        let channel = [7u8; 32];
        let booked = BookedChannel {
            onchain: B256::repeat_byte(1),
            payer: Address::repeat_byte(2),
            payee: Address::repeat_byte(3),
        };
        book.add(&channel, &booked).expect("add");
        book.add(&channel, &booked).expect("again, same terms");
        let other = BookedChannel {
            payee: Address::repeat_byte(4),
            ..booked
        };
        assert!(book.add(&channel, &other).is_err());
        drop(book);
        let book = ChainBook::open(&path).expect("reopen");
        assert_eq!(book.get(&channel).expect("get"), Some(booked));
        assert_eq!(book.get(&[8u8; 32]).expect("none"), None);
        assert_eq!(
            book.by_onchain(&booked.onchain).expect("found"),
            Some(channel)
        );
        assert_eq!(book.by_onchain(&B256::repeat_byte(9)).expect("none"), None);
    }
}
