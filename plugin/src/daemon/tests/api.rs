//! The daemon's API on the fake — imports, lists, forgets, readiness of named images — and intake
//! archives, deleted once imported and kept until forgotten.

use super::*;

#[test]
fn the_api_imports_lists_and_forgets() {
    use crate::api::proto;
    let n = Node::new();
    let d = n.daemon();
    let a = n.put("busybox-docker.tar", "a.tar");
    n.rt.block_on(async {
        let server = server::listen(d.clone()).await.unwrap();
        let mut api = crate::api::connect(&d.config().socket).await.unwrap();
        let mut progress = api
            .import(proto::ImportRequest {
                path: a.display().to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        let mut last = None;
        while let Some(p) = progress.message().await.unwrap() {
            if p.done {
                last = p.archive;
            }
        }
        let archive = last.expect("a final message with the archive");
        assert_eq!(crate::api::state_name(archive.state), "imported");
        assert_eq!(archive.images, [BUSYBOX]);
        let list = api.list(proto::ListRequest {}).await.unwrap().into_inner();
        assert_eq!(list.archives.len(), 1);
        let status = api
            .status(proto::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (status.archives, status.importing, status.queue_length),
            (1, 0, 0)
        );
        // A relative path is refused with a message naming it.
        let e = api
            .import(proto::ImportRequest {
                path: "a.tar".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("a.tar"), "{}", e.message());
        let forgotten = api
            .forget(proto::ForgetRequest {
                path: a.display().to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(forgotten.unpinned, [BUSYBOX]);
        let e = api
            .forget(proto::ForgetRequest {
                path: a.display().to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        server.abort();
    });
    assert_eq!(n.pinned(BUSYBOX).unwrap(), "unpinned");
}

#[test]
fn readiness_of_named_images() {
    let n = Node::new();
    let d = n.daemon();
    let rt = &n.rt;
    assert_eq!(
        rt.block_on(d.not_ready(&["busybox:1.35".into()])).unwrap(),
        [BUSYBOX]
    );
    let a = n.put("busybox-docker.tar", "a.tar");
    n.reconcile(&d, &a);
    assert!(rt
        .block_on(d.not_ready(&["busybox:1.35".into()]))
        .unwrap()
        .is_empty());
    // Unpinned by someone: not ready until restored.
    n.fake.change_image(BUSYBOX, |i| {
        i.labels.remove(labels::CRI_PINNED);
    });
    assert_eq!(
        rt.block_on(d.not_ready(&["docker.io/library/busybox:1.35".into()]))
            .unwrap()
            .len(),
        1
    );
    assert!(rt
        .block_on(d.not_ready(&["Bad:Ref".into()]))
        .unwrap_err()
        .to_string()
        .contains("Bad:Ref"));
}

#[test]
fn intake_archives_are_deleted_once_imported_and_kept_until_forgotten() {
    let n = Node::new();
    let intake = n.intake();
    let d = n.daemon_with(|c| c.intake_dirs = vec![intake.clone()]);
    let a = intake.join("a.tar");
    std::fs::copy(fixture("busybox-docker.tar"), &a).unwrap();
    n.reconcile(&d, &a);
    assert!(!a.exists(), "the intake archive was not deleted");
    let status = d.archive(&a).unwrap();
    assert_eq!(status.state, State::Imported);
    assert!(status.record.unwrap().intake);
    // Its removal is not a release.
    n.reconcile(&d, &a);
    assert_eq!(n.pinned(BUSYBOX).unwrap(), a.display().to_string());
    // Across a restart.
    let d = n.daemon_with(|c| c.intake_dirs = vec![intake.clone()]);
    n.rt.block_on(d.startup());
    assert_eq!(n.pinned(BUSYBOX).unwrap(), a.display().to_string());
    assert!(n
        .fake
        .state()
        .leases
        .contains_key(&labels::archive_lease(&a)));
    // A new archive at the same path replaces it as a changed archive would.
    std::fs::copy(fixture("busybox-arm64-multitag-docker.tar"), &a).unwrap();
    n.reconcile(&d, &a);
    assert!(!a.exists());
    assert_eq!(n.pinned(BUSYBOX).unwrap(), "unpinned");
    assert_eq!(n.pinned(TOOLS).unwrap(), a.display().to_string());
    // A failed import leaves the file in place, shown as failed.
    let data = std::fs::read(fixture("bundle-ctr-export.tar")).unwrap();
    let b = intake.join("b.tar");
    std::fs::write(&b, &data[..data.len() / 2]).unwrap();
    n.reconcile(&d, &b);
    assert!(b.exists());
    assert_eq!(d.archive(&b).unwrap().state, State::Failed);
    // Forgotten: released.
    let unpinned = n.rt.block_on(d.forget(&a)).unwrap();
    assert_eq!(unpinned.len(), 3, "{unpinned:?}");
    assert_eq!(n.pinned(TOOLS).unwrap(), "unpinned");
    assert!(!n
        .fake
        .state()
        .leases
        .contains_key(&labels::archive_lease(&a)));
}
