//! A prescan of an uncompressed tar on disk: its small JSON documents (the image configs among
//! them) handed to the observer before the walk starts, so that unpacking can start with the
//! first layer of a docker-save archive, which puts its configs after its layers.

use super::Observer;
use crate::digest::Digest;
use std::io::{Read, Seek};
use std::path::Path;

/// The largest entry [`prescan`] reads (image configs are a few KiB).
const PRESCAN_ENTRY: u64 = 1 << 20;

/// The most [`prescan`] reads in all.
const PRESCAN_TOTAL: u64 = 64 << 20;

/// For an uncompressed tar in a regular file: hands `observer` the archive's small JSON documents (the
/// image configs among them) before the walk starts, reading only the headers and those
/// entries (seeking past the rest). A docker-save archive puts its configs after its layers;
/// known first, they let unpacking start with the first layer rather than after the last. A
/// compressed archive, or anything that is not a tar, is left alone; so is any error (the walk
/// reads everything anyway).
pub fn prescan(path: &Path, observer: &dyn Observer) {
    let scan = || -> std::io::Result<()> {
        // A FIFO or a device is read once, by the walk.
        if !std::fs::metadata(path)?.is_file() {
            return Ok(());
        }
        let mut f = std::fs::File::open(path)?;
        let mut head = [0u8; 512];
        f.read_exact(&mut head)?;
        if &head[257..262] != b"ustar" {
            return Ok(());
        }
        f.seek(std::io::SeekFrom::Start(0))?;
        let mut archive = tar::Archive::new(f);
        let mut read = 0u64;
        for entry in archive.entries_with_seek()? {
            let mut entry = entry?;
            let size = entry.header().size()?;
            if !entry.header().entry_type().is_file() || !(2..=PRESCAN_ENTRY).contains(&size) {
                continue;
            }
            // A document starts with `{`; anything else (a small layer) is passed by after
            // one byte.
            let mut first = [0u8; 1];
            entry.read_exact(&mut first)?;
            if first[0] != b'{' {
                continue;
            }
            read += size;
            if read > PRESCAN_TOTAL {
                break;
            }
            let mut json = Vec::with_capacity(size as usize);
            json.push(first[0]);
            entry.read_to_end(&mut json)?;
            observer.document(&Digest::of(&json), &json);
        }
        Ok(())
    };
    if let Err(e) = scan() {
        tracing::debug!(archive = %crate::escape::shown(&path), error = %e, "no prescan");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the documents it hears of.
    #[derive(Default)]
    struct Heard(std::sync::Mutex<Vec<Digest>>);

    impl Observer for Heard {
        fn stored(&self, _: &Digest, _: u64) {}
        fn document(&self, d: &Digest, _: &[u8]) {
            self.0.lock().unwrap().push(d.clone());
        }
    }

    #[test]
    fn prescan_finds_the_configs_of_a_tar_on_disk_and_leaves_the_rest_alone() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let layer = vec![7u8; 3 << 20];
        let mut b = tar::Builder::new(Vec::new());
        let small = [0u8; 1000];
        for (name, data) in [
            ("layer/layer.tar", &layer[..]),
            ("small/layer.tar", &small[..]),
            ("config.json", &config[..]),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let plain = dir.path().join("a.tar");
        std::fs::write(&plain, &bytes).unwrap();
        let heard = Heard::default();
        prescan(&plain, &heard);
        assert_eq!(*heard.0.lock().unwrap(), [Digest::of(config)]);

        // Compressed: nothing (it would take a second decompression).
        let gz = dir.path().join("a.tar.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, &bytes).unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
        let heard = Heard::default();
        prescan(&gz, &heard);
        assert!(heard.0.lock().unwrap().is_empty());

        // A FIFO is not opened: its bytes are the walk's.
        let fifo = dir.path().join("f.tar");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let heard = Heard::default();
        prescan(&fifo, &heard);
        assert!(heard.0.lock().unwrap().is_empty());
    }
}
