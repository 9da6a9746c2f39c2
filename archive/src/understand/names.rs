//! Naming: which references an index entry's annotations give an image, as containerd's
//! importer reads them (`io.containerd.image.name`, else a full `org.opencontainers.image.ref.name`,
//! else a tag-only ref name under `--base-name`).

use super::Builder;
use crate::oci;
use crate::reference::{is_full_reference, InvalidReference, Reference};
use std::collections::BTreeMap;

impl Builder<'_> {
    /// Names an image root from an index entry's annotations.
    pub(super) fn names_from_annotations(
        &self,
        annotations: &BTreeMap<String, String>,
    ) -> (Vec<Result<Reference, InvalidReference>>, Option<String>) {
        if let Some(name) = annotations.get(oci::ANNOTATION_IMAGE_NAME) {
            return (vec![Reference::parse_normalized(name)], None);
        }
        match annotations.get(oci::ANNOTATION_REF_NAME) {
            Some(r) if is_full_reference(r) => (vec![Reference::parse_normalized(r)], None),
            Some(tag) => match &self.opts.base_name {
                Some(base) => (
                    vec![Reference::parse_normalized(&format!("{base}:{tag}"))],
                    None,
                ),
                None => (
                    Vec::new(),
                    Some(format!(
                        "tag-only reference name {tag:?}; pass --base-name to name it"
                    )),
                ),
            },
            None => (Vec::new(), Some("no image name in the archive".to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Builder, Format, PlanOptions};
    use crate::oci;
    use crate::reference::InvalidReference;
    use std::collections::BTreeMap;

    fn names(
        base: Option<&str>,
        pairs: &[(&str, &str)],
    ) -> (Vec<Result<String, InvalidReference>>, Option<String>) {
        let opts = PlanOptions {
            base_name: base.map(str::to_string),
            ..PlanOptions::default()
        };
        let b = Builder::new(&opts, Format::OciLayout);
        let a: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (n, unnamed) = b.names_from_annotations(&a);
        (
            n.into_iter().map(|r| r.map(|r| r.to_string())).collect(),
            unnamed,
        )
    }

    #[test]
    fn names_come_from_annotations_as_containerd_reads_them() {
        // containerd's own name annotation wins over the OCI ref name.
        let (n, _) = names(
            None,
            &[
                (oci::ANNOTATION_IMAGE_NAME, "busybox:1"),
                (oci::ANNOTATION_REF_NAME, "other:2"),
            ],
        );
        assert_eq!(n, [Ok("docker.io/library/busybox:1".to_string())]);
        // A full reference in the ref name is normalised.
        let (n, _) = names(None, &[(oci::ANNOTATION_REF_NAME, "quay.io/org/app:v1")]);
        assert_eq!(n, [Ok("quay.io/org/app:v1".to_string())]);
        // A tag-only ref name needs --base-name.
        let (n, unnamed) = names(None, &[(oci::ANNOTATION_REF_NAME, "1.35")]);
        assert!(n.is_empty());
        assert!(unnamed.unwrap().contains("--base-name"));
        let (n, _) = names(
            Some("example.com/base"),
            &[(oci::ANNOTATION_REF_NAME, "1.35")],
        );
        assert_eq!(n, [Ok("example.com/base:1.35".to_string())]);
        // An invalid reference never becomes a name.
        let (n, _) = names(None, &[(oci::ANNOTATION_IMAGE_NAME, "Busybox:1")]);
        assert!(n[0].is_err());
        let (n, unnamed) = names(None, &[]);
        assert!(n.is_empty() && unnamed.unwrap().contains("no image name"));
    }
}
