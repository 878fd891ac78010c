//! The built-in tasks compute what they say.

use zerostate_execution::builtin;

use crate::harness::engine;

fn run(name: &str, input: &[u8]) -> String {
    let m = builtin::manifest(name, format!("builtin-{name}"), input.to_vec()).expect("known task");
    let run = engine().run(&m);
    assert_eq!(run.result, Ok(()), "{name}");
    run.receipt.verify().expect("signed");
    String::from_utf8(run.output).expect("text")
}

fn primes_up_to(n: usize) -> u64 {
    let mut composite = vec![false; n + 1];
    let mut count = 0;
    for i in 2..=n {
        if !composite[i] {
            count += 1;
            let mut j = i * i;
            while j <= n {
                composite[j] = true;
                j += i;
            }
        }
    }
    count
}

fn matmul(n: u32) -> u64 {
    let a = |i: u32, j: u32| (i * j + 1) % 7;
    let b = |i: u32, j: u32| (i + 2 * j) % 5;
    let mut total = 0u64;
    for i in 0..n {
        for j in 0..n {
            let acc = (0..n).fold(0u32, |acc, k| {
                acc.wrapping_add(a(i, k).wrapping_mul(b(k, j)))
            });
            total += u64::from(acc);
        }
    }
    total
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & 0u32.wrapping_sub(crc & 1));
        }
    }
    !crc
}

#[test]
fn primes_counts_primes() {
    for n in [0usize, 1, 2, 10, 100, 7919, 1_000_000] {
        assert_eq!(
            run("primes", n.to_string().as_bytes()),
            format!("{}\n", primes_up_to(n)),
            "n = {n}"
        );
    }
    assert_eq!(run("primes", b"1000000"), "78498\n");
}

#[test]
fn matmul_multiplies_matrices() {
    for n in [0u32, 1, 3, 17, 64] {
        assert_eq!(
            run("matmul", format!("{n}\n").as_bytes()),
            format!("{}\n", matmul(n)),
            "n = {n}"
        );
    }
}

#[test]
fn crc32_checksums_its_input() {
    assert_eq!(
        run("crc32", b"The quick brown fox jumps over the lazy dog"),
        "414fa339\n"
    );
    assert_eq!(run("crc32", b""), "00000000\n");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    assert_eq!(run("crc32", &big), format!("{:08x}\n", crc32(&big)));
}

#[test]
fn an_unknown_builtin_is_none() {
    assert!(builtin::manifest("bitcoin", "x", Vec::new()).is_none());
}
