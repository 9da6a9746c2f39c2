//! The import service on the containerd fake: recall of unchanged archives, repair instead of a
//! re-read, and what is remembered after each outcome.

use super::*;
use crate::import::Outcome;
use crate::labels;
use crate::state::{Identity, Outcome as RecordOutcome};
use crate::testing::{all_platforms, fixture};
use crate::testkit::fake::Fake;

struct Setup {
    fake: Fake,
    client: Client,
    importer: Importer,
    archive: PathBuf,
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

/// An importer of `options` reaching `fake`, one attempt each time (the daemon's tests wait).
fn importer(
    fake: &Fake,
    options: ImportOptions,
    records: Option<Records>,
    remember: Remember,
) -> Importer {
    let cancel = options.cancel.clone();
    let connection = Connection::new(Box::new(fake.clone()), Patience::Once, cancel);
    Importer::new(options, records, remember, connection)
}

fn setup(remember: Remember) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("bundle.tar");
    std::fs::copy(fixture("bundle-ctr-export.tar"), &archive).unwrap();
    let records = Records::open(&dir.path().join("state")).unwrap();
    let fake = Fake::new();
    Setup {
        client: fake.client(),
        importer: importer(&fake, all_platforms(), Some(records), remember),
        fake,
        archive,
        _dir: dir,
        rt: crate::testing::runtime(),
    }
}

impl Setup {
    fn run(&self, req: Request) -> Report {
        self.rt
            .block_on(self.importer.run(&Source::File(self.archive.clone()), &req))
            .unwrap()
    }

    fn reads(&self) -> usize {
        self.fake.count("write")
    }
}

#[test]
fn an_unchanged_archive_is_recalled_without_reading_it() {
    let s = setup(Remember::Successes);
    let first = s.run(Request::default());
    assert_eq!(first.outcome, Outcome::Imported);
    let writes = s.reads();
    let again = s.run(Request::default());
    assert_eq!(again.outcome, Outcome::Unchanged);
    assert_eq!((again.mode, again.archive_bytes), (None, 0));
    assert_eq!(again.images, first.images);
    assert_eq!(s.reads(), writes, "a recalled archive was stored again");
    // Forced: read again, nothing written again.
    let forced = s.run(Request {
        force: true,
        ..Request::default()
    });
    assert_eq!(forced.outcome, Outcome::Imported);
    assert!(forced.archive_bytes > 0);
    assert_eq!(forced.blobs_written, 0);
}

#[test]
fn a_damaged_record_is_read_again_or_repaired_when_asked() {
    let s = setup(Remember::Successes);
    s.run(Request::default());
    // Someone deletes an image: without repair the archive is read again...
    s.fake
        .state()
        .images
        .remove("docker.io/library/busybox:1.35");
    let again = s.run(Request::default());
    assert_eq!(again.outcome, Outcome::Imported);
    assert!(again.archive_bytes > 0);
    assert!(s.fake.image("docker.io/library/busybox:1.35").is_some());
    // ...with repair it is restored from the record, reading nothing.
    s.fake
        .state()
        .images
        .get_mut("docker.io/library/busybox:1.35")
        .unwrap()
        .labels
        .remove(labels::CRI_PINNED);
    let repaired = s.run(Request {
        repair: Repair::Yes,
        ..Request::default()
    });
    assert_eq!(repaired.outcome, Outcome::Repaired);
    assert_eq!(repaired.archive_bytes, 0);
    assert!(
        repaired.repaired[0].contains(labels::CRI_PINNED),
        "{:?}",
        repaired.repaired
    );
    let img = s.fake.image("docker.io/library/busybox:1.35").unwrap();
    assert_eq!(img.labels[labels::CRI_PINNED], "pinned");
}

#[test]
fn other_options_or_a_changed_file_are_imported_again() {
    let s = setup(Remember::Successes);
    s.run(Request::default());
    // Touching the file changes its identity.
    let f = std::fs::File::options()
        .append(true)
        .open(&s.archive)
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    assert_eq!(s.run(Request::default()).outcome, Outcome::Imported);
    // The same file with other options (a label) is not the same import.
    let mut opts = all_platforms();
    opts.labels.insert("team".into(), "edge".into());
    let other = importer(
        &s.fake,
        opts,
        s.importer.records.clone(),
        Remember::Successes,
    );
    let r =
        s.rt.block_on(other.run(&Source::File(s.archive.clone()), &Request::default()))
            .unwrap();
    assert_eq!(r.outcome, Outcome::Imported);
}

#[test]
fn what_is_remembered_after_each_outcome() {
    // The command line remembers successes only; the daemon everything, with the failure.
    let s = setup(Remember::Successes);
    s.fake
        .fail("put_image", None, crate::error::Class::Unavailable);
    assert!(s
        .rt
        .block_on(
            s.importer
                .run(&Source::File(s.archive.clone()), &Request::default())
        )
        .is_err());
    assert!(s
        .importer
        .records()
        .unwrap()
        .get(&s.archive.canonicalize().unwrap())
        .is_none());

    let d = setup(Remember::Everything);
    d.fake
        .fail("put_image", None, crate::error::Class::Unavailable);
    let src = Source::File(d.archive.clone());
    let id = Identity::of(&d.archive).unwrap();
    let job = Job {
        source: &src,
        identity: Some(id),
        previous: None,
        progress: Default::default(),
        precedence: &crate::import::Alone,
    };
    let (_, imported) =
        d.rt.block_on(d.importer.import(d.client.clone(), &job))
            .unwrap();
    d.importer.keep(&imported);
    let kept = d
        .importer
        .records()
        .unwrap()
        .get(&d.archive.canonicalize().unwrap())
        .unwrap();
    assert_eq!(kept.outcome, RecordOutcome::Failed);
    assert!(
        kept.last_error.contains("injected fault"),
        "{}",
        kept.last_error
    );
    assert_eq!(
        kept.identity,
        Identity::default(),
        "containerd's fault: tried again"
    );
}

#[test]
fn placement_follows_what_containerd_reports() {
    let rt = crate::testing::runtime();
    let dir = tempfile::tempdir().unwrap();
    let importer = importer(
        &Fake::new(),
        ImportOptions::default(),
        None,
        Remember::Successes,
    );
    let with_root = Fake::new().with_content_root(dir.path()).client();
    assert!(
        matches!(rt.block_on(importer.placement(&with_root)), Placement::Local(r) if r.path() == dir.path())
    );
    // Asked once per containerd.
    rt.block_on(importer.placement(&with_root));
    let fake = Fake::new();
    let none = fake.client();
    let p = rt.block_on(importer.placement(&none));
    assert!(
        matches!(p, Placement::Remote(ref why) if why.contains("content root")),
        "{p:?}"
    );
    let configured = super::tests::importer(
        &fake,
        ImportOptions {
            content_root: Some(dir.path().join("own")),
            ..ImportOptions::default()
        },
        None,
        Remember::Successes,
    );
    assert!(matches!(
        rt.block_on(configured.placement(&none)),
        Placement::Local(_)
    ));
}

#[test]
fn a_record_of_a_newer_format_stops_the_import_and_stays() {
    let s = setup(Remember::Successes);
    s.run(Request::default());
    let records = s.importer.records().unwrap();
    let file = std::fs::read_dir(s._dir.path().join("state/archives"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("\"format\": 1", "\"format\": 2");
    std::fs::write(&file, &text).unwrap();
    let images = s.fake.count("put_image");
    let err =
        s.rt.block_on(
            s.importer
                .run(&Source::File(s.archive.clone()), &Request::default()),
        )
        .unwrap_err();
    assert!(matches!(err, ImportError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("state format 2"), "{err}");
    assert_eq!(s.fake.count("put_image"), images, "images written: {err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    assert!(records.get(&s.archive).is_none());
}

#[test]
fn the_daemon_imports_again_when_what_it_serves_changes() {
    let fingerprint = |serve: &[&str]| {
        let mut opts = all_platforms();
        opts.plan.serve = crate::platform::PlatformPolicy::parse_served(serve).unwrap();
        let fake = Fake::new();
        importer(&fake, opts, None, Remember::Everything).fingerprint(&fake.client())
    };
    // Serving nothing adds nothing: records made before serve_platforms existed stand.
    assert_eq!(fingerprint(&[]), "");
    assert_ne!(fingerprint(&["linux/arm64"]), fingerprint(&[]));
    assert_ne!(fingerprint(&["linux/arm64"]), fingerprint(&["all"]));
    assert_eq!(
        fingerprint(&["linux/arm64"]),
        fingerprint(&["linux/arm64/v8"])
    );
}
