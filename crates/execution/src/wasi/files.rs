//! The files a task sees, held in memory: a read-only tree of the input files it carries,
//! preopened as `/input`, and, when the task asked for one, a writable tree preopened as
//! `/output` whose files come back with the result. Nothing here touches the node's own
//! file system, and every answer is decided by the trees alone, so a rerun sees the same
//! directory listings (sorted by name), sizes, inode numbers and times (always 0).
//!
//! Descriptors 0 to 2 are the standard streams (served in `super`); the preopens come
//! next (3, then 4) and files the task opens take the lowest free number after them.

use std::collections::{BTreeMap, BTreeSet};

use super::errno::*;

/// Descriptors a task may hold open at once, the streams and preopens included.
pub const MAX_OPEN_FILES: usize = 256;
/// Files and directories a task may create under `/output`.
pub const MAX_OUTPUT_ENTRIES: usize = 4096;
/// Longest path a host call reads, bytes.
pub const MAX_PATH_BYTES: u32 = 4096;

/// `path_open`'s open flags.
pub(crate) const O_CREAT: u16 = 1;
pub(crate) const O_DIRECTORY: u16 = 2;
pub(crate) const O_EXCL: u16 = 4;
pub(crate) const O_TRUNC: u16 = 8;
/// The descriptor flag for appending.
pub(crate) const FDFLAG_APPEND: u16 = 1;
/// The right to write to a descriptor.
pub(crate) const RIGHT_FD_WRITE: u64 = 1 << 6;
/// Every right preview 1 defines.
pub(crate) const ALL_RIGHTS: u64 = (1 << 30) - 1;
/// The rights of a descriptor opened for reading only: every right but those that write
/// (`fd_datasync`, `fd_write`, `fd_allocate`, `path_create_*`, `path_link_target`,
/// `path_rename_target`, `path_filestat_set_*`, `fd_filestat_set_*`, `path_symlink`,
/// `path_remove_directory`, `path_unlink_file`).
pub(crate) const READ_RIGHTS: u64 = ALL_RIGHTS
    & !(1
        | 1 << 6
        | 1 << 8
        | 1 << 9
        | 1 << 10
        | 1 << 12
        | 1 << 17
        | 1 << 19
        | 1 << 20
        | 1 << 22
        | 1 << 23
        | 1 << 24
        | 1 << 25
        | 1 << 26);

/// The file types preview 1 reports.
pub(crate) const FILETYPE_DIRECTORY: u8 = 3;
pub(crate) const FILETYPE_REGULAR_FILE: u8 = 4;

/// Which tree a descriptor or path is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Root {
    Input,
    Output,
}

impl Root {
    fn name(self) -> &'static str {
        match self {
            Root::Input => "/input",
            Root::Output => "/output",
        }
    }
}

/// Why a call on files is refused: an errno for the task, or its output going past its
/// limit, which ends the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Errno(i32),
    OutputLimit,
}

impl From<i32> for Refusal {
    fn from(errno: i32) -> Self {
        Refusal::Errno(errno)
    }
}

/// Files by path (relative, `/`-separated) and the directories that hold them (every
/// ancestor of a file is one; the root, `""`, is implied).
#[derive(Debug, Default, Clone)]
pub(crate) struct Tree {
    files: BTreeMap<String, Vec<u8>>,
    dirs: BTreeSet<String>,
}

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
}

impl Tree {
    /// A tree of `files`, whose names were checked by [`crate::Manifest::validate`].
    fn of(files: &BTreeMap<String, Vec<u8>>) -> Self {
        let mut dirs = BTreeSet::new();
        for name in files.keys() {
            let mut at = 0;
            while let Some(slash) = name[at..].find('/') {
                dirs.insert(name[..at + slash].to_owned());
                at += slash + 1;
            }
        }
        Self {
            files: files.clone(),
            dirs,
        }
    }

    fn kind(&self, path: &str) -> Option<Kind> {
        if path.is_empty() || self.dirs.contains(path) {
            Some(Kind::Dir)
        } else if self.files.contains_key(path) {
            Some(Kind::File)
        } else {
            None
        }
    }

    fn entries(&self) -> usize {
        self.files.len() + self.dirs.len()
    }

    /// The names directly inside directory `dir`, sorted, with what each is.
    fn children(&self, dir: &str) -> Vec<(String, Kind)> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let direct = |path: &String| {
            path.strip_prefix(prefix.as_str())
                .filter(|rest| !rest.contains('/'))
                .map(str::to_owned)
        };
        let mut out: Vec<(String, Kind)> = self
            .dirs
            .range(prefix.clone()..)
            .take_while(|p| p.starts_with(prefix.as_str()))
            .filter_map(|p| direct(p).map(|n| (n, Kind::Dir)))
            .chain(
                self.files
                    .range(prefix.clone()..)
                    .take_while(|(p, _)| p.starts_with(prefix.as_str()))
                    .filter_map(|(p, _)| direct(p).map(|n| (n, Kind::File))),
            )
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// An open descriptor above the standard streams.
#[derive(Debug, Clone)]
enum Handle {
    Dir {
        root: Root,
        path: String,
        /// The name it was preopened as, for `fd_prestat_*`.
        preopen: Option<&'static str>,
    },
    File {
        root: Root,
        path: String,
        pos: u64,
        write: bool,
        append: bool,
    },
}

/// The stat of a file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) filetype: u8,
    pub(crate) size: u64,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) ino: u64,
    pub(crate) filetype: u8,
}

/// The trees and the descriptors a task holds.
#[derive(Debug, Default)]
pub(crate) struct Files {
    input: Tree,
    output: Option<Tree>,
    /// Descriptor `3 + i` is `table[i]`.
    table: Vec<Option<Handle>>,
    /// Bytes in the output tree's files, counted against the output limit.
    pub(crate) output_bytes: u64,
}

impl Files {
    /// The files of a task: `input` preopened as `/input` when it holds any, and an empty
    /// `/output` when `output` is set.
    pub(crate) fn new(input: &BTreeMap<String, Vec<u8>>, output: bool) -> Self {
        let mut files = Self {
            input: Tree::of(input),
            output: output.then(Tree::default),
            table: Vec::new(),
            output_bytes: 0,
        };
        for (wanted, root) in [(!input.is_empty(), Root::Input), (output, Root::Output)] {
            if wanted {
                files.table.push(Some(Handle::Dir {
                    root,
                    path: String::new(),
                    preopen: Some(root.name()),
                }));
            }
        }
        files
    }

    /// The output tree's files, when the task had one.
    pub(crate) fn into_output(self) -> Option<BTreeMap<String, Vec<u8>>> {
        self.output.map(|t| t.files)
    }

    fn tree(&self, root: Root) -> &Tree {
        match root {
            Root::Input => &self.input,
            // A handle in the output tree exists only when the tree does.
            Root::Output => self.output.as_ref().unwrap_or(&self.input),
        }
    }

    /// The output tree, for a change in `root`: the input tree is read-only.
    fn writable(&mut self, root: Root) -> Result<&mut Tree, i32> {
        match (root, self.output.as_mut()) {
            (Root::Output, Some(tree)) => Ok(tree),
            _ => Err(EROFS),
        }
    }

    fn handle(&self, fd: i32) -> Result<&Handle, i32> {
        usize::try_from(fd)
            .ok()
            .and_then(|fd| fd.checked_sub(3))
            .and_then(|i| self.table.get(i))
            .and_then(Option::as_ref)
            .ok_or(EBADF)
    }

    fn handle_mut(&mut self, fd: i32) -> Result<&mut Handle, i32> {
        usize::try_from(fd)
            .ok()
            .and_then(|fd| fd.checked_sub(3))
            .and_then(|i| self.table.get_mut(i))
            .and_then(Option::as_mut)
            .ok_or(EBADF)
    }

    /// Whether `fd` is a descriptor of this table (not a stream).
    pub(crate) fn holds(&self, fd: i32) -> bool {
        self.handle(fd).is_ok()
    }

    /// The name `fd` was preopened as.
    pub(crate) fn prestat(&self, fd: i32) -> Result<&'static str, i32> {
        match self.handle(fd)? {
            Handle::Dir {
                preopen: Some(name),
                ..
            } => Ok(name),
            _ => Err(EBADF),
        }
    }

    /// Resolves `path` against directory descriptor `fd`: never above that directory, and
    /// every component before the last a directory.
    fn resolve(&self, fd: i32, path: &str) -> Result<(Root, String), i32> {
        let Handle::Dir {
            root, path: base, ..
        } = self.handle(fd)?
        else {
            return Err(ENOTDIR);
        };
        if path.starts_with('/') {
            return Err(ENOTCAPABLE);
        }
        let mut parts: Vec<&str> = Vec::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(ENOTCAPABLE);
                    }
                }
                part => parts.push(part),
            }
        }
        let mut full = base.clone();
        let tree = self.tree(*root);
        for (i, part) in parts.iter().enumerate() {
            if !full.is_empty() {
                full.push('/');
            }
            full.push_str(part);
            if i + 1 < parts.len() && tree.kind(&full) == Some(Kind::File) {
                return Err(ENOTDIR);
            }
        }
        Ok((*root, full))
    }

    fn stat_of(&self, root: Root, path: &str) -> Result<Stat, i32> {
        let tree = self.tree(root);
        let (filetype, size) = match tree.kind(path).ok_or(ENOENT)? {
            Kind::Dir => (FILETYPE_DIRECTORY, 0),
            Kind::File => (
                FILETYPE_REGULAR_FILE,
                tree.files.get(path).map_or(0, |f| f.len() as u64),
            ),
        };
        Ok(Stat {
            dev: root as u64 + 1,
            ino: inode(root, path),
            filetype,
            size,
        })
    }

    /// `fd_filestat_get` on a descriptor of this table.
    pub(crate) fn fd_stat(&self, fd: i32) -> Result<Stat, i32> {
        match self.handle(fd)? {
            Handle::Dir { root, path, .. } | Handle::File { root, path, .. } => {
                self.stat_of(*root, path)
            }
        }
    }

    /// `fd_fdstat_get`: the file type, the flags and the rights of `fd`.
    pub(crate) fn fdstat(&self, fd: i32) -> Result<(u8, u16, u64, u64), i32> {
        Ok(match self.handle(fd)? {
            Handle::Dir { root, .. } => {
                let rights = if self.writable_root(*root) {
                    ALL_RIGHTS
                } else {
                    READ_RIGHTS
                };
                (FILETYPE_DIRECTORY, 0, rights, rights)
            }
            Handle::File { write, append, .. } => (
                FILETYPE_REGULAR_FILE,
                if *append { FDFLAG_APPEND } else { 0 },
                if *write { ALL_RIGHTS } else { READ_RIGHTS },
                0,
            ),
        })
    }

    fn writable_root(&self, root: Root) -> bool {
        root == Root::Output && self.output.is_some()
    }

    /// `path_filestat_get`.
    pub(crate) fn path_stat(&self, fd: i32, path: &str) -> Result<Stat, i32> {
        let (root, path) = self.resolve(fd, path)?;
        self.stat_of(root, &path)
    }

    /// `path_open`: a new descriptor for `path` under directory `fd`.
    pub(crate) fn open(
        &mut self,
        fd: i32,
        path: &str,
        oflags: u16,
        rights: u64,
        fdflags: u16,
    ) -> Result<i32, i32> {
        let (root, path) = self.resolve(fd, path)?;
        let append = fdflags & FDFLAG_APPEND != 0;
        let write = rights & RIGHT_FD_WRITE != 0 || oflags & (O_CREAT | O_TRUNC) != 0 || append;
        let handle = match self.tree(root).kind(&path) {
            None if oflags & O_CREAT != 0 => {
                let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
                let tree = self.writable(root)?;
                match tree.kind(parent) {
                    Some(Kind::Dir) => {}
                    Some(Kind::File) => return Err(ENOTDIR),
                    None => return Err(ENOENT),
                }
                if oflags & O_DIRECTORY != 0 {
                    return Err(EINVAL);
                }
                if tree.entries() >= MAX_OUTPUT_ENTRIES {
                    return Err(EDQUOT);
                }
                tree.files.insert(path.clone(), Vec::new());
                Handle::File {
                    root,
                    path,
                    pos: 0,
                    write,
                    append,
                }
            }
            None => return Err(ENOENT),
            Some(_) if oflags & O_CREAT != 0 && oflags & O_EXCL != 0 => return Err(EEXIST),
            Some(Kind::Dir) => {
                if write {
                    return Err(EISDIR);
                }
                Handle::Dir {
                    root,
                    path,
                    preopen: None,
                }
            }
            Some(Kind::File) => {
                if oflags & O_DIRECTORY != 0 {
                    return Err(ENOTDIR);
                }
                if write {
                    let tree = self.writable(root)?;
                    if oflags & O_TRUNC != 0
                        && let Some(data) = tree.files.get_mut(&path)
                    {
                        let dropped = data.len() as u64;
                        data.clear();
                        self.output_bytes = self.output_bytes.saturating_sub(dropped);
                    }
                }
                Handle::File {
                    root,
                    path,
                    pos: 0,
                    write,
                    append,
                }
            }
        };
        self.insert(handle)
    }

    fn insert(&mut self, handle: Handle) -> Result<i32, i32> {
        let slot = match self.table.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.table.len() + 3 < MAX_OPEN_FILES => {
                self.table.push(None);
                self.table.len() - 1
            }
            None => return Err(EMFILE),
        };
        self.table[slot] = Some(handle);
        Ok(slot as i32 + 3)
    }

    /// `fd_close`.
    pub(crate) fn close(&mut self, fd: i32) -> Result<(), i32> {
        self.handle(fd)?;
        self.table[fd as usize - 3] = None;
        Ok(())
    }

    /// `fd_renumber`: `fd` takes number `to`, closing what `to` was.
    pub(crate) fn renumber(&mut self, fd: i32, to: i32) -> Result<(), i32> {
        let handle = self.handle(fd)?.clone();
        self.handle(to)?;
        self.table[to as usize - 3] = Some(handle);
        if fd != to {
            self.table[fd as usize - 3] = None;
        }
        Ok(())
    }

    /// The bytes of the file `fd` reads, and where it is; `EISDIR` for a directory and
    /// `EBADF` for a file opened only to write.
    fn readable(&self, fd: i32) -> Result<(&[u8], u64), i32> {
        match self.handle(fd)? {
            Handle::Dir { .. } => Err(EISDIR),
            Handle::File {
                root, path, pos, ..
            } => Ok((
                self.tree(*root)
                    .files
                    .get(path)
                    .map_or(&[][..], Vec::as_slice),
                *pos,
            )),
        }
    }

    /// How many bytes a read of at most `len` from `fd` (at `offset`, or at its position)
    /// gets; nothing is read.
    pub(crate) fn read_len(&self, fd: i32, offset: Option<u64>, len: u64) -> Result<u64, i32> {
        let (data, pos) = self.readable(fd)?;
        let at = offset.unwrap_or(pos);
        Ok((data.len() as u64).saturating_sub(at).min(len))
    }

    /// Copies what `fd` holds at `offset` (or at its position, which then moves on) into
    /// `buf`, as much as there is; returns how much.
    pub(crate) fn read(
        &mut self,
        fd: i32,
        offset: Option<u64>,
        buf: &mut [u8],
    ) -> Result<usize, i32> {
        let (data, pos) = self.readable(fd)?;
        let at = offset.unwrap_or(pos);
        let n = (data.len() as u64).saturating_sub(at).min(buf.len() as u64) as usize;
        if n > 0 {
            let at = at as usize;
            buf[..n].copy_from_slice(&data[at..at + n]);
        }
        if offset.is_none()
            && let Handle::File { pos, .. } = self.handle_mut(fd)?
        {
            *pos += n as u64;
        }
        Ok(n)
    }

    /// The tree, path, position and append flag of file `fd`, opened to write.
    fn open_for_writing(&self, fd: i32) -> Result<(Root, String, u64, bool), i32> {
        match self.handle(fd)? {
            Handle::Dir { .. } => Err(EISDIR),
            Handle::File { write: false, .. } => Err(EBADF),
            Handle::File {
                root,
                path,
                pos,
                append,
                ..
            } => Ok((*root, path.clone(), *pos, *append)),
        }
    }

    /// Writes `bytes` to `fd` at `offset` (or at its position, or its end when it
    /// appends), growing the file with zeros up to there: refused past `budget` more bytes
    /// of output.
    pub(crate) fn write(
        &mut self,
        fd: i32,
        offset: Option<u64>,
        bytes: &[u8],
        budget: u64,
    ) -> Result<usize, Refusal> {
        let (root, path, pos, append) = self.open_for_writing(fd)?;
        let tree = self.writable(root)?;
        let data = tree.files.get_mut(&path).ok_or(EBADF)?;
        let len = data.len() as u64;
        let at = match offset {
            Some(at) => at,
            None if append => len,
            None => pos,
        };
        let end = at.checked_add(bytes.len() as u64).ok_or(EFBIG)?;
        let growth = end.saturating_sub(len);
        if growth > budget {
            return Err(Refusal::OutputLimit);
        }
        if growth > 0 {
            data.resize(end as usize, 0);
        }
        data[at as usize..end as usize].copy_from_slice(bytes);
        self.output_bytes += growth;
        if offset.is_none()
            && let Handle::File { pos, .. } = self.handle_mut(fd)?
        {
            *pos = end;
        }
        Ok(bytes.len())
    }

    /// `fd_filestat_set_size` (and `fd_allocate`, which only grows): within `budget`.
    pub(crate) fn set_size(
        &mut self,
        fd: i32,
        size: u64,
        only_grow: bool,
        budget: u64,
    ) -> Result<(), Refusal> {
        let (root, path, ..) = self.open_for_writing(fd)?;
        let tree = self.writable(root)?;
        let data = tree.files.get_mut(&path).ok_or(EBADF)?;
        let len = data.len() as u64;
        if size <= len {
            if !only_grow {
                data.truncate(size as usize);
                self.output_bytes -= len - size;
            }
            return Ok(());
        }
        if size - len > budget {
            return Err(Refusal::OutputLimit);
        }
        data.resize(size as usize, 0);
        self.output_bytes += size - len;
        Ok(())
    }

    /// `fd_seek`: the new position.
    pub(crate) fn seek(&mut self, fd: i32, offset: i64, whence: u8) -> Result<u64, i32> {
        let len = match self.handle(fd)? {
            Handle::Dir { .. } => return Err(EISDIR),
            Handle::File { root, path, .. } => self
                .tree(*root)
                .files
                .get(path)
                .map_or(0, |d| d.len() as u64),
        };
        let Handle::File { pos, .. } = self.handle_mut(fd)? else {
            return Err(EISDIR);
        };
        let from = match whence {
            0 => 0,
            1 => *pos,
            2 => len,
            _ => return Err(EINVAL),
        };
        let to = i128::from(from) + i128::from(offset);
        if !(0..=i128::from(i64::MAX)).contains(&to) {
            return Err(EINVAL);
        }
        *pos = to as u64;
        Ok(*pos)
    }

    /// `fd_tell`.
    pub(crate) fn tell(&self, fd: i32) -> Result<u64, i32> {
        match self.handle(fd)? {
            Handle::Dir { .. } => Err(EISDIR),
            Handle::File { pos, .. } => Ok(*pos),
        }
    }

    /// `fd_fdstat_set_flags`: only appending can be turned on or off.
    pub(crate) fn set_flags(&mut self, fd: i32, flags: u16) -> Result<(), i32> {
        match self.handle_mut(fd)? {
            Handle::Dir { .. } => Err(EISDIR),
            Handle::File { append, .. } => {
                *append = flags & FDFLAG_APPEND != 0;
                Ok(())
            }
        }
    }
}

/// A number that names one path of one tree, the same on every run.
fn inode(root: Root, path: &str) -> u64 {
    // FNV-1a over the tree and the path.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in root.name().bytes().chain(path.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Why `name` cannot be the name of an input file, if it cannot: a relative path of
/// non-empty components, none `.` or `..`, without NUL.
pub(crate) fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("an input file has an empty name".into());
    }
    if name.len() > MAX_PATH_BYTES as usize {
        return Some(format!(
            "input file name of {} bytes is longer than {MAX_PATH_BYTES}",
            name.len()
        ));
    }
    let bad = name.starts_with('/')
        || name.contains('\0')
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.len() > 255);
    bad.then(|| {
        format!(
            "input file name {name:?} is not a relative path of names (no leading /, no empty, . or .. parts, none over 255 bytes)"
        )
    })
}

/// Why `files` cannot be one tree, if they cannot: a name that is both a file and a
/// directory.
pub(crate) fn tree_problem(files: &BTreeMap<String, Vec<u8>>) -> Option<String> {
    let tree = Tree::of(files);
    tree.dirs
        .iter()
        .find(|d| files.contains_key(*d))
        .map(|d| format!("input {d:?} is both a file and a directory"))
}

/// The SHA-256 (hex) that receipts state for a tree of files: of the listing
/// `sha256sum` prints for them, one line `<hex>  <name>` per file, sorted by name.
pub fn tree_sha256(files: &BTreeMap<String, Vec<u8>>) -> String {
    let mut listing = String::new();
    for (name, data) in files {
        listing.push_str(&hex::encode(crate::sha256(data)));
        listing.push_str("  ");
        listing.push_str(name);
        listing.push('\n');
    }
    hex::encode(crate::sha256(listing.as_bytes()))
}

mod paths;
#[cfg(test)]
mod tests;
