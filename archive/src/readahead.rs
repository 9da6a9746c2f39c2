//! Read-ahead: decompress on one thread while the caller hashes and writes on another.
//!
//! A background thread fills buffers from the inner reader (the decoder, or the file itself for
//! plain tars) and hands them over a bounded channel; memory stays bounded by `depth` buffers.

use std::io::{self, Read};
use std::sync::mpsc;

/// A reader whose inner reads happen ahead of time on a separate thread.
pub struct ReadAhead {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    back: mpsc::SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ReadAhead {
    /// Starts reading `inner` in `chunk`-sized buffers, at most `depth` ahead.
    pub fn new<R: Read + Send + 'static>(mut inner: R, chunk: usize, depth: usize) -> ReadAhead {
        let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(depth);
        let (back, recycled) = mpsc::sync_channel::<Vec<u8>>(depth + 2);
        std::thread::Builder::new()
            .name("airlift-decode".into())
            .spawn(move || loop {
                let mut buf = recycled
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(chunk));
                buf.resize(chunk, 0);
                let mut filled = 0;
                let result = loop {
                    match inner.read(&mut buf[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            filled += n;
                            if filled == buf.len() {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(filled);
                let end = filled == 0;
                let msg = match result {
                    Err(e) => {
                        if filled > 0 && tx.send(Ok(buf)).is_err() {
                            return;
                        }
                        let _ = tx.send(Err(e));
                        return;
                    }
                    Ok(()) => Ok(buf),
                };
                if tx.send(msg).is_err() || end {
                    return;
                }
            })
            .expect("spawning the decode thread");
        ReadAhead {
            rx,
            back,
            current: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(buf)) => {
                    let old = std::mem::replace(&mut self.current, buf);
                    let _ = self.back.try_send(old);
                    self.pos = 0;
                    if self.current.is_empty() {
                        self.done = true;
                    }
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_everything_through_in_order() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut r = ReadAhead::new(io::Cursor::new(data.clone()), 64 * 1024, 3);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 10_007];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, data);
    }

    #[test]
    fn forwards_errors_after_the_data_before_them() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("corrupt"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(1);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut r = ReadAhead::new(Failing(100_000), 30_000, 2);
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(out.len(), 100_000);
        assert_eq!(err.to_string(), "corrupt");
    }
}
