//! The shell examples of `README.md` and `docs/`, run as written: every ```` ```console ````
//! block of a file, in order, in one bash session (so a later block sees an earlier one's
//! variables and background nodes), with `zerostate` on `PATH`, in an empty directory with
//! its own `HOME`, and no `ZEROSTATE_*` or `OTEL_*` variable set.
//!
//! The format is trycmd's: `$ command` (continued by lines starting `> `), then the output
//! it prints (stdout and stderr together), then `? N` when it exits with N instead of 0. In
//! the output, `[..]` stands for any text within a line and a line `...` for any number of
//! lines: the parts that differ from run to run (ids, durations, ports). A command shown
//! without output must print nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One command of a doc and what it must print.
#[derive(Debug)]
struct Step {
    /// Where it is: `docs/tasks.md:23`.
    place: String,
    command: String,
    expected: Vec<String>,
    code: i32,
}

/// The steps of every `console` block of `markdown`.
fn steps(name: &str, markdown: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        if !in_block {
            in_block = fence
                && line
                    .trim_start()
                    .trim_start_matches('`')
                    .starts_with("console");
            continue;
        }
        if fence {
            in_block = false;
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                place: format!("{name}:{}", i + 1),
                command: command.to_owned(),
                expected: Vec::new(),
                code: 0,
            });
            continue;
        }
        let step = steps
            .last_mut()
            .unwrap_or_else(|| panic!("{name}:{}: output before any `$ command`", i + 1));
        if let Some(more) = line.strip_prefix("> ")
            && step.expected.is_empty()
        {
            step.command.push('\n');
            step.command.push_str(more);
        } else if let Some(code) = line.strip_prefix("? ") {
            step.code = code
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}:{}: `? {code}` is not an exit code", i + 1));
        } else {
            step.expected.push(line.to_owned());
        }
    }
    steps
}

/// Whether `line` matches `pattern`, where `[..]` stands for any text.
fn line_matches(pattern: &str, line: &str) -> bool {
    let pieces: Vec<&str> = pattern.split("[..]").collect();
    if pieces.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if !line.starts_with(first) || line.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &line[first.len()..];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Whether `lines` match `patterns`, where a pattern `...` stands for any lines.
fn lines_match(patterns: &[String], lines: &[&str]) -> bool {
    match patterns.split_first() {
        None => lines.is_empty(),
        Some((p, rest)) if p == "..." => {
            (0..=lines.len()).any(|skip| lines_match(rest, &lines[skip..]))
        }
        Some((p, rest)) => lines
            .split_first()
            .is_some_and(|(line, more)| line_matches(p, line) && lines_match(rest, more)),
    }
}

/// Runs the `console` blocks of `doc` (relative to the repository) and fails, naming each
/// command that printed or exited other than the doc says.
fn run_doc(doc: &str, within: Duration) {
    run_doc_needing(doc, within, &[]);
}

/// [`run_doc`] for a doc whose commands need `tools` beside `zerostate`: skipped when one is
/// missing, except under `CI=true`, where that fails (`scripts/test-deps.sh` installs them).
fn run_doc_needing(doc: &str, within: Duration, tools: &[&str]) {
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true"),
                "{doc} needs {tool} (scripts/test-deps.sh installs it)"
            );
            eprintln!("skipped {doc}: {tool} is not installed");
            return;
        }
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let markdown = std::fs::read_to_string(repo.join(doc)).expect("the doc");
    let steps = steps(doc, &markdown);
    assert!(!steps.is_empty(), "{doc} has no console block");
    let _alone = crate::alone();
    let dir = tempfile::tempdir().expect("tempdir");
    let (work, home, out) = (
        dir.path().join("work"),
        dir.path().join("home"),
        dir.path().join("out"),
    );
    for d in [&work, &home, &out] {
        std::fs::create_dir_all(d).expect("dirs");
    }
    let mut script = String::from("set +e\n");
    for (i, step) in steps.iter().enumerate() {
        script.push_str(&format!(
            "{{\n{}\n}} > {out}/{i}.out 2>&1 < /dev/null\necho $? > {out}/{i}.code\n",
            step.command,
            out = out.display()
        ));
    }
    script.push_str("kill $(jobs -p) 2> /dev/null\nwait\n");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_zerostate"));
    let path = format!(
        "{}:{}",
        bin.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(&script)
        .current_dir(&work)
        .env("HOME", &home)
        .env("PATH", path)
        .env("ZEROSTATE_REPO", &repo)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("ZEROSTATE_") || name.starts_with("OTEL_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    use std::os::unix::process::CommandExt;
    command.process_group(0);
    let mut child = command.spawn().expect("bash starts");
    let start = Instant::now();
    let finished = loop {
        if child.try_wait().expect("wait").is_some() {
            break true;
        }
        if start.elapsed() > within {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Whatever the doc left running goes with its process group.
    let group = i32::try_from(child.id()).expect("pid");
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();

    let mut failures = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let output = std::fs::read_to_string(out.join(format!("{i}.out"))).unwrap_or_default();
        let code = std::fs::read_to_string(out.join(format!("{i}.code")));
        let lines: Vec<&str> = output.lines().collect();
        let problem = match code {
            Err(_) if !finished => Some(format!("did not end within {} s", within.as_secs())),
            Err(_) => Some("did not run".to_owned()),
            Ok(c) if c.trim() != step.code.to_string() => {
                Some(format!("exited {} (the doc says {})", c.trim(), step.code))
            }
            Ok(_) if !lines_match(&step.expected, &lines) => Some(format!(
                "printed other than the doc says; the doc:\n{}",
                step.expected.join("\n")
            )),
            Ok(_) => None,
        };
        if let Some(problem) = problem {
            failures.push(format!(
                "{}: `{}` {problem}\nit printed:\n{output}",
                step.place, step.command
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} commands of {doc} do not do what it says:\n\n{}",
        failures.len(),
        steps.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_patterns_of_a_doc_match_what_they_stand_for() {
    assert!(line_matches("task [..]: succeeded", "task 1f2e: succeeded"));
    assert!(line_matches("[..]", ""));
    assert!(line_matches("a[..]b[..]c", "a-b-b-c"));
    assert!(!line_matches("a[..]c", "abd"));
    assert!(!line_matches("ab[..]ba", "aba"));
    let lines = ["one", "two", "three"];
    let pats = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert!(lines_match(&pats(&["one", "...", "three"]), &lines));
    assert!(lines_match(&pats(&["..."]), &lines));
    assert!(lines_match(&pats(&["one", "t[..]", "t[..]"]), &lines));
    assert!(!lines_match(&pats(&["one", "three"]), &lines));
    assert!(!lines_match(&pats(&[]), &lines));
    let doc = "```console\n$ echo a \\\n> b\na b\n$ false\n? 1\n```\n";
    let s = steps("x.md", doc);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].command, "echo a \\\nb");
    assert_eq!(s[0].expected, ["a b"]);
    assert_eq!((s[1].code, s[1].place.as_str()), (1, "x.md:5"));
}

#[test]
fn the_commands_of_docs_tasks_md_do_what_it_says() {
    run_doc_needing(
        "docs/tasks.md",
        Duration::from_secs(120),
        &["curl", "python3"],
    );
}

#[test]
fn the_commands_of_the_readme_do_what_it_says() {
    run_doc("README.md", Duration::from_secs(120));
}

#[test]
fn the_commands_of_docs_collector_md_do_what_it_says() {
    run_doc_needing(
        "docs/collector.md",
        Duration::from_secs(120),
        &["openssl", "curl"],
    );
}

#[test]
fn the_commands_of_docs_operations_md_do_what_it_says() {
    run_doc_needing(
        "docs/operations.md",
        Duration::from_secs(180),
        &["prometheus", "curl"],
    );
}

#[test]
fn the_commands_of_docs_guilds_md_do_what_it_says() {
    run_doc_needing(
        "docs/guilds.md",
        Duration::from_secs(120),
        &["curl", "python3"],
    );
}

#[test]
fn the_commands_of_docs_network_md_do_what_it_says() {
    run_doc_needing(
        "docs/network.md",
        Duration::from_secs(120),
        &["curl", "python3"],
    );
}

#[test]
fn the_commands_of_docs_execution_md_do_what_it_says() {
    run_doc("docs/execution.md", Duration::from_secs(120));
}

/// What a `sh` block (one CI does not run: benchmarks, test commands, long runs, a task
/// project's build) names must exist: each `zerostate` command line parses as the binary
/// reads it, each `cargo` command names a package, bench, test target, example or test of
/// this workspace, and each `scripts/` file is there. A renamed flag or test shows here.
#[test]
fn the_commands_ci_does_not_run_name_what_exists() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut docs = vec![repo.join("README.md")];
    let mut in_docs: Vec<PathBuf> = std::fs::read_dir(repo.join("docs"))
        .expect("docs")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    in_docs.sort();
    docs.extend(in_docs);
    let packages = packages(&repo);
    let mut problems = Vec::new();
    let mut checked = 0;
    for doc in &docs {
        let markdown = std::fs::read_to_string(doc).expect("doc");
        let name = doc.strip_prefix(&repo).unwrap_or(doc).display().to_string();
        for (line, command) in sh_commands(&markdown) {
            let place = format!("{name}:{line}");
            let Some(words) = shlex::split(&command) else {
                problems.push(format!("{place}: `{command}` is not shell words"));
                continue;
            };
            if let Some(problem) = check_command(&repo, &packages, &words) {
                problems.push(format!("{place}: `{command}`: {problem}"));
            }
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} commands found in sh blocks");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every simple command of every `sh` block: continuation lines joined, split at `;`, `&&`,
/// `|` and `do`, comments dropped.
fn sh_commands(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_block = !in_block && trimmed.trim_start_matches('`').starts_with("sh");
            continue;
        }
        if !in_block {
            continue;
        }
        let code = match line.find(" #") {
            Some(at) => &line[..at],
            None if trimmed.starts_with('#') => "",
            None => line,
        };
        let (start, mut text) = pending.take().unwrap_or((i + 1, String::new()));
        text.push_str(code.trim_end().trim_end_matches('\\'));
        text.push(' ');
        if code.trim_end().ends_with('\\') {
            pending = Some((start, text));
            continue;
        }
        let text = text.replace("&&", ";").replace(['|'], ";");
        for part in text.split(';') {
            let part = part
                .trim()
                .trim_start_matches("do ")
                .trim_start_matches("time ");
            if !part.is_empty() && !part.starts_with("for ") && part != "done" {
                out.push((start, part.to_owned()));
            }
        }
    }
    out
}

/// Package name to its directory.
fn packages(repo: &Path) -> std::collections::BTreeMap<String, PathBuf> {
    let mut out = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(repo.join("crates")).expect("crates") {
        let dir = entry.expect("entry").path();
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        if let Some(name) = manifest
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .and_then(|l| l.strip_suffix('"'))
        {
            out.insert(name.to_owned(), dir);
        }
    }
    out
}

/// Why `words` names something that is not there, if it does.
fn check_command(
    repo: &Path,
    packages: &std::collections::BTreeMap<String, PathBuf>,
    words: &[String],
) -> Option<String> {
    // Leading VAR=value assignments are the environment.
    let words: Vec<&str> = words
        .iter()
        .map(String::as_str)
        .skip_while(|w| {
            w.split_once('=').is_some_and(|(k, _)| {
                k.chars().all(|c| c.is_ascii_uppercase() || c == '_') && !k.is_empty()
            })
        })
        .collect();
    let zerostate_args = match words.as_slice() {
        ["cargo", "run", rest @ ..] if rest.windows(2).any(|w| w == ["-p", "zerostate"]) => rest
            .iter()
            .position(|w| *w == "--")
            .map(|at| &rest[at + 1..]),
        [first, rest @ ..] if first.ends_with("zerostate") => Some(rest),
        _ => None,
    };
    if let Some(args) = zerostate_args {
        // A shell variable's value is not known here: a number stands in for it.
        let args = args.iter().map(|a| if a.contains('$') { "1" } else { a });
        return zerostate::Cli::command_with_exit_codes()
            .try_get_matches_from(std::iter::once("zerostate").chain(args))
            .err()
            .map(|e| e.to_string());
    }
    match words.as_slice() {
        ["cargo", "run" | "test" | "bench" | "build", rest @ ..] => {
            let value = |flag: &str| rest.windows(2).find(|w| w[0] == flag).map(|w| w[1]);
            let package = value("-p")?;
            let Some(dir) = packages.get(package) else {
                return Some(format!("no package {package}"));
            };
            for (flag, folder) in [("--bench", "benches"), ("--example", "examples")] {
                if let Some(name) = value(flag)
                    && !dir.join(folder).join(format!("{name}.rs")).exists()
                {
                    return Some(format!("{package} has no {folder}/{name}.rs"));
                }
            }
            if let Some(target) = value("--test") {
                let tests = dir.join("tests").join(target);
                if !tests.join("main.rs").exists() {
                    return Some(format!("{package} has no test target {target}"));
                }
                // The filter: the first word after the target that is not a flag.
                let mut after = rest.iter().skip_while(|w| **w != target).skip(1);
                if let Some(filter) = after.find(|w| !w.starts_with('-')) {
                    return test_named(&tests, filter).then_some(()).map_or(
                        Some(format!("no test of {package} matches {filter}")),
                        |()| None,
                    );
                }
            }
            None
        }
        [script, ..] if script.starts_with("scripts/") => {
            (!repo.join(script).exists()).then(|| format!("{script} is not in the repository"))
        }
        _ => None,
    }
}

/// Whether a test under `dir` has a path containing `filter` (`module::name`, or a part of
/// either), as `cargo test`'s filter matches it.
fn test_named(dir: &Path, filter: &str) -> bool {
    let (module, name) = filter.rsplit_once("::").unwrap_or(("", filter));
    let files = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"));
    for file in files {
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if module.is_empty() && stem.contains(name) {
            return true;
        }
        if !module.is_empty() && stem != module {
            continue;
        }
        let source = std::fs::read_to_string(&file).unwrap_or_default();
        let named = source.lines().any(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
            let l = l.strip_prefix("async ").unwrap_or(l);
            l.strip_prefix("fn ").is_some_and(|f| f.contains(name))
        });
        if named {
            return true;
        }
    }
    false
}
