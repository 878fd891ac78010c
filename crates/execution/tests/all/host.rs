//! Host functions under a hostile guest: ranges are checked before any work, work the guest
//! sizes is charged in fuel before it is done, clocks reproduce, and modules too large to
//! read or too costly to compile are refused before the compiler sees them.

use zerostate_execution::{
    Engine, EngineOptions, ExecutorKey, IOVEC_FUEL, Policy, RANDOM_FUEL_PER_BLOCK, TaskError,
};

use crate::harness::{engine, manifest};

fn engine_with(policy: Policy) -> Engine {
    let options = EngineOptions {
        policy,
        ..EngineOptions::default()
    };
    Engine::new(options, ExecutorKey::from_seed([7; 32])).expect("engine")
}

/// Calls `random_get(ptr, len)` on 1,024 pages (64 MiB) of memory and writes the errno as
/// one byte to stdout.
fn random_get(ptr: u32, len: u32) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1024)
  (func (export "_start")
    (i32.store8 (i32.const 64) (call $random (i32.const {ptr}) (i32.const {len})))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 1))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        ptr = ptr as i32,
        len = len as i32,
    )
}

#[test]
fn random_get_outside_memory_is_refused_before_any_work() {
    // 4 GiB asked of 64 MiB: EFAULT at once; nothing is allocated or hashed.
    let run = engine().run(&manifest(&random_get(0, u32::MAX)));
    assert_eq!(run.result, Ok(()));
    assert_eq!(run.output, [21], "EFAULT");
    assert!(
        run.measurement.fuel_consumed < 1_000,
        "{:?}",
        run.measurement
    );
}

#[test]
fn random_get_is_charged_in_fuel_and_filled_in_place() {
    let len = 32 << 20;
    let run = engine().run(&manifest(&random_get(1 << 20, len)));
    assert_eq!(run.result, Ok(()));
    assert_eq!(run.output, [0]);
    let blocks = u64::from(len) / 32;
    assert!(
        run.receipt.fuel_consumed >= blocks * RANDOM_FUEL_PER_BLOCK,
        "host work not in the receipt's fuel: {}",
        run.receipt.fuel_consumed
    );

    // Without the fuel for it, the work is not done.
    let mut m = manifest(&random_get(1 << 20, len));
    m.limits.fuel = 1_000_000;
    assert_eq!(
        engine().run(&m).result,
        Err(TaskError::OutOfFuel(1_000_000))
    );
}

#[test]
fn a_huge_iovec_list_is_charged_per_entry() {
    // Eight million zero-length iovecs: the host would walk them all for free.
    let count = 8 << 20;
    let wat = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1024)
  (func (export "_start")
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const {count}) (i32.const 0)))))"#
    );
    let mut m = manifest(&wat);
    m.limits.fuel = 1_000_000;
    assert_eq!(
        engine().run(&m).result,
        Err(TaskError::OutOfFuel(1_000_000))
    );

    let mut m = manifest(&wat);
    m.limits.fuel = 1_000_000_000;
    let run = engine().run(&m);
    assert_eq!(run.result, Ok(()));
    assert!(run.receipt.fuel_consumed >= count * IOVEC_FUEL);

    // A list that runs off the end of memory is refused before it is read.
    let off_the_end = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (call $exit (call $write (i32.const 1) (i32.const 0) (i32.const {}) (i32.const 0)))))"#,
        u32::MAX as i32
    );
    let run = engine().run(&manifest(&off_the_end));
    assert_eq!(run.result, Err(TaskError::Exited(21)), "EFAULT");
    assert!(run.measurement.fuel_consumed < 1_000);
}

#[test]
fn clocks_are_virtual_so_reruns_reproduce() {
    // Writes the realtime and the monotonic clock, 16 bytes, after some work.
    let wat = r#"(module
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $i i32)
    (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 100000))))
    (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 64)))
    (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 72)))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
    let first = engine().run(&manifest(wat));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = engine().run(&manifest(wat));
    assert_eq!(first.result, Ok(()));
    assert_eq!(first.output, second.output, "a rerun read other clocks");
    let realtime = u64::from_le_bytes(first.output[..8].try_into().expect("8 bytes"));
    assert!(realtime > 0 && realtime <= first.measurement.fuel_consumed);
    assert_eq!(first.receipt.output_sha256, second.receipt.output_sha256);
}

#[test]
fn a_module_above_the_size_limit_is_refused_before_it_is_read() {
    let policy = Policy {
        max_module_bytes: 1_000,
        ..Policy::default()
    };
    // Not even WebAssembly: refused for its size, so nothing parsed it.
    let mut m = manifest("");
    m.module = vec![0xff; 1_001];
    let err = engine_with(policy).run(&m).result.expect_err("refused");
    assert!(matches!(err, TaskError::ModuleTooLarge(_)), "{err}");
    assert!(err.to_string().contains("1001 bytes"), "{err}");
}

#[test]
fn a_module_too_costly_to_compile_is_refused() {
    let many = format!(
        "(module {} (func (export \"_start\")))",
        "(func)".repeat(20)
    );
    let policy = Policy {
        max_functions: 10,
        ..Policy::default()
    };
    let err = engine_with(policy)
        .run(&manifest(&many))
        .result
        .expect_err("refused");
    assert!(matches!(err, TaskError::ModuleTooLarge(_)), "{err}");
    assert!(err.to_string().contains("21 functions"), "{err}");

    let big_body = format!(
        "(module (func (export \"_start\") {}))",
        "(nop)".repeat(5_000)
    );
    let policy = Policy {
        max_function_bytes: 1_000,
        ..Policy::default()
    };
    let err = engine_with(policy)
        .run(&manifest(&big_body))
        .result
        .expect_err("refused");
    assert!(matches!(err, TaskError::ModuleTooLarge(_)), "{err}");
}

/// Every function of WASI preview 1, with its signature, and a call of it on descriptor
/// `$fd` (pointers at 1024, lengths 0) whose errno the module writes as one byte.
const PREVIEW1: &[(&str, &str, &str)] = &[
    (
        "fd_advise",
        "i32 i64 i64 i32",
        "(local.get $fd) (i64.const 0) (i64.const 0) (i32.const 0)",
    ),
    (
        "fd_allocate",
        "i32 i64 i64",
        "(local.get $fd) (i64.const 0) (i64.const 1)",
    ),
    ("fd_datasync", "i32", "(local.get $fd)"),
    (
        "fd_fdstat_set_flags",
        "i32 i32",
        "(local.get $fd) (i32.const 0)",
    ),
    (
        "fd_fdstat_set_rights",
        "i32 i64 i64",
        "(local.get $fd) (i64.const 0) (i64.const 0)",
    ),
    (
        "fd_filestat_get",
        "i32 i32",
        "(local.get $fd) (i32.const 1024)",
    ),
    (
        "fd_filestat_set_size",
        "i32 i64",
        "(local.get $fd) (i64.const 0)",
    ),
    (
        "fd_filestat_set_times",
        "i32 i64 i64 i32",
        "(local.get $fd) (i64.const 0) (i64.const 0) (i32.const 0)",
    ),
    (
        "fd_pread",
        "i32 i32 i32 i64 i32",
        "(local.get $fd) (i32.const 1024) (i32.const 0) (i64.const 0) (i32.const 1024)",
    ),
    (
        "fd_pwrite",
        "i32 i32 i32 i64 i32",
        "(local.get $fd) (i32.const 1024) (i32.const 0) (i64.const 0) (i32.const 1024)",
    ),
    (
        "fd_readdir",
        "i32 i32 i32 i64 i32",
        "(local.get $fd) (i32.const 1024) (i32.const 0) (i64.const 0) (i32.const 1024)",
    ),
    ("fd_renumber", "i32 i32", "(local.get $fd) (local.get $fd)"),
    ("fd_sync", "i32", "(local.get $fd)"),
    ("fd_tell", "i32 i32", "(local.get $fd) (i32.const 1024)"),
    (
        "path_create_directory",
        "i32 i32 i32",
        "(local.get $fd) (i32.const 1024) (i32.const 0)",
    ),
    (
        "path_filestat_get",
        "i32 i32 i32 i32 i32",
        "(local.get $fd) (i32.const 0) (i32.const 1024) (i32.const 0) (i32.const 1024)",
    ),
    (
        "path_filestat_set_times",
        "i32 i32 i32 i32 i64 i64 i32",
        "(local.get $fd) (i32.const 0) (i32.const 1024) (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0)",
    ),
    (
        "path_link",
        "i32 i32 i32 i32 i32 i32 i32",
        "(local.get $fd) (i32.const 0) (i32.const 1024) (i32.const 0) (local.get $fd) (i32.const 1024) (i32.const 0)",
    ),
    (
        "path_open",
        "i32 i32 i32 i32 i32 i64 i64 i32 i32",
        "(local.get $fd) (i32.const 0) (i32.const 1024) (i32.const 0) (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 1024)",
    ),
    (
        "path_readlink",
        "i32 i32 i32 i32 i32 i32",
        "(local.get $fd) (i32.const 1024) (i32.const 0) (i32.const 1024) (i32.const 0) (i32.const 1024)",
    ),
    (
        "path_remove_directory",
        "i32 i32 i32",
        "(local.get $fd) (i32.const 1024) (i32.const 0)",
    ),
    (
        "path_rename",
        "i32 i32 i32 i32 i32 i32",
        "(local.get $fd) (i32.const 1024) (i32.const 0) (local.get $fd) (i32.const 1024) (i32.const 0)",
    ),
    (
        "path_symlink",
        "i32 i32 i32 i32 i32",
        "(i32.const 1024) (i32.const 0) (local.get $fd) (i32.const 1024) (i32.const 0)",
    ),
    (
        "path_unlink_file",
        "i32 i32 i32",
        "(local.get $fd) (i32.const 1024) (i32.const 0)",
    ),
    ("proc_raise", "i32", "(i32.const 9)"),
    (
        "sock_accept",
        "i32 i32 i32",
        "(local.get $fd) (i32.const 0) (i32.const 1024)",
    ),
    (
        "sock_recv",
        "i32 i32 i32 i32 i32 i32",
        "(local.get $fd) (i32.const 1024) (i32.const 0) (i32.const 0) (i32.const 1024) (i32.const 1032)",
    ),
    (
        "sock_send",
        "i32 i32 i32 i32 i32",
        "(local.get $fd) (i32.const 1024) (i32.const 0) (i32.const 0) (i32.const 1024)",
    ),
    ("sock_shutdown", "i32 i32", "(local.get $fd) (i32.const 0)"),
];

/// A module that imports every preview-1 function above (and `fd_write`), calls each on
/// descriptor `fd`, and writes the errnos, one byte each, in the order of [`PREVIEW1`].
fn every_call_on(fd: i32) -> String {
    let imports: String = PREVIEW1
        .iter()
        .map(|(name, params, _)| {
            format!(
                "(import \"wasi_snapshot_preview1\" \"{name}\" (func ${name} (param {params}) (result i32)))\n"
            )
        })
        .collect();
    let calls: String = PREVIEW1
        .iter()
        .enumerate()
        .map(|(i, (name, _, args))| {
            format!(
                "(i32.store8 (i32.const {}) (call ${name} {args}))\n",
                2048 + i
            )
        })
        .collect();
    format!(
        r#"(module
  {imports}
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $fd i32)
    (local.set $fd (i32.const {fd}))
    {calls}
    (i32.store (i32.const 0) (i32.const 2048))
    (i32.store (i32.const 4) (i32.const {count}))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        count = PREVIEW1.len(),
    )
}

#[test]
fn every_preview1_function_links_and_answers_an_errno_without_a_file_system() {
    const EBADF: u8 = 8;
    // On a descriptor the task does not hold: EBADF, but for the one call that takes none.
    let run = engine().run(&manifest(&every_call_on(3)));
    assert_eq!(run.result, Ok(()), "{:?}", run.result);
    let expected: Vec<u8> = PREVIEW1
        .iter()
        .map(|(name, ..)| if *name == "proc_raise" { 52 } else { EBADF })
        .collect();
    assert_eq!(run.output, expected);

    // On standard output: what a stream answers.
    let run = engine().run(&manifest(&every_call_on(1)));
    assert_eq!(run.result, Ok(()), "{:?}", run.result);
    let answers: Vec<(&str, u8)> = PREVIEW1
        .iter()
        .map(|(name, ..)| *name)
        .zip(run.output.iter().copied())
        .collect();
    let (espipe, enotdir, enotsock, enotsup, einval) = (70, 54, 57, 58, 28);
    for (name, errno) in &answers {
        let want = match *name {
            "fd_datasync" | "fd_sync" | "fd_filestat_get" => 0,
            "fd_advise" | "fd_allocate" | "fd_pread" | "fd_pwrite" | "fd_tell" => espipe,
            "fd_fdstat_set_flags"
            | "fd_fdstat_set_rights"
            | "fd_filestat_set_times"
            | "fd_renumber" => enotsup,
            "fd_filestat_set_size" => einval,
            "proc_raise" => 52,
            n if n.starts_with("sock_") => enotsock,
            _ => enotdir,
        };
        assert_eq!(*errno, want, "{name}: {answers:?}");
    }
}
