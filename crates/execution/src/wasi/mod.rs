//! The host side of WASI preview 1 that a task sees: stdin is the task's input, stdout its
//! output (capped), stderr captured (capped), arguments and environment as given, virtual
//! clocks, deterministic randomness, the task's input files read-only under `/input` and,
//! when it asked for one, a writable `/output` whose files come back with the result
//! ([`files`]); no sockets. Every function of preview 1 is defined, so any preview-1
//! module links; what a task may not do answers the errno a program expects (a write
//! under `/input`, `EROFS`; a path above a preopened directory, `ENOTCAPABLE`; sockets,
//! `ENOTSOCK`), never a trap. Imports from any other module, or names preview 1 does not
//! have, fail to link with a clear "unknown import" error.
//!
//! Every host function checks the guest's memory ranges before it allocates, loops or
//! copies, and work whose size the guest chooses is charged in fuel before it is done
//! (see the `*_FUEL` constants), so the fuel a receipt states covers host work too and a
//! guest cannot make the host work outside its limits.
//!
//! Clocks are virtual so that a rerun reproduces: every clock reads the fuel consumed so
//! far, one nanosecond per unit, starting at 0 (the realtime clock too, which therefore
//! reads as early 1970). Randomness is SHA-256 of the task's seed and a counter.

mod files;
mod fs;

use sha2::{Digest, Sha256};
use wasmtime::{Caller, Extern, Linker, Memory, Trap};

use crate::TaskError;
use crate::limits::Limiter;

pub(crate) use files::{Files, name_problem, tree_problem};
pub use files::{MAX_OPEN_FILES, MAX_OUTPUT_ENTRIES, MAX_PATH_BYTES, tree_sha256};
pub use fs::ENTRY_FUEL;

/// The import module every function here lives in.
pub(crate) const MODULE: &str = "wasi_snapshot_preview1";

/// The most stderr kept; more is counted and dropped, never an error.
pub(crate) const STDERR_LIMIT: usize = 64 << 10;

/// The errnos this host answers, as preview 1 numbers them.
#[allow(dead_code)]
mod errno {
    pub(crate) const SUCCESS: i32 = 0;
    pub(crate) const EBADF: i32 = 8;
    pub(crate) const EBUSY: i32 = 10;
    pub(crate) const EDQUOT: i32 = 19;
    pub(crate) const EEXIST: i32 = 20;
    pub(crate) const EFAULT: i32 = 21;
    pub(crate) const EFBIG: i32 = 22;
    pub(crate) const EILSEQ: i32 = 25;
    pub(crate) const EINVAL: i32 = 28;
    pub(crate) const EISDIR: i32 = 31;
    pub(crate) const EMFILE: i32 = 33;
    pub(crate) const ENAMETOOLONG: i32 = 37;
    pub(crate) const ENOENT: i32 = 44;
    pub(crate) const ENOSYS: i32 = 52;
    pub(crate) const ENOTDIR: i32 = 54;
    pub(crate) const ENOTEMPTY: i32 = 55;
    pub(crate) const ENOTSOCK: i32 = 57;
    pub(crate) const ENOTSUP: i32 = 58;
    pub(crate) const EROFS: i32 = 69;
    pub(crate) const ESPIPE: i32 = 70;
    pub(crate) const EXDEV: i32 = 74;
    pub(crate) const ENOTCAPABLE: i32 = 76;
}
use errno::*;

/// Raised whenever the host changes what a task outputs or the fuel it is charged; part of
/// the engine id receipts carry.
pub(crate) const HOST_REVISION: u32 = 3;

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
    /// The most stdout and the output files may hold together.
    output_limit: u64,
    /// The input and output files and the descriptors open on them.
    pub(crate) files: Files,
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
    /// The task's memory, once a host call looked it up.
    memory: Option<Memory>,
}

impl TaskState {
    /// The state of a run of `manifest`: the program is named by the task id, and
    /// randomness is drawn from `random_seed`.
    pub(crate) fn new(manifest: &crate::Manifest, random_seed: [u8; 32]) -> Self {
        let limits = manifest.limits;
        let mut args = vec![manifest.task_id.clone()];
        args.extend(manifest.args.iter().cloned());
        Self {
            limiter: Limiter::new(limits.memory_bytes),
            stdin: manifest.input.clone(),
            stdin_pos: 0,
            stdout: Vec::new(),
            output_limit: limits.output_bytes,
            files: Files::new(&manifest.files, manifest.output_files),
            stderr: Vec::new(),
            stderr_dropped: 0,
            args,
            env: manifest.env.clone(),
            fuel_limit: limits.fuel,
            random_seed,
            random_counter: 0,
            exit_code: None,
            output_exceeded: false,
            memory: None,
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

/// The task's exported memory, looked up by name once and then kept (a store holds one
/// instance).
fn memory(caller: &mut Caller<'_, TaskState>) -> Option<Memory> {
    if let Some(m) = caller.data().memory {
        return Some(m);
    }
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => {
            caller.data_mut().memory = Some(m);
            Some(m)
        }
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
    fs::add_to_linker(linker).map_err(host)?;
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
