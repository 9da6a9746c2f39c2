//! Signatures: cosign's `.sig` tags and the referrers tag served with the image they sign (and
//! not without it), and `GET /v2/<name>/referrers/<digest>` — the list, its descriptors, the
//! `artifactType` filter, the empty answer, bad digests.

use super::*;

const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const SBOM: &str = "application/vnd.example.sbom.v1";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Records `name` → `digest` (of `media_type`) with `labels`.
async fn record(
    fake: &Fake,
    name: &str,
    media_type: &str,
    digest: &Digest,
    labels: &[(&str, &str)],
) {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    fake.client()
        .put_image(
            &ImageTarget {
                name: name.into(),
                media_type: media_type.into(),
                digest: digest.to_string(),
                size: 1,
                annotations: BTreeMap::new(),
            },
            &labels,
        )
        .await
        .unwrap();
}

/// A simple-signing `.sig` manifest like cosign's; its digest and its payload layer's.
fn sig_manifest(fake: &Fake, signed: &Digest) -> (Digest, Digest) {
    let config = fake.add_blob(b"{\"rootfs\":{}}", &[]);
    let payload =
        serde_json::json!({"critical": {"image": {"docker-manifest-digest": signed.to_string()}}});
    let payload = fake.add_blob(payload.to_string().as_bytes(), &[]);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 13},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": payload.to_string(), "size": 1,
                    "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQ=="}}],
    });
    (fake.add_blob(manifest.to_string().as_bytes(), &[]), payload)
}

/// A referrer manifest of `subject`: with `artifact_type` or, without, a config of
/// `config_type`; and `annotations`.
fn referrer(
    fake: &Fake,
    subject: &Digest,
    artifact_type: Option<&str>,
    config_type: &str,
    annotations: serde_json::Value,
) -> (Digest, u64) {
    let config = fake.add_blob(b"{}", &[]);
    let layer = fake.add_blob(format!("{artifact_type:?} {annotations}").as_bytes(), &[]);
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": config_type, "digest": config.to_string(), "size": 2},
        "layers": [{"mediaType": BUNDLE, "digest": layer.to_string(), "size": 3}],
        "annotations": annotations,
        "subject": {"mediaType": MEDIA_OCI_INDEX, "digest": subject.to_string(), "size": 1},
    });
    if let Some(t) = artifact_type {
        m["artifactType"] = t.into();
    }
    let data = m.to_string();
    (fake.add_blob(data.as_bytes(), &[]), data.len() as u64)
}

fn json(got: &Got) -> serde_json::Value {
    serde_json::from_slice(&got.body).unwrap_or_else(|e| panic!("{e}: {got:?}"))
}

fn tags(got: &Got) -> Vec<String> {
    serde_json::from_value(json(got)["tags"].clone()).unwrap()
}

#[tokio::test]
async fn sig_tags_are_served_with_the_image_they_sign_and_not_without() {
    let fake = Fake::new();
    let busybox = busybox(&fake).await;
    let hex = busybox.index.hex().to_string();
    let subject = busybox.index.to_string();
    // Not pinned: served because the image it signs is.
    let (sig, payload) = sig_manifest(&fake, &busybox.index);
    let name = format!("docker.io/library/busybox:sha256-{hex}.sig");
    record(
        &fake,
        &name,
        MEDIA_OCI_MANIFEST,
        &sig,
        &[(crate::labels::SUBJECT, &subject)],
    )
    .await;
    // Signatures of images not served, or contradicting their label, or of another repository.
    let orphan = Digest::of(b"an image no record serves");
    let (orphan_sig, orphan_payload) = sig_manifest(&fake, &orphan);
    let orphan_tag = format!("sha256-{}.sig", orphan.hex());
    record(
        &fake,
        &format!("docker.io/library/busybox:{orphan_tag}"),
        MEDIA_OCI_MANIFEST,
        &orphan_sig,
        &[],
    )
    .await;
    let liar = format!("sha256-{hex}");
    record(
        &fake,
        &format!("docker.io/library/busybox:{liar}"),
        MEDIA_OCI_INDEX,
        &orphan_sig,
        &[(crate::labels::SUBJECT, &orphan.to_string())],
    )
    .await;
    record(
        &fake,
        &format!("quay.io/org/app:sha256-{hex}.sig"),
        MEDIA_OCI_MANIFEST,
        &sig,
        &[],
    )
    .await;
    let s = start(&fake, settings()).await;

    let target = format!("/v2/library/busybox/manifests/sha256-{hex}.sig");
    let r = get(s.addr, &target).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(Digest::of(&r.body), sig);
    assert_eq!(r.header("content-type"), Some(MEDIA_OCI_MANIFEST));
    assert_eq!(
        r.header("docker-content-digest"),
        Some(sig.to_string().as_str())
    );
    let r = request(s.addr, "HEAD", &target, &[]).await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    let r = get(s.addr, &format!("/v2/library/busybox/manifests/{sig}")).await;
    assert_eq!((r.status, Digest::of(&r.body)), (200, sig.clone()));
    let r = get(s.addr, &format!("/v2/library/busybox/blobs/{payload}")).await;
    assert_eq!((r.status, Digest::of(&r.body)), (200, payload.clone()));
    let r = get(s.addr, "/v2/library/busybox/tags/list").await;
    assert_eq!(tags(&r), ["1.35".to_string(), format!("sha256-{hex}.sig")]);

    for (target, code) in [
        (
            format!("/v2/library/busybox/manifests/{orphan_tag}"),
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/library/busybox/manifests/{liar}"),
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/library/busybox/manifests/{orphan_sig}"),
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/library/busybox/blobs/{orphan_payload}"),
            "BLOB_UNKNOWN",
        ),
        (
            format!("/v2/quay.io/org/app/manifests/sha256-{hex}.sig"),
            "NAME_UNKNOWN",
        ),
    ] {
        let r = get(s.addr, &target).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (404, code),
            "{target}: {r:?}"
        );
    }

    // Once the image is gone, so is its signature; pinned, a signature is served on its own.
    fake.state().images.remove("docker.io/library/busybox:1.35");
    record(
        &fake,
        "docker.io/library/busybox:1.36",
        MEDIA_OCI_INDEX,
        &orphan,
        &[(crate::labels::PINNED, "true")],
    )
    .await;
    tokio::time::sleep(crate::registry::served::FRESH).await;
    let r = get(s.addr, &target).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (404, "MANIFEST_UNKNOWN"),
        "{r:?}"
    );
    let r = get(s.addr, "/v2/library/busybox/tags/list").await;
    assert_eq!(tags(&r), ["1.36".to_string(), orphan_tag.clone()]);
    record(
        &fake,
        &name,
        MEDIA_OCI_MANIFEST,
        &sig,
        &[(crate::labels::PINNED, "true")],
    )
    .await;
    let r = get(s.addr, &target).await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn referrers_are_listed_from_the_tag_index_and_what_served_images_reach() {
    let fake = Fake::new();
    let busybox = busybox(&fake).await;
    let subject = busybox.index.to_string();
    let created = serde_json::json!({"org.opencontainers.image.created": "2026-01-01T00:00:00Z"});
    let (bundle, bundle_size) =
        referrer(&fake, &busybox.index, Some(BUNDLE), EMPTY, created.clone());
    let (sbom, sbom_size) = referrer(&fake, &busybox.index, None, SBOM, serde_json::json!({}));
    let (elsewhere, _) = referrer(
        &fake,
        &busybox.manifest,
        Some(BUNDLE),
        EMPTY,
        serde_json::json!({}),
    );
    let absent = Digest::of(b"a referrer not in the content store");
    // As cosign writes the tag index: the config's media type, no annotations.
    let tag_index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "manifests": [
            {"mediaType": MEDIA_OCI_MANIFEST, "digest": bundle.to_string(), "size": bundle_size, "artifactType": EMPTY},
            {"mediaType": MEDIA_OCI_MANIFEST, "digest": elsewhere.to_string(), "size": 1, "artifactType": BUNDLE},
            {"mediaType": MEDIA_OCI_MANIFEST, "digest": absent.to_string(), "size": 7, "artifactType": BUNDLE,
             "annotations": {"a": "b"}},
            {"mediaType": MEDIA_OCI_MANIFEST, "digest": "sha256:nonsense", "size": 1},
        ],
    });
    let tag_index = fake.add_blob(tag_index.to_string().as_bytes(), &[]);
    let tag = format!("docker.io/library/busybox:sha256-{}", busybox.index.hex());
    record(
        &fake,
        &tag,
        MEDIA_OCI_INDEX,
        &tag_index,
        &[(crate::labels::SUBJECT, &subject)],
    )
    .await;
    // The SBOM is found only by walking: an image of the repository has it as its target.
    record(
        &fake,
        "docker.io/library/busybox:sbom",
        MEDIA_OCI_MANIFEST,
        &sbom,
        &[(crate::labels::PINNED, "true")],
    )
    .await;
    let s = start(&fake, settings()).await;

    let target = format!("/v2/library/busybox/referrers/{subject}");
    let r = get(s.addr, &target).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some(MEDIA_OCI_INDEX));
    assert_eq!(r.header("oci-filters-applied"), None);
    let bundle_d = serde_json::json!({"mediaType": MEDIA_OCI_MANIFEST, "digest": bundle.to_string(),
        "size": bundle_size, "artifactType": BUNDLE, "annotations": created});
    let absent_d = serde_json::json!({"mediaType": MEDIA_OCI_MANIFEST, "digest": absent.to_string(),
        "size": 7, "artifactType": BUNDLE, "annotations": {"a": "b"}});
    let sbom_d = serde_json::json!({"mediaType": MEDIA_OCI_MANIFEST, "digest": sbom.to_string(),
        "size": sbom_size, "artifactType": SBOM});
    assert_eq!(
        json(&r),
        serde_json::json!({"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX,
            "manifests": [bundle_d, absent_d, sbom_d]})
    );
    // The tag index and every referrer listed are served by digest too.
    for d in [&tag_index, &bundle, &sbom] {
        let r = get(s.addr, &format!("/v2/library/busybox/manifests/{d}")).await;
        assert_eq!(r.status, 200, "{d}: {r:?}");
    }

    // Filtered: the header says so, whether anything matched or not.
    let r = get(
        s.addr,
        &format!("{target}?artifactType=application/vnd.dev.sigstore.bundle.v0.3%2Bjson"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(
        json(&r)["manifests"],
        serde_json::json!([bundle_d, absent_d])
    );
    let r = get(s.addr, &format!("{target}?n=1&artifactType={SBOM}")).await;
    assert_eq!(json(&r)["manifests"], serde_json::json!([sbom_d]));
    let r = get(s.addr, &format!("{target}?artifactType=application/none")).await;
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(json(&r)["manifests"], serde_json::json!([]));
    // Referrers of the child manifest: the one that names it, found by walking the tag index.
    let r = get(
        s.addr,
        &format!("/v2/library/busybox/referrers/{}", busybox.manifest),
    )
    .await;
    assert_eq!(json(&r)["manifests"][0]["digest"], elsewhere.to_string());
    assert_eq!(json(&r)["manifests"].as_array().unwrap().len(), 1);
    // HEAD: the headers alone.
    let r = request(s.addr, "HEAD", &target, &[]).await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("content-type"), Some(MEDIA_OCI_INDEX));
}

#[tokio::test]
async fn referrers_of_nothing_are_an_empty_list_and_bad_requests_are_refused() {
    let fake = Fake::new();
    let busybox = busybox(&fake).await;
    // A referrers tag of an image not served is not read.
    let unserved = Digest::of(b"unserved image");
    let (r, size) = referrer(&fake, &unserved, Some(BUNDLE), EMPTY, serde_json::json!({}));
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX,
        "manifests": [{"mediaType": MEDIA_OCI_MANIFEST, "digest": r.to_string(), "size": size}]});
    let index = fake.add_blob(index.to_string().as_bytes(), &[]);
    let name = format!("docker.io/library/busybox:sha256-{}", unserved.hex());
    record(&fake, &name, MEDIA_OCI_INDEX, &index, &[]).await;
    let s = start(&fake, settings()).await;

    for digest in [
        &busybox.index,
        &busybox.layer,
        &unserved,
        &Digest::of(b"unknown"),
    ] {
        let r = get(s.addr, &format!("/v2/library/busybox/referrers/{digest}")).await;
        assert_eq!(r.status, 200, "{digest}: {r:?}");
        assert_eq!(
            json(&r),
            serde_json::json!({"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": []}),
            "{digest}"
        );
    }
    let good = busybox.index.to_string();
    for (target, status, code) in [
        (
            "/v2/library/busybox/referrers/sha256:abc".to_string(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "/v2/library/busybox/referrers/md5:abc".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "/v2/library/busybox/referrers/%zz".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "/v2/library/busybox/referrers/busybox".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/library/other/referrers/{good}"),
            404,
            "NAME_UNKNOWN",
        ),
        (
            format!("/v2/library/../x/referrers/{good}"),
            400,
            "NAME_INVALID",
        ),
    ] {
        let r = get(s.addr, &target).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{target}: {r:?}"
        );
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{target}"
        );
    }
    let r = request(
        s.addr,
        "DELETE",
        &format!("/v2/library/busybox/referrers/{good}"),
        &[],
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (405, "UNSUPPORTED"));
}
