//! What a task is: its module, input, arguments, environment, files and limits.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::TaskError;

/// Resource limits of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Linear memory, bytes. Default 64 MiB.
    pub memory_bytes: u64,
    /// Fuel, the billing unit (about one unit per WebAssembly instruction). Default
    /// 10,000,000,000: a few seconds of work.
    pub fuel: u64,
    /// Wall time, milliseconds. Default 10,000.
    pub wall_time_ms: u64,
    /// Bytes written to stdout. Default 1 MiB.
    pub output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            fuel: 10_000_000_000,
            wall_time_ms: 10_000,
            output_bytes: 1 << 20,
        }
    }
}

/// The most a node allows any task; manifests asking for more are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Largest memory limit, bytes. Default 1 GiB.
    pub max_memory_bytes: u64,
    /// Largest fuel limit. Default 100,000,000,000.
    pub max_fuel: u64,
    /// Longest wall time, milliseconds. Default 60,000.
    pub max_wall_time_ms: u64,
    /// Largest output, bytes. Default 16 MiB.
    pub max_output_bytes: u64,
    /// Largest input (stdin and input files together), bytes. Default 16 MiB.
    pub max_input_bytes: u64,
    /// Largest module, bytes (binary or text), checked before it is parsed. Default 16 MiB.
    pub max_module_bytes: u64,
    /// Most functions a module may define; bounds what compiling it costs. Default 50,000.
    pub max_functions: u64,
    /// Largest body of one function, bytes; bounds what compiling it costs (compilers are
    /// worse than linear in a function's size). Default 1 MiB.
    pub max_function_bytes: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_memory_bytes: 1 << 30,
            max_fuel: 100_000_000_000,
            max_wall_time_ms: 60_000,
            max_output_bytes: 16 << 20,
            max_input_bytes: 16 << 20,
            max_module_bytes: 16 << 20,
            max_functions: 50_000,
            max_function_bytes: 1 << 20,
        }
    }
}

/// One task to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The task's id.
    pub task_id: String,
    /// The module: binary WebAssembly, or text (WAT).
    pub module: Vec<u8>,
    /// The module's SHA-256, if the sender stated it; checked before anything runs.
    pub module_sha256: Option<[u8; 32]>,
    /// The function to call. Default `_start`.
    pub entry: String,
    /// The task's stdin.
    pub input: Vec<u8>,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// The environment, each `KEY=VALUE`.
    pub env: Vec<String>,
    /// Input files by name (a relative path), readable as `/input/NAME`; at most
    /// [`MAX_FILES`]. Their bytes count, with stdin's, against the policy's input bound.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Whether the task has a writable `/output` whose files come back with the result
    /// ([`crate::Execution::files`]); they count, with stdout, against the output limit.
    pub output_files: bool,
    /// Limits.
    pub limits: Limits,
}

/// Input files a task may carry, at most.
pub const MAX_FILES: usize = 4096;
/// Arguments, or environment entries, a task may carry, at most.
pub const MAX_ARGS: usize = 1024;
/// Bytes of arguments, or of environment, a task may carry, at most, together.
pub const MAX_ARG_BYTES: usize = 64 << 10;

/// Why `files` cannot be a task's input files, if they cannot: more than [`MAX_FILES`], a
/// name that is not a relative path of names, or a name that is both a file and a
/// directory.
pub fn files_problem(files: &BTreeMap<String, Vec<u8>>) -> Option<String> {
    if files.len() > MAX_FILES {
        return Some(format!(
            "{} input files; a task takes at most {MAX_FILES}",
            files.len()
        ));
    }
    files
        .keys()
        .find_map(|n| crate::wasi::name_problem(n))
        .or_else(|| crate::wasi::tree_problem(files))
}

/// Why `args` (or environment entries, `what`) are more than a task may carry, or
/// cannot be passed to a program (a NUL inside one; for the environment, an entry that is
/// not `KEY=VALUE`), if they are.
pub fn strings_problem(what: &str, strings: &[String]) -> Option<String> {
    let bytes: usize = strings.iter().map(String::len).sum();
    if strings.len() > MAX_ARGS {
        return Some(format!(
            "{} {what}; a task takes at most {MAX_ARGS}",
            strings.len()
        ));
    }
    if bytes > MAX_ARG_BYTES {
        return Some(format!(
            "{bytes} bytes of {what}; a task takes at most {MAX_ARG_BYTES}"
        ));
    }
    if let Some(s) = strings.iter().find(|s| s.contains('\0')) {
        return Some(format!("{what}: {s:?} holds a NUL byte"));
    }
    if what == "environment entries"
        && let Some(s) = strings
            .iter()
            .find(|s| s.split_once('=').is_none_or(|(k, _)| k.is_empty()))
    {
        return Some(format!("environment entry {s:?} is not KEY=VALUE"));
    }
    None
}

impl Manifest {
    /// A manifest for `module` with defaults for everything else.
    pub fn new(task_id: impl Into<String>, module: Vec<u8>) -> Self {
        Self {
            task_id: task_id.into(),
            module,
            module_sha256: None,
            entry: "_start".to_owned(),
            input: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            files: BTreeMap::new(),
            output_files: false,
            limits: Limits::default(),
        }
    }

    /// Checks the manifest against `policy`, reporting every problem at once. A module
    /// above the policy's size is refused before anything reads it.
    pub fn validate(&self, policy: &Policy) -> Result<[u8; 32], TaskError> {
        if self.module.len() as u64 > policy.max_module_bytes {
            return Err(TaskError::ModuleTooLarge(format!(
                "{} bytes, above the node's policy of {}",
                self.module.len(),
                policy.max_module_bytes
            )));
        }
        let mut problems = Vec::new();
        let digest = sha256(&self.module);
        if self.task_id.is_empty() {
            problems.push("task id is empty".to_owned());
        }
        if self.module.is_empty() {
            problems.push("module is empty".to_owned());
        }
        if let Some(stated) = self.module_sha256
            && stated != digest
        {
            problems.push(format!(
                "module SHA-256 mismatch: stated {}, actual {}",
                hex::encode(stated),
                hex::encode(digest)
            ));
        }
        if self.entry.is_empty() {
            problems.push("entry point is empty".to_owned());
        }
        let l = &self.limits;
        let mut over = |what: &str, value: u64, max: u64| {
            if value > max {
                problems.push(format!(
                    "{what} limit {value} is above the node's policy of {max}"
                ));
            }
            if value == 0 {
                problems.push(format!("{what} limit must be above zero"));
            }
        };
        over("memory", l.memory_bytes, policy.max_memory_bytes);
        over("fuel", l.fuel, policy.max_fuel);
        over("wall time", l.wall_time_ms, policy.max_wall_time_ms);
        over("output", l.output_bytes, policy.max_output_bytes);
        let input: u64 =
            self.input.len() as u64 + self.files.values().map(|f| f.len() as u64).sum::<u64>();
        if input > policy.max_input_bytes {
            problems.push(format!(
                "input of {input} bytes (stdin and files) is above the node's policy of {}",
                policy.max_input_bytes
            ));
        }
        problems.extend(strings_problem("arguments", &self.args));
        problems.extend(strings_problem("environment entries", &self.env));
        if self.files.len() > MAX_FILES {
            problems.push(format!(
                "{} input files; a task takes at most {MAX_FILES}",
                self.files.len()
            ));
        } else {
            problems.extend(
                self.files
                    .keys()
                    .filter_map(|n| crate::wasi::name_problem(n)),
            );
            problems.extend(crate::wasi::tree_problem(&self.files));
        }
        if problems.is_empty() {
            Ok(digest)
        } else {
            Err(TaskError::InvalidManifest(problems))
        }
    }
}

/// Reads `module` (binary, or text turned into binary) and checks what compiling it would
/// cost against `policy` before the compiler sees it: how many functions it defines and how
/// large the largest is. Returns the binary.
pub(crate) fn check_compile_cost(module: &[u8], policy: &Policy) -> Result<Vec<u8>, TaskError> {
    let binary = wat::parse_bytes(module)
        .map_err(|e| TaskError::InvalidModule(format!("{e}")))?
        .into_owned();
    let too_large = |what: String| TaskError::ModuleTooLarge(what);
    for payload in wasmtime::wasmparser::Parser::new(0).parse_all(&binary) {
        use wasmtime::wasmparser::Payload;
        match payload.map_err(|e| TaskError::InvalidModule(format!("{e}")))? {
            Payload::CodeSectionStart { count, .. } if u64::from(count) > policy.max_functions => {
                return Err(too_large(format!(
                    "{count} functions, above the node's policy of {}",
                    policy.max_functions
                )));
            }
            Payload::CodeSectionEntry(body) => {
                let size = body.range().len() as u64;
                if size > policy.max_function_bytes {
                    return Err(too_large(format!(
                        "a function of {size} bytes, above the node's policy of {}",
                        policy.max_function_bytes
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(binary)
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut m = Manifest::new("", b"(module)".to_vec());
        m.module_sha256 = Some([0; 32]);
        m.limits.fuel = u64::MAX;
        m.limits.memory_bytes = 0;
        let Err(TaskError::InvalidManifest(problems)) = m.validate(&Policy::default()) else {
            panic!("expected an invalid manifest");
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("SHA-256 mismatch")));
        assert!(problems.iter().any(|p| p.contains("fuel limit")));
    }
}
