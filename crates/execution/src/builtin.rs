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

/// The largest N `builtin:primes` takes (its sieve is N bytes of 32-bit memory).
pub const PRIMES_MAX: u64 = 4_000_000_000;
/// The largest N `builtin:matmul` takes (three N x N matrices of 4-byte entries).
pub const MATMUL_MAX: u64 = 16_384;

/// Why `input` is not what the built-in task `name` takes, if it is not: `primes` and
/// `matmul` take one whole number (spaces and a newline around it allowed) within their
/// bound; `crc32` takes any bytes. Checked where a task enters, so that `abc` is refused
/// with a reason instead of read as 0.
pub fn input_problem(name: &str, input: &[u8]) -> Option<String> {
    let max = match name {
        "primes" => PRIMES_MAX,
        "matmul" => MATMUL_MAX,
        _ => return None,
    };
    let text = std::str::from_utf8(input).unwrap_or("").trim();
    let shown = String::from_utf8_lossy(&input[..input.len().min(40)]).into_owned();
    let takes = format!("builtin:{name} takes one whole number N from 0 to {max} as its input");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Some(match input.is_empty() {
            true => format!("{takes}; the input is empty"),
            false => format!("{takes}, not {shown:?}"),
        });
    }
    match text.parse::<u64>() {
        Ok(n) if n <= max => None,
        _ => Some(format!("{takes}; {text} is larger")),
    }
}

/// A manifest running the built-in task `name` on `input`, or `None` for an unknown name.
pub fn manifest(name: &str, task_id: impl Into<String>, input: Vec<u8>) -> Option<Manifest> {
    let b = BUILTINS.iter().find(|b| b.name == name)?;
    let mut m = Manifest::new(task_id, SOURCE.as_bytes().to_vec());
    m.entry = b.name.to_owned();
    m.input = input;
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_builtin_says_when_its_input_is_not_a_number_it_takes() {
        assert_eq!(input_problem("primes", b"1000000\n"), None);
        assert_eq!(input_problem("matmul", b" 64 "), None);
        assert_eq!(input_problem("crc32", b"abc"), None);
        assert_eq!(input_problem("crc32", b""), None);
        for (name, bad) in [
            ("primes", &b"abc"[..]),
            ("primes", b""),
            ("primes", b"-5"),
            ("primes", b"12 13"),
            ("primes", b"4000000001"),
            ("primes", b"99999999999999999999999"),
            ("matmul", b"16385"),
            ("matmul", b"1e3"),
        ] {
            let why = input_problem(name, bad).expect("refused");
            assert!(why.contains("whole number"), "{name} {bad:?}: {why}");
        }
    }
}
