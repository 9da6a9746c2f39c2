//! Image records and their events, and what containerd says of itself.

use super::{fails_with, label_map, labels, live_subscription, Subject};
use crate::containerd::{Event, ImageRecord, ImageTarget, LabelChanges};
use crate::digest::Digest;
use crate::error::Class;
use std::time::Duration;

/// A target for an image record (its blob need not exist).
fn target(name: &str, seed: &str) -> ImageTarget {
    ImageTarget {
        name: name.to_string(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: Digest::of(seed.as_bytes()).to_string(),
        size: seed.len() as i64,
        annotations: Default::default(),
    }
}

/// Creates or points the record `name` (at a made-up target), setting `pairs` as labels.
pub async fn put(s: &Subject<'_>, name: &str, pairs: &[(&str, &str)]) {
    s.client
        .put_image(&target(name, name), &labels(pairs))
        .await
        .unwrap_or_else(|e| panic!("{}: put image {name}: {e}", s.name));
}

/// containerd's version, and where its content store keeps blobs.
pub async fn introspection(s: &Subject<'_>) {
    let n = &s.name;
    let version = s.client.version().await.unwrap();
    let numeric = version.split('.').take(2).all(|p| p.parse::<u32>().is_ok());
    assert!(numeric && version.contains('.'), "{n}: version {version:?}");
    let root = s.client.content_root().await.unwrap();
    assert!(
        root.is_some_and(|r| r.is_absolute()),
        "{n}: the content root"
    );
    assert_eq!(s.client.content_proxy_address().await.unwrap(), None, "{n}");
}

/// Records are created, pointed elsewhere keeping the labels not given, relabelled (`None`
/// removes a label) and found by containerd's filters (a filter that does not parse is
/// `InvalidArgument`).
pub async fn records(s: &Subject<'_>) {
    let n = &s.name;
    let name = format!("example.com/{}:records", s.unique("image"));
    assert_eq!(s.image(&name).await, None, "{n}");
    put(s, &name, &[("example.com/a", "1"), ("example.com/b", "2")]).await;
    let moved = target(&name, "elsewhere");
    let b3 = labels(&[("example.com/b", "3")]);
    s.client.put_image(&moved, &b3).await.unwrap();
    let record = s.image(&name).await.expect("the record");
    assert_eq!(
        record.digest, moved.digest,
        "{n}: a record pointed elsewhere"
    );
    assert_eq!(record.media_type, moved.media_type, "{n}");
    assert_eq!(record.size, moved.size, "{n}");
    assert_eq!(
        record.labels,
        label_map(&[("example.com/a", "1"), ("example.com/b", "3")]),
        "{n}"
    );

    let changes: LabelChanges = [
        ("example.com/a".to_string(), None),
        ("example.com/c".to_string(), Some("4".to_string())),
    ]
    .into();
    s.client.set_image_labels(&record, &changes).await.unwrap();
    let record = s.image(&name).await.expect("the record");
    assert_eq!(
        record.labels,
        label_map(&[("example.com/b", "3"), ("example.com/c", "4")]),
        "{n}"
    );
    assert_eq!(
        record.digest, moved.digest,
        "{n}: relabelling moved the record"
    );

    let names = |images: Vec<ImageRecord>| images.into_iter().map(|i| i.name).collect::<Vec<_>>();
    let by_name = s
        .client
        .list_images(vec![format!("name=={name}")])
        .await
        .unwrap();
    assert_eq!(names(by_name), vec![name.clone()], "{n}: by name");
    let filter = format!(
        "name~=^example.com/{},labels.\"example.com/c\"==4",
        s.prefix
    );
    let by_label = s.client.list_images(vec![filter.clone()]).await.unwrap();
    assert_eq!(names(by_label), vec![name.clone()], "{n}: {filter}");
    let none = s
        .client
        .list_images(vec![format!("{filter}5")])
        .await
        .unwrap();
    assert!(none.is_empty(), "{n}: {none:?}");

    let bad = s.client.list_images(vec!["name==\"open".into()]).await;
    fails_with(
        bad,
        Class::InvalidArgument,
        &format!("{n}: a filter that does not parse"),
    );
    let bad = s.client.list_leases("id==\"open").await;
    fails_with(
        bad,
        Class::InvalidArgument,
        &format!("{n}: a lease filter that does not parse"),
    );

    let missing = ImageRecord {
        name: format!("example.com/{}:missing", s.unique("image")),
        ..record
    };
    let r = s.client.set_image_labels(&missing, &changes).await;
    fails_with(
        r,
        Class::NotFound,
        &format!("{n}: labels of a missing image"),
    );
    s.other.delete_image(&name);
    assert_eq!(s.image(&name).await, None, "{n}: a deleted record");
}

/// The next event about `name` on `events` (others' skipped), within ten seconds.
async fn next_about(s: &Subject<'_>, events: &mut crate::containerd::Events, name: &str) -> Event {
    use tokio_stream::StreamExt;
    let wait = async {
        while let Some(event) = events.next().await {
            let event = event.unwrap_or_else(|e| panic!("{}: events: {e}", s.name));
            if event.image() == Some(name) {
                return event;
            }
        }
        panic!("{}: the subscription ended", s.name);
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("{}: no event about {name} within 10 s", s.name))
}

/// Each change of a record is published, with the record's whole set of labels after it:
/// creation, pointing, relabelling, deletion by another client.
pub async fn events(s: &Subject<'_>) {
    let n = &s.name;
    let mut events = live_subscription(s, &["^/images/"]).await;
    let name = format!("example.com/{}:events", s.unique("image"));
    put(s, &name, &[("example.com/a", "1")]).await;
    let created = Event::ImageCreated {
        name: name.clone(),
        labels: label_map(&[("example.com/a", "1")]),
    };
    assert_eq!(next_about(s, &mut events, &name).await, created, "{n}");

    put(s, &name, &[("example.com/b", "2")]).await;
    let pointed = Event::ImageUpdated {
        name: name.clone(),
        labels: label_map(&[("example.com/a", "1"), ("example.com/b", "2")]),
    };
    assert_eq!(next_about(s, &mut events, &name).await, pointed, "{n}");

    let record = s.image(&name).await.expect("the record");
    let changes: LabelChanges = [("example.com/a".to_string(), None)].into();
    s.client.set_image_labels(&record, &changes).await.unwrap();
    let relabelled = Event::ImageUpdated {
        name: name.clone(),
        labels: label_map(&[("example.com/b", "2")]),
    };
    assert_eq!(next_about(s, &mut events, &name).await, relabelled, "{n}");

    s.other.delete_image(&name);
    let deleted = Event::ImageDeleted { name: name.clone() };
    assert_eq!(next_about(s, &mut events, &name).await, deleted, "{n}");
}
