//! Naming: which references an index entry's annotations give an image, as containerd's
//! importer reads them (`io.containerd.image.name`, else a full `org.opencontainers.image.ref.name`,
//! else a tag-only ref name under `--base-name`).

use super::Builder;
use crate::archive::spec;
use crate::reference::{is_full_reference, Reference};
use std::collections::BTreeMap;

impl Builder<'_> {
    /// Names an image root from an index entry's annotations.
    pub(super) fn names_from_annotations(
        &self,
        annotations: &BTreeMap<String, String>,
    ) -> (Vec<Result<Reference, String>>, Option<String>) {
        if let Some(name) = annotations.get(spec::ANNOTATION_IMAGE_NAME) {
            return (
                vec![Reference::parse_normalized(name).map_err(|e| e.to_string())],
                None,
            );
        }
        match annotations.get(spec::ANNOTATION_REF_NAME) {
            Some(r) if is_full_reference(r) => (
                vec![Reference::parse_normalized(r).map_err(|e| e.to_string())],
                None,
            ),
            Some(tag) => match &self.opts.base_name {
                Some(base) => (
                    vec![Reference::parse_normalized(&format!("{base}:{tag}"))
                        .map_err(|e| e.to_string())],
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
