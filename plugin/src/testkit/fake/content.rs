//! The fake's content service: blobs in memory, commits verified, claims of blobs on disk in
//! the content root it reports.

use super::{set_labels, stored_labels, Blob, Fake};
use crate::containerd::{
    BlobInfo, Chunk, Chunks, ContainerdError, Content, Labels, Result, Written,
};
use crate::digest::Digest;
use crate::error::Class;
use std::collections::HashMap;

#[async_trait::async_trait]
impl Content for Fake {
    async fn info(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        self.enter("info", digest.to_string())?;
        Ok(self.state().blobs.get(digest).map(|b| BlobInfo {
            size: b.data.len() as u64,
            labels: b.labels.clone(),
        }))
    }

    async fn set_blob_labels(&self, digest: &Digest, labels: &Labels) -> Result<()> {
        self.enter("set_blob_labels", digest.to_string())?;
        let mut s = self.state();
        let b = s.blobs.get_mut(digest).ok_or_else(|| {
            ContainerdError::call(format!("label blob {digest}"), Class::NotFound, "not found")
        })?;
        set_labels(&mut b.labels, labels);
        Ok(())
    }

    async fn read(&self, digest: &Digest, offset: u64, size: u64) -> Result<Vec<u8>> {
        self.enter("read", digest.to_string())?;
        let s = self.state();
        let b = s.blobs.get(digest).ok_or_else(|| {
            ContainerdError::call(format!("read blob {digest}"), Class::NotFound, "not found")
        })?;
        let start = (offset as usize).min(b.data.len());
        let end = if size == 0 {
            b.data.len()
        } else {
            (start + size as usize).min(b.data.len())
        };
        Ok(b.data[start..end].to_vec())
    }

    async fn write(
        &self,
        reference: &str,
        total: u64,
        expected: Option<&Digest>,
        mut chunks: Chunks,
    ) -> Result<Written> {
        let subject = expected.map_or(reference.to_string(), |d| d.to_string());
        self.enter("write", subject.clone())?;
        if let Some(d) = expected {
            let mut s = self.state();
            if s.blobs.contains_key(d) {
                // Declared up front, a present blob joins the lease all the same.
                self.hold(&mut s, d);
                return Ok(Written::AlreadyExists);
            }
        }
        self.state()
            .ingests
            .entry(reference.to_string())
            .or_default();
        while let Some(chunk) = chunks.recv().await {
            let mut s = self.state();
            match chunk {
                Chunk::Data(data) => s
                    .ingests
                    .entry(reference.to_string())
                    .or_default()
                    .extend_from_slice(&data),
                Chunk::Commit(digest) => {
                    let data = s.ingests.remove(reference).unwrap_or_default();
                    let fail = |m: String| {
                        ContainerdError::call(
                            format!("write blob {subject}"),
                            Class::FailedPrecondition,
                            m,
                        )
                    };
                    if total > 0 && data.len() as u64 != total {
                        return Err(fail(format!(
                            "unexpected commit size {}, expected {total}",
                            data.len()
                        )));
                    }
                    if Digest::of(&data) != digest {
                        return Err(fail(format!("unexpected commit digest, expected {digest}")));
                    }
                    if s.blobs.contains_key(&digest) {
                        return Ok(Written::AlreadyExists);
                    }
                    s.blobs.insert(
                        digest.clone(),
                        Blob {
                            data,
                            labels: HashMap::new(),
                        },
                    );
                    self.hold(&mut s, &digest);
                    return Ok(Written::Committed);
                }
            }
        }
        Ok(Written::Abandoned)
    }

    async fn claim(&self, _: &str, digest: &Digest, size: u64, labels: &Labels) -> Result<bool> {
        self.enter("claim", digest.to_string())?;
        let mut s = self.state();
        if s.blobs.contains_key(digest) {
            self.hold(&mut s, digest);
            return Ok(false);
        }
        let on_disk = s
            .content_root
            .as_ref()
            .map(|r| r.join("blobs/sha256").join(digest.hex()))
            .and_then(|p| std::fs::read(p).ok())
            .filter(|data| data.len() as u64 == size && Digest::of(data) == *digest);
        let Some(data) = on_disk else {
            // Not shared: the commit at the blob's size finds an empty ingest.
            return Err(ContainerdError::call(
                format!("claim blob {digest}"),
                Class::OutOfRange,
                format!("write @{size} must occur at current offset 0"),
            ));
        };
        s.blobs.insert(
            digest.clone(),
            Blob {
                data,
                labels: stored_labels(labels),
            },
        );
        self.hold(&mut s, digest);
        Ok(true)
    }

    async fn ingest_refs(&self) -> Result<Vec<String>> {
        self.enter("ingest_refs", "")?;
        Ok(self
            .state()
            .ingests
            .keys()
            .filter(|r| r.starts_with("airlift-"))
            .cloned()
            .collect())
    }

    async fn abort(&self, reference: &str) -> Result<()> {
        self.enter("abort", reference)?;
        self.state().ingests.remove(reference);
        Ok(())
    }
}
