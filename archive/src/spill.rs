//! Spill: zstd decoding whose large window lives in a file the kernel can page out.
//!
//! A frame made with `zstd --long=31` may refer up to 2 GiB back, so its decoder must keep that
//! much of the output at hand. From the heap, that window would stay resident for the whole
//! import: hundreds of MiB of anonymous memory on a node that may have little. Here zstd's
//! allocations of [`SPILL_THRESHOLD`] and more are shared mappings of an unlinked file instead
//! (`O_TMPFILE` in a scratch directory on the content store's filesystem), with its blocks
//! reserved by `fallocate` so that a full disk is an error before decoding starts, never a fault
//! in the middle of it. Every [`TRIM_EVERY`] bytes of output the decoder's view of those mappings
//! is dropped (`MADV_DONTNEED`): the window's pages stay in the page cache, where the kernel may
//! write them back and reclaim them under pressure, and are faulted in again when a match refers
//! to them, instead of counting as the process's memory. Smaller allocations, and large ones
//! when no file can be made there, come from `malloc`.
//!
//! Only ext4 and xfs are trusted with the window. On tmpfs the reserved blocks would be memory
//! that only swap can free, worse than the heap; on copy-on-write filesystems (btrfs) rewriting
//! the ring needs new blocks at fault time, so a full disk would be a SIGBUS. Elsewhere the
//! window stays on the heap, with a warning.

use std::ffi::{c_void, CStr};
use std::fs::OpenOptions;
use std::io::{self, BufRead, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use rustix::mm;
use zstd_sys as sys;

/// Allocations at least this large are spilled to a file mapping.
pub const SPILL_THRESHOLD: usize = 32 << 20;

/// How much output may be produced between two drops of the spilled pages.
pub const TRIM_EVERY: u64 = 8 << 20;

/// The largest window accepted: `zstd --long=31`.
const WINDOW_LOG_MAX: i32 = 31;

/// Filesystems whose pages of a preallocated file are written in place: ext4, xfs.
const SAFE_FILESYSTEMS: [i64; 2] = [0xEF53, 0x5846_5342];

/// Whether a window would be spilled to a file in `dir`: it exists on ext4 or xfs.
pub fn spills_to(dir: &Path) -> bool {
    std::fs::File::open(dir)
        .and_then(|d| crate::sys::filesystem_type(&d))
        .is_ok_and(|kind| SAFE_FILESYSTEMS.contains(&kind))
}

/// One spilled allocation.
struct Mapping {
    addr: usize,
    len: usize,
}

/// The allocator handed to zstd: where to spill, and what is spilled.
struct Spill {
    dir: PathBuf,
    maps: Mutex<Vec<Mapping>>,
    /// Bytes spilled so far (for the log and the tests).
    spilled: AtomicU64,
    /// Why the last large allocation came from the heap instead.
    fallback: Mutex<Option<io::Error>>,
}

/// Locks without caring about poisoning: these locks are taken inside callbacks from C, where a
/// panic must never happen, and they guard nothing a panic could leave half-changed.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Spill {
    /// Maps `len` bytes of a fresh unlinked file in the scratch directory.
    fn map(&self, len: usize) -> io::Result<*mut c_void> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .open(&self.dir)?;
        let kind = crate::sys::filesystem_type(&file)?;
        if !SAFE_FILESYSTEMS.contains(&kind) {
            return Err(io::Error::other(format!(
                "its filesystem (type {kind:#x}) is not ext4 or xfs"
            )));
        }
        crate::sys::reserve(&file, len as u64)?;
        // SAFETY: a fresh shared mapping at an address the kernel chooses, of a file nobody
        // else can reach (unlinked, ours); it aliases no Rust memory. zstd alone uses it, as the
        // allocation it asked for, until `spill_free` unmaps it. The mapping keeps the file
        // alive; the descriptor closes with `file`.
        let addr = unsafe {
            mm::mmap(
                std::ptr::null_mut(),
                len,
                mm::ProtFlags::READ | mm::ProtFlags::WRITE,
                mm::MapFlags::SHARED,
                &file,
                0,
            )
        }?;
        Ok(addr)
    }

    /// Drops the process's view of every spilled page; their contents stay in the file.
    fn trim(&self) {
        for m in lock(&self.maps).iter() {
            // SAFETY: the range is a live shared file mapping made by `map`; for such a mapping
            // MADV_DONTNEED only unmaps pages, which the next access faults in from the page cache.
            let _ = unsafe { mm::madvise(m.addr as *mut c_void, m.len, mm::Advice::LinuxDontNeed) };
        }
    }
}

unsafe extern "C" fn spill_alloc(opaque: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: `opaque` is the `Spill` boxed by the `Decoder` that owns the context calling us.
    let spill = unsafe { &*(opaque as *const Spill) };
    if size >= SPILL_THRESHOLD {
        match spill.map(size) {
            Ok(addr) => {
                lock(&spill.maps).push(Mapping {
                    addr: addr as usize,
                    len: size,
                });
                spill.spilled.fetch_add(size as u64, Ordering::Relaxed);
                return addr;
            }
            Err(e) => *lock(&spill.fallback) = Some(e),
        }
    }
    // SAFETY: malloc may be called with any size; zstd handles a null result.
    unsafe { libc::malloc(size) }
}

unsafe extern "C" fn spill_free(opaque: *mut c_void, address: *mut c_void) {
    if address.is_null() {
        return;
    }
    // SAFETY: as in `spill_alloc`.
    let spill = unsafe { &*(opaque as *const Spill) };
    let mut maps = lock(&spill.maps);
    if let Some(i) = maps.iter().position(|m| m.addr == address as usize) {
        let m = maps.swap_remove(i);
        // SAFETY: the mapping was made by `map` with this length, and zstd no longer uses it.
        let _ = unsafe { mm::munmap(m.addr as *mut c_void, m.len) };
    } else {
        // SAFETY: every other pointer zstd frees came from `malloc` in `spill_alloc`.
        unsafe { libc::free(address) };
    }
}

/// Turns a zstd return code into an error when it is one.
fn check(code: usize) -> io::Result<usize> {
    // SAFETY: ZSTD_isError and ZSTD_getErrorName accept any code and return a static string.
    unsafe {
        if sys::ZSTD_isError(code) != 0 {
            let name = CStr::from_ptr(sys::ZSTD_getErrorName(code));
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("zstd: {}", name.to_string_lossy()),
            ));
        }
    }
    Ok(code)
}

/// A streaming zstd decoder (concatenated frames, windows up to 2 GiB) whose large window is
/// spilled to a file mapping in a scratch directory.
pub struct Decoder<R> {
    inner: R,
    dctx: NonNull<sys::ZSTD_DCtx>,
    /// A leaked box, so its address (which zstd holds) stays put and stays valid however the
    /// decoder moves; reclaimed in `Drop` after the context is freed.
    spill: NonNull<Spill>,
    /// Whether the last call ended a frame (the stream may end here).
    at_frame_end: bool,
    /// Whether the last call filled the caller's buffer, so zstd may hold more output.
    output_full: bool,
    produced: u64,
    trimmed_at: u64,
    warned: bool,
}

// SAFETY: the context and its allocations are owned by this value and used by one thread at a
// time (through `&mut self`).
unsafe impl<R: Send> Send for Decoder<R> {}

impl<R: BufRead> Decoder<R> {
    /// A decoder of `inner` that spills large windows into files in `scratch`.
    pub fn new(inner: R, scratch: &Path) -> io::Result<Decoder<R>> {
        let spill = NonNull::from(Box::leak(Box::new(Spill {
            dir: scratch.to_path_buf(),
            maps: Mutex::new(Vec::new()),
            spilled: AtomicU64::new(0),
            fallback: Mutex::new(None),
        })));
        let mem = sys::ZSTD_customMem {
            customAlloc: Some(spill_alloc),
            customFree: Some(spill_free),
            opaque: spill.as_ptr().cast(),
        };
        // SAFETY: the callbacks follow zstd's allocation contract and `spill` outlives the
        // context (it is reclaimed in `Drop` after the context is freed).
        let Some(dctx) = NonNull::new(unsafe { sys::ZSTD_createDCtx_advanced(mem) }) else {
            // SAFETY: leaked above and not shared with anything.
            drop(unsafe { Box::from_raw(spill.as_ptr()) });
            return Err(io::Error::other("zstd could not create a decoder"));
        };
        let decoder = Decoder {
            inner,
            dctx,
            spill,
            at_frame_end: false,
            output_full: false,
            produced: 0,
            trimmed_at: 0,
            warned: false,
        };
        // SAFETY: a valid context and a known parameter.
        check(unsafe {
            sys::ZSTD_DCtx_setParameter(
                decoder.dctx.as_ptr(),
                sys::ZSTD_dParameter::ZSTD_d_windowLogMax,
                WINDOW_LOG_MAX,
            )
        })?;
        Ok(decoder)
    }

    fn spill(&self) -> &Spill {
        // SAFETY: valid from `new` until `Drop`.
        unsafe { self.spill.as_ref() }
    }

    /// Bytes of window spilled to files so far.
    pub fn spilled(&self) -> u64 {
        self.spill().spilled.load(Ordering::Relaxed)
    }

    fn after_output(&mut self, n: usize) {
        self.produced += n as u64;
        if self.produced - self.trimmed_at >= TRIM_EVERY {
            self.trimmed_at = self.produced;
            self.spill().trim();
        }
        if !self.warned {
            let fallback = lock(&self.spill().fallback).take();
            if let Some(e) = fallback {
                self.warned = true;
                tracing::warn!(
                    scratch = %crate::escape::shown(&self.spill().dir),
                    error = %e,
                    "cannot spill the zstd window to a file there; keeping it in memory"
                );
            }
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            // Output zstd still holds is handed out before more input is waited for.
            let flush = self.output_full;
            let (src, size) = if flush {
                (<&[u8]>::default().as_ptr(), 0)
            } else {
                let input = self.inner.fill_buf()?;
                (input.as_ptr(), input.len())
            };
            let at_eof = !flush && size == 0;
            if at_eof && self.at_frame_end {
                return Ok(0);
            }
            let mut inb = sys::ZSTD_inBuffer {
                src: src.cast(),
                size,
                pos: 0,
            };
            let mut outb = sys::ZSTD_outBuffer {
                dst: buf.as_mut_ptr().cast(),
                size: buf.len(),
                pos: 0,
            };
            // SAFETY: both buffers describe live memory of the stated sizes (the input is the
            // reader's buffer, untouched until `consume`), and the context is valid.
            let ret = check(unsafe {
                sys::ZSTD_decompressStream(self.dctx.as_ptr(), &mut outb, &mut inb)
            })?;
            if !flush {
                self.inner.consume(inb.pos);
            }
            // A flush that moved nothing says nothing about frames (after a frame's end zstd
            // answers it by asking for the next frame's header).
            if !flush || outb.pos > 0 {
                self.at_frame_end = ret == 0;
            }
            self.output_full = outb.pos == outb.size;
            if outb.pos > 0 {
                self.after_output(outb.pos);
                return Ok(outb.pos);
            }
            if at_eof {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the zstd stream ends in the middle of a frame",
                ));
            }
        }
    }
}

impl<R> Drop for Decoder<R> {
    fn drop(&mut self) {
        // SAFETY: the context is valid and freed once; its allocations go back through the
        // callbacks while the spill is still alive, and nothing refers to the spill after.
        unsafe {
            sys::ZSTD_freeDCtx(self.dctx.as_ptr());
            drop(Box::from_raw(self.spill.as_ptr()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor, Write};

    /// Data with long-distance repeats: a random block, then text, then the block again.
    fn long_range_data(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let block: Vec<u8> = (0..8 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        while out.len() < len {
            out.extend_from_slice(&block);
            out.extend(
                format!("line {} of some text\n", out.len())
                    .bytes()
                    .cycle()
                    .take(1 << 20),
            );
        }
        out.truncate(len);
        out
    }

    fn compress(data: &[u8], window_log: u32) -> Vec<u8> {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        enc.long_distance_matching(true).unwrap();
        enc.window_log(window_log).unwrap();
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// A scratch directory on the build's filesystem (the system's temporary directory is often
    /// a tmpfs, where nothing is spilled); on a filesystem other than ext4 or xfs the tests check
    /// that nothing is spilled instead.
    fn scratch() -> tempfile::TempDir {
        tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")).unwrap()
    }

    /// How much of the decoder's spilled mappings is resident in this process, from smaps.
    fn resident_kib<R>(d: &Decoder<R>) -> u64 {
        // SAFETY: the spill lives as long as the decoder.
        let spill = unsafe { d.spill.as_ref() };
        let starts: Vec<String> = lock(&spill.maps)
            .iter()
            .map(|m| format!("{:x}-", m.addr))
            .collect();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut total = 0;
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if !first.ends_with(':') {
                inside = starts.iter().any(|s| line.starts_with(s));
            } else if let Some(v) = line.strip_prefix("Rss:").filter(|_| inside) {
                total += v
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap();
            }
        }
        total
    }

    fn decode(z: Vec<u8>, scratch: &Path) -> (io::Result<Vec<u8>>, u64) {
        let mut d = Decoder::new(BufReader::new(Cursor::new(z)), scratch).unwrap();
        let mut out = Vec::new();
        let r = d.read_to_end(&mut out).map(|_| out);
        (r, d.spilled())
    }

    #[test]
    fn large_windows_spill_and_decode_exactly() {
        let scratch = scratch();
        let data = long_range_data(48 << 20);
        let z = compress(&data, 26);
        let (out, spilled) = decode(z, scratch.path());
        assert!(out.unwrap() == data, "the output differs from the input");
        if !spills_to(scratch.path()) {
            assert_eq!(
                spilled, 0,
                "spilled to a filesystem that is not ext4 or xfs"
            );
            return;
        }
        assert!(spilled >= SPILL_THRESHOLD as u64, "spilled {spilled} bytes");
        // The file is unlinked from the start: nothing is left in the directory.
        assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
    }

    #[test]
    fn small_windows_stay_on_the_heap() {
        let scratch = scratch();
        let data = long_range_data(4 << 20);
        let (out, spilled) = decode(zstd::encode_all(&data[..], 3).unwrap(), scratch.path());
        assert!(out.unwrap() == data);
        assert_eq!(spilled, 0);
    }

    #[test]
    fn without_a_scratch_directory_the_window_stays_in_memory() {
        let data = long_range_data(40 << 20);
        let z = compress(&data, 26);
        let (out, spilled) = decode(z, Path::new("/nonexistent/airlift-scratch"));
        assert!(out.unwrap() == data);
        assert_eq!(spilled, 0);
    }

    #[test]
    fn concatenated_frames_and_truncation() {
        let scratch = scratch();
        let mut z = zstd::encode_all(&b"first "[..], 3).unwrap();
        z.extend(zstd::encode_all(&b"second"[..], 3).unwrap());
        let (out, _) = decode(z.clone(), scratch.path());
        assert_eq!(out.unwrap(), b"first second");

        let (out, _) = decode(z[..z.len() - 3].to_vec(), scratch.path());
        let err = out.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");

        let mut garbage = zstd::encode_all(&b"x"[..], 3).unwrap();
        garbage.extend_from_slice(b"not zstd");
        let (out, _) = decode(garbage, scratch.path());
        assert!(out.unwrap_err().to_string().starts_with("zstd: "));
    }

    #[test]
    fn spilled_pages_leave_the_process_as_the_ring_wraps() {
        let scratch = scratch();
        // A 64 MiB window, 112 MiB of output: the ring wraps, and every page of it is written.
        let data = long_range_data(112 << 20);
        let z = compress(&data, 26);
        let mut d = Decoder::new(BufReader::new(Cursor::new(z)), scratch.path()).unwrap();
        let mut out = vec![0; data.len()];
        let mut at = 0;
        let mut most = 0;
        while at < out.len() {
            let n = d
                .read(&mut out[at..(at + (1 << 20)).min(data.len())])
                .unwrap();
            assert!(n > 0, "early end at {at}");
            at += n;
            if at > 16 << 20 {
                most = most.max(resident_kib(&d));
            }
        }
        assert_eq!(d.read(&mut [0; 16]).unwrap(), 0);
        assert!(out == data, "the output differs from the input");
        if !spills_to(scratch.path()) {
            assert_eq!(
                d.spilled(),
                0,
                "spilled to a filesystem that is not ext4 or xfs"
            );
            return;
        }
        assert!(d.spilled() >= 64 << 20, "spilled {}", d.spilled());
        // At most what was written and referred to since the last trim; the whole 64 MiB
        // ring would be resident without trimming.
        assert!(
            most > 0 && most <= 32 << 10,
            "{most} KiB of the window resident"
        );
    }
}
