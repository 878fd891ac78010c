//! The spool: export requests the backend did not take, kept on disk until it does.
//!
//! Each entry is one OTLP/HTTP request body exactly as it was sent (protobuf, gzipped or
//! not), in its own file named by its sequence number and its span count:
//! `00000000000000000042-512.otlp` (`.otlp.gz` when gzipped). A file is written under a
//! temporary name, synced and renamed, so a process killed at any moment leaves whole
//! entries only (a leftover temporary file is removed at the next open). Entries are sent
//! again oldest first; when the spool's bytes would pass its bound, the oldest entries are
//! deleted first and their spans counted as lost.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// One spooled request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    seq: u64,
    /// Spans in it.
    pub(crate) spans: u64,
    bytes: u64,
    /// Whether the body is gzipped (sent with `Content-Encoding: gzip`).
    pub(crate) gzip: bool,
}

impl Entry {
    fn file_name(&self) -> String {
        format!(
            "{:020}-{}.otlp{}",
            self.seq,
            self.spans,
            if self.gzip { ".gz" } else { "" }
        )
    }

    /// The entry a file name stands for (its size given), or `None` for another file.
    fn parse(name: &str, bytes: u64) -> Option<Self> {
        let (stem, gzip) = match name.strip_suffix(".otlp.gz") {
            Some(stem) => (stem, true),
            None => (name.strip_suffix(".otlp")?, false),
        };
        let (seq, spans) = stem.split_once('-')?;
        Some(Self {
            seq: seq.parse().ok()?,
            spans: spans.parse().ok()?,
            bytes,
            gzip,
        })
    }
}

/// What pushing an entry cost.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Evicted {
    /// Older spans deleted to make room (or the new ones, when they alone pass the bound).
    pub(crate) spans: u64,
}

/// The spool directory and what it holds, oldest first.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    limit: u64,
    entries: VecDeque<Entry>,
    bytes: u64,
    spans: u64,
    next_seq: u64,
}

impl Spool {
    /// Opens (creating it) the spool in `dir`, holding at most `limit` bytes, with the
    /// entries a previous run left there.
    pub(crate) fn open(dir: &Path, limit: u64) -> Result<Self, String> {
        let describe = |e: std::io::Error| format!("the span spool {}: {e}", dir.display());
        std::fs::create_dir_all(dir).map_err(describe)?;
        let mut entries = Vec::new();
        for item in std::fs::read_dir(dir).map_err(describe)? {
            let item = item.map_err(describe)?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                // A write a kill interrupted: never acknowledged as spooled.
                let _ = std::fs::remove_file(item.path());
                continue;
            }
            let bytes = item.metadata().map_err(describe)?.len();
            if let Some(entry) = Entry::parse(&name, bytes) {
                entries.push(entry);
            }
        }
        entries.sort_by_key(|e| e.seq);
        let next_seq = entries.last().map_or(0, |e| e.seq + 1);
        Ok(Self {
            dir: dir.to_owned(),
            limit,
            bytes: entries.iter().map(|e| e.bytes).sum(),
            spans: entries
                .iter()
                .fold(0, |n: u64, e| n.saturating_add(e.spans)),
            entries: entries.into(),
            next_seq,
        })
    }

    /// Spans spooled now.
    pub(crate) fn spans(&self) -> u64 {
        self.spans
    }

    /// Bytes spooled now.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps `body` (of `spans` spans) as the newest entry, deleting the oldest while the
    /// spool would pass its bound; a body larger than the bound alone is not kept. What was
    /// deleted (or not kept) is returned, to be counted as lost.
    pub(crate) fn push(&mut self, body: &[u8], spans: u64, gzip: bool) -> Result<Evicted, String> {
        let size = body.len() as u64;
        if size > self.limit {
            return Ok(Evicted { spans });
        }
        let mut evicted = Evicted::default();
        while self.bytes + size > self.limit {
            match self.entries.front() {
                Some(oldest) => {
                    evicted.spans += oldest.spans;
                    self.remove_oldest()?;
                }
                None => break,
            }
        }
        let entry = Entry {
            seq: self.next_seq,
            spans,
            bytes: size,
            gzip,
        };
        let tmp = self.dir.join(format!(".tmp-{}", entry.seq));
        let written = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(body)?;
            file.sync_data()?;
            std::fs::rename(&tmp, self.dir.join(entry.file_name()))
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!(
                "writing to the span spool {}: {e}",
                self.dir.display()
            ));
        }
        self.next_seq += 1;
        self.bytes += size;
        self.spans = self.spans.saturating_add(spans);
        self.entries.push_back(entry);
        Ok(evicted)
    }

    /// The oldest entry and its body (or why it cannot be read).
    pub(crate) fn oldest(&self) -> Option<(Entry, Result<Vec<u8>, String>)> {
        let entry = self.entries.front()?;
        let path = self.dir.join(entry.file_name());
        let body = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()));
        Some((entry.clone(), body))
    }

    /// Where the spool is.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Deletes the oldest entry (sent, or given up on).
    pub(crate) fn remove_oldest(&mut self) -> Result<(), String> {
        let Some(entry) = self.entries.pop_front() else {
            return Ok(());
        };
        self.bytes -= entry.bytes;
        self.spans = self.spans.saturating_sub(entry.spans);
        let path = self.dir.join(entry.file_name());
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("deleting {}: {e}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_oldest_first_after_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 1 << 20).expect("opens");
        spool.push(b"first", 3, true).expect("kept");
        spool.push(b"second", 5, false).expect("kept");
        // A write a kill interrupted, and a file of someone else's.
        std::fs::write(dir.path().join(".tmp-9"), b"half").expect("write");
        std::fs::write(dir.path().join("notes.txt"), b"mine").expect("write");
        drop(spool);
        let mut spool = Spool::open(dir.path(), 1 << 20).expect("reopens");
        assert_eq!((spool.spans(), spool.bytes()), (8, 11));
        assert!(!dir.path().join(".tmp-9").exists());
        let (entry, body) = spool.oldest().expect("an entry");
        let body = body.expect("readable");
        assert_eq!(
            (entry.spans, entry.gzip, body.as_slice()),
            (3, true, &b"first"[..])
        );
        spool.remove_oldest().expect("removed");
        let (entry, body) = spool.oldest().expect("an entry");
        let body = body.expect("readable");
        assert_eq!(
            (entry.spans, entry.gzip, body.as_slice()),
            (5, false, &b"second"[..])
        );
        // Numbering goes on after the entries found.
        spool.push(b"third", 1, false).expect("kept");
        assert!(dir.path().join(format!("{:020}-1.otlp", 2)).exists());
        assert!(dir.path().join("notes.txt").exists());
    }

    #[test]
    fn a_full_spool_deletes_its_oldest_entries_and_counts_their_spans() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 10).expect("opens");
        assert_eq!(spool.push(b"aaaa", 4, false), Ok(Evicted { spans: 0 }));
        assert_eq!(spool.push(b"bbbb", 2, false), Ok(Evicted { spans: 0 }));
        // 8 bytes held; 4 more pass 10: the oldest goes.
        assert_eq!(spool.push(b"cccc", 7, false), Ok(Evicted { spans: 4 }));
        assert_eq!((spool.spans(), spool.bytes()), (9, 8));
        // Larger than the whole bound: not kept, nothing else deleted.
        assert_eq!(spool.push(&[0; 11], 6, false), Ok(Evicted { spans: 6 }));
        assert_eq!((spool.spans(), spool.bytes()), (9, 8));
        let (entry, _) = spool.oldest().expect("an entry");
        assert_eq!(entry.spans, 2);
    }
}
