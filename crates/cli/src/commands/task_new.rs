//! `zerostate task new NAME`: a small Cargo project a task author starts from.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

/// `zerostate task new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The project's name, a crate name; the directory, unless `--dir` says another.
    ///
    /// Letters, digits, `-` and `_`, starting with a letter.
    name: String,
    /// Where to write it [default: ./NAME].
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl NewArgs {
    /// Writes the project; refuses to write into a directory that exists.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let name = &self.name;
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            bail!("{name:?} is not a crate name: letters, digits, - and _, starting with a letter");
        }
        let dir = self.dir.clone().unwrap_or_else(|| PathBuf::from(name));
        if dir.exists() {
            bail!(
                "{} exists already: give another name or --dir",
                dir.display()
            );
        }
        let files: [(&str, String); 6] = [
            (
                "Cargo.toml",
                format!(
                    "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
                     [profile.release]\nopt-level = \"s\"\nstrip = true\n"
                ),
            ),
            (
                ".cargo/config.toml",
                "[build]\ntarget = \"wasm32-wasip1\"\n".into(),
            ),
            ("src/main.rs", include_str!("task_new/main.rs.txt").into()),
            (
                "README.md",
                include_str!("task_new/README.md.txt").replace("NAME", name),
            ),
            (
                "sample/stdin.txt",
                "The quick brown fox\njumps over the lazy dog.\n".into(),
            ),
            ("sample/words.txt", "one two three\nfour five\nsix\n".into()),
        ];
        for (path, text) in &files {
            let path = dir.join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        std::fs::write(dir.join(".gitignore"), "/target\n/out\nreceipt.json\n")
            .with_context(|| format!("writing {}", dir.join(".gitignore").display()))?;
        println!("wrote the task {name} in {}; next:\n", dir.display());
        let readme = include_str!("task_new/README.md.txt").replace("NAME", name);
        let commands = readme
            .split("```sh\n")
            .nth(1)
            .and_then(|s| s.split("```").next())
            .unwrap_or_default();
        println!("cd {}\n{commands}", dir.display());
        Ok(ExitCode::SUCCESS)
    }
}
