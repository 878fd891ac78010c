//! What `task run` and `task submit` give a program beyond its stdin and arguments: the
//! environment (`--env KEY=VALUE`), input files (`--file NAME=PATH`, a file, a directory
//! or a `.tar`), and where the files it leaves in `/output` are written (`--output DIR`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

/// The most input file bytes read from disk for one task: the engine's default bound on
/// a task's input.
const MAX_INPUT_BYTES: u64 = 16 << 20;

/// The flags for a program's environment and files.
#[derive(Debug, Args, Default)]
pub struct FileArgs {
    /// An environment variable for the program, `KEY=VALUE` (repeat for more).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// An input file the program reads as `/input/NAME`, read-only; repeatable.
    ///
    /// PATH may be a file, a directory (its files become `/input/NAME/...`, symbolic links inside
    /// left out) or a `.tar` archive (its files likewise); `PATH` alone names it by its file name.
    #[arg(long = "file", value_name = "NAME=PATH")]
    pub files: Vec<String>,
    /// Give the program a writable `/output`, its files written to DIR when it ends.
    ///
    /// DIR is created if missing.
    #[arg(long = "output", value_name = "DIR")]
    pub output: Option<PathBuf>,
}

impl FileArgs {
    /// The environment, each entry checked to be `KEY=VALUE`.
    pub fn env(&self) -> anyhow::Result<Vec<String>> {
        for e in &self.env {
            if e.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
                bail!("--env {e:?}: give KEY=VALUE");
            }
        }
        Ok(self.env.clone())
    }

    /// The input files, read from disk: by name, at most 16 MiB together.
    pub fn files(&self) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
        read_files(&self.files)
    }
}

/// The files `--file NAME=PATH` flags name (PATH a file, a directory or a `.tar`; `PATH`
/// alone names it by its file name), read from disk: by name, at most 16 MiB together.
pub fn read_files(specs: &[String]) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = Files::default();
    for spec in specs {
        let (name, path) = match spec.split_once('=') {
            Some((name, path)) => (name.trim_matches('/').to_owned(), PathBuf::from(path)),
            None => {
                let path = PathBuf::from(spec);
                let name = path
                    .file_name()
                    .with_context(|| format!("--file {spec}: give NAME=PATH"))?
                    .to_string_lossy()
                    .into_owned();
                (name, path)
            }
        };
        if name.is_empty() {
            bail!("--file {spec}: the name is empty");
        }
        files.add_path(&name, &path)?;
    }
    Ok(files.files)
}

/// Every file under `dir`, by its path inside it (the files a task left in `/output`, as
/// `--output` wrote them).
pub fn read_tree(dir: &Path) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = Files::default();
    files.add_dir("", dir)?;
    Ok(files.files)
}

impl FileArgs {
    /// Writes `files` (name to bytes) under the output directory, when one was given;
    /// a name that is not a plain relative path is refused, never written.
    pub fn write_output(&self, files: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
        let Some(dir) = &self.output else {
            return Ok(());
        };
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the output directory {}", dir.display()))?;
        for (name, bytes) in files {
            let rel = Path::new(name);
            if name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
                bail!(
                    "an output file is named {name:?}, which is not a path inside the output directory: not written"
                );
            }
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&path, bytes)
                .with_context(|| format!("writing the output file {}", path.display()))?;
        }
        Ok(())
    }
}

/// Input files as they are gathered, and their size.
#[derive(Default)]
struct Files {
    files: BTreeMap<String, Vec<u8>>,
    bytes: u64,
}

impl Files {
    fn add(&mut self, name: String, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.bytes += bytes.len() as u64;
        if self.bytes > MAX_INPUT_BYTES {
            bail!("the input files are more than {MAX_INPUT_BYTES} bytes together");
        }
        if self.files.insert(name.clone(), bytes).is_some() {
            bail!("two input files are named {name:?}");
        }
        Ok(())
    }

    fn read(&mut self, name: String, path: &Path) -> anyhow::Result<()> {
        let size = std::fs::metadata(path)
            .with_context(|| format!("reading the input file {}", path.display()))?
            .len();
        if self.bytes + size > MAX_INPUT_BYTES {
            bail!("the input files are more than {MAX_INPUT_BYTES} bytes together");
        }
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the input file {}", path.display()))?;
        self.add(name, bytes)
    }

    /// `path` as `name`: a file, every file under a directory, or every file of a tar.
    fn add_path(&mut self, name: &str, path: &Path) -> anyhow::Result<()> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("reading the input {}", path.display()))?;
        if meta.is_dir() {
            self.add_dir(name, path)
        } else if path.extension().is_some_and(|e| e == "tar") {
            self.add_tar(name, path)
        } else {
            self.read(name.to_owned(), path)
        }
    }

    /// Every file under directory `path`, as `name/...`: files as they are (a `.tar`
    /// inside is a file), symbolic links left out (a link may loop).
    fn add_dir(&mut self, name: &str, path: &Path) -> anyhow::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("reading the directory {}", path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading the directory {}", path.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let child = if name.is_empty() {
                file_name
            } else {
                format!("{name}/{file_name}")
            };
            let kind = entry
                .file_type()
                .with_context(|| format!("reading {}", entry.path().display()))?;
            if kind.is_dir() {
                self.add_dir(&child, &entry.path())?;
            } else if kind.is_file() {
                self.read(child, &entry.path())?;
            }
        }
        Ok(())
    }

    fn add_tar(&mut self, name: &str, path: &Path) -> anyhow::Result<()> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("reading the archive {}", path.display()))?;
        let mut archive = tar::Archive::new(file);
        let entries = archive
            .entries()
            .with_context(|| format!("reading the archive {}", path.display()))?;
        for entry in entries {
            let mut entry =
                entry.with_context(|| format!("reading the archive {}", path.display()))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let inner = entry
                .path()
                .with_context(|| format!("a name in the archive {}", path.display()))?
                .into_owned();
            let parts: Vec<String> = inner
                .components()
                .filter_map(|c| match c {
                    Component::Normal(p) => Some(Ok(p.to_string_lossy().into_owned())),
                    Component::CurDir => None,
                    _ => Some(Err(())),
                })
                .collect::<Result<_, _>>()
                .map_err(|()| {
                    anyhow::anyhow!(
                        "the archive {} holds {}, which is not a path inside it",
                        path.display(),
                        inner.display()
                    )
                })?;
            let size = entry.size();
            if self.bytes + size > MAX_INPUT_BYTES {
                bail!("the input files are more than {MAX_INPUT_BYTES} bytes together");
            }
            let mut bytes = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut bytes)
                .with_context(|| format!("reading {} in {}", inner.display(), path.display()))?;
            self.add(format!("{name}/{}", parts.join("/")), bytes)?;
        }
        Ok(())
    }
}
