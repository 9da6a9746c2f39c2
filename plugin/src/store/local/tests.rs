//! The local store's own tests: its layout, resumption, locking and label semantics.

use super::writer::{parse_time, read_time, write_time};
use super::*;

fn all() -> Filter {
    Filter::parse::<&str>(&[]).unwrap()
}

#[test]
fn write_commit_read_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::open(dir.path()).unwrap();
    let data = b"hello, content".to_vec();
    let d = Digest::of(&data);
    let mut w = s.writer("r1", data.len() as u64, Some(&d)).unwrap();
    w.write(&data[..5]).unwrap();
    w.write(&data[5..]).unwrap();
    let labels = HashMap::from([("k".to_string(), "v".to_string())]);
    assert_eq!(
        w.commit(&s, data.len() as u64, Some(&d), &labels).unwrap(),
        d
    );
    drop(w);
    let info = s.info(&d).unwrap();
    assert_eq!(
        (info.size, info.labels.get("k").cloned()),
        (14, Some("v".into()))
    );
    let (mut f, size) = s.open_blob(&d).unwrap();
    let mut back = Vec::new();
    f.read_to_end(&mut back).unwrap();
    assert_eq!((back, size), (data.clone(), 14));
    assert!(matches!(s.status("r1"), Err(e) if e.class() == Class::NotFound));
    assert!(matches!(
        s.writer("r2", 0, Some(&d)),
        Err(e) if e.class() == Class::AlreadyExists
    ));
    assert_eq!(s.list(&all()).unwrap().len(), 1);
    s.delete(&d).unwrap();
    assert!(matches!(s.delete(&d), Err(e) if e.class() == Class::NotFound));
    assert!(s.list(&all()).unwrap().is_empty());
}

#[test]
fn one_writer_per_ref_and_resume_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data = vec![7u8; 3000];
    let d = Digest::of(&data);
    {
        let s = LocalStore::open(dir.path()).unwrap();
        let mut w = s.writer("r", 3000, None).unwrap();
        assert!(matches!(
            s.writer("r", 3000, None),
            Err(e) if e.class() == Class::Unavailable
        ));
        w.write(&data[..1000]).unwrap();
    }
    // A new store over the same directory (a restarted airlift) resumes at 1000.
    let s = LocalStore::open(dir.path()).unwrap();
    let st = s.status("r").unwrap();
    assert_eq!((st.offset, st.total), (1000, 3000));
    assert_eq!(s.list_statuses(&all()).unwrap().len(), 1);
    let mut w = s.writer("r", 0, None).unwrap();
    assert_eq!(w.status().offset, 1000);
    w.write(&data[1000..]).unwrap();
    assert!(matches!(
        w.commit(&s, 2999, None, &HashMap::new()),
        Err(e) if e.class() == Class::FailedPrecondition
    ));
    let mut w = s.writer("r", 0, None).unwrap();
    assert_eq!(w.status().offset, 3000);
    let wrong = Digest::of(b"x");
    assert!(matches!(
        w.commit(&s, 3000, Some(&wrong), &HashMap::new()),
        Err(e) if e.class() == Class::FailedPrecondition
    ));
    let mut w = s.writer("r", 0, None).unwrap();
    assert_eq!(w.commit(&s, 3000, Some(&d), &HashMap::new()).unwrap(), d);
    assert!(s.status("r").is_err());
    s.writer("x", 0, None).unwrap().write(b"abc").unwrap();
    s.abort("x").unwrap();
    assert!(matches!(s.abort("x"), Err(e) if e.class() == Class::NotFound));
}

#[test]
fn timestamps_with_offsets() {
    let z = parse_time("2026-11-23T08:00:00.5Z").unwrap();
    assert_eq!(parse_time("2026-11-23T10:00:00.5+02:00"), Some(z));
    assert_eq!(parse_time("2026-11-23T03:00:00.5-05:00"), Some(z));
    assert_eq!(parse_time("yesterday"), None);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t");
    write_time(
        &p,
        SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(read_time(&p).unwrap(), SystemTime::UNIX_EPOCH);
}

#[test]
fn commit_never_replaces_a_blob() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::open(dir.path()).unwrap();
    let data = b"the same bytes".to_vec();
    let d = Digest::of(&data);
    let mut w = s.writer("r", 0, None).unwrap();
    w.write(&data).unwrap();
    // Meanwhile the blob appears (a direct import links it in).
    fs::write(s.root().blob(&d), &data).unwrap();
    let inode = fs::metadata(s.root().blob(&d)).unwrap().ino();
    assert!(matches!(
        w.commit(&s, 0, Some(&d), &HashMap::new()),
        Err(e) if e.class() == Class::AlreadyExists
    ));
    assert_eq!(fs::metadata(s.root().blob(&d)).unwrap().ino(), inode);
    assert!(matches!(s.status("r"), Err(e) if e.class() == Class::NotFound));
}

#[test]
fn labels_update_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::open(dir.path()).unwrap();
    let mut digests = Vec::new();
    for (i, label) in ["a", "b"].iter().enumerate() {
        let data = vec![i as u8; 10];
        let mut w = s.writer(&format!("r{i}"), 0, None).unwrap();
        w.write(&data).unwrap();
        let l = HashMap::from([("example.com/x".to_string(), label.to_string())]);
        digests.push(w.commit(&s, 0, None, &l).unwrap());
    }
    let f = Filter::parse(&[r#"labels."example.com/x"==b"#]).unwrap();
    let found = s.list(&f).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].digest, digests[1]);
    let one = HashMap::from([("y".to_string(), "1".to_string())]);
    let info = s.update(&digests[0], &one, &["labels.y".into()]).unwrap();
    assert_eq!(info.labels.len(), 2);
    let info = s.update(&digests[0], &one, &["labels".into()]).unwrap();
    assert_eq!(info.labels, one);
    let info = s
        .update(&digests[0], &HashMap::new(), &["labels.y".into()])
        .unwrap();
    assert!(info.labels.is_empty());
    assert!(matches!(
        s.update(&digests[0], &one, &["size".into()]),
        Err(e) if e.class() == Class::InvalidArgument
    ));
    // A blob with a second link (an import mid-claim) is not listed.
    fs::hard_link(
        s.root().blob(&digests[0]),
        dir.path().join("staged-elsewhere"),
    )
    .unwrap();
    assert_eq!(s.list(&all()).unwrap().len(), 1);
    assert!(s.info(&digests[0]).is_ok());
}

#[test]
fn conforms() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::open(dir.path()).unwrap();
    crate::testkit::conformance::run(&s);
    // Failed writes left no ingest behind.
    assert!(s.list_statuses(&all()).unwrap().is_empty());
}
