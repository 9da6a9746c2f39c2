//! An in-memory content store, for tests of the archive side (and the fuzz harnesses) that
//! need no containerd.

use crate::digest::Digest;
use crate::store::{copy_verified, ContentStore, Put, Result, StoreError, StoreKind};
use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;

/// Blobs in a map.
#[derive(Default)]
pub struct MemoryStore {
    blobs: Mutex<HashMap<Digest, Vec<u8>>>,
}

impl MemoryStore {
    /// Number of blobs held.
    pub fn len(&self) -> usize {
        self.blobs.lock().unwrap().len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ContentStore for MemoryStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Memory
    }

    fn exists(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(self
            .blobs
            .lock()
            .unwrap()
            .get(digest)
            .map(|b| b.len() as u64))
    }

    fn write(&self, data: &mut dyn Read, size: u64, want: Option<&Digest>) -> Result<Put> {
        let mut bytes = Vec::with_capacity(size as usize);
        let digest = copy_verified(data, size, want, |chunk| {
            bytes.extend_from_slice(chunk);
            Ok(())
        })?;
        let mut blobs = self.blobs.lock().unwrap();
        let written = if blobs.contains_key(&digest) { 0 } else { size };
        blobs.entry(digest.clone()).or_insert(bytes);
        Ok(Put {
            digest,
            size,
            written,
        })
    }

    fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        self.blobs
            .lock()
            .unwrap()
            .get(digest)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(digest.clone()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conforms() {
        super::super::conformance::run(&super::MemoryStore::default());
    }
}
