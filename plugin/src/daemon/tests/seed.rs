//! A seed node on the fake (`serve_platforms`): an image of served platforms alone is recorded
//! and pinned but never ready for `airlift wait --image`, nor listed as the node's own; startup
//! is not held up by it; and a restart with other served platforms imports again and lets go of
//! what is no longer served.

use super::*;

/// The arm64-only image of `bundle-ctr-export.tar` (the same target as [`TOOLS`]).
const ARM64_ONLY: &str = "registry.example.com/tools/busybox:1.35-arm64";

/// A node running amd64 (whatever the machine) and serving `serve`.
fn seed(n: &Node, serve: &[&str]) -> Arc<Daemon> {
    n.daemon_with(|c| {
        c.platforms = vec!["linux/amd64".into()];
        c.serve_platforms = serve.iter().map(|s| s.to_string()).collect();
        c.unpack = Some("overlayfs".into());
    })
}

#[test]
fn an_image_of_served_platforms_alone_is_pinned_but_never_ready() {
    let n = Node::new();
    let a = n.put("bundle-ctr-export.tar", "a.tar");
    let d = seed(&n, &["linux/arm64"]);
    n.rt.block_on(d.startup());
    assert!(d.startup_done(), "a served-only image held startup up");
    let record = d.archive(&a).unwrap().record.unwrap();
    assert_eq!(record.outcome, crate::state::Outcome::Imported);
    assert!(record.serves_only(ARM64_ONLY), "{:?}", record.served_only);
    assert!(record.serves_only(TOOLS), "{:?}", record.served_only);
    assert!(!record.serves_only(BUSYBOX));
    // Pinned as the archive's, like every image it provides.
    assert_eq!(n.pinned(ARM64_ONLY).unwrap(), a.display().to_string());
    // The node runs busybox (its index has amd64); the arm64-only image is not the node's.
    let rt = &n.rt;
    assert!(rt
        .block_on(d.not_ready(&[BUSYBOX.into()]))
        .unwrap()
        .is_empty());
    assert_eq!(
        rt.block_on(d.not_ready(&[ARM64_ONLY.into(), BUSYBOX.into()]))
            .unwrap(),
        [ARM64_ONLY]
    );
    assert!(d.serving_only(ARM64_ONLY));
    assert!(!d.serving_only(BUSYBOX));
    // Nothing of it was unpacked: one chain, amd64's.
    assert_eq!(n.fake.committed("overlayfs").len(), 1);
}

#[test]
fn the_api_tells_a_served_only_image_apart() {
    use crate::api::proto;
    let n = Node::new();
    let a = n.put("bundle-ctr-export.tar", "a.tar");
    let d = seed(&n, &["linux/arm64"]);
    n.reconcile(&d, &a);
    n.rt.block_on(async {
        let server = server::listen(d.clone()).await.unwrap();
        let mut api = crate::api::connect(&d.config().socket).await.unwrap();
        let r = api
            .ready(proto::ReadyRequest {
                images: vec![ARM64_ONLY.into()],
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!r.ready);
        assert_eq!(r.served_only, [ARM64_ONLY]);
        let list = api.list(proto::ListRequest {}).await.unwrap().into_inner();
        let archive = &list.archives[0];
        assert!(archive.images.iter().any(|i| i == ARM64_ONLY));
        assert!(
            archive.served_only.iter().any(|i| i == ARM64_ONLY),
            "{:?}",
            archive.served_only
        );
        assert!(!archive.served_only.iter().any(|i| i == BUSYBOX));
        server.abort();
    });
}

#[test]
fn a_restart_serving_nothing_imports_again_and_lets_go() {
    let n = Node::new();
    let a = n.put("bundle-ctr-export.tar", "a.tar");
    {
        let d = seed(&n, &["linux/arm64"]);
        n.rt.block_on(d.startup());
    }
    let target = n.fake.image(ARM64_ONLY).unwrap().digest;
    let lease = labels::archive_lease(&a);
    assert!(n.fake.state().leases[&lease].content.contains(&target));
    // The same configuration again: the record stands, nothing is read.
    let writes = n.fake.count("write");
    {
        let d = seed(&n, &["linux/arm64"]);
        n.rt.block_on(d.startup());
    }
    assert_eq!(n.fake.count("write"), writes, "the archive was read again");
    // Serving nothing: imported again; the arm64-only images are no longer provided (unpinned)
    // and their content leaves the lease.
    let d = seed(&n, &[]);
    n.rt.block_on(d.startup());
    assert!(d
        .archive(&a)
        .unwrap()
        .record
        .unwrap()
        .served_only
        .is_empty());
    assert_eq!(n.pinned(ARM64_ONLY).unwrap(), "unpinned");
    assert!(!n.fake.state().leases[&lease].content.contains(&target));
    assert_eq!(n.pinned(BUSYBOX).unwrap(), a.display().to_string());
}
