//! System calls the standard library does not offer, through `rustix`'s safe wrappers: file
//! locks, no-replace renames, atomic replacement of a small file, page-cache-only reads,
//! `sendfile`, read-ahead advice and socket buffers (filesystem types and block reservation,
//! which the archive side needs, are `airlift_archive::sys`'s, re-exported here). The one
//! call no safe wrapper covers (`sync_file_range`) is here too, with why it is sound.

pub use airlift_archive::sys::{filesystem_type, reserve};
use rustix::fs::{FlockOperation, RenameFlags, CWD};
use rustix::io::{Errno, ReadWriteFlags};
use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::path::Path;

/// What kind of file a file type is, in words, for messages: "a FIFO", "a socket".
pub fn kind_of(file_type: rustix::fs::FileType) -> &'static str {
    use rustix::fs::FileType;
    match file_type {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "a file of unknown type",
    }
}

/// Opens an archive for reading without ever waiting on it: opened non-blocking (a FIFO
/// without a writer, or a device, cannot hang the open), then kept only if it is a regular
/// file — or a pipe, when `pipes` allows (`airlift import <(zcat ...)`), which is then read
/// blocking as usual. Anything else is refused with what it is.
pub fn open_archive(path: &Path, pipes: bool) -> io::Result<File> {
    use rustix::fs::{FileType, Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
    match kind {
        FileType::RegularFile => {}
        FileType::Fifo if pipes => rustix::fs::fcntl_setfl(&fd, OFlags::empty())?,
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a regular file ({})", kind_of(other)),
            ))
        }
    }
    Ok(File::from(fd))
}

/// Takes an exclusive lock on `file` without waiting; `false` when another holds it.
pub fn try_lock(file: &File) -> bool {
    rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive).is_ok()
}

/// Renames `from` to `to` unless `to` exists (`AlreadyExists` then). Filesystems without
/// `RENAME_NOREPLACE` get a check and a plain rename.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    match rustix::fs::renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == Errno::INVAL || e == Errno::NOSYS => {
            if to.exists() {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists"));
            }
            std::fs::rename(from, to)
        }
        Err(e) => Err(e.into()),
    }
}

/// Replaces `path` with `data` atomically: a temporary file beside it (a dotfile), written,
/// given `mode` and fsynced, renamed over `path`, then the directory fsynced. A reader sees the
/// old file or the new one, never part of either; after a crash one of the two is there.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.unwrap_or_default()))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

/// Reads what the page cache holds of `buf.len()` bytes at `at`, without waiting for the disk
/// (`RWF_NOWAIT`); returns how many bytes it got.
pub fn read_cached(file: &File, buf: &mut [u8], at: u64) -> usize {
    let mut got = 0;
    while got < buf.len() {
        let mut iov = [IoSliceMut::new(&mut buf[got..])];
        match rustix::io::preadv2(file, &mut iov, at + got as u64, ReadWriteFlags::NOWAIT) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    got
}

/// The bytes an unprivileged writer may still put on the filesystem holding `path`.
pub fn free_space(path: &Path) -> io::Result<u64> {
    let s = rustix::fs::statvfs(path)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Ends the process at once with SIGKILL, as `kill -9` would: no destructor, no cleanup (the
/// crash points of the reliability tests).
pub fn crash() -> ! {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    std::process::abort()
}

/// Sends up to `count` bytes of `file` from `*offset` to `out` (a socket) without copying them
/// through user space (`sendfile`), advancing `*offset`; how many were sent. A non-blocking
/// `out` whose buffer is full gives `WouldBlock`.
pub fn send_file(
    out: impl std::os::fd::AsFd,
    file: &File,
    offset: &mut u64,
    count: usize,
) -> io::Result<usize> {
    Ok(rustix::fs::sendfile(out, file, Some(offset), count)?)
}

/// Fixes a socket's send buffer at `bytes` (the kernel doubles it for its bookkeeping), which
/// turns off its autotuning for that socket.
pub fn set_send_buffer(socket: impl std::os::fd::AsFd, bytes: usize) -> io::Result<()> {
    Ok(rustix::net::sockopt::set_socket_send_buffer_size(
        socket, bytes,
    )?)
}

/// Tells the kernel a range of `file` will be read soon, so it reads it ahead (advisory).
pub fn will_need(file: &File, offset: u64, len: u64) {
    let _ = rustix::fs::fadvise(
        file,
        offset,
        std::num::NonZeroU64::new(len),
        rustix::fs::Advice::WillNeed,
    );
}

/// Starts writeback of a file range without waiting for it (advisory: a failure only means the
/// final fsync does all the work).
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    // SAFETY: sync_file_range takes a descriptor and three integers and touches no memory of
    // ours; `file` keeps the descriptor open for the call. Neither rustix nor nix wraps it.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as i64,
            len as i64,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_never_replace_and_locks_exclude() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"1").unwrap();
        std::fs::write(&b, b"2").unwrap();
        let e = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&b).unwrap(), b"2");
        std::fs::remove_file(&b).unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"1");

        let f1 = File::open(&b).unwrap();
        let f2 = File::open(&b).unwrap();
        assert!(try_lock(&f1));
        assert!(
            !try_lock(&f2),
            "a second open file description got the lock"
        );
    }

    #[test]
    fn atomic_writes_replace_whole_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.toml");
        write_atomic(&p, b"one", 0o644).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let e = write_atomic(&dir.path().join("no/such/f"), b"x", 0o644).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn cached_reads_return_what_the_page_cache_has() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![5u8; 10_000]).unwrap();
        let f = File::open(&p).unwrap();
        let mut buf = vec![0u8; 4096];
        // Just written, so cached (a filesystem without RWF_NOWAIT returns 0, which callers
        // treat as "read it on the blocking pool").
        let n = read_cached(&f, &mut buf, 100);
        assert!(n == 0 || (n == 4096 && buf.iter().all(|b| *b == 5)), "{n}");
        assert!(filesystem_type(&f).unwrap() != 0);
        start_writeback(&f, 0, 10_000);
    }
}
