//! The `archive` target: an archive file's bytes through decode, walk, ingest into memory and
//! planning, and the properties every plan must have (shared with the `understand` target).

use super::DECODED_LIMIT;
use crate::archive::understand::{self, Inventory, Plan, PlanOptions};
use crate::archive::{decode, walk};
use crate::digest::Digest;
use crate::ingest::{self, Counters};
use crate::platform::{Platform, PlatformPolicy};
use crate::reference::Reference;
use crate::store::{ContentStore, Put, StoreError, StoreKind};
use crate::testkit::memory::MemoryStore;
use std::collections::BTreeSet;
use std::io::{self, Cursor, Read};
use std::path::Path;

/// An archive file's bytes through decode, walk, ingest into memory, and planning.
pub fn archive(data: &[u8]) {
    let Ok(scratch) = tempfile::tempdir() else {
        return;
    };
    match decoded_len(data, scratch.path()) {
        None => {}
        Some(n) if n > DECODED_LIMIT => walk_prefix(data, scratch.path()),
        Some(_) => ingest_and_plan(data, scratch.path()),
    }
}

/// How a decode pass ended.
#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    /// The whole stream, within the limit: its length and digest.
    Whole(u64, Digest),
    /// More than the limit: the digest of its first `DECODED_LIMIT + 1` bytes.
    TooLong(Digest),
    /// The decoder failed.
    Broken,
}

/// Decodes `data` in reads of the sizes `sizes` cycles through, up to one byte past the limit.
/// `None` when it is not an archive at all.
fn decode_pass(data: &[u8], scratch: &Path, sizes: &[usize]) -> Option<Decoded> {
    let (mut r, _) = decode::open(Cursor::new(data.to_vec()), scratch).ok()?;
    let mut hasher = crate::digest::Hasher::default();
    let mut buf = vec![0u8; sizes.iter().copied().max().unwrap_or(1)];
    let cap = DECODED_LIMIT + 1;
    for &size in sizes.iter().cycle() {
        let want = (size as u64).min(cap - hasher.len()) as usize;
        match r.read(&mut buf[..want]) {
            Ok(0) => return Some(Decoded::Whole(hasher.len(), hasher.finish())),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Some(Decoded::Broken),
        }
        if hasher.len() == cap {
            return Some(Decoded::TooLong(hasher.finish()));
        }
    }
    unreachable!("cycling through a non-empty list never ends")
}

/// How many bytes `data` decodes to (at most one past the limit), `None` when it is not an
/// archive. Decoding twice, in large and in irregular reads, must give the same bytes.
fn decoded_len(data: &[u8], scratch: &Path) -> Option<u64> {
    let large = decode_pass(data, scratch, &[64 << 10])?;
    let irregular = decode_pass(data, scratch, &[1, 13, 512, 4099, 65536, 7, 131072])?;
    match (&large, &irregular) {
        (Decoded::Broken, _) | (_, Decoded::Broken) => {
            // Where a broken stream stops may depend on the reads; that it is broken may not,
            // unless the other pass stopped at the limit before reaching the damage.
            let either_too_long =
                matches!(large, Decoded::TooLong(_)) || matches!(irregular, Decoded::TooLong(_));
            assert!(
                large == irregular || either_too_long,
                "decoding depends on read sizes: {large:?} in large reads, {irregular:?} in \
                 irregular ones"
            );
        }
        _ => assert_eq!(large, irregular, "decoding depends on read sizes"),
    }
    Some(match (large, irregular) {
        (Decoded::TooLong(_), _) | (_, Decoded::TooLong(_)) => DECODED_LIMIT + 1,
        (Decoded::Whole(n, _), _) => n,
        // Broken within the limit: the ingest stops at the damage too.
        _ => 0,
    })
}

/// A decompression bomb: only its first [`DECODED_LIMIT`] bytes are walked.
fn walk_prefix(data: &[u8], scratch: &Path) {
    let Ok((r, _)) = decode::open(Cursor::new(data.to_vec()), scratch) else {
        return;
    };
    let _ = walk::walk(r.take(DECODED_LIMIT), |entry| {
        if let walk::Entry::File { data, .. } = entry {
            let _ = io::copy(data, &mut io::sink());
        }
        Ok::<(), walk::WalkError>(())
    });
}

/// The in-memory store, refusing blobs larger than [`DECODED_LIMIT`] as a full disk refuses
/// blobs larger than its free space (the memory store itself takes any size on trust).
#[derive(Default)]
struct BoundedStore {
    inner: MemoryStore,
}

impl ContentStore for BoundedStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Memory
    }

    fn exists(&self, digest: &Digest) -> crate::store::Result<Option<u64>> {
        self.inner.exists(digest)
    }

    fn write(
        &self,
        data: &mut dyn Read,
        size: u64,
        want: Option<&Digest>,
    ) -> crate::store::Result<Put> {
        if size > DECODED_LIMIT {
            return Err(StoreError::NoRoom {
                what: want.map_or("a blob".into(), |d| format!("blob {d}")),
                size,
                path: "memory".into(),
                free: DECODED_LIMIT,
            });
        }
        self.inner.write(data, size, want)
    }

    fn read(&self, digest: &Digest) -> crate::store::Result<Vec<u8>> {
        self.inner.read(digest)
    }
}

/// The option sets every inventory is planned with.
pub(super) fn plan_options() -> [PlanOptions; 3] {
    [
        PlanOptions::default(),
        PlanOptions {
            platforms: PlatformPolicy::All,
            base_name: Some("example.com/base".into()),
            index_name: Some("example.com/fuzz/index:all".into()),
            digest_refs: true,
            named: Default::default(),
            serve: PlatformPolicy::Only(Vec::new()),
        },
        PlanOptions {
            platforms: PlatformPolicy::Only(vec![
                Platform::new("linux", "arm64", ""),
                Platform::new("linux", "arm", "v6"),
            ]),
            base_name: Some("Not A Base".into()),
            index_name: None,
            digest_refs: false,
            named: Default::default(),
            serve: PlatformPolicy::Only(vec![Platform::new("linux", "amd64", "")]),
        },
    ]
}

fn ingest_and_plan(data: &[u8], scratch: &Path) {
    let store = BoundedStore::default();
    let mut counters = Counters::default();
    let inv = match ingest::ingest(Cursor::new(data.to_vec()), &store, scratch, &mut counters) {
        Ok(inv) => inv,
        Err(e) => {
            let _ = (e.to_string(), e.is_archive_fault());
            return;
        }
    };
    for (digest, bytes) in &inv.json {
        assert_eq!(
            Digest::of(bytes),
            *digest,
            "a JSON document kept under another digest"
        );
    }
    for opts in plan_options() {
        match understand::plan(&inv, &opts) {
            Ok(plan) => {
                check_plan(&inv, &plan, |d| store.exists(d).ok().flatten().is_some());
                store_what_images_need(&inv, &plan, &store);
            }
            Err(e) => drop(e.to_string()),
        }
    }
}

/// What the import does after planning ([`crate::import::store_planned`]), after which every blob
/// of every image is in the store.
fn store_what_images_need(inv: &Inventory, plan: &Plan, store: &dyn ContentStore) {
    let mut counters = Counters::default();
    let stored = crate::import::store_planned(inv, plan, store, &mut counters);
    assert!(stored.is_ok(), "storing the plan's blobs: {stored:?}");
    for d in plan.images.iter().flat_map(|i| i.blobs.iter()) {
        assert!(
            matches!(store.exists(d), Ok(Some(_))),
            "blob {d} of an image is not in the store after the plan's blobs were stored"
        );
    }
}

/// Properties of every plan: image names are valid, normalised references, each once; each
/// image's blobs include its target and can be found (in the store, among the JSON documents
/// kept, or synthesised); synthesised blobs hash to their digest.
pub(super) fn check_plan(inv: &Inventory, plan: &Plan, stored: impl Fn(&Digest) -> bool) {
    let mut names = BTreeSet::new();
    for image in &plan.images {
        let parsed = Reference::parse_normalized(&image.name);
        assert!(
            parsed.as_ref().is_ok_and(|r| r.to_string() == image.name),
            "image name {:?} is not a normalised reference: {parsed:?}",
            image.name
        );
        assert!(
            names.insert(&image.name),
            "image {:?} planned twice",
            image.name
        );
        assert!(
            image.blobs.contains(&image.target.digest),
            "image {:?} does not hold its own target",
            image.name
        );
        for d in &image.blobs {
            assert!(
                stored(d) || inv.json.contains_key(d) || plan.synthesized.contains_key(d),
                "blob {d} of image {:?} is nowhere",
                image.name
            );
        }
    }
    for (d, bytes) in &plan.synthesized {
        assert_eq!(
            Digest::of(bytes),
            *d,
            "a synthesised blob under another digest"
        );
    }
    let _ = format!("{:?}", plan.problems);
}
