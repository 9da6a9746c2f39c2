//! Ingests of small archives into the memory store: limits named, blobs stored once, JSON
//! documents kept for the plan.

use super::*;
use crate::testing::tar;

#[test]
fn an_oversized_layout_document_names_its_entry_and_the_limit() {
    let big = vec![b' '; JSON_LIMIT as usize + 1];
    let store = crate::testkit::memory::MemoryStore::default();
    let e = ingest(
        io::Cursor::new(tar(&[("index.json", big)])),
        &store,
        &std::env::temp_dir(),
        &mut Counters::default(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("\"index.json\"") && msg.contains(&JSON_LIMIT.to_string()),
        "{msg}"
    );
    assert!(e.is_archive_fault());
}

#[test]
fn blobs_are_stored_once_and_json_is_kept_for_the_plan() {
    let layer = vec![7u8; 200_000];
    let d = Digest::of(&layer);
    let name = format!("blobs/sha256/{}", d.hex());
    let doc = b"{\"schemaVersion\":2}".to_vec();
    let doc_name = format!("blobs/sha256/{}", Digest::of(&doc).hex());
    let archive = tar(&[(&name, layer.clone()), (&doc_name, doc.clone())]);
    let store = crate::testkit::memory::MemoryStore::default();
    let mut c = Counters::default();
    let inv = ingest(
        io::Cursor::new(archive.clone()),
        &store,
        &std::env::temp_dir(),
        &mut c,
    )
    .unwrap();
    assert_eq!((c.blobs_written, c.bytes_written), (1, 200_000));
    // The JSON document waits in memory for the plan: not stored yet.
    assert!(inv.deferred.contains(&Digest::of(&doc)));
    assert_eq!(store.len(), 1);
    // Again: present, nothing written.
    let mut c = Counters::default();
    ingest(
        io::Cursor::new(archive),
        &store,
        &std::env::temp_dir(),
        &mut c,
    )
    .unwrap();
    assert_eq!((c.blobs_written, c.blobs_present), (0, 1));
}
