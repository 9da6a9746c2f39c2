//! The streaming store: blobs travel through containerd's Content API (`Write` with data), for
//! when containerd's content root is elsewhere or not writable.

use super::{copy_verified, ContentStore, Put, StoreError};
use crate::containerd::{Containerd, ContainerdError};
use crate::digest::Digest;
use containerd_client::services::v1::{WriteAction, WriteContentRequest};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::runtime::Handle;

/// Streams blobs to containerd.
pub struct StreamStore {
    client: Containerd,
    handle: Handle,
    prefix: String,
    counter: AtomicU64,
}

impl StreamStore {
    /// A store writing through `client` (whose lease covers the writes). Ingest refs start with
    /// `prefix`, which must be unique to this import.
    pub fn new(client: Containerd, handle: Handle, prefix: String) -> StreamStore {
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
    fn kind(&self) -> &'static str {
        "stream"
    }

    fn exists(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        Ok(self.handle.block_on(self.client.exists_leased(digest))?)
    }

    fn put(
        &self,
        data: &mut dyn Read,
        size: u64,
        expected: Option<&Digest>,
    ) -> Result<Put, StoreError> {
        if let Some(d) = expected {
            if let Some(present) = self.exists(d)? {
                return Ok(Put {
                    digest: d.clone(),
                    size: present,
                    written: 0,
                });
            }
        }
        let reference = self.next_ref();
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
        let client = self.client.clone();
        let task = self.handle.spawn(async move {
            let mut resp = client
                .content()
                .write(client.wrap(tokio_stream::wrappers::ReceiverStream::new(rx)))
                .await?
                .into_inner();
            while resp.message().await?.is_some() {}
            Ok::<_, tonic::Status>(())
        });
        let expected_str = expected.map(|d| d.to_string()).unwrap_or_default();
        let mut offset = 0i64;
        let mut closed = false;
        let copied = copy_verified(data, size, expected, |chunk| {
            let msg = WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: reference.clone(),
                total: size as i64,
                offset,
                data: chunk.to_vec(),
                expected: expected_str.clone(),
                ..Default::default()
            };
            offset += chunk.len() as i64;
            if !closed && tx.blocking_send(msg).is_err() {
                // containerd ended the stream; its error comes from the task below.
                closed = true;
            }
            Ok(())
        });
        let fail = |e: StoreError| -> Result<Put, StoreError> {
            let _ = self.handle.block_on(self.client.abort(&reference));
            Err(e)
        };
        let digest = match copied {
            Ok(d) => d,
            Err(e) => {
                drop(tx);
                let _ = self.handle.block_on(task);
                return fail(e);
            }
        };
        let _ = tx.blocking_send(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference.clone(),
            total: size as i64,
            offset: size as i64,
            expected: digest.to_string(),
            ..Default::default()
        });
        drop(tx);
        let outcome = self
            .handle
            .block_on(task)
            .map_err(|e| tonic::Status::internal(format!("write task: {e}")))
            .and_then(|r| r);
        match outcome {
            Ok(()) => Ok(Put {
                digest,
                size,
                written: size,
            }),
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(Put {
                digest,
                size,
                written: 0,
            }),
            Err(s) => fail(StoreError::Containerd(ContainerdError::Call {
                op: format!("write blob {digest}"),
                code: s.code(),
                message: s.message().to_string(),
            })),
        }
    }

    fn read(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        match self.handle.block_on(self.client.read(digest, 0, 0)) {
            Ok(b) => Ok(b),
            Err(e) if e.class() == crate::containerd::ErrorClass::NotFound => {
                Err(StoreError::NotFound(digest.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }
}
