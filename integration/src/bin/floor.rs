//! The physical floor for the benchmark: decode an archive, SHA-256 every byte, write it to one
//! file on the same filesystem and fsync — one pass, one thread, nothing else.
//!
//! `floor ARCHIVE OUTPUT-FILE`

use sha2::Digest;
use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = args.as_slice() else {
        eprintln!("usage: floor ARCHIVE OUTPUT-FILE");
        std::process::exit(2);
    };
    let file = std::fs::File::open(input).expect("open archive");
    let (mut decoded, _) = airlift::archive::decode::open(file).expect("decode archive");
    let mut out = std::fs::File::create(output).expect("create output");
    let mut hash = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = decoded.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        out.write_all(&buf[..n]).expect("write");
    }
    out.sync_all().expect("fsync");
    println!("{:x}", hash.finalize());
}
