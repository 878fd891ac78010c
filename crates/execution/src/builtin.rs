//! Built-in tasks: real workloads a devnet can run without any toolchain, from
//! `tasks/builtin.wat` (one module, one entry point per task).

use crate::Manifest;

/// The source of the built-in module.
pub const SOURCE: &str = include_str!("../tasks/builtin.wat");

/// A built-in task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Builtin {
    /// Its name, which is also its entry point.
    pub name: &'static str,
    /// What it computes from its input.
    pub description: &'static str,
}

/// Every built-in task.
pub const BUILTINS: [Builtin; 3] = [
    Builtin {
        name: "primes",
        description: "input N: how many primes are <= N (sieve)",
    },
    Builtin {
        name: "matmul",
        description: "input N: sum of the entries of the product of two N x N matrices",
    },
    Builtin {
        name: "crc32",
        description: "input bytes: their CRC-32 (IEEE 802.3) in hex",
    },
];

/// A manifest running the built-in task `name` on `input`, or `None` for an unknown name.
pub fn manifest(name: &str, task_id: impl Into<String>, input: Vec<u8>) -> Option<Manifest> {
    let b = BUILTINS.iter().find(|b| b.name == name)?;
    let mut m = Manifest::new(task_id, SOURCE.as_bytes().to_vec());
    m.entry = b.name.to_owned();
    m.input = input;
    Some(m)
}
