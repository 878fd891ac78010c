//! The host side of WASI preview 1 that a task sees: stdin is the task's input, stdout its
//! output (capped), stderr captured (capped), arguments and environment as given, virtual
//! clocks, deterministic randomness, and no files, directories or sockets. Every function of
//! preview 1 is defined, so any preview-1 module links; what a task may not do answers the
//! errno a program expects (no directory is preopened, so every path call names a
//! descriptor that is not a directory, `ENOTDIR`, or none at all, `EBADF`; the standard
//! streams cannot seek, `ESPIPE`; sockets are not offered, `ENOTSOCK`), never a trap.
//! Imports from any other module, or names preview 1 does not have, fail to link with a
//! clear "unknown import" error.
//!
//! Every host function checks the guest's memory ranges before it allocates, loops or
//! copies, and work whose size the guest chooses is charged in fuel before it is done
//! (see the `*_FUEL` constants), so the fuel a receipt states covers host work too and a
//! guest cannot make the host work outside its limits.
//!
//! Clocks are virtual so that a rerun reproduces: every clock reads the fuel consumed so
//! far, one nanosecond per unit, starting at 0 (the realtime clock too, which therefore
//! reads as early 1970). Randomness is SHA-256 of the task's seed and a counter.

use sha2::{Digest, Sha256};
use wasmtime::{Caller, Extern, Linker, Memory, Trap};

use crate::TaskError;
use crate::limits::Limiter;

/// The import module every function here lives in.
pub(crate) const MODULE: &str = "wasi_snapshot_preview1";

/// The most stderr kept; more is counted and dropped, never an error.
pub(crate) const STDERR_LIMIT: usize = 64 << 10;

const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;
const ENOTDIR: i32 = 54;
const ENOTSOCK: i32 = 57;
const ENOTSUP: i32 = 58;
const ESPIPE: i32 = 70;

/// Raised whenever the host changes what a task outputs or the fuel it is charged; part of
/// the engine id receipts carry.
pub(crate) const HOST_REVISION: u32 = 2;

/// Fuel for any host call that does work sized by the guest, on top of the call itself.
pub const HOST_CALL_FUEL: u64 = 50;
/// Fuel per iovec entry read by `fd_write` or `fd_read`.
pub const IOVEC_FUEL: u64 = 8;
/// Fuel per started 8 bytes copied between the guest and the host.
pub const COPY_FUEL_PER_8_BYTES: u64 = 1;
/// Fuel per started 32-byte block of `random_get` (one SHA-256 compression).
pub const RANDOM_FUEL_PER_BLOCK: u64 = 64;

/// Everything a running task's host functions touch.
pub(crate) struct TaskState {
    pub(crate) limiter: Limiter,
    stdin: Vec<u8>,
    stdin_pos: usize,
    pub(crate) stdout: Vec<u8>,
    output_limit: u64,
    pub(crate) stderr: Vec<u8>,
    pub(crate) stderr_dropped: u64,
    args: Vec<String>,
    env: Vec<String>,
    fuel_limit: u64,
    random_seed: [u8; 32],
    random_counter: u64,
    /// Set when the module called `proc_exit`.
    pub(crate) exit_code: Option<i32>,
    /// Set when a write went past the output limit.
    pub(crate) output_exceeded: bool,
}

impl TaskState {
    pub(crate) fn new(
        limiter: Limiter,
        input: Vec<u8>,
        output_limit: u64,
        args: Vec<String>,
        fuel_limit: u64,
        random_seed: [u8; 32],
    ) -> Self {
        Self {
            limiter,
            stdin: input,
            stdin_pos: 0,
            stdout: Vec::new(),
            output_limit,
            stderr: Vec::new(),
            stderr_dropped: 0,
            args,
            env: Vec::new(),
            fuel_limit,
            random_seed,
            random_counter: 0,
            exit_code: None,
            output_exceeded: false,
        }
    }
}

/// `proc_exit` unwinds the guest with this error; the engine reads the code from the state.
#[derive(Debug)]
pub(crate) struct Exit;

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("task exited")
    }
}

impl std::error::Error for Exit {}

/// The names this host provides, to tell a missing import from a present one.
pub(crate) const FUNCTIONS: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "fd_write",
    "fd_read",
    "fd_close",
    "fd_fdstat_get",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_seek",
    "proc_exit",
    "random_get",
    "clock_time_get",
    "clock_res_get",
    "sched_yield",
    "poll_oneoff",
    "fd_advise",
    "fd_allocate",
    "fd_datasync",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_pwrite",
    "fd_readdir",
    "fd_renumber",
    "fd_sync",
    "fd_tell",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "proc_raise",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// Whether `fd` is one of the standard streams, the only descriptors a task holds.
fn stdio(fd: i32) -> bool {
    (0..=2).contains(&fd)
}

/// The answer of a call a standard stream cannot serve (`on_stdio`); any other descriptor
/// does not exist.
fn on_fd(fd: i32, on_stdio: i32) -> i32 {
    if stdio(fd) { on_stdio } else { EBADF }
}

fn memory(caller: &mut Caller<'_, TaskState>) -> Option<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    }
}

/// Takes `units` of fuel from the task before the host does work the guest sized; a task
/// without that much left ends as out of fuel, and the work is not done.
fn charge(caller: &mut Caller<'_, TaskState>, units: u64) -> wasmtime::Result<()> {
    let left = caller.get_fuel()?;
    match left.checked_sub(units) {
        Some(rest) => caller.set_fuel(rest),
        None => {
            caller.set_fuel(0)?;
            Err(Trap::OutOfFuel.into())
        }
    }
}

/// Fuel to copy `bytes` bytes.
fn copy_fuel(bytes: u64) -> u64 {
    bytes.div_ceil(8).saturating_mul(COPY_FUEL_PER_8_BYTES)
}

/// Whether `[at, at + len)` lies inside memory of `size` bytes.
fn in_memory(size: usize, at: u32, len: u64) -> bool {
    u64::from(at)
        .checked_add(len)
        .is_some_and(|end| end <= size as u64)
}

/// The memory of a call that reads an iovec array, once the array's range is checked and
/// reading it charged; `None` when there is no memory or the array lies outside it.
fn iovec_memory(
    caller: &mut Caller<'_, TaskState>,
    iovs: u32,
    count: u32,
) -> wasmtime::Result<Option<Memory>> {
    let Some(mem) = memory(caller) else {
        return Ok(None);
    };
    if !in_memory(mem.data_size(&mut *caller), iovs, u64::from(count) * 8) {
        return Ok(None);
    }
    charge(
        caller,
        HOST_CALL_FUEL.saturating_add(u64::from(count).saturating_mul(IOVEC_FUEL)),
    )?;
    Ok(Some(mem))
}

/// The `i`th (pointer, length) pair of an iovec array whose range was checked.
fn iovec(data: &[u8], iovs: u32, i: u32) -> Option<(u32, u32)> {
    let base = iovs.checked_add(i.checked_mul(8)?)?;
    Some((read_u32(data, base)?, read_u32(data, base.checked_add(4)?)?))
}

fn read_u32(data: &[u8], at: u32) -> Option<u32> {
    let at = at as usize;
    data.get(at..at.checked_add(4)?)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn write_bytes(data: &mut [u8], at: u32, bytes: &[u8]) -> bool {
    let at = at as usize;
    match at
        .checked_add(bytes.len())
        .and_then(|end| data.get_mut(at..end))
    {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

/// Writes `strings` as a WASI string table (`*_get`).
fn string_table(
    caller: &mut Caller<'_, TaskState>,
    strings: &[String],
    ptrs: u32,
    buf: u32,
) -> i32 {
    let Some(mem) = memory(caller) else {
        return EFAULT;
    };
    let data = mem.data_mut(caller);
    let mut offset = buf;
    for (i, s) in strings.iter().enumerate() {
        let Some(slot) = (i as u32).checked_mul(4).and_then(|o| ptrs.checked_add(o)) else {
            return EFAULT;
        };
        if !write_bytes(data, slot, &offset.to_le_bytes()) {
            return EFAULT;
        }
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        if !write_bytes(data, offset, &bytes) {
            return EFAULT;
        }
        let Some(next) = offset.checked_add(bytes.len() as u32) else {
            return EFAULT;
        };
        offset = next;
    }
    SUCCESS
}

fn table_sizes(
    caller: &mut Caller<'_, TaskState>,
    strings: &[String],
    count_ptr: u32,
    size_ptr: u32,
) -> i32 {
    let Some(mem) = memory(caller) else {
        return EFAULT;
    };
    let size: usize = strings.iter().map(|s| s.len() + 1).sum();
    let data = mem.data_mut(caller);
    if write_bytes(data, count_ptr, &(strings.len() as u32).to_le_bytes())
        && write_bytes(data, size_ptr, &(size as u32).to_le_bytes())
    {
        SUCCESS
    } else {
        EFAULT
    }
}

/// Adds every function of this host to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<TaskState>) -> Result<(), TaskError> {
    let host = |e: wasmtime::Error| TaskError::Host(format!("cannot define the WASI host: {e}"));

    linker
        .func_wrap(
            MODULE,
            "args_sizes_get",
            |mut c: Caller<'_, TaskState>, count: u32, size: u32| {
                let args = c.data().args.clone();
                table_sizes(&mut c, &args, count, size)
            },
        )
        .map_err(host)?;
    linker
        .func_wrap(
            MODULE,
            "args_get",
            |mut c: Caller<'_, TaskState>, ptrs: u32, buf: u32| {
                let args = c.data().args.clone();
                string_table(&mut c, &args, ptrs, buf)
            },
        )
        .map_err(host)?;
    linker
        .func_wrap(
            MODULE,
            "environ_sizes_get",
            |mut c: Caller<'_, TaskState>, count: u32, size: u32| {
                let env = c.data().env.clone();
                table_sizes(&mut c, &env, count, size)
            },
        )
        .map_err(host)?;
    linker
        .func_wrap(
            MODULE,
            "environ_get",
            |mut c: Caller<'_, TaskState>, ptrs: u32, buf: u32| {
                let env = c.data().env.clone();
                string_table(&mut c, &env, ptrs, buf)
            },
        )
        .map_err(host)?;

    linker
        .func_wrap(
            MODULE,
            "fd_write",
            |mut c: Caller<'_, TaskState>,
             fd: i32,
             iovs: u32,
             count: u32,
             written_ptr: u32|
             -> wasmtime::Result<i32> {
                if fd != 1 && fd != 2 {
                    return Ok(EBADF);
                }
                let Some(mem) = iovec_memory(&mut c, iovs, count)? else {
                    return Ok(EFAULT);
                };
                let mut written: u32 = 0;
                for i in 0..count {
                    let Some((ptr, len)) = iovec(mem.data(&c), iovs, i) else {
                        return Ok(EFAULT);
                    };
                    if !in_memory(mem.data_size(&c), ptr, u64::from(len)) {
                        return Ok(EFAULT);
                    }
                    if fd == 1 {
                        let state = c.data_mut();
                        if state.stdout.len() as u64 + u64::from(len) > state.output_limit {
                            state.output_exceeded = true;
                            return Err(wasmtime::Error::msg("output limit exceeded"));
                        }
                        charge(&mut c, copy_fuel(u64::from(len)))?;
                    } else {
                        // Only what is kept is copied; the rest is counted.
                        let room = STDERR_LIMIT
                            .saturating_sub(c.data().stderr.len())
                            .min(len as usize);
                        charge(&mut c, copy_fuel(room as u64))?;
                    }
                    let (data, state) = mem.data_and_store_mut(&mut c);
                    let bytes = &data[ptr as usize..ptr as usize + len as usize];
                    if fd == 1 {
                        state.stdout.extend_from_slice(bytes);
                    } else {
                        let room = STDERR_LIMIT
                            .saturating_sub(state.stderr.len())
                            .min(bytes.len());
                        state.stderr.extend_from_slice(&bytes[..room]);
                        state.stderr_dropped += (bytes.len() - room) as u64;
                    }
                    written = written.saturating_add(len);
                }
                Ok(
                    if write_bytes(mem.data_mut(&mut c), written_ptr, &written.to_le_bytes()) {
                        SUCCESS
                    } else {
                        EFAULT
                    },
                )
            },
        )
        .map_err(host)?;

    linker
        .func_wrap(
            MODULE,
            "fd_read",
            |mut c: Caller<'_, TaskState>,
             fd: i32,
             iovs: u32,
             count: u32,
             read_ptr: u32|
             -> wasmtime::Result<i32> {
                if fd != 0 {
                    return Ok(EBADF);
                }
                let Some(mem) = iovec_memory(&mut c, iovs, count)? else {
                    return Ok(EFAULT);
                };
                let mut read: u32 = 0;
                for i in 0..count {
                    let Some((ptr, len)) = iovec(mem.data(&c), iovs, i) else {
                        return Ok(EFAULT);
                    };
                    let state = c.data();
                    let n = (state.stdin.len() - state.stdin_pos).min(len as usize);
                    if !in_memory(mem.data_size(&c), ptr, n as u64) {
                        return Ok(EFAULT);
                    }
                    charge(&mut c, copy_fuel(n as u64))?;
                    let (data, state) = mem.data_and_store_mut(&mut c);
                    let from = state.stdin_pos;
                    data[ptr as usize..ptr as usize + n]
                        .copy_from_slice(&state.stdin[from..from + n]);
                    state.stdin_pos += n;
                    read = read.saturating_add(n as u32);
                    if n < len as usize {
                        break;
                    }
                }
                Ok(
                    if write_bytes(mem.data_mut(&mut c), read_ptr, &read.to_le_bytes()) {
                        SUCCESS
                    } else {
                        EFAULT
                    },
                )
            },
        )
        .map_err(host)?;

    linker
        .func_wrap(MODULE, "fd_close", |_: Caller<'_, TaskState>, fd: i32| {
            on_fd(fd, SUCCESS)
        })
        .map_err(host)?;
    linker
        .func_wrap(
            MODULE,
            "fd_fdstat_get",
            |mut c: Caller<'_, TaskState>, fd: i32, ptr: u32| {
                if !stdio(fd) {
                    return EBADF;
                }
                let Some(mem) = memory(&mut c) else {
                    return EFAULT;
                };
                // filetype character device (2), no flags; rights: read (fd 0) or write (fd 1, 2).
                let rights: u64 = if fd == 0 { 1 << 1 } else { 1 << 6 };
                let mut stat = [0u8; 24];
                stat[0] = 2;
                stat[8..16].copy_from_slice(&rights.to_le_bytes());
                if write_bytes(mem.data_mut(&mut c), ptr, &stat) {
                    SUCCESS
                } else {
                    EFAULT
                }
            },
        )
        .map_err(host)?;
    // No preopened directories: there is no file system.
    linker
        .func_wrap(
            MODULE,
            "fd_prestat_get",
            |_: Caller<'_, TaskState>, _: i32, _: u32| EBADF,
        )
        .map_err(host)?;
    linker
        .func_wrap(
            MODULE,
            "fd_prestat_dir_name",
            |_: Caller<'_, TaskState>, _: i32, _: u32, _: u32| EBADF,
        )
        .map_err(host)?;
    linker
        .func_wrap(
            MODULE,
            "fd_seek",
            |_: Caller<'_, TaskState>, fd: i32, _: i64, _: i32, _: u32| on_fd(fd, ESPIPE),
        )
        .map_err(host)?;

    linker
        .func_wrap(
            MODULE,
            "proc_exit",
            |mut c: Caller<'_, TaskState>, code: i32| -> wasmtime::Result<()> {
                c.data_mut().exit_code = Some(code);
                Err(wasmtime::Error::new(Exit))
            },
        )
        .map_err(host)?;

    // Deterministic: SHA-256 blocks of the task's seed and a counter, so a rerun of the
    // same task on another node computes the same output. The range is checked and the
    // blocks charged before any is computed; they are written into guest memory in place.
    linker
        .func_wrap(
            MODULE,
            "random_get",
            |mut c: Caller<'_, TaskState>, ptr: u32, len: u32| -> wasmtime::Result<i32> {
                let Some(mem) = memory(&mut c) else {
                    return Ok(EFAULT);
                };
                if !in_memory(mem.data_size(&c), ptr, u64::from(len)) {
                    return Ok(EFAULT);
                }
                let blocks = u64::from(len).div_ceil(32);
                charge(
                    &mut c,
                    HOST_CALL_FUEL.saturating_add(blocks.saturating_mul(RANDOM_FUEL_PER_BLOCK)),
                )?;
                let (data, state) = mem.data_and_store_mut(&mut c);
                for chunk in data[ptr as usize..ptr as usize + len as usize].chunks_mut(32) {
                    let mut h = Sha256::new();
                    h.update(state.random_seed);
                    h.update(state.random_counter.to_le_bytes());
                    state.random_counter = state.random_counter.wrapping_add(1);
                    chunk.copy_from_slice(&h.finalize()[..chunk.len()]);
                }
                Ok(SUCCESS)
            },
        )
        .map_err(host)?;

    linker
        .func_wrap(
            MODULE,
            "clock_time_get",
            |mut c: Caller<'_, TaskState>, id: i32, _precision: i64, ptr: u32| {
                if !(0..=3).contains(&id) {
                    return EINVAL;
                }
                // Virtual time: the fuel consumed so far, one nanosecond a unit.
                let left = c.get_fuel().unwrap_or(0);
                let nanos = c.data().fuel_limit.saturating_sub(left);
                let Some(mem) = memory(&mut c) else {
                    return EFAULT;
                };
                if write_bytes(mem.data_mut(&mut c), ptr, &nanos.to_le_bytes()) {
                    SUCCESS
                } else {
                    EFAULT
                }
            },
        )
        .map_err(host)?;
    linker
        .func_wrap(
            MODULE,
            "clock_res_get",
            |mut c: Caller<'_, TaskState>, id: i32, ptr: u32| {
                if !(0..=3).contains(&id) {
                    return EINVAL;
                }
                let Some(mem) = memory(&mut c) else {
                    return EFAULT;
                };
                if write_bytes(mem.data_mut(&mut c), ptr, &1u64.to_le_bytes()) {
                    SUCCESS
                } else {
                    EFAULT
                }
            },
        )
        .map_err(host)?;
    linker
        .func_wrap(MODULE, "sched_yield", |_: Caller<'_, TaskState>| SUCCESS)
        .map_err(host)?;
    add_without_files(linker).map_err(host)?;
    // Sleeping and waiting on descriptors are not offered: a task computes, it does not wait.
    linker
        .func_wrap(
            MODULE,
            "poll_oneoff",
            |_: Caller<'_, TaskState>, _: u32, _: u32, _: u32, _: u32| ENOSYS,
        )
        .map_err(host)?;
    Ok(())
}

/// The calls on files, directories, descriptors and sockets, for a task that holds only
/// the standard streams: each answers what a program expects of a stream, or of a
/// descriptor it does not hold, before it reads any guest memory (`fd_filestat_get`
/// writes a stream's stat).
fn add_without_files(linker: &mut Linker<TaskState>) -> wasmtime::Result<()> {
    type C<'a> = Caller<'a, TaskState>;
    linker.func_wrap(
        MODULE,
        "fd_advise",
        |_: C<'_>, fd: i32, _: i64, _: i64, _: i32| on_fd(fd, ESPIPE),
    )?;
    linker.func_wrap(
        MODULE,
        "fd_allocate",
        |_: C<'_>, fd: i32, _: i64, _: i64| on_fd(fd, ESPIPE),
    )?;
    // Nothing is buffered on the host's side of a stream.
    linker.func_wrap(MODULE, "fd_datasync", |_: C<'_>, fd: i32| {
        on_fd(fd, SUCCESS)
    })?;
    linker.func_wrap(MODULE, "fd_sync", |_: C<'_>, fd: i32| on_fd(fd, SUCCESS))?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_set_flags",
        |_: C<'_>, fd: i32, _: i32| on_fd(fd, ENOTSUP),
    )?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_set_rights",
        |_: C<'_>, fd: i32, _: i64, _: i64| on_fd(fd, ENOTSUP),
    )?;
    linker.func_wrap(
        MODULE,
        "fd_filestat_get",
        |mut c: C<'_>, fd: i32, ptr: u32| {
            if !stdio(fd) {
                return EBADF;
            }
            let Some(mem) = memory(&mut c) else {
                return EFAULT;
            };
            // A character device (filetype 2 at offset 16), everything else zero.
            let mut stat = [0u8; 64];
            stat[16] = 2;
            if write_bytes(mem.data_mut(&mut c), ptr, &stat) {
                SUCCESS
            } else {
                EFAULT
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_filestat_set_size",
        |_: C<'_>, fd: i32, _: i64| on_fd(fd, EINVAL),
    )?;
    linker.func_wrap(
        MODULE,
        "fd_filestat_set_times",
        |_: C<'_>, fd: i32, _: i64, _: i64, _: i32| on_fd(fd, ENOTSUP),
    )?;
    linker.func_wrap(
        MODULE,
        "fd_pread",
        |_: C<'_>, fd: i32, _: u32, _: u32, _: i64, _: u32| on_fd(fd, ESPIPE),
    )?;
    linker.func_wrap(
        MODULE,
        "fd_pwrite",
        |_: C<'_>, fd: i32, _: u32, _: u32, _: i64, _: u32| on_fd(fd, ESPIPE),
    )?;
    linker.func_wrap(
        MODULE,
        "fd_readdir",
        |_: C<'_>, fd: i32, _: u32, _: u32, _: i64, _: u32| on_fd(fd, ENOTDIR),
    )?;
    // The streams keep their numbers.
    linker.func_wrap(MODULE, "fd_renumber", |_: C<'_>, fd: i32, to: i32| {
        if stdio(fd) && stdio(to) {
            ENOTSUP
        } else {
            EBADF
        }
    })?;
    linker.func_wrap(MODULE, "fd_tell", |_: C<'_>, fd: i32, _: u32| {
        on_fd(fd, ESPIPE)
    })?;
    // Every path is resolved against a directory descriptor; a task holds none.
    linker.func_wrap(
        MODULE,
        "path_create_directory",
        |_: C<'_>, fd: i32, _: u32, _: u32| on_fd(fd, ENOTDIR),
    )?;
    linker.func_wrap(
        MODULE,
        "path_filestat_get",
        |_: C<'_>, fd: i32, _: i32, _: u32, _: u32, _: u32| on_fd(fd, ENOTDIR),
    )?;
    linker.func_wrap(
        MODULE,
        "path_filestat_set_times",
        |_: C<'_>, fd: i32, _: i32, _: u32, _: u32, _: i64, _: i64, _: i32| on_fd(fd, ENOTDIR),
    )?;
    linker.func_wrap(
        MODULE,
        "path_link",
        |_: C<'_>, fd: i32, _: i32, _: u32, _: u32, new_fd: i32, _: u32, _: u32| {
            if stdio(fd) && stdio(new_fd) {
                ENOTDIR
            } else {
                EBADF
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_open",
        |_: C<'_>, fd: i32, _: i32, _: u32, _: u32, _: i32, _: i64, _: i64, _: i32, _: u32| {
            on_fd(fd, ENOTDIR)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_readlink",
        |_: C<'_>, fd: i32, _: u32, _: u32, _: u32, _: u32, _: u32| on_fd(fd, ENOTDIR),
    )?;
    linker.func_wrap(
        MODULE,
        "path_remove_directory",
        |_: C<'_>, fd: i32, _: u32, _: u32| on_fd(fd, ENOTDIR),
    )?;
    linker.func_wrap(
        MODULE,
        "path_rename",
        |_: C<'_>, fd: i32, _: u32, _: u32, new_fd: i32, _: u32, _: u32| {
            if stdio(fd) && stdio(new_fd) {
                ENOTDIR
            } else {
                EBADF
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_symlink",
        |_: C<'_>, _: u32, _: u32, fd: i32, _: u32, _: u32| on_fd(fd, ENOTDIR),
    )?;
    linker.func_wrap(
        MODULE,
        "path_unlink_file",
        |_: C<'_>, fd: i32, _: u32, _: u32| on_fd(fd, ENOTDIR),
    )?;
    // Signals are gone from later WASI; a task cannot raise one.
    linker.func_wrap(MODULE, "proc_raise", |_: C<'_>, _: i32| ENOSYS)?;
    linker.func_wrap(
        MODULE,
        "sock_accept",
        |_: C<'_>, fd: i32, _: i32, _: u32| on_fd(fd, ENOTSOCK),
    )?;
    linker.func_wrap(
        MODULE,
        "sock_recv",
        |_: C<'_>, fd: i32, _: u32, _: u32, _: i32, _: u32, _: u32| on_fd(fd, ENOTSOCK),
    )?;
    linker.func_wrap(
        MODULE,
        "sock_send",
        |_: C<'_>, fd: i32, _: u32, _: u32, _: i32, _: u32| on_fd(fd, ENOTSOCK),
    )?;
    linker.func_wrap(MODULE, "sock_shutdown", |_: C<'_>, fd: i32, _: i32| {
        on_fd(fd, ENOTSOCK)
    })?;
    Ok(())
}
