//! The descriptor and path calls of preview 1: the standard streams (stdin the task's
//! input, stdout its output, stderr captured), the files of [`super::files`], and the
//! answers a program expects for what a task may not do (sockets are not offered,
//! `ENOTSOCK`; signals, `ENOSYS`; links, `ENOTSUP`). Each call checks the guest's ranges
//! and charges the work the guest sized before doing it.

use wasmtime::{Caller, Linker};

use super::errno::*;
use super::files::{MAX_PATH_BYTES, Refusal, Stat};
use super::{
    HOST_CALL_FUEL, MODULE, STDERR_LIMIT, TaskState, charge, copy_fuel, in_memory, iovec,
    iovec_memory, memory, write_bytes,
};

/// Fuel per directory entry a listing walks.
pub const ENTRY_FUEL: u64 = 16;

type C<'a> = Caller<'a, TaskState>;

/// Why a call stopped before it succeeded.
enum Stop {
    /// An errno for the task.
    Errno(i32),
    /// The task's output went past its limit: the run ends.
    OutputLimit,
    /// The run ends (out of fuel while charging).
    Trap(wasmtime::Error),
}

impl From<i32> for Stop {
    fn from(errno: i32) -> Self {
        Stop::Errno(errno)
    }
}

impl From<wasmtime::Error> for Stop {
    fn from(e: wasmtime::Error) -> Self {
        Stop::Trap(e)
    }
}

impl From<Refusal> for Stop {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Errno(e) => Stop::Errno(e),
            Refusal::OutputLimit => Stop::OutputLimit,
        }
    }
}

type Answer = Result<(), Stop>;

/// The call's result as the guest sees it.
fn answer(c: &mut C<'_>, r: Answer) -> wasmtime::Result<i32> {
    match r {
        Ok(()) => Ok(SUCCESS),
        Err(Stop::Errno(e)) => Ok(e),
        Err(Stop::OutputLimit) => {
            c.data_mut().output_exceeded = true;
            Err(wasmtime::Error::msg("output limit exceeded"))
        }
        Err(Stop::Trap(e)) => Err(e),
    }
}

/// Whether `fd` is one of the standard streams.
fn stdio(fd: i32) -> bool {
    (0..=2).contains(&fd)
}

/// What a stream answers a call it cannot serve (`on_stdio`): a stream is never one of
/// the descriptors of the file table.
fn stream(fd: i32, on_stdio: i32) -> Answer {
    if stdio(fd) {
        Err(on_stdio.into())
    } else {
        Ok(())
    }
}

/// Writes `bytes` to guest memory at `at`.
fn put(c: &mut C<'_>, at: u32, bytes: &[u8]) -> Answer {
    let mem = memory(c).ok_or(EFAULT)?;
    if write_bytes(mem.data_mut(c), at, bytes) {
        Ok(())
    } else {
        Err(EFAULT.into())
    }
}

/// Reads a path from guest memory, charged.
fn path(c: &mut C<'_>, at: u32, len: u32) -> Result<String, Stop> {
    if len > MAX_PATH_BYTES {
        return Err(ENAMETOOLONG.into());
    }
    let mem = memory(c).ok_or(EFAULT)?;
    if !in_memory(mem.data_size(&*c), at, u64::from(len)) {
        return Err(EFAULT.into());
    }
    charge(c, HOST_CALL_FUEL.saturating_add(copy_fuel(u64::from(len))))?;
    let bytes = &mem.data(&*c)[at as usize..at as usize + len as usize];
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| EILSEQ.into())
}

/// A path call's directory and path: a stream is not a directory.
fn dir_path(c: &mut C<'_>, fd: i32, at: u32, len: u32) -> Result<String, Stop> {
    stream(fd, ENOTDIR)?;
    path(c, at, len)
}

fn filestat_bytes(stat: Stat) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[0..8].copy_from_slice(&stat.dev.to_le_bytes());
    out[8..16].copy_from_slice(&stat.ino.to_le_bytes());
    out[16] = stat.filetype;
    out[24..32].copy_from_slice(&1u64.to_le_bytes());
    out[32..40].copy_from_slice(&stat.size.to_le_bytes());
    out
}

/// Room left under the output limit, for stdout and the output files together.
fn budget(state: &TaskState) -> u64 {
    state
        .output_limit
        .saturating_sub(state.stdout.len() as u64)
        .saturating_sub(state.files.output_bytes)
}

/// `fd_write` and `fd_pwrite` (with `offset`).
fn write(c: &mut C<'_>, fd: i32, iovs: u32, count: u32, offset: Option<u64>, out: u32) -> Answer {
    if stdio(fd) && offset.is_some() {
        return Err(ESPIPE.into());
    }
    if fd == 0 {
        return Err(EBADF.into());
    }
    if !stdio(fd) && !c.data().files.holds(fd) {
        return Err(EBADF.into());
    }
    let mem = iovec_memory(c, iovs, count)?.ok_or(EFAULT)?;
    let mut written: u64 = 0;
    for i in 0..count {
        let (ptr, len) = iovec(mem.data(&*c), iovs, i).ok_or(EFAULT)?;
        if !in_memory(mem.data_size(&*c), ptr, u64::from(len)) {
            return Err(EFAULT.into());
        }
        let kept = if fd == 2 {
            // Only what is kept is copied; the rest is counted.
            STDERR_LIMIT
                .saturating_sub(c.data().stderr.len())
                .min(len as usize) as u64
        } else {
            // A file's write is checked against the limit by how much it grows the file.
            if fd == 1 && u64::from(len) > budget(c.data()) {
                return Err(Stop::OutputLimit);
            }
            u64::from(len)
        };
        charge(c, copy_fuel(kept))?;
        let (data, state) = mem.data_and_store_mut(&mut *c);
        let bytes = &data[ptr as usize..ptr as usize + len as usize];
        match fd {
            1 => state.stdout.extend_from_slice(bytes),
            2 => {
                state.stderr.extend_from_slice(&bytes[..kept as usize]);
                state.stderr_dropped += u64::from(len) - kept;
            }
            _ => {
                let room = budget(state);
                let at = offset.map(|o| o.saturating_add(written));
                state.files.write(fd, at, bytes, room)?;
            }
        }
        written += u64::from(len);
    }
    put(c, out, &(written as u32).to_le_bytes())
}

/// `fd_read` and `fd_pread` (with `offset`).
fn read(c: &mut C<'_>, fd: i32, iovs: u32, count: u32, offset: Option<u64>, out: u32) -> Answer {
    if stdio(fd) && offset.is_some() {
        return Err(ESPIPE.into());
    }
    if fd == 1 || fd == 2 {
        return Err(EBADF.into());
    }
    if fd != 0 {
        // A directory, or a descriptor that is none, is refused before any work.
        c.data().files.read_len(fd, Some(0), 0)?;
    }
    let mem = iovec_memory(c, iovs, count)?.ok_or(EFAULT)?;
    let mut read: u64 = 0;
    for i in 0..count {
        let (ptr, len) = iovec(mem.data(&*c), iovs, i).ok_or(EFAULT)?;
        let state = c.data();
        let n = if fd == 0 {
            (state.stdin.len() - state.stdin_pos).min(len as usize) as u64
        } else {
            let at = offset.map(|o| o.saturating_add(read));
            state.files.read_len(fd, at, u64::from(len))?
        };
        if !in_memory(mem.data_size(&*c), ptr, n) {
            return Err(EFAULT.into());
        }
        charge(c, copy_fuel(n))?;
        let (data, state) = mem.data_and_store_mut(&mut *c);
        let buf = &mut data[ptr as usize..ptr as usize + n as usize];
        if fd == 0 {
            let from = state.stdin_pos;
            buf.copy_from_slice(&state.stdin[from..from + buf.len()]);
            state.stdin_pos += buf.len();
        } else {
            let at = offset.map(|o| o.saturating_add(read));
            state.files.read(fd, at, buf)?;
        }
        read += n;
        if n < u64::from(len) {
            break;
        }
    }
    put(c, out, &(read as u32).to_le_bytes())
}

/// `fd_readdir`: entries from `cookie` on, as many as fit in `len` bytes (the last one
/// cut short when it does not fit, as preview 1 asks).
fn readdir(c: &mut C<'_>, fd: i32, buf: u32, len: u32, cookie: u64, out: u32) -> Answer {
    stream(fd, ENOTDIR)?;
    let cost = c.data().files.list_cost(fd)?;
    let mem = memory(c).ok_or(EFAULT)?;
    if !in_memory(mem.data_size(&*c), buf, u64::from(len)) {
        return Err(EFAULT.into());
    }
    charge(
        c,
        HOST_CALL_FUEL
            .saturating_add(cost.saturating_mul(ENTRY_FUEL))
            .saturating_add(copy_fuel(u64::from(len))),
    )?;
    let most = len as usize / 24 + 1;
    let entries = c.data().files.list(fd, cookie, most)?;
    let mut bytes = Vec::with_capacity(len as usize);
    for (i, e) in entries.iter().enumerate() {
        if bytes.len() >= len as usize {
            break;
        }
        let mut dirent = [0u8; 24];
        dirent[0..8].copy_from_slice(&(cookie + i as u64 + 1).to_le_bytes());
        dirent[8..16].copy_from_slice(&e.ino.to_le_bytes());
        dirent[16..20].copy_from_slice(&(e.name.len() as u32).to_le_bytes());
        dirent[20] = e.filetype;
        bytes.extend_from_slice(&dirent);
        bytes.extend_from_slice(e.name.as_bytes());
    }
    bytes.truncate(len as usize);
    put(c, buf, &bytes)?;
    put(c, out, &(bytes.len() as u32).to_le_bytes())
}

/// Adds the descriptor and path calls to `linker`.
pub(super) fn add_to_linker(linker: &mut Linker<TaskState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "fd_write",
        |mut c: C<'_>, fd: i32, iovs: u32, count: u32, out: u32| {
            let r = write(&mut c, fd, iovs, count, None, out);
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_pwrite",
        |mut c: C<'_>, fd: i32, iovs: u32, count: u32, offset: i64, out: u32| {
            let r = write(&mut c, fd, iovs, count, Some(offset as u64), out);
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_read",
        |mut c: C<'_>, fd: i32, iovs: u32, count: u32, out: u32| {
            let r = read(&mut c, fd, iovs, count, None, out);
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_pread",
        |mut c: C<'_>, fd: i32, iovs: u32, count: u32, offset: i64, out: u32| {
            let r = read(&mut c, fd, iovs, count, Some(offset as u64), out);
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(MODULE, "fd_close", |mut c: C<'_>, fd: i32| {
        let r = if stdio(fd) {
            Ok(())
        } else {
            c.data_mut().files.close(fd).map_err(Stop::from)
        };
        answer(&mut c, r)
    })?;
    linker.func_wrap(MODULE, "fd_fdstat_get", |mut c: C<'_>, fd: i32, at: u32| {
        let r = (|| {
            let (filetype, flags, base, inheriting) = match fd {
                // A stream of unknown type, as a pipe is (not a terminal: a program
                // writes to it as to a file); rights: read (stdin) or write (stdout,
                // stderr).
                0 => (0, 0, 1 << 1, 0),
                1 | 2 => (0, 0, 1 << 6, 0),
                _ => c.data().files.fdstat(fd)?,
            };
            let mut stat = [0u8; 24];
            stat[0] = filetype;
            stat[2..4].copy_from_slice(&flags.to_le_bytes());
            stat[8..16].copy_from_slice(&u64::to_le_bytes(base));
            stat[16..24].copy_from_slice(&u64::to_le_bytes(inheriting));
            put(&mut c, at, &stat)
        })();
        answer(&mut c, r)
    })?;
    linker.func_wrap(
        MODULE,
        "fd_prestat_get",
        |mut c: C<'_>, fd: i32, at: u32| {
            let r = (|| {
                let name = c.data().files.prestat(fd)?;
                let mut prestat = [0u8; 8];
                prestat[4..8].copy_from_slice(&(name.len() as u32).to_le_bytes());
                put(&mut c, at, &prestat)
            })();
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_prestat_dir_name",
        |mut c: C<'_>, fd: i32, at: u32, len: u32| {
            let r = (|| {
                let name = c.data().files.prestat(fd)?;
                if (len as usize) < name.len() {
                    return Err(ENAMETOOLONG.into());
                }
                put(&mut c, at, name.as_bytes())
            })();
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_seek",
        |mut c: C<'_>, fd: i32, offset: i64, whence: i32, at: u32| {
            let r = (|| {
                stream(fd, ESPIPE)?;
                let whence = u8::try_from(whence).map_err(|_| EINVAL)?;
                let pos = c.data_mut().files.seek(fd, offset, whence)?;
                put(&mut c, at, &pos.to_le_bytes())
            })();
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(MODULE, "fd_tell", |mut c: C<'_>, fd: i32, at: u32| {
        let r = (|| {
            stream(fd, ESPIPE)?;
            let pos = c.data().files.tell(fd)?;
            put(&mut c, at, &pos.to_le_bytes())
        })();
        answer(&mut c, r)
    })?;
    linker.func_wrap(
        MODULE,
        "fd_filestat_get",
        |mut c: C<'_>, fd: i32, at: u32| {
            let r = (|| {
                let stat = if stdio(fd) {
                    // A stream of unknown type: everything zero.
                    [0u8; 64]
                } else {
                    filestat_bytes(c.data().files.fd_stat(fd)?)
                };
                put(&mut c, at, &stat)
            })();
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_readdir",
        |mut c: C<'_>, fd: i32, buf: u32, len: u32, cookie: i64, out: u32| {
            let r = readdir(&mut c, fd, buf, len, cookie as u64, out);
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_filestat_set_size",
        |mut c: C<'_>, fd: i32, size: i64| {
            let r = (|| {
                stream(fd, EINVAL)?;
                let room = budget(c.data());
                Ok(c.data_mut().files.set_size(fd, size as u64, false, room)?)
            })();
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_allocate",
        |mut c: C<'_>, fd: i32, offset: i64, len: i64| {
            let r = (|| {
                stream(fd, ESPIPE)?;
                let end = (offset as u64).checked_add(len as u64).ok_or(EFBIG)?;
                let room = budget(c.data());
                Ok(c.data_mut().files.set_size(fd, end, true, room)?)
            })();
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_set_flags",
        |mut c: C<'_>, fd: i32, flags: i32| {
            let r = (|| {
                stream(fd, ENOTSUP)?;
                Ok(c.data_mut().files.set_flags(fd, flags as u16)?)
            })();
            answer(&mut c, r)
        },
    )?;
    // Nothing is buffered on the host's side, and rights are never narrowed (later WASI
    // has none): each holds for a descriptor the task has.
    for name in ["fd_datasync", "fd_sync"] {
        linker.func_wrap(MODULE, name, |mut c: C<'_>, fd: i32| {
            let r = held(&c, fd);
            answer(&mut c, r)
        })?;
    }
    linker.func_wrap(
        MODULE,
        "fd_advise",
        |mut c: C<'_>, fd: i32, _: i64, _: i64, _: i32| {
            let r = stream(fd, ESPIPE).and_then(|()| held(&c, fd));
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_set_rights",
        |mut c: C<'_>, fd: i32, _: i64, _: i64| {
            let r = stream(fd, ENOTSUP).and_then(|()| held(&c, fd));
            answer(&mut c, r)
        },
    )?;
    // Times are not kept (every time reads 0, so that a rerun sees the same): setting one
    // is accepted where a change is allowed.
    linker.func_wrap(
        MODULE,
        "fd_filestat_set_times",
        |mut c: C<'_>, fd: i32, _: i64, _: i64, _: i32| {
            let r = (|| {
                stream(fd, ENOTSUP)?;
                let files = &c.data().files;
                if files.fdstat(fd)?.2 & super::files::RIGHT_FD_WRITE == 0 {
                    return Err(EROFS.into());
                }
                Ok(())
            })();
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_filestat_set_times",
        |mut c: C<'_>, fd: i32, _: i32, at: u32, len: u32, _: i64, _: i64, _: i32| {
            let r = (|| {
                let p = dir_path(&mut c, fd, at, len)?;
                let files = &c.data().files;
                files.path_stat(fd, &p)?;
                if files.read_only_path(fd, &p)? {
                    return Err(EROFS.into());
                }
                Ok(())
            })();
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(MODULE, "fd_renumber", |mut c: C<'_>, fd: i32, to: i32| {
        let r = if stdio(fd) || stdio(to) {
            // The streams keep their numbers.
            Err(if c.data().files.holds(fd) || stdio(fd) {
                ENOTSUP
            } else {
                EBADF
            }
            .into())
        } else {
            c.data_mut().files.renumber(fd, to).map_err(Stop::from)
        };
        answer(&mut c, r)
    })?;
    linker.func_wrap(
        MODULE,
        "path_open",
        |mut c: C<'_>,
         fd: i32,
         _lookup: i32,
         at: u32,
         len: u32,
         oflags: i32,
         rights: i64,
         _inheriting: i64,
         fdflags: i32,
         out: u32| {
            let r = (|| {
                let p = dir_path(&mut c, fd, at, len)?;
                let opened = c.data_mut().files.open(
                    fd,
                    &p,
                    oflags as u16,
                    rights as u64,
                    fdflags as u16,
                )?;
                put(&mut c, out, &opened.to_le_bytes())
            })();
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_filestat_get",
        |mut c: C<'_>, fd: i32, _: i32, at: u32, len: u32, out: u32| {
            let r = (|| {
                let p = dir_path(&mut c, fd, at, len)?;
                let stat = c.data().files.path_stat(fd, &p)?;
                put(&mut c, out, &filestat_bytes(stat))
            })();
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_create_directory",
        |mut c: C<'_>, fd: i32, at: u32, len: u32| {
            let r = (|| {
                let p = dir_path(&mut c, fd, at, len)?;
                Ok(c.data_mut().files.mkdir(fd, &p)?)
            })();
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_remove_directory",
        |mut c: C<'_>, fd: i32, at: u32, len: u32| {
            let r = (|| {
                let p = dir_path(&mut c, fd, at, len)?;
                Ok(c.data_mut().files.rmdir(fd, &p)?)
            })();
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_unlink_file",
        |mut c: C<'_>, fd: i32, at: u32, len: u32| {
            let r = (|| {
                let p = dir_path(&mut c, fd, at, len)?;
                Ok(c.data_mut().files.unlink(fd, &p)?)
            })();
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_rename",
        |mut c: C<'_>, fd: i32, at: u32, len: u32, to_fd: i32, to_at: u32, to_len: u32| {
            let r = (|| {
                let from = dir_path(&mut c, fd, at, len)?;
                let to = dir_path(&mut c, to_fd, to_at, to_len)?;
                // A directory's rename moves every entry under it.
                let entries = c.data().files.entries();
                charge(&mut c, entries.saturating_mul(ENTRY_FUEL))?;
                Ok(c.data_mut().files.rename(fd, &from, to_fd, &to)?)
            })();
            answer(&mut c, r)
        },
    )?;
    // No links: a path names its file and nothing else.
    linker.func_wrap(
        MODULE,
        "path_readlink",
        |mut c: C<'_>, fd: i32, at: u32, len: u32, _: u32, _: u32, _: u32| {
            let r = (|| {
                let p = dir_path(&mut c, fd, at, len)?;
                c.data().files.path_stat(fd, &p)?;
                Err(EINVAL.into())
            })();
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_link",
        |mut c: C<'_>, fd: i32, _: i32, at: u32, len: u32, to_fd: i32, _: u32, _: u32| {
            let r = (|| {
                let p = dir_path(&mut c, fd, at, len)?;
                c.data().files.path_stat(fd, &p)?;
                stream(to_fd, ENOTDIR)?;
                link_refusal(&c, to_fd, ".")
            })();
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_symlink",
        |mut c: C<'_>, _: u32, _: u32, fd: i32, at: u32, len: u32| {
            let r = (|| {
                let p = dir_path(&mut c, fd, at, len)?;
                link_refusal(&c, fd, &p)
            })();
            answer(&mut c, r)
        },
    )?;
    // Signals are gone from later WASI; a task cannot raise one.
    linker.func_wrap(MODULE, "proc_raise", |_: C<'_>, _: i32| ENOSYS)?;
    linker.func_wrap(
        MODULE,
        "sock_accept",
        |mut c: C<'_>, fd: i32, _: i32, _: u32| {
            let r = not_socket(&c, fd);
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_recv",
        |mut c: C<'_>, fd: i32, _: u32, _: u32, _: i32, _: u32, _: u32| {
            let r = not_socket(&c, fd);
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_send",
        |mut c: C<'_>, fd: i32, _: u32, _: u32, _: i32, _: u32| {
            let r = not_socket(&c, fd);
            answer(&mut c, r)
        },
    )?;
    linker.func_wrap(MODULE, "sock_shutdown", |mut c: C<'_>, fd: i32, _: i32| {
        let r = not_socket(&c, fd);
        answer(&mut c, r)
    })?;
    Ok(())
}

/// `Ok` for a descriptor the task holds.
fn held(c: &C<'_>, fd: i32) -> Answer {
    if stdio(fd) || c.data().files.holds(fd) {
        Ok(())
    } else {
        Err(EBADF.into())
    }
}

/// A socket call: every descriptor a task holds is not a socket.
fn not_socket(c: &C<'_>, fd: i32) -> Answer {
    held(c, fd)?;
    Err(ENOTSOCK.into())
}

/// Links are not made: read-only where the tree is, not supported where it is not.
fn link_refusal(c: &C<'_>, fd: i32, path: &str) -> Answer {
    if c.data().files.read_only_path(fd, path)? {
        Err(EROFS.into())
    } else {
        Err(ENOTSUP.into())
    }
}
