//! The calls on paths and directories of [`Files`]: listing a directory, making and
//! removing directories and files, renaming.

use super::*;

impl Files {
    /// The listing of directory `fd` from entry `cookie` on (`.` and `..` first, then
    /// the names inside, sorted), at most `limit` entries; the cookie of entry `i` after
    /// it is `i + 1`.
    pub(crate) fn list(&self, fd: i32, cookie: u64, limit: usize) -> Result<Vec<Entry>, i32> {
        let Handle::Dir { root, path, .. } = self.handle(fd)? else {
            return Err(ENOTDIR);
        };
        let tree = self.tree(*root);
        let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
        let dots = [
            (".".to_owned(), inode(*root, path)),
            ("..".to_owned(), inode(*root, parent)),
        ]
        .into_iter()
        .map(|(name, ino)| Entry {
            name,
            ino,
            filetype: FILETYPE_DIRECTORY,
        });
        let inside = tree.children(path).into_iter().map(|(name, kind)| {
            let full = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}/{name}")
            };
            Entry {
                ino: inode(*root, &full),
                filetype: match kind {
                    Kind::Dir => FILETYPE_DIRECTORY,
                    Kind::File => FILETYPE_REGULAR_FILE,
                },
                name,
            }
        });
        let skip = usize::try_from(cookie).unwrap_or(usize::MAX);
        Ok(dots.chain(inside).skip(skip).take(limit).collect())
    }

    /// How many entries a listing of `fd` may walk: what a call to [`Files::list`] costs.
    pub(crate) fn list_cost(&self, fd: i32) -> Result<u64, i32> {
        match self.handle(fd)? {
            Handle::Dir { root, .. } => Ok(self.tree(*root).entries() as u64 + 2),
            Handle::File { .. } => Err(ENOTDIR),
        }
    }

    /// `path_create_directory`.
    pub(crate) fn mkdir(&mut self, fd: i32, path: &str) -> Result<(), i32> {
        let (root, path) = self.resolve(fd, path)?;
        let parent = path.rsplit_once('/').map_or("", |(p, _)| p).to_owned();
        let tree = self.writable(root)?;
        if tree.kind(&path).is_some() {
            return Err(EEXIST);
        }
        match tree.kind(&parent) {
            Some(Kind::Dir) => {}
            Some(Kind::File) => return Err(ENOTDIR),
            None => return Err(ENOENT),
        }
        if tree.entries() >= MAX_OUTPUT_ENTRIES {
            return Err(EDQUOT);
        }
        tree.dirs.insert(path);
        Ok(())
    }

    /// `path_remove_directory`: only an empty one.
    pub(crate) fn rmdir(&mut self, fd: i32, path: &str) -> Result<(), i32> {
        let (root, path) = self.resolve(fd, path)?;
        let tree = self.writable(root)?;
        match tree.kind(&path) {
            None => Err(ENOENT),
            Some(Kind::File) => Err(ENOTDIR),
            Some(Kind::Dir) if path.is_empty() => Err(EBUSY),
            Some(Kind::Dir) if !tree.children(&path).is_empty() => Err(ENOTEMPTY),
            Some(Kind::Dir) => {
                tree.dirs.remove(&path);
                Ok(())
            }
        }
    }

    /// `path_unlink_file`.
    pub(crate) fn unlink(&mut self, fd: i32, path: &str) -> Result<(), i32> {
        let (root, path) = self.resolve(fd, path)?;
        let tree = self.writable(root)?;
        match tree.kind(&path) {
            None => Err(ENOENT),
            Some(Kind::Dir) => Err(EISDIR),
            Some(Kind::File) => {
                let gone = tree.files.remove(&path).map_or(0, |d| d.len() as u64);
                self.output_bytes = self.output_bytes.saturating_sub(gone);
                Ok(())
            }
        }
    }

    /// `path_rename`, within the output tree: a file over a file, or a directory over an
    /// empty directory or nothing.
    pub(crate) fn rename(&mut self, fd: i32, from: &str, to_fd: i32, to: &str) -> Result<(), i32> {
        let (root, from) = self.resolve(fd, from)?;
        let (to_root, to) = self.resolve(to_fd, to)?;
        if root != to_root {
            return Err(EXDEV);
        }
        let to_parent = to.rsplit_once('/').map_or("", |(p, _)| p).to_owned();
        let tree = self.writable(root)?;
        if from == to {
            return tree.kind(&from).map(|_| ()).ok_or(ENOENT);
        }
        if tree.kind(&to_parent) != Some(Kind::Dir) {
            return Err(ENOENT);
        }
        match (tree.kind(&from), tree.kind(&to)) {
            (None, _) => Err(ENOENT),
            (Some(_), _) if from.is_empty() || to.is_empty() => Err(EBUSY),
            (Some(Kind::File), Some(Kind::Dir)) => Err(EISDIR),
            (Some(Kind::Dir), Some(Kind::File)) => Err(ENOTDIR),
            (Some(Kind::File), _) => {
                let data = tree.files.remove(&from).unwrap_or_default();
                if let Some(old) = tree.files.insert(to, data) {
                    self.output_bytes = self.output_bytes.saturating_sub(old.len() as u64);
                }
                Ok(())
            }
            (Some(Kind::Dir), existing) => {
                if to.starts_with(&format!("{from}/")) {
                    return Err(EINVAL);
                }
                if existing.is_some() {
                    if !tree.children(&to).is_empty() {
                        return Err(ENOTEMPTY);
                    }
                    tree.dirs.remove(&to);
                }
                let moved = |p: &str| {
                    p.strip_prefix(from.as_str())
                        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                        .map(|rest| format!("{to}{rest}"))
                };
                let dirs: Vec<String> = tree
                    .dirs
                    .iter()
                    .filter(|p| moved(p).is_some())
                    .cloned()
                    .collect();
                for old in dirs {
                    tree.dirs.remove(&old);
                    tree.dirs.insert(moved(&old).unwrap_or_default());
                }
                let files: Vec<String> = tree
                    .files
                    .keys()
                    .filter(|p| moved(p).is_some())
                    .cloned()
                    .collect();
                for old in files {
                    let data = tree.files.remove(&old).unwrap_or_default();
                    tree.files.insert(moved(&old).unwrap_or_default(), data);
                }
                // Descriptors open inside follow their directory.
                for handle in self.table.iter_mut().flatten() {
                    let (Handle::Dir { root: r, path, .. } | Handle::File { root: r, path, .. }) =
                        handle;
                    if *r == root
                        && let Some(new) = moved(path)
                    {
                        *path = new;
                    }
                }
                Ok(())
            }
        }
    }

    /// The work a rename may do: the entries of the tree it moves, at most.
    pub(crate) fn entries(&self) -> u64 {
        (self.input.entries() + self.output.as_ref().map_or(0, Tree::entries)) as u64
    }

    /// Whether `fd` and `path` name something in the read-only tree (for the calls that
    /// would change it, which are refused there).
    pub(crate) fn read_only_path(&self, fd: i32, path: &str) -> Result<bool, i32> {
        let (root, _) = self.resolve(fd, path)?;
        Ok(!self.writable_root(root))
    }
}
