//! The system calls the archive side makes, through `rustix`'s safe wrappers: the filesystem a
//! decoder's scratch file is on, and blocks reserved for it (see [`crate::spill`]).

use rustix::fs::FallocateFlags;
use std::fs::File;
use std::io;

/// The filesystem type (`f_type`, a magic number such as ext4's `0xEF53`) of the filesystem
/// holding `file`.
pub fn filesystem_type(file: &File) -> io::Result<i64> {
    Ok(rustix::fs::fstatfs(file)?.f_type as i64)
}

/// Reserves the blocks of `len` bytes of `file`, so writes into a mapping of it cannot fail for
/// lack of space.
pub fn reserve(file: &File, len: u64) -> io::Result<()> {
    Ok(rustix::fs::fallocate(
        file,
        FallocateFlags::empty(),
        0,
        len,
    )?)
}
