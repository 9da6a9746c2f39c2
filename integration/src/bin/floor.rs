//! The physical floor for the benchmark: decode an archive, SHA-256 every byte, write it to one
//! file on the same filesystem and fsync — one pass, one thread, nothing else.
//!
//! `floor ARCHIVE OUTPUT-FILE` — or, for a plain tar, `floor --copy-file-range ARCHIVE OUTPUT`:
//! hash the bytes as read, but let the kernel copy them (`copy_file_range`) instead of writing
//! them from memory; the experiment that decides whether airlift should copy blobs that way.

use sha2::Digest;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (cfr, input, output) = match args.as_slice() {
        [_, flag, i, o] if flag == "--copy-file-range" => (true, i, o),
        [_, i, o] => (false, i, o),
        _ => {
            eprintln!("usage: floor [--copy-file-range] ARCHIVE OUTPUT-FILE");
            std::process::exit(2);
        }
    };
    let file = std::fs::File::open(input).expect("open archive");
    let mut out = std::fs::File::create(output).expect("create output");
    let mut hash = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    if cfr {
        let mut src = file;
        let mut offset: i64 = 0;
        loop {
            let n = src.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            let mut off_in = offset;
            let mut left = n;
            while left > 0 {
                let r = unsafe {
                    libc::copy_file_range(
                        src.as_raw_fd(),
                        &mut off_in,
                        out.as_raw_fd(),
                        std::ptr::null_mut(),
                        left,
                        0,
                    )
                };
                assert!(
                    r > 0,
                    "copy_file_range: {}",
                    std::io::Error::last_os_error()
                );
                left -= r as usize;
            }
            offset += n as i64;
        }
    } else {
        // A large zstd window spills beside the output, as airlift's does beside its blobs.
        let scratch = std::path::Path::new(output.as_str())
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .to_path_buf();
        let (mut decoded, _) =
            airlift::archive::decode::open(file, &scratch).expect("decode archive");
        loop {
            let n = decoded.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            out.write_all(&buf[..n]).expect("write");
        }
    }
    out.sync_all().expect("fsync");
    println!("{:x}", hash.finalize());
}
