//! The behaviour every [`ContentStore`] must show, written once and run against every home: in
//! unit tests the memory and local stores, and the direct and streaming stores over the
//! containerd fake; end to end the direct and streaming stores against real containerd 2.x and
//! 1.7 (with its built-in store and with airlift's content proxy) and the streaming store against
//! the proxy's own socket. [`content_api`] is the Content API's wire semantics, checked against
//! containerd's built-in store and airlift's proxy alike.

use crate::digest::Digest;
use crate::store::{ContentStore, StoreError, CHUNK};
use std::io::Read;

/// Deterministic pseudo-random bytes (so each run stores fresh blobs when `seed` differs).
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A reader that fails after some bytes, like a corrupt compressed stream.
struct FailingReader(Vec<u8>);

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "corrupt stream",
            ));
        }
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0.drain(..n);
        Ok(n)
    }
}

/// Runs every check against `store`. Panics with a message naming the store on failure.
pub fn run(store: &dyn ContentStore) {
    let kind = store.kind();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;

    // A new blob with its digest declared is written, then reported present with its size.
    let small = bytes(4096 + 17, seed);
    let d = Digest::of(&small);
    assert_eq!(
        store.exists(&d).unwrap(),
        None,
        "{kind}: fresh blob reported present"
    );
    let put = store
        .put(&mut &small[..], small.len() as u64, Some(&d))
        .unwrap();
    assert_eq!(put.digest, d, "{kind}");
    assert_eq!(
        put.written,
        small.len() as u64,
        "{kind}: new blob not written"
    );
    assert_eq!(
        store.exists(&d).unwrap(),
        Some(small.len() as u64),
        "{kind}"
    );
    assert_eq!(store.read(&d).unwrap(), small, "{kind}: read back differs");

    // Putting it again writes nothing.
    let again = store
        .put(&mut &small[..], small.len() as u64, Some(&d))
        .unwrap();
    assert_eq!(again.written, 0, "{kind}: present blob written again");

    // Without a declared digest, the digest is computed; a large blob spans many chunks.
    let large = bytes(3 * CHUNK + 12345, seed ^ 1);
    let put = store
        .put(&mut &large[..], large.len() as u64, None)
        .unwrap();
    assert_eq!(put.digest, Digest::of(&large), "{kind}");
    assert_eq!(
        store.read(&put.digest).unwrap(),
        large,
        "{kind}: large read back differs"
    );

    // Wrong declared digest: refused, committed under neither digest.
    let other = bytes(1000, seed ^ 2);
    let wrong = Digest::of(b"something else entirely");
    let err = store
        .put(&mut &other[..], other.len() as u64, Some(&wrong))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DigestMismatch { .. }),
        "{kind}: {err}"
    );
    assert!(err.is_blob_fault(), "{kind}");
    assert_eq!(
        store.exists(&wrong).unwrap(),
        None,
        "{kind}: mismatching blob committed"
    );
    assert_eq!(
        store.exists(&Digest::of(&other)).unwrap(),
        None,
        "{kind}: mismatching data committed"
    );

    // Short data: refused as truncated, nothing committed.
    let short = bytes(500, seed ^ 3);
    let err = store.put(&mut &short[..], 1000, None).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Truncated {
                expected: 1000,
                actual: 500
            }
        ),
        "{kind}: {err}"
    );
    assert_eq!(store.exists(&Digest::of(&short)).unwrap(), None, "{kind}");

    // A failing source is reported as the archive's fault, nothing committed.
    let broken = bytes(2 * CHUNK, seed ^ 4);
    let mut r = FailingReader(broken[..CHUNK + 7].to_vec());
    let err = store.put(&mut r, broken.len() as u64, None).unwrap_err();
    assert!(matches!(err, StoreError::Source(_)), "{kind}: {err}");
    assert_eq!(store.exists(&Digest::of(&broken)).unwrap(), None, "{kind}");

    // An empty blob is a blob.
    let empty = store.put(&mut &[][..], 0, Some(&Digest::of(b""))).unwrap();
    assert_eq!(store.exists(&empty.digest).unwrap(), Some(0), "{kind}");

    // Re-putting without a declared digest finds it present (hash first, no second copy).
    let again = store
        .put(&mut &large[..], large.len() as u64, None)
        .unwrap();
    assert_eq!(
        again.written, 0,
        "{kind}: present blob written again without a declared digest"
    );
    store.flush().unwrap();

    // Missing blobs read as NotFound.
    let missing = Digest::of(&bytes(10, seed ^ 5));
    assert!(
        matches!(store.read(&missing), Err(StoreError::NotFound(_))),
        "{kind}"
    );
}

pub mod content_api;
