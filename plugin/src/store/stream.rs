//! The streaming store: blobs travel through containerd's Content API (`Write` with data), for
//! when containerd's content root is elsewhere or not writable.

use super::{copy_verified, ContentStore, Put, Result, StoreError, StoreKind};
use crate::containerd::{exists_leased, Chunk, Client, Written};
use crate::digest::Digest;
use crate::error::Class;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::runtime::Handle;

/// Streams blobs to containerd.
pub struct StreamStore {
    client: Client,
    handle: Handle,
    prefix: String,
    counter: AtomicU64,
}

impl StreamStore {
    /// A store writing through `client` (whose lease covers the writes). Ingest refs start with
    /// `prefix`, which must be unique to this import.
    pub fn new(client: Client, handle: Handle, prefix: String) -> StreamStore {
        StreamStore {
            client,
            handle,
            prefix,
            counter: AtomicU64::new(0),
        }
    }

    /// A fresh ingest ref.
    pub(crate) fn next_ref(&self) -> String {
        format!(
            "{}-{}",
            self.prefix,
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }
}

impl ContentStore for StreamStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Stream
    }

    fn exists(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(self
            .handle
            .block_on(exists_leased(self.client.as_ref(), digest))?)
    }

    fn write(&self, data: &mut dyn Read, size: u64, want: Option<&Digest>) -> Result<Put> {
        let reference = self.next_ref();
        let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(4);
        let task = {
            let (client, reference, want) = (self.client.clone(), reference.clone(), want.cloned());
            self.handle
                .spawn(async move { client.write(&reference, size, want.as_ref(), rx).await })
        };
        let mut open = true;
        let copied = copy_verified(data, size, want, |chunk| {
            // Once containerd ends the stream (it has the blob, or failed: the task tells which),
            // the rest is hashed but not sent.
            fail::fail_point!("stream", |_| crate::sys::crash());
            if open && tx.blocking_send(Chunk::Data(chunk.to_vec())).is_err() {
                open = false;
            }
            Ok(())
        });
        if let Ok(digest) = &copied {
            let _ = tx.blocking_send(Chunk::Commit(digest.clone()));
        }
        drop(tx);
        let outcome = self
            .handle
            .block_on(task)
            .unwrap_or_else(|e| panic!("write task for {reference} failed: {e}"));
        let done = match (copied, outcome) {
            (Ok(digest), Ok(Written::Committed)) => return Ok(Put::written(digest, size)),
            (Ok(digest), Ok(Written::AlreadyExists)) => {
                // containerd had it (perhaps held only by another lease, which may go at any
                // moment): this import's lease holds it before anything relies on it.
                return match self.exists(&digest)? {
                    Some(_) => Ok(Put::present(&digest, size)),
                    None => Err(StoreError::Containerd(
                        crate::containerd::ContainerdError::call(
                            format!("write blob {digest}"),
                            Class::Unavailable,
                            "containerd had the blob, then garbage-collected it before it could be held; try again",
                        ),
                    )),
                };
            }
            (Err(e), _) => e,
            (Ok(_), Ok(Written::Abandoned)) => {
                StoreError::Containerd(crate::containerd::ContainerdError::call(
                    format!("write {reference}"),
                    Class::Internal,
                    "the stream ended before the commit",
                ))
            }
            (Ok(_), Err(e)) => e.into(),
        };
        let _ = self.handle.block_on(self.client.abort(&reference));
        Err(done)
    }

    fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        match self.handle.block_on(self.client.read(digest, 0, 0)) {
            Ok(b) => Ok(b),
            Err(e) if e.class() == Class::NotFound => Err(StoreError::NotFound(digest.clone())),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::fake::Fake;

    #[test]
    fn conforms_on_the_fake() {
        let rt = crate::testing::runtime();
        let fake = Fake::new();
        let store = StreamStore::new(fake.client(), rt.handle().clone(), "airlift-t".into());
        rt.block_on(async {
            tokio::task::spawn_blocking(move || crate::testkit::conformance::run(&store))
                .await
                .unwrap()
        });
        // Failed writes left no ingest behind.
        assert!(fake.state().ingests.is_empty(), "ingests left behind");
    }

    #[test]
    fn a_refused_write_is_aborted_and_reported() {
        let rt = crate::testing::runtime();
        let fake = Fake::new();
        fake.fail("write", None, Class::Unavailable);
        let store = StreamStore::new(fake.client(), rt.handle().clone(), "airlift-t".into());
        let err = rt.block_on(async {
            tokio::task::spawn_blocking(move || {
                let data = vec![1u8; 3 * super::super::CHUNK];
                store
                    .put(&mut &data[..], data.len() as u64, None)
                    .unwrap_err()
            })
            .await
            .unwrap()
        });
        assert_eq!(err.class(), Class::Unavailable, "{err}");
        assert_eq!(fake.count("abort"), 1);
        assert!(fake.state().blobs.is_empty());
    }

    #[test]
    fn a_blob_containerd_has_already_is_not_sent() {
        let rt = crate::testing::runtime();
        let fake = Fake::new();
        let data = vec![3u8; 5 * super::super::CHUNK];
        let d = fake.add_blob(&data, &[]);
        let store = StreamStore::new(fake.client(), rt.handle().clone(), "airlift-t".into());
        let put = rt.block_on(async {
            tokio::task::spawn_blocking(move || {
                store.write(&mut &data[..], data.len() as u64, Some(&d))
            })
            .await
            .unwrap()
        });
        assert_eq!(put.unwrap().written, 0);
        assert!(fake.state().ingests.is_empty());
    }
}
